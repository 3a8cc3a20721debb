//! The run's plots (loss.png, lr.png, eval.png, nll.png) from a metrics log, the 2-D scatter and
//! sequence plots, `ddpm-train plot --run`, and the trainer writing them: each picture has its
//! size, text and ticks in the axis margins, and draws what it should where it should.

use std::path::{Path, PathBuf};

use ddpm_train::grid::{GridOptions, MAX_SEQUENCE_PANELS, SCATTER_SIZE, SCATTER_X_LABEL_AREA, SCATTER_Y_LABEL_AREA, write_grid, write_grid_with};
use ddpm_train::plot::{CHART_SIZE, EVAL_PANEL_HEIGHT, MARGIN, Metrics, X_LABEL_AREA, Y_LABEL_AREA, write_run_plots};
use image::RgbImage;

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ddpm-train-plots-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// The loss of the synthetic run at `step`: from 2 down to about 0.005, more than two decades.
fn synthetic_loss(step: usize) -> f64 {
    2.0 * (-(step as f64) / 100.0).exp() + 0.003
}

/// 600 logged steps (loss over two decades, a null grad norm at step 77, lr warm-up), toy
/// evaluations every 100 steps, NLL results at 300 and 600, and a last line cut short.
fn synthetic_log(dir: &Path) -> PathBuf {
    let mut text = String::new();
    let mut ema = f64::NAN;
    for step in 1..=600usize {
        // A little deterministic noise on the raw loss.
        let loss = synthetic_loss(step) * (1.0 + 0.2 * ((step * 7919) % 13) as f64 / 13.0 - 0.1);
        ema = if ema.is_nan() { loss } else { 0.98 * ema + 0.02 * loss };
        let lr = 1e-3 * (step as f64 / 100.0).min(1.0);
        let grad = if step == 77 { "null".to_string() } else { format!("{}", 1.0 / step as f64) };
        text.push_str(&format!(
            "{{\"step\":{step},\"time\":{},\"loss\":{loss},\"loss_ema\":{ema},\"lr\":{lr},\"grad_norm\":{grad},\"images_per_s\":100.0}}\n",
            1.7e9 + step as f64
        ));
        if step % 100 == 0 {
            let ed = 1.0 / step as f64;
            text.push_str(&format!(
                "{{\"step\":{step},\"eval\":{{\"metric\":\"energy_distance\",\"value\":{ed},\"details\":{{\"energy_distance\":{ed},\"near_mode_share\":{},\"modes_hit\":{}}},\"num_samples\":100,\"seconds\":0.5}}}}\n",
                step as f64 / 700.0,
                (step / 100 + 2).min(8)
            ));
        }
        if step % 300 == 0 {
            text.push_str(&format!("{{\"step\":{step},\"nll\":{{\"bits_per_dim\":{},\"std_error\":0.01}}}}\n", 4.0 - step as f64 / 600.0));
        }
    }
    // A run writing its next line at this moment.
    text.push_str("{\"step\":601,\"time\":1700000601.0,\"lo");
    let path = dir.join("metrics.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn is_background(p: &image::Rgb<u8>) -> bool {
    p.0.iter().all(|&c| c >= 250)
}

/// Pixels that are not white in `[x0, x1) x [y0, y1)`.
fn ink(img: &RgbImage, (x0, x1): (u32, u32), (y0, y1): (u32, u32)) -> usize {
    let mut n = 0;
    for y in y0..y1.min(img.height()) {
        for x in x0..x1.min(img.width()) {
            n += usize::from(!is_background(img.get_pixel(x, y)));
        }
    }
    n
}

fn near(p: &image::Rgb<u8>, c: [u8; 3], tol: i32) -> bool {
    p.0.iter().zip(c).all(|(&a, b)| (i32::from(a) - i32::from(b)).abs() <= tol)
}

/// Asserts the axis margins of a chart of `CHART_SIZE` carry tick labels and titles.
fn assert_chart_axes(img: &RgbImage, what: &str) {
    let (w, h) = (img.width(), img.height());
    let plot_bottom = h - MARGIN - X_LABEL_AREA;
    // Left of the plotting area: the y tick labels and the rotated y label.
    let left = ink(img, (0, MARGIN + Y_LABEL_AREA - 2), (60, plot_bottom));
    assert!(left > 200, "{what}: the left margin holds {left} inked pixels, expected tick labels");
    // Below the plotting area: the x tick labels and the x label.
    let bottom = ink(img, (MARGIN + Y_LABEL_AREA + 4, w), (plot_bottom + 3, h));
    assert!(bottom > 200, "{what}: the bottom margin holds {bottom} inked pixels, expected tick labels");
    // The title band.
    let title = ink(img, (0, w), (0, 36));
    assert!(title > 150, "{what}: the title band holds {title} inked pixels");
    // The corners outside the axes stay blank.
    assert_eq!(ink(img, (0, MARGIN - 2), (0, MARGIN - 2)), 0, "{what}: the top-left corner");
}

#[test]
fn metrics_log_parses_partial_and_null_lines() {
    let dir = tmp("parse");
    let m = Metrics::read(&synthetic_log(&dir)).unwrap();
    assert_eq!(m.train.len(), 600, "the cut-short last line is skipped, the rest kept");
    assert_eq!(m.skipped_lines, 1);
    let p77 = &m.train[76];
    assert_eq!(p77.step, 77.0);
    assert_eq!(p77.grad_norm, None, "null is no value");
    assert!(p77.loss.is_some() && p77.lr.is_some());
    let names: Vec<&str> = m.eval.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["energy_distance", "modes_hit", "near_mode_share"], "the metric once, then the other details (in JSON key order)");
    assert!(m.eval.iter().all(|(_, points)| points.len() == 6));
    assert_eq!(m.eval[1].1[5], (600.0, 8.0));
    assert_eq!(m.nll, vec![(300.0, 3.5), (600.0, 3.0)]);
}

