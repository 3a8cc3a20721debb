//! Progress of long work, the same way for every command of ddpm-train and ddpm-eval: on a
//! terminal an indicatif bar (with rate and ETA); otherwise (nohup, CI, a cluster job's log) a
//! plain line every few seconds with the position, rate, message and ETA, so logs show progress
//! before the work ends; nothing when quiet. Lines that must be seen (evaluation results) go
//! through [`Progress::println`], which prints them above the bar or as plain lines.
//!
//! Plain lines go to standard output, where a job's log is (nohup's `nohup.out`, a cluster job's
//! output file), unless the command keeps standard output for its results (ddpm-eval, whose
//! stdout is one result line or JSON object): [`Progress::on_stderr`].

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProgressMode {
    /// Nothing, not even results (`--quiet`).
    Quiet,
    /// No progress; lines that must be seen (results) still printed (`--dashboard none`).
    Hidden,
    /// A bar on a terminal, else a plain line at most every this many seconds (and at the end).
    Auto { plain_every: Duration },
    /// Plain lines even on a terminal (`--dashboard plain`).
    Plain { every: Duration },
}

impl ProgressMode {
    /// A bar on a terminal, plain lines every `seconds` otherwise; `quiet` shows nothing.
    pub fn new(quiet: bool, seconds: f64) -> Self {
        if quiet { Self::Quiet } else { Self::Auto { plain_every: Duration::from_secs_f64(seconds.max(0.0)) } }
    }

    fn plain_every(self) -> Option<Duration> {
        match self {
            Self::Auto { plain_every } => Some(plain_every),
            Self::Plain { every } => Some(every),
            Self::Quiet | Self::Hidden => None,
        }
    }
}

struct Plain {
    last: Option<Instant>,
    message: String,
}

/// One piece of long work: `total` units (steps, samples, items), `per_unit` items each (for the
/// rate, e.g. images per training step).
pub struct Progress {
    label: String,
    total: u64,
    per_unit: f64,
    unit: &'static str,
    mode: ProgressMode,
    bar: Option<indicatif::ProgressBar>,
    plain: Mutex<Plain>,
    start: Instant,
    start_pos: u64,
    pos: std::sync::atomic::AtomicU64,
    stdout: bool,
}

impl Progress {
    /// Progress of `total` units from `start_pos`. Its plain lines go to standard output; the bar
    /// (drawn on standard error) is shown only when both streams are terminals, so that a run
    /// whose output goes to a file (`> log`) writes its progress into that file.
    pub fn new(label: &str, total: u64, start_pos: u64, per_unit: f64, unit: &'static str, mode: ProgressMode) -> Self {
        let interactive = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        Self {
            bar: Self::bar(label, total, start_pos, mode, interactive),
            label: label.to_string(),
            total,
            per_unit,
            unit,
            mode,
            plain: Mutex::new(Plain { last: None, message: String::new() }),
            start: Instant::now(),
            start_pos,
            pos: std::sync::atomic::AtomicU64::new(start_pos),
            stdout: true,
        }
    }

    /// Plain lines on standard error: for commands whose standard output is their result. The
    /// bar then depends on standard error alone.
    pub fn on_stderr(mut self) -> Self {
        self.stdout = false;
        if self.bar.is_none() {
            self.bar = Self::bar(&self.label, self.total, self.start_pos, self.mode, std::io::stderr().is_terminal());
        }
        self
    }

