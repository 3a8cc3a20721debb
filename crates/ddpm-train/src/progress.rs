//! Progress of long work, the same way for every command: on a terminal an indicatif bar (with
//! rate and ETA); otherwise (nohup, CI, a cluster job's log) a plain line every few seconds with
//! the position, rate, message and ETA, so logs show progress before the work ends; nothing when
//! quiet. Lines that must be seen (evaluation results) go through [`Progress::println`], which
//! prints them above the bar or as plain lines.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProgressMode {
    /// Nothing (`--quiet`).
    Quiet,
    /// A bar on a terminal, else a plain line at most every this many seconds (and at the end).
    Auto { plain_every: Duration },
}

impl ProgressMode {
    /// A bar on a terminal, plain lines every `seconds` otherwise; `quiet` shows nothing.
    pub fn new(quiet: bool, seconds: f64) -> Self {
        if quiet { Self::Quiet } else { Self::Auto { plain_every: Duration::from_secs_f64(seconds.max(0.0)) } }
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
}

impl Progress {
    pub fn new(label: &str, total: u64, start_pos: u64, per_unit: f64, unit: &'static str, mode: ProgressMode) -> Self {
        let bar = match mode {
            ProgressMode::Auto { .. } if std::io::stderr().is_terminal() => {
                let b = indicatif::ProgressBar::new(total);
                b.set_style(
                    indicatif::ProgressStyle::with_template(&format!("{label} {{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} ETA {{eta}} {{msg}}"))
                        .expect("a valid template")
                        .progress_chars("=> "),
                );
                b.set_position(start_pos);
                Some(b)
            }
            _ => None,
        };
        Self {
            label: label.to_string(),
            total,
            per_unit,
            unit,
            mode,
            bar,
            plain: Mutex::new(Plain { last: None, message: String::new() }),
            start: Instant::now(),
            start_pos,
            pos: std::sync::atomic::AtomicU64::new(start_pos),
        }
    }

    /// Moves to `pos`; a plain line is printed when the interval has passed, at the first move and
    /// at the end.
    pub fn set_position(&self, pos: u64) {
        self.pos.store(pos, std::sync::atomic::Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_position(pos);
            return;
        }
        let ProgressMode::Auto { plain_every } = self.mode else { return };
        let mut plain = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        let due = plain.last.is_none_or(|t| t.elapsed() >= plain_every) || pos >= self.total;
        if due {
            plain.last = Some(Instant::now());
            eprintln!("{}", self.line(pos, &plain.message));
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
            (None, ProgressMode::Auto { .. }) => eprintln!("{line}"),
            (None, ProgressMode::Quiet) => {}
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