#[test]
fn run_plots_have_axes_ticks_and_a_log_loss_axis() {
    let dir = tmp("run");
    synthetic_log(&dir);
    let written = write_run_plots(&dir).unwrap();
    let names: Vec<String> = written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["loss.png", "lr.png", "eval.png", "nll.png"]);
    assert!(written.iter().all(|p| p.parent() == Some(dir.as_path())));
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let loss = image::open(dir.join("loss.png")).unwrap().to_rgb8();
    assert_eq!((loss.width(), loss.height()), CHART_SIZE);
    assert_chart_axes(&loss, "loss.png");
    // The smoothed curve (dark blue) at step 300, where the loss is 0.1 on a range of about
    // 0.003..2.4: near the middle of the plotting area on a log axis, at its bottom on a linear one.
    let (x_left, x_right) = (MARGIN + Y_LABEL_AREA, CHART_SIZE.0 - MARGIN - 16);
    let x = x_left + ((300.0 - 1.0) / (600.0 - 1.0) * f64::from(x_right - x_left)) as u32;
    let ys: Vec<u32> = (0..loss.height()).filter(|&y| (x - 1..=x + 1).any(|xx| near(loss.get_pixel(xx, y), [8, 48, 107], 40))).collect();
    assert!(!ys.is_empty(), "the smoothed loss is drawn at step 300");
    let plot_bottom = CHART_SIZE.1 - MARGIN - X_LABEL_AREA;
    let y = ys[ys.len() / 2];
    assert!(y > 120 && y < plot_bottom - 100, "smoothed loss at step 300 drawn at y = {y} (plotting area ends at {plot_bottom}): not a log scale");
    // The raw losses are drawn faint (light blue), apart from the smoothed curve.
    let faint = (x_left..x_right).flat_map(|x| (0..plot_bottom).map(move |y| (x, y))).filter(|&(x, y)| near(loss.get_pixel(x, y), [188, 213, 232], 24)).count();
    assert!(faint > 200, "{faint} faint pixels of raw loss");

    let lr = image::open(dir.join("lr.png")).unwrap().to_rgb8();
    assert_eq!((lr.width(), lr.height()), CHART_SIZE);
    assert_chart_axes(&lr, "lr.png");

    let eval = image::open(dir.join("eval.png")).unwrap().to_rgb8();
    assert_eq!(eval.width(), CHART_SIZE.0);
    assert!(eval.height() >= 3 * EVAL_PANEL_HEIGHT, "one panel per metric: {} px high", eval.height());
    // Each of the three panels has tick labels left of its plotting area.
    let top = eval.height() - 3 * EVAL_PANEL_HEIGHT;
    for k in 0..3 {
        let (y0, y1) = (top + k * EVAL_PANEL_HEIGHT + 50, top + (k + 1) * EVAL_PANEL_HEIGHT - X_LABEL_AREA - MARGIN);
        let left = ink(&eval, (0, MARGIN + Y_LABEL_AREA - 2), (y0, y1));
        assert!(left > 150, "eval.png panel {k}: {left} inked pixels left of it");
    }
    let nll = image::open(dir.join("nll.png")).unwrap().to_rgb8();
    assert_chart_axes(&nll, "nll.png");
}