    fn bar(label: &str, total: u64, start_pos: u64, mode: ProgressMode, interactive: bool) -> Option<indicatif::ProgressBar> {
        if !(interactive && matches!(mode, ProgressMode::Auto { .. })) {
            return None;
        }
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(&format!("{label} {{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} ETA {{eta}} {{msg}}"))
                .expect("a valid template")
                .progress_chars("=> "),
        );
        b.set_position(start_pos);
        Some(b)
    }

    fn emit(&self, line: &str) {
        // A closed pipe must not end the work: progress is best effort.
        let _ = if self.stdout {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}").and_then(|_| out.flush())
        } else {
            writeln!(std::io::stderr().lock(), "{line}")
        };
    }

    /// Moves to `pos`; a plain line is printed when the interval has passed, at the first move and
    /// at the end.
    pub fn set_position(&self, pos: u64) {
        self.pos.store(pos, std::sync::atomic::Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_position(pos);
            return;
        }
        let Some(plain_every) = self.mode.plain_every() else { return };
        let mut plain = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        let due = plain.last.is_none_or(|t| t.elapsed() >= plain_every) || pos >= self.total;
        if due {
            plain.last = Some(Instant::now());
            self.emit(&self.line(pos, &plain.message));
        }
    }

    /// Advances by `n`.
    pub fn inc(&self, n: u64) {
        self.set_position(self.pos.load(std::sync::atomic::Ordering::Relaxed) + n);
    }

    /// The message shown after the numbers (e.g. the loss).
    pub fn set_message(&self, message: String) {
        match &self.bar {
            Some(b) => b.set_message(message),
            None => self.plain.lock().unwrap_or_else(|e| e.into_inner()).message = message,
        }
    }

    /// A line that must be seen (not in quiet mode): above the bar, or plain.
    pub fn println(&self, line: String) {
        match (&self.bar, self.mode) {
            (Some(b), _) => b.println(line),
            (None, ProgressMode::Quiet) => {}
            (None, _) => self.emit(&line),
        }
    }

    /// Ends the bar (its last state stays on the terminal).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }

    /// `label: 120/1500 steps (8.0%), 185.3 images/s, elapsed 0:00:12, ETA 0:02:10, loss 0.0523`.
    fn line(&self, pos: u64, message: &str) -> String {
        let elapsed = self.start.elapsed().as_secs_f64();
        let done = pos.saturating_sub(self.start_pos) as f64;
        let rate = if elapsed > 0.0 { done / elapsed } else { 0.0 };
        let eta = if rate > 0.0 { format!("ETA {}", clock(self.total.saturating_sub(pos) as f64 / rate)) } else { "ETA ?".into() };
        let pct = if self.total > 0 { 100.0 * pos as f64 / self.total as f64 } else { 100.0 };
        let mut line = format!(
            "{}: {pos}/{} ({pct:.1}%), {:.1} {}/s, elapsed {}, {eta}",
            self.label,
            self.total,
            rate * self.per_unit,
            self.unit,
            clock(elapsed)
        );
        if !message.is_empty() {
            line.push_str(", ");
            line.push_str(message);
        }
        line
    }
}

/// Seconds as `h:mm:ss`.
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Sends diagnostics (`tracing` events: skipped files, recovered run folders, failed step outputs)
/// to standard error, filtered by `RUST_LOG` (default `info`; e.g. `RUST_LOG=warn` keeps only
/// warnings, `RUST_LOG=info,ddpm_train=debug` more). Call once, at the start of a binary; a second
/// call changes nothing.
pub fn init_diagnostics() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref()).unwrap_or_else(|why| {
        eprintln!("warning: {why}; showing `info`");
        log_filter(None).expect("the default filter parses")
    });
    let output = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).without_time().with_target(false).finish();
    let _ = output.with(filter).try_init();
}

const LOG_DEFAULT: &str = "info";

/// The diagnostics filter a `RUST_LOG` value asks for: comma-separated `LEVEL` or `target=LEVEL`
/// directives (a target matches its module path and everything under it), `info` when unset or
/// empty. Span and field filters (`target[span{field}]`) are not supported: they would need
/// tracing-subscriber's `env-filter` (a regex DFA builder in every build) for spans the binaries do
/// not have.
pub fn log_filter(rust_log: Option<&str>) -> Result<tracing_subscriber::filter::Targets, String> {
    let spec = rust_log.map(str::trim).filter(|s| !s.is_empty()).unwrap_or(LOG_DEFAULT);
    spec.parse().map_err(|e| {
        format!("RUST_LOG=`{spec}` is not a log filter ({e}): write a level or `target=level` directives separated by commas, e.g. `RUST_LOG=warn` or `RUST_LOG=info,ddpm_train=debug` (levels: off, error, warn, info, debug, trace)")
    })
}
