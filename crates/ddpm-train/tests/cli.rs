//! The `ddpm-train` binary as a user runs it: help, a clear error for a bad config, and a run
//! killed with SIGKILL mid-training that, resumed, ends with the weights of an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ddpm-train"))
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ddpm-train-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn write_config(dir: &Path, steps: usize) -> PathBuf {
    let text = format!(
        r#"
[run]
out_dir = "{}"
seed = 11

[data]
kind = "toy"
name = "gaussian8"
count = 512

[model]
kind = "mlp"
hidden = 32
num_layers = 2

[diffusion]
timesteps = 50
beta_schedule = "cosine"
objective = "pred_noise"

[train]
steps = {steps}
batch_size = 64
lr = 1e-3
checkpoint_every = 25
keep_last = 50
sample_every = 0
log_every = 25
"#,
        dir.join("run").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn help_names_the_commands_and_defaults() {
    let out = bin().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("--config") && text.contains("--resume") && text.contains("--dry-run") && text.contains("sample"), "{text}");
    let out = bin().args(["sample", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--checkpoint") && text.contains("[default: ema]"), "{text}");
    for flag in ["--seeds", "--shard", "--init-noise", "--save-npy", "--out"] {
        assert!(text.contains(flag), "sample --help lacks {flag}: {text}");
    }
    let out = bin().args(["bench", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--iters") && text.contains("[default: 5]"), "{text}");
}

#[test]
fn bench_prints_json_measurements() {
    let dir = tmp("bench");
    let path = write_config(&dir, 10);
    let out = bin().args(["bench", "--json", "--warmup", "1", "--iters", "3", "--config"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["model"], "mlp");
    assert_eq!(report["batch_size"], 64);
    assert_eq!(report["iters"], 3);
    assert!(report["parameters"].as_u64().unwrap() > 1000);
    for key in ["train_step_s", "forward_s", "samples_per_s"] {
        let v = report[key].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.0, "{key} = {v}");
    }
    assert!(report["peak_host_bytes"].as_u64().unwrap() > 1 << 20);
    // Each phase's op classes add up to its total. (The step's median and the phases' medians come
    // from different iterations: on a loaded machine three iterations can differ by 3x, so no
    // timing relation between them is asserted; the throughput is the step's, exactly.)
    let phases = &report["phases"];
    let step = report["train_step_s"].as_f64().unwrap();
    let items_per_s = report["train_items_per_s"].as_f64().unwrap();
    assert!((items_per_s * step - 64.0).abs() < 1e-6, "{items_per_s} items/s for a step of {step} s at batch 64");
    for phase in ["forward", "backward", "optimizer", "ema"] {
        let p = &phases[phase];
        let parts: f64 = ["conv_s", "linear_s", "norm_s", "attention_s", "activation_s", "optimizer_s", "other_s"].iter().map(|k| p[k].as_f64().unwrap()).sum();
        let t = p["total_s"].as_f64().unwrap();
        assert!(t > 0.0 && (parts - t).abs() <= 1e-6 + 1e-3 * t, "{phase}: parts {parts} vs total {t}");
    }
    // The MLP's SiLU runs through our kernel in both directions, and Adam through the fused one.
    assert!(phases["forward"]["activation_s"].as_f64().unwrap() > 0.0, "{phases}");
    assert!(phases["backward"]["activation_s"].as_f64().unwrap() > 0.0, "{phases}");
    assert!(phases["optimizer"]["optimizer_s"].as_f64().unwrap() > 0.0, "{phases}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bench_shows_phases_and_convolutions_and_sweeps() {
    let dir = tmp("bench_sweep");
    let path = dir.join("unet.toml");
    std::fs::write(
        &path,
        "[data]\nkind = \"shapes\"\nimage_size = 8\ncount = 64\n[model]\nkind = \"unet\"\ndim = 8\ndim_mults = [1, 2]\nattn_heads = 1\nattn_dim_head = 8\n[diffusion]\ntimesteps = 10\n[train]\nbatch_size = 2\n",
    )
    .unwrap();
    let out = bin().args(["bench", "--warmup", "1", "--iters", "2", "--config"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for row in ["forward", "backward", "optimizer", "ema", "train step", "no-grad forward", "conv", "norm", "other"] {
        assert!(text.contains(row), "the table lacks {row}: {text}");
    }
    assert!(text.contains("GFLOP per step") && text.contains("our GEMM sustains"), "{text}");
    let out = bin().args(["bench", "--json", "--warmup", "0", "--iters", "1", "--batches", "1,2", "--sizes", "8,16", "--config"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let cases: Vec<(u64, u64)> = rows.iter().map(|r| (r["item_shape"][1].as_u64().unwrap(), r["batch_size"].as_u64().unwrap())).collect();
    assert_eq!(cases, [(8, 1), (8, 2), (16, 1), (16, 2)]);
    for r in &rows {
        let gflop = r["conv_gflop_per_step"].as_f64().unwrap();
        assert!(gflop > 0.0 && r["conv_gflops"].as_f64().unwrap() > 0.0 && r["gemm_peak_gflops"].as_f64().unwrap() > 0.0, "{r}");
    }
    // Four times the pixels, four times the convolution arithmetic.
    let ratio = rows[2]["conv_gflop_per_step"].as_f64().unwrap() / rows[0]["conv_gflop_per_step"].as_f64().unwrap();
    assert!((ratio - 4.0).abs() < 0.05, "{ratio}");
    let out = bin().args(["bench", "--sizes", "8", "--config"]).arg(write_config(&dir, 10)).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--sizes") && err.contains("--batches"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_config_is_reported_with_its_line() {
    let dir = tmp("bad");
    let path = write_config(&dir, 10);
    let text = std::fs::read_to_string(&path).unwrap().replace("lr = 1e-3", "lr = \"fast\"");
    std::fs::write(&path, text).unwrap();
    let out = bin().arg("--config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("config.toml") && err.contains("train.lr"), "{err}");
    let out = bin().args(["--config", "/nonexistent/x.toml"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.toml"));
    std::fs::remove_dir_all(&dir).ok();
}

/// The final checkpoint's model and EMA parameter values.
fn final_weights(run: &Path) -> Vec<f32> {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct Values(Vec<f32>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.extend(p.val().into_data().try_into_vec_as::<f32>().unwrap());
        }
    }
    let dir = run.join("checkpoints/step-0000200");
    let mut v = Values(Vec::new());
    for ema in [false, true] {
        let net = ddpm_models::MlpConfig::new(2).with_hidden(32).with_num_layers(2).init(&burn::tensor::Device::flex()).unwrap();
        ddpm_train::checkpoint::load_weights(&dir, net, ema).unwrap().visit(&mut v);
    }
    v.0
}

#[test]
fn a_killed_run_resumes_to_the_same_weights() {
    let full = tmp("full");
    let cfg = write_config(&full, 200);
    assert!(bin().arg("--config").arg(&cfg).stderr(Stdio::null()).status().unwrap().success());

    let killed = tmp("killed");
    let cfg = write_config(&killed, 200);
    let mut child = bin().arg("--config").arg(&cfg).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    // Kill it once a checkpoint or two exist, well before the end.
    while !killed.join("run/checkpoints/step-0000050").exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.join("run/checkpoints/step-0000200").exists(), "the kill came after the end; the test proves nothing");
    let resumed = bin().arg("--config").arg(&cfg).arg("--resume").stderr(Stdio::null()).status().unwrap();
    assert!(resumed.success());
    let (a, b) = (final_weights(&full.join("run")), final_weights(&killed.join("run")));
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff == 0.0, "the resumed run ends with other weights (max difference {diff})");
    std::fs::remove_dir_all(&full).ok();
    std::fs::remove_dir_all(&killed).ok();
}

#[test]
fn without_a_terminal_long_commands_print_plain_progress_lines() {
    let dir = tmp("plain");
    let cfg = write_config(&dir, 10);
    // stdout is a pipe here, as under nohup, CI or a cluster's job log: the run's log gets plain
    // progress lines, and the dashboard stays off.
    let out = bin().args(["--set", "run.progress_seconds=0", "--config"]).arg(&cfg).output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("train: ")).collect();
    assert_eq!(lines.len(), 10, "one line per step at progress_seconds = 0:\n{log}");
    assert!(lines[0].starts_with("train: 1/10 (10.0%)") && lines[9].starts_with("train: 10/10 (100.0%)"), "{log}");
    assert!(lines.iter().all(|l| l.contains("images/s") && l.contains("ETA") && l.contains("loss")), "{log}");
    let done = log.lines().position(|l| l.starts_with("done:")).expect("a closing line");
    assert!(log.lines().position(|l| l.starts_with("train: ")).unwrap() < done, "progress comes before the run ends");
    // At the default interval (30 s) a short run prints its first and last line only.
    let out = bin().args(["--overwrite", "--config"]).arg(&cfg).output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(log.lines().filter(|l| l.starts_with("train: ")).count(), 2, "{log}");
    // --dashboard plain is the same without a terminal; none and --quiet print no progress.
    let out = bin().args(["--overwrite", "--dashboard", "plain", "--set", "run.progress_seconds=0", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("train: ")).count(), 10);
    for quiet in [["--dashboard", "none"], ["--quiet", "--quiet"]] {
        let args: Vec<&str> = if quiet[0] == "--quiet" { vec!["--quiet"] } else { quiet.to_vec() };
        let out = bin().arg("--overwrite").args(&args).arg("--config").arg(&cfg).output().unwrap();
        assert!(out.status.success());
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!all.contains("train: "), "{args:?}: {all}");
    }
    let out = bin().args(["--overwrite", "--dashboard", "fancy", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("tui"), "the valid values are named");
    // Sampling follows the same rule.
    let ckpt = dir.join("run/checkpoints/step-0000010");
    let out = bin().args(["sample", "--num", "6", "--batch", "2", "--checkpoint"]).arg(&ckpt).arg("--out").arg(dir.join("s")).output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}{}", String::from_utf8_lossy(&out.stderr));
    assert!(log.contains("sampling: 2/6") && log.contains("sampling: 6/6 (100.0%)") && log.contains("samples/s"), "{log}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sample_trajectory_is_a_strip_of_x0_estimates_ending_at_the_samples() {
    let dir = tmp("trajectory");
    let cfg = dir.join("images.toml");
    let text = format!(
        "[run]\nout_dir = \"{}\"\nseed = 2\n[data]\nkind = \"shapes\"\nimage_size = 8\ncount = 32\n[model]\nkind = \"unet\"\ndim = 8\ndim_mults = [1, 2]\nattn_heads = 1\nattn_dim_head = 8\n\
         [diffusion]\ntimesteps = 50\n[train]\nsteps = 4\nbatch_size = 8\ncheckpoint_every = 4\nsample_every = 0\nnum_samples = 4\n",
        dir.join("run").display()
    );
    std::fs::write(&cfg, text).unwrap();
    let out = bin().args(["--quiet", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ckpt = dir.join("run/checkpoints/step-0000004");
    let out = bin()
        .args(["sample", "--quiet", "--num", "6", "--batch", "6", "--sampler", "ddim", "--steps", "12", "--trajectory", "--checkpoint"])
        .arg(&ckpt)
        .arg("--out")
        .arg(dir.join("s"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("trajectory.png"));
    let strip = image::open(dir.join("s/trajectory.png")).unwrap().to_rgb8();
    let sample = image::open(dir.join("s/000000.png")).unwrap().to_rgb8();
    // 4 seeds x 10 steps of tiles enlarged to >= 64 px, 2 px gutters.
    let scale = 64u32.div_ceil(sample.height());
    let tile = sample.height() * scale;
    assert_eq!((strip.width(), strip.height()), (2 + 10 * (tile + 2), 2 + 4 * (tile + 2)));
    // DDIM's last x0 estimate is its sample: the last tile of row 0 is seed 0's image.
    let (x0, y0) = (2 + 9 * (tile + 2), 2);
    let mut worst = 0i32;
    for y in 0..sample.height() {
        for x in 0..sample.width() {
            let (a, b) = (strip.get_pixel(x0 + x * scale, y0 + y * scale), sample.get_pixel(x, y));
            worst = worst.max((0..3).map(|c| (a[c] as i32 - b[c] as i32).abs()).max().unwrap());
        }
    }
    assert!(worst <= 1, "the last column is the sample (max difference {worst})");
    // The first column (the estimate from pure noise) is not the sample.
    let first = strip.get_pixel(2 + scale / 2, 2 + scale / 2);
    let last = strip.get_pixel(x0 + scale / 2, 2 + scale / 2);
    let differs = (0..sample.height()).any(|y| (0..sample.width()).any(|x| strip.get_pixel(2 + x * scale, 2 + y * scale) != strip.get_pixel(x0 + x * scale, y0 + y * scale)));
    assert!(differs, "first {first:?} last {last:?}");
    // From given data there is no trajectory from noise.
    let out = bin().args(["sample", "--quiet", "--num", "1", "--trajectory", "--strength", "0.5", "--from"]).arg(dir.join("s/000000.png")).arg("--checkpoint").arg(&ckpt).arg("--out").arg(dir.join("t")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--trajectory") && err.contains("from noise"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn on_a_terminal_the_run_shows_burn_trains_dashboard() {
    // A pseudo-terminal through util-linux's `script`; without it the test cannot make one.
    if Command::new("script").arg("--version").output().is_err() {
        println!("skipped: `script` (util-linux) is not installed, so no pseudo-terminal can be made");
        return;
    }
    // A container without /dev/pts cannot give `script` a pseudo-terminal either.
    let probe = Command::new("script").args(["-qec", "test -t 1"]).arg("/dev/null").stdin(std::process::Stdio::null()).output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        println!("skipped: `script` could not open a pseudo-terminal here ({probe:?})");
        return;
    }
    let dir = tmp("tui");
    let cfg = write_config(&dir, 60);
    let cfg_text = std::fs::read_to_string(&cfg).unwrap() + "\n[eval]\nevery = 30\nnum_samples = 100\n";
    std::fs::write(&cfg, cfg_text).unwrap();
    let bin_path = env!("CARGO_BIN_EXE_ddpm-train");
    let typescript = dir.join("typescript");
    let line = format!("stty cols 120 rows 40; {bin_path} --config {}", cfg.display());
    let out = Command::new("script").args(["-qec", &line]).arg(&typescript).stdin(std::process::Stdio::null()).output().unwrap();
    let screen = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    assert!(out.status.success(), "{screen}");
    assert!(!screen.contains("panicked"), "{screen}");
    // The dashboard's metric panels (burn-train's LossMetric, LearningRateMetric, IterationSpeedMetric),
    // the alternate screen it draws on, and no plain progress lines.
    for name in ["Loss", "Learning Rate", "Iteration Speed", "\u{1b}[?1049h"] {
        assert!(screen.contains(name), "{name:?} missing from the dashboard:\n{screen}");
    }
    assert!(!screen.contains("train: "), "{screen}");
    // Evaluation results are printed when the dashboard closes.
    assert!(screen.contains("step 30: energy_distance") && screen.contains("step 60: energy_distance"), "{screen}");
    std::fs::remove_dir_all(&dir).ok();
}