#[test]
fn a_missing_or_empty_log_is_an_error_naming_it() {
    let dir = tmp("missing");
    let e = write_run_plots(&dir).unwrap_err().to_string();
    assert!(e.contains(&dir.join("metrics.jsonl").display().to_string()) && e.contains("no such file"), "{e}");
    std::fs::write(dir.join("metrics.jsonl"), "{\"step\":5,\"eval\":{\"metric\":\"fid\",\"value\":30.0}}\n{\"step\":6,\"lo").unwrap();
    let e = write_run_plots(&dir).unwrap_err().to_string();
    assert!(e.contains("metrics.jsonl") && e.contains("no training lines") && e.contains("2 lines"), "{e}");
    assert!(!dir.join("loss.png").exists(), "nothing drawn");
}

#[test]
fn scatter_plot_has_axes_and_marks_the_modes() {
    let dir = tmp("scatter");
    let points: Vec<f64> = ddpm_train::data::toy::toy("gaussian8", 500, 1).unwrap().into_iter().map(f64::from).collect();
    let data = ddpm_train::config::DataConfig::Toy { name: "gaussian8".into(), count: 500 };
    let opts = GridOptions::for_data(&data);
    assert_eq!(opts.modes.len(), 8, "gaussian8 has 8 modes");
    let with_modes = dir.join("modes.png");
    write_grid_with(&with_modes, &points, &[2], &opts).unwrap();
    let plain = dir.join("plain.png");
    write_grid(&plain, &points, &[2]).unwrap();
    for path in [&with_modes, &plain] {
        let img = image::open(path).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), SCATTER_SIZE);
        let (w, h) = SCATTER_SIZE;
        let plot_bottom = h - MARGIN - SCATTER_X_LABEL_AREA;
        let left = ink(&img, (0, MARGIN + SCATTER_Y_LABEL_AREA - 2), (60, plot_bottom));
        let bottom = ink(&img, (MARGIN + SCATTER_Y_LABEL_AREA + 4, w), (plot_bottom + 3, h));
        assert!(left > 150 && bottom > 150, "{}: axis margins hold {left} and {bottom} inked pixels", path.display());
        // The samples, as dots: blue pixels inside the plotting area.
        let blue = img.pixels().filter(|p| p.0[2] > 150 && p.0[0] < 150).count();
        assert!(blue > 500, "{}: {blue} sample pixels", path.display());
    }
    let red = |path: &Path| image::open(path).unwrap().to_rgb8().pixels().filter(|p| near(p, [214, 39, 40], 30)).count();
    assert!(red(&with_modes) > 8 * 12, "the 8 modes are marked: {} red pixels", red(&with_modes));
    assert_eq!(red(&plain), 0, "no modes given, none marked");
    // A mode's cross is where the mode is: (1, 0) on [-1.5, 1.5]^2.
    let img = image::open(&with_modes).unwrap().to_rgb8();
    let (x_left, x_right) = (MARGIN + SCATTER_Y_LABEL_AREA, SCATTER_SIZE.0 - MARGIN - 12);
    let x = x_left + ((1.0 + 1.5) / 3.0 * f64::from(x_right - x_left)) as u32;
    let hits = (x - 8..x + 8).flat_map(|xx| (0..SCATTER_SIZE.1).map(move |y| (xx, y))).filter(|&(xx, y)| near(img.get_pixel(xx, y), [214, 39, 40], 30)).count();
    assert!(hits > 4, "a cross near x = 1: {hits} red pixels in its column");
    // Samples spread far wider than the data (an untrained model): the axes widen to show them.
    let wide: Vec<f64> = points.iter().map(|v| v * 8.0).collect();
    write_grid_with(&plain, &wide, &[2], &opts).unwrap();
    let img = image::open(&plain).unwrap().to_rgb8();
    let blue = img.pixels().filter(|p| p.0[2] > 150 && p.0[0] < 150).count();
    assert!(blue > 500, "samples at radius 8 are drawn: {blue} sample pixels");
}

