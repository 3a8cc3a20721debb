//! Plots of a run with axes, ticks, labels and titles, drawn with
//! [plotters](https://crates.io/crates/plotters) into an RGB buffer and written as PNG.
//!
//! From a run folder's `metrics.jsonl` ([`write_run_plots`]; `ddpm-train plot --run DIR`; the
//! trainer at every checkpoint and at the end of a run):
//!
//! - `loss.png`: the training loss of every logged step (raw values, faint) with its centred moving
//!   average over it (a window of about a thirtieth of the logged steps, [`smoothing_window`]);
//!   x = step, y on a log scale when the raw values span at least a decade (a factor of 10).
//! - `lr.png`: the learning rate per logged step.
//! - `eval.png`, when the run has evaluation lines (`[eval]`, see
//!   [`crate::eval_plan::metrics_line`]): one panel per metric (`fid`, `fld`, or the toy metrics
//!   `energy_distance`, `near_mode_share`, `modes_hit`), each against the step.
//! - `nll.png`, when the log holds NLL results: lines with a `step` and either `"nll": {"bits_per_dim":
//!   ..}` (a `ddpm-train nll --json` report), `"nll": number` or a top-level `"bits_per_dim"`. Nothing in
//!   ddpm-train writes such lines into a run's log today; a script that appends them gets the plot.
//!
//! The log may be in the middle of being written (a run still going, or killed): lines that are not
//! JSON objects (the last one cut short) are skipped, and so are `null` values (the trainer writes a
//! non-finite number as `null`). Each picture is written to a temporary name and renamed, so a reader
//! never sees half a PNG.
//!
//! Text is drawn with DejaVu Sans (Bitstream Vera licence, `assets/DejaVuSans-LICENSE.txt`), compiled
//! into the binary and registered as plotters' `sans-serif` family, so no system font is needed.
//! [`crate::grid`] uses the same helpers for its 2-D scatter plots and sequence panels.

use std::path::{Path, PathBuf};

use image::RgbImage;
use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::error::{Result, TrainError};

/// DejaVu Sans 2.37 (Debian's `fonts-dejavu-core`), the font of every plot's text.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The font family every plot uses (the bundled font is registered under this name).
pub(crate) const SANS: &str = "sans-serif";

/// Width and height of `loss.png` and `lr.png` (and of `nll.png`).
pub const CHART_SIZE: (u32, u32) = (800, 480);
/// Outer margin of a chart, in pixels.
pub const MARGIN: u32 = 12;
/// Width of the area left of a chart's plotting area that holds the y tick labels and the y label.
pub const Y_LABEL_AREA: u32 = 84;
/// Height of the area below a chart's plotting area that holds the x tick labels and the x label.
pub const X_LABEL_AREA: u32 = 52;
/// Height of one panel of `eval.png`, below its title band.
pub const EVAL_PANEL_HEIGHT: u32 = 300;
/// Height of the title band at the top of `eval.png`.
const EVAL_TITLE_HEIGHT: u32 = 40;

pub(crate) type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Colours of successive series (matplotlib's "tab10").
pub(crate) const COLOURS: [RGBColor; 6] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40), RGBColor(148, 103, 189), RGBColor(140, 86, 75)];

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        assert!(plotters::style::register_font(SANS, FontStyle::Normal, FONT).is_ok(), "the bundled DejaVu Sans parses");
    });
}

/// Draws with `draw` on a white `size` canvas and returns the picture.
pub(crate) fn render(size: (u32, u32), draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> DrawResult) -> std::result::Result<RgbImage, String> {
    register_font();
    let mut buf = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(RgbImage::from_raw(size.0, size.1, buf).expect("the buffer holds width x height RGB pixels"))
}

/// Writes `img` as a PNG through a temporary name in the same folder (unique to this process, so a
/// `ddpm-train plot` beside a training run does not collide with it) and a rename.
pub(crate) fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    img.save_with_format(&tmp, image::ImageFormat::Png).map_err(|e| TrainError::Io { path: tmp.clone(), message: e.to_string() })?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        TrainError::Io { path: path.to_path_buf(), message: e.to_string() }
    })
}

/// Renders and saves; a drawing failure is an error naming `path`.
pub(crate) fn draw_png(path: &Path, size: (u32, u32), draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> DrawResult) -> Result<()> {
    let img = render(size, draw).map_err(|message| TrainError::Io { path: path.to_path_buf(), message: format!("drawing the plot: {message}") })?;
    save_png(&img, path)
}