#[test]
fn sequence_panels_have_axes() {
    let dir = tmp("seq");
    let (n, c, l) = (6usize, 2usize, 48usize);
    let values: Vec<f64> = (0..n * c * l).map(|i| ((i % l) as f64 / 5.0 + (i / l) as f64).sin() * (1 + i / (c * l)) as f64).collect();
    let path = dir.join("seq.png");
    write_grid(&path, &values, &[c, l]).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    // 6 panels in 3 columns and 2 rows of 300 x 190 below a title band.
    assert_eq!(img.width(), 3 * 300);
    assert_eq!(img.height(), 36 + 2 * 190);
    // Every panel has tick labels in its left margin (48 px) and below it (24 px).
    for k in 0..n as u32 {
        let (px, py) = ((k % 3) * 300, 36 + (k / 3) * 190);
        let left = ink(&img, (px, px + 44), (py + 20, py + 190 - 30));
        let bottom = ink(&img, (px + 60, px + 290), (py + 190 - 24, py + 190));
        assert!(left > 40 && bottom > 40, "panel {k}: {left} / {bottom} inked pixels in its axis margins");
    }
    // More sequences than panels: the first MAX_SEQUENCE_PANELS are drawn.
    let many: Vec<f64> = (0..100 * l).map(|i| (i as f64 / 3.0).sin()).collect();
    write_grid(&path, &many, &[1, l]).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    let cols = (MAX_SEQUENCE_PANELS as f64).sqrt().ceil() as u32;
    assert_eq!(img.width(), cols * 300);
}

#[test]
fn plot_command_draws_a_run_and_prints_the_paths() {
    let dir = tmp("cli");
    synthetic_log(&dir);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ddpm-train")).args(["plot", "--run"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let printed: Vec<&str> = stdout.lines().collect();
    let expected: Vec<String> = ["loss.png", "lr.png", "eval.png", "nll.png"].iter().map(|n| dir.join(n).display().to_string()).collect();
    assert_eq!(printed, expected);
    assert!(expected.iter().all(|p| Path::new(p).is_file()));

    let empty = tmp("cli-empty");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ddpm-train")).args(["plot", "--run"]).arg(&empty).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&empty.join("metrics.jsonl").display().to_string()), "{stderr}");
}

#[test]
fn training_writes_the_plots_and_a_scatter_plot_with_modes() {
    let out = tmp("train").join("run");
    let text = format!(
        r#"
[run]
out_dir = "{}"
seed = 5

[data]
kind = "toy"
name = "gaussian8"
count = 256

[model]
kind = "mlp"
hidden = 32
num_layers = 2

[diffusion]
timesteps = 20
beta_schedule = "cosine"
objective = "pred_noise"

[train]
steps = 30
batch_size = 32
lr = 1e-3
checkpoint_every = 10
keep_last = 1
sample_every = 30
num_samples = 64
log_every = 1

[sample]
sampler = "ddim"
steps = 5
"#,
        out.display()
    );
    let cfg = ddpm_train::parse_config(&text, "toy.toml", &[]).unwrap();
    ddpm_train::run(&cfg, &ddpm_train::RunOptions::default()).unwrap();
    for name in ["loss.png", "lr.png"] {
        let img = image::open(out.join(name)).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), CHART_SIZE, "{name}");
        assert_chart_axes(&img, name);
    }
    assert!(!out.join("eval.png").exists(), "no [eval], no eval.png");
    let scatter = image::open(out.join("samples/step-0000030.png")).unwrap().to_rgb8();
    assert_eq!((scatter.width(), scatter.height()), SCATTER_SIZE);
    let red = scatter.pixels().filter(|p| near(p, [214, 39, 40], 30)).count();
    assert!(red > 8 * 12, "the trainer passes gaussian8's modes: {red} red pixels");
}