/// One logged training step; `None` where the log has `null` (or nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainPoint {
    pub step: f64,
    pub loss: Option<f64>,
    pub loss_ema: Option<f64>,
    pub lr: Option<f64>,
    pub grad_norm: Option<f64>,
}

/// What a run's `metrics.jsonl` holds, as series over the step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Training lines (those with `step` and `loss`), in log order.
    pub train: Vec<TrainPoint>,
    /// Evaluation metrics by name, in the order first seen: `(step, value)` pairs.
    pub eval: Vec<(String, Vec<(f64, f64)>)>,
    /// NLL bounds in bits/dim: `(step, value)`.
    pub nll: Vec<(f64, f64)>,
    /// Non-empty lines read.
    pub lines: usize,
    /// Lines that were not JSON objects with a `step` (e.g. the last line cut short while a run writes).
    pub skipped_lines: usize,
}

fn finite(v: Option<&serde_json::Value>) -> Option<f64> {
    v.and_then(serde_json::Value::as_f64).filter(|x| x.is_finite())
}

impl Metrics {
    /// Reads `text`, the contents of a metrics log.
    pub fn parse(text: &str) -> Self {
        let mut m = Metrics::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            m.lines += 1;
            let Some(step) = serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| Some((finite(v.get("step"))?, v))) else {
                m.skipped_lines += 1;
                continue;
            };
            let (step, v) = step;
            if v.get("loss").is_some() {
                m.train.push(TrainPoint {
                    step,
                    loss: finite(v.get("loss")),
                    loss_ema: finite(v.get("loss_ema")),
                    lr: finite(v.get("lr")),
                    grad_norm: finite(v.get("grad_norm")),
                });
            }
            if let Some(e) = v.get("eval") {
                let metric = e.get("metric").and_then(serde_json::Value::as_str).unwrap_or("eval").to_string();
                if let Some(value) = finite(e.get("value")) {
                    m.push_eval(&metric, step, value);
                }
                if let Some(details) = e.get("details").and_then(serde_json::Value::as_object) {
                    for (name, value) in details {
                        if *name != metric
                            && let Some(value) = finite(Some(value))
                        {
                            m.push_eval(name, step, value);
                        }
                    }
                }
            }
            let nll = match v.get("nll") {
                Some(n) if n.is_object() => finite(n.get("bits_per_dim")),
                Some(n) => finite(Some(n)),
                None => finite(v.get("bits_per_dim")),
            };
            if let Some(bpd) = nll {
                m.nll.push((step, bpd));
            }
        }
        m
    }

    /// Reads the log at `path`; a missing file is an error that names it.
    pub fn read(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Self::parse(&String::from_utf8_lossy(&bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(TrainError::Io {
                path: path.to_path_buf(),
                message: "no such file: not a run folder, or its run has not logged a step yet (the plots are drawn from the run's metrics.jsonl)".into(),
            }),
            Err(e) => Err(TrainError::Io { path: path.to_path_buf(), message: e.to_string() }),
        }
    }

    fn push_eval(&mut self, name: &str, step: f64, value: f64) {
        match self.eval.iter_mut().find(|(n, _)| n == name) {
            Some((_, points)) => points.push((step, value)),
            None => self.eval.push((name.to_string(), vec![(step, value)])),
        }
    }
}

/// Draws the plots of the run in `run_dir` from its `metrics.jsonl` into the same folder:
/// `loss.png` and `lr.png` always, `eval.png` and `nll.png` when the log has such lines. Returns
/// the paths written. Errors name the log when it is missing or holds no training line.
pub fn write_run_plots(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let log = run_dir.join(crate::run_dir::METRICS);
    let metrics = Metrics::read(&log)?;
    if metrics.train.is_empty() {
        return Err(TrainError::Data {
            path: log,
            message: format!(
                "no training lines (JSON objects with `step` and `loss`) among its {} lines; nothing to plot yet",
                metrics.lines
            ),
        });
    }
    write_plots(&metrics, run_dir, &run_name(run_dir))
}

/// [`write_run_plots`] for the trainer: a run with no log or no training line yet has nothing to
/// draw, which is not an error.
pub fn refresh_run_plots(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let log = run_dir.join(crate::run_dir::METRICS);
    if !log.is_file() {
        return Ok(Vec::new());
    }
    let metrics = Metrics::read(&log)?;
    if metrics.train.is_empty() {
        return Ok(Vec::new());
    }
    write_plots(&metrics, run_dir, &run_name(run_dir))
}

fn run_name(run_dir: &Path) -> String {
    let dir = std::fs::canonicalize(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Writes the plots of `metrics` into `dir`; `name` goes into the titles.
pub fn write_plots(metrics: &Metrics, dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let suffix = if name.is_empty() { String::new() } else { format!(" — {name}") };
    if metrics.train.iter().any(|p| p.loss.is_some()) {
        let path = dir.join("loss.png");
        write_loss_plot(metrics, &path, name)?;
        written.push(path);
    }
    let lr: Vec<(f64, f64)> = metrics.train.iter().filter_map(|p| Some((p.step, p.lr?))).collect();
    if !lr.is_empty() {
        let chart = LineChart {
            title: format!("learning rate{suffix}"),
            y_desc: "learning rate".into(),
            series: vec![Series::line("learning rate", lr, COLOURS[0], 2)],
            ..LineChart::default()
        };
        let path = dir.join("lr.png");
        draw_png(&path, CHART_SIZE, |root| draw_line_chart(root, &chart))?;
        written.push(path);
    }
    if !metrics.eval.is_empty() {
        let charts: Vec<LineChart> = metrics
            .eval
            .iter()
            .enumerate()
            .map(|(i, (metric, points))| LineChart {
                title: metric.clone(),
                title_size: 18,
                y_desc: metric.clone(),
                series: vec![Series { markers: true, ..Series::line(metric, points.clone(), COLOURS[i % COLOURS.len()], 2) }],
                ..LineChart::default()
            })
            .collect();
        let height = EVAL_TITLE_HEIGHT + EVAL_PANEL_HEIGHT * charts.len() as u32;
        let path = dir.join("eval.png");
        let title = format!("evaluation during training{suffix}");
        draw_png(&path, (CHART_SIZE.0, height), |root| {
            let (top, rest) = root.split_vertically(EVAL_TITLE_HEIGHT);
            top.draw(&Text::new(title.as_str(), (MARGIN as i32, 10), (SANS, 22).into_font()))?;
            for (panel, chart) in rest.split_evenly((charts.len(), 1)).iter().zip(&charts) {
                draw_line_chart(panel, chart)?;
            }
            Ok(())
        })?;
        written.push(path);
    }
    if !metrics.nll.is_empty() {
        let chart = LineChart {
            title: format!("NLL bound{suffix}"),
            y_desc: "bits/dim".into(),
            series: vec![Series { markers: true, ..Series::line("NLL bound (bits/dim)", metrics.nll.clone(), COLOURS[3], 2) }],
            ..LineChart::default()
        };
        let path = dir.join("nll.png");
        draw_png(&path, CHART_SIZE, |root| draw_line_chart(root, &chart))?;
        written.push(path);
    }
    Ok(written)
}

/// Draws the training loss of `metrics` as `path` (`name` goes into the title); nothing when no
/// training line has a loss.
pub fn write_loss_plot(metrics: &Metrics, path: &Path, name: &str) -> Result<()> {
    let suffix = if name.is_empty() { String::new() } else { format!(" — {name}") };
    match loss_chart(&metrics.train, &suffix) {
        Some(chart) => draw_png(path, CHART_SIZE, |root| draw_line_chart(root, &chart)),
        None => Ok(()),
    }
}

/// The loss chart of `train`: the raw logged losses faint, their centred moving average over
/// them, log y when the raw values span a decade.
fn loss_chart(train: &[TrainPoint], suffix: &str) -> Option<LineChart> {
    let raw: Vec<(f64, f64)> = train.iter().filter_map(|p| Some((p.step, p.loss?))).collect();
    if raw.is_empty() {
        return None;
    }
    let window = smoothing_window(raw.len());
    let smooth = moving_average(&raw, window);
    let (lo, hi) = raw.iter().map(|p| p.1).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let log_y = lo > 0.0 && hi / lo >= 10.0;
    let (step, last) = *smooth.last().expect("as many points as the raw losses");
    let title = format!("training loss{suffix} (step {step}: {})", tick_label(last));
    let faint = RGBAColor(COLOURS[0].0, COLOURS[0].1, COLOURS[0].2, 0.3);
    let smooth_label = if window > 1 { format!("moving average of {window} logged steps") } else { "moving average".to_string() };
    Some(LineChart {
        title,
        y_desc: if log_y { "loss (log scale)".into() } else { "loss".into() },
        series: vec![
            Series { colour: faint, ..Series::line("loss at each logged step", decimate_envelope(&raw, 1600), COLOURS[0], 1) },
            Series::line(&smooth_label, decimate_mean(&smooth, 1600), RGBColor(8, 48, 107), 2),
        ],
        log_y,
        legend: true,
        ..LineChart::default()
    })
}

/// The moving-average window (in logged points, odd) for `n` points: about a thirtieth of the run,
/// at least 5 points where there are that many.
pub fn smoothing_window(n: usize) -> usize {
    let w = (n / 30).max(n.min(5)).max(1);
    if w.is_multiple_of(2) { w + 1 } else { w }
}

/// The centred moving average of `points`' values over `window` points (fewer at the ends).
pub fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let half = window / 2;
    let mut prefix = Vec::with_capacity(points.len() + 1);
    prefix.push(0.0);
    for p in points {
        prefix.push(prefix.last().expect("starts with 0") + p.1);
    }
    (0..points.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(half), (i + half + 1).min(points.len()));
            (points[i].0, (prefix[b] - prefix[a]) / (b - a) as f64)
        })
        .collect()
}

/// At most `buckets` x 2 points of `points` that keep their envelope: the lowest and the highest
/// of each run of consecutive points, in order.
fn decimate_envelope(points: &[(f64, f64)], buckets: usize) -> Vec<(f64, f64)> {
    if points.len() <= 2 * buckets {
        return points.to_vec();
    }
    let per = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(2 * buckets);
    for chunk in points.chunks(per) {
        let lo = chunk.iter().enumerate().min_by(|a, b| a.1.1.total_cmp(&b.1.1)).expect("chunks are not empty");
        let hi = chunk.iter().enumerate().max_by(|a, b| a.1.1.total_cmp(&b.1.1)).expect("chunks are not empty");
        let (first, second) = if lo.0 <= hi.0 { (lo.1, hi.1) } else { (hi.1, lo.1) };
        out.push(*first);
        if lo.0 != hi.0 {
            out.push(*second);
        }
    }
    out
}

/// At most `buckets` points of `points`: the mean of each run of consecutive points.
fn decimate_mean(points: &[(f64, f64)], buckets: usize) -> Vec<(f64, f64)> {
    if points.len() <= buckets {
        return points.to_vec();
    }
    let per = points.len().div_ceil(buckets);
    points
        .chunks(per)
        .map(|c| {
            let n = c.len() as f64;
            (c.iter().map(|p| p.0).sum::<f64>() / n, c.iter().map(|p| p.1).sum::<f64>() / n)
        })
        .collect()
}

/// A number as a short tick label: up to 4 significant digits, scientific notation for very large
/// or small magnitudes.
pub(crate) fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.2e}");
        let (mantissa, exp) = s.split_once('e').expect("scientific notation has an exponent");
        return format!("{}e{exp}", trim_zeros(mantissa));
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    trim_zeros(&format!("{v:.decimals$}"))
}

/// Tick labels of a linear axis whose values reach `max_abs`: all in scientific notation when it is
/// below 0.01 or from 1e5 up (so one axis does not mix `0.001` and `8e-4`), else as [`tick_label`].
pub(crate) fn axis_label(v: f64, max_abs: f64) -> String {
    if v != 0.0 && !(1e-2..1e5).contains(&max_abs) {
        let s = format!("{v:.2e}");
        let (mantissa, exp) = s.split_once('e').expect("scientific notation has an exponent");
        return format!("{}e{exp}", trim_zeros(mantissa));
    }
    tick_label(v)
}

/// A step count as a tick label: `1500`, `25k`, `1.2M`.
pub(crate) fn step_label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim_zeros(&format!("{:.2}", v / 1e6)))
    } else if a >= 1e4 {
        format!("{}k", trim_zeros(&format!("{:.1}", v / 1e3)))
    } else {
        trim_zeros(&format!("{v:.1}"))
    }
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s.to_string() }
}

/// A range that holds `values` with a little room, never empty.
pub(crate) fn padded_range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span <= f64::EPSILON * hi.abs().max(1.0) {
        let d = if lo.abs() > 0.0 { lo.abs() * 0.1 } else { 1.0 };
        return (lo - d, hi + d);
    }
    (lo - pad * span, hi + pad * span)
}

/// One line of a chart.
pub(crate) struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub colour: RGBAColor,
    pub width: u32,
    /// Also a dot at every point (sparse series such as evaluations).
    pub markers: bool,
}

impl Series {
    pub fn line(label: &str, points: Vec<(f64, f64)>, colour: RGBColor, width: u32) -> Self {
        Series { label: label.to_string(), points, colour: colour.to_rgba(), width, markers: false }
    }
}

/// A chart of lines over the step.
pub(crate) struct LineChart {
    pub title: String,
    pub title_size: u32,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    pub log_y: bool,
    /// Draw a legend of the series' labels.
    pub legend: bool,
}

impl Default for LineChart {
    fn default() -> Self {
        LineChart { title: String::new(), title_size: 22, x_desc: "step".into(), y_desc: String::new(), series: Vec::new(), log_y: false, legend: false }
    }
}

/// Draws `c` on `area`: title, axes with ticks and labels, the series, a legend if asked.
pub(crate) fn draw_line_chart(area: &DrawingArea<BitMapBackend<'_>, Shift>, c: &LineChart) -> DrawResult {
    let points = || c.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = padded_range(points().map(|p| p.0), 0.0);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&c.title, (SANS, c.title_size))
        .margin(MARGIN)
        .margin_right(MARGIN + 16)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA);
    if c.log_y {
        // Drawn in log10 space with ticks at 1-2-5 (or every digit, within a decade or so) times
        // powers of ten: plotters' own log axis labels powers of ten only, which leaves a loss
        // that spans one decade with a single number on its axis.
        let (lo, hi) = points().map(|p| p.1).filter(|v| *v > 0.0).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        let (l0, l1) = ((lo / 1.25).log10(), (hi * 1.25).log10());
        let chart = builder.build_cartesian_2d(x0..x1, LogTicks { axis: (l0..l1).into(), ticks: log_ticks(l0, l1) })?;
        fill_line_chart(chart, c, &|v| tick_label(10f64.powf(*v)), f64::log10)
    } else {
        let (y0, y1) = padded_range(points().map(|p| p.1), 0.05);
        let chart = builder.build_cartesian_2d(x0..x1, y0..y1)?;
        let max_abs = y0.abs().max(y1.abs());
        fill_line_chart(chart, c, &|v| axis_label(*v, max_abs), |y| y)
    }
}

/// A linear axis of log10 values whose labelled ticks are [`log_ticks`].
struct LogTicks {
    axis: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for LogTicks {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.axis.map(value, limit)
    }
    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.axis.range()
    }
}

/// Tick positions (log10 values) between `l0` and `l1` at `m * 10^k`: every digit m when the axis
/// spans at most a decade, m in {1, 2, 3, 5} up to two and a half, {1, 2, 5} up to four, m = 1 beyond.
pub(crate) fn log_ticks(l0: f64, l1: f64) -> Vec<f64> {
    let span = l1 - l0;
    let mantissas: &[f64] = match span {
        s if s <= 1.0 => &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        s if s <= 2.5 => &[1.0, 2.0, 3.0, 5.0],
        s if s <= 4.0 => &[1.0, 2.0, 5.0],
        _ => &[1.0],
    };
    let mut ticks = Vec::new();
    for k in (l0.floor() as i32)..=(l1.ceil() as i32) {
        for &m in mantissas {
            let t = (m * 10f64.powi(k)).log10();
            if (l0..=l1).contains(&t) {
                ticks.push(t);
            }
        }
    }
    ticks
}

fn fill_line_chart<'a, 'b: 'a, Y>(
    mut chart: ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, Y>>,
    c: &LineChart,
    y_label: &dyn Fn(&f64) -> String,
    to_axis: fn(f64) -> f64,
) -> DrawResult
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(c.x_desc.as_str())
        .y_desc(c.y_desc.as_str())
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| step_label(*v))
        .y_label_formatter(y_label)
        .label_style((SANS, 14))
        .axis_desc_style((SANS, 16))
        .light_line_style(RGBColor(0, 0, 0).mix(0.04))
        .bold_line_style(RGBColor(0, 0, 0).mix(0.12))
        .draw()?;
    let keep = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite() && (!c.log_y || p.1 > 0.0);
    for s in &c.series {
        let colour = s.colour;
        let style = ShapeStyle { color: colour, filled: false, stroke_width: s.width };
        let points: Vec<(f64, f64)> = s.points.iter().copied().filter(keep).map(|(x, y)| (x, to_axis(y))).collect();
        let legend_style = ShapeStyle { color: RGBAColor(colour.0, colour.1, colour.2, 1.0), filled: false, stroke_width: s.width.max(2) };
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], legend_style));
        if s.markers {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
        }
    }
    if c.legend {
        draw_legend(&mut chart)?;
    }
    Ok(())
}

/// The legend of every chart: upper right, on a translucent white box.
pub(crate) fn draw_legend<'a, 'b: 'a, X: Ranged, Y: Ranged>(chart: &mut ChartContext<'a, BitMapBackend<'b>, Cartesian2d<X, Y>>) -> DrawResult {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((SANS, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(0, 0, 0).mix(0.4))
        .draw()?;
    Ok(())
}
