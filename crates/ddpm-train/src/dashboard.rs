//! What a training run shows while it runs (`--dashboard`).
//!
//! - `tui`: burn-train's terminal dashboard, fed by burn-train's own metrics (`LossMetric`,
//!   `LearningRateMetric`, `IterationSpeedMetric`) and the in-training evaluations as validation
//!   metrics; its `q` stops the run after a checkpoint, so `--resume` continues it.
//! - `plain`: one progress line every `run.progress_seconds` (step, loss, images/s, ETA).
//! - `none`: no progress; evaluation results are still printed.
//! - `auto` (default): the dashboard when standard output is a terminal, plain lines otherwise
//!   (nohup, CI, a cluster job), so logs show progress before the run ends.
//!
//! `--quiet` silences all of it. Evaluation lines are printed as they come (above the bar, or as
//! plain lines); under the dashboard, which owns the screen, they are printed when it closes.

use std::io::IsTerminal;

use burn::tensor::Device;

use crate::progress::{Progress, ProgressMode};

/// How a training run shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Dashboard {
    /// burn-train's dashboard on a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// burn-train's terminal dashboard (loss, learning rate, iteration speed, evaluations).
    Tui,
    /// A plain progress line every `run.progress_seconds`, even on a terminal.
    Plain,
    /// No progress output; evaluation results are still printed.
    None,
}

impl Dashboard {
    /// Whether this build has burn-train's dashboard (the `dashboard` feature).
    pub const AVAILABLE: bool = cfg!(feature = "dashboard");

    /// The dashboard when asked for (or, for `auto`, when standard output is a terminal and the
    /// build has one).
    fn wants_tui(self) -> bool {
        match self {
            Self::Tui => {
                let terminal = std::io::stdout().is_terminal();
                if !Self::AVAILABLE {
                    tracing::warn!("this build has no dashboard (the `dashboard` feature of ddpm-train is off); printing plain progress lines instead");
                } else if !terminal {
                    tracing::warn!("--dashboard tui needs a terminal on standard output; printing plain progress lines instead");
                }
                terminal && Self::AVAILABLE
            }
            Self::Auto => Self::AVAILABLE && std::io::stdout().is_terminal(),
            Self::Plain | Self::None => false,
        }
    }
}

/// The progress display of one training run.
pub struct TrainView {
    progress: Progress,
    #[cfg(feature = "dashboard")]
    tui: Option<tui::Tui>,
    /// Lines held back while the dashboard owns the screen.
    held: std::sync::Mutex<Vec<String>>,
}

impl TrainView {
    /// A view of `total` steps from `start`, `images_per_step` items each; `quiet` shows nothing,
    /// `plain_seconds` spaces plain lines. `device` holds the metric tensors of the dashboard.
    pub fn new(dashboard: Dashboard, quiet: bool, plain_seconds: f64, total: usize, start: usize, images_per_step: f64, device: &Device) -> Self {
        let every = std::time::Duration::from_secs_f64(plain_seconds.max(0.0));
        let tui = !quiet && dashboard.wants_tui();
        let mode = match dashboard {
            _ if quiet => ProgressMode::Quiet,
            _ if tui => ProgressMode::Hidden,
            Dashboard::None => ProgressMode::Hidden,
            Dashboard::Plain | Dashboard::Tui => ProgressMode::Plain { every },
            Dashboard::Auto => ProgressMode::Auto { plain_every: every },
        };
        #[cfg(not(feature = "dashboard"))]
        let _ = device;
        Self {
            progress: Progress::new("train", total as u64, start as u64, images_per_step, "images", mode),
            #[cfg(feature = "dashboard")]
            tui: tui.then(|| tui::Tui::new(total, device)),
            held: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Step `step` done, with its loss, the smoothed loss and the learning rate it used.
    pub fn step(&mut self, step: usize, loss: f64, smoothed: f64, lr: f64) {
        self.progress.set_message(format!("loss {smoothed:.4}"));
        self.progress.set_position(step as u64);
        #[cfg(feature = "dashboard")]
        if let Some(t) = &mut self.tui {
            t.step(step, loss, lr);
        }
        #[cfg(not(feature = "dashboard"))]
        let _ = (loss, lr);
    }

    /// An in-training evaluation: shown on the dashboard and printed as `line`.
    pub fn evaluation(&mut self, metric: &str, value: f64, line: String) {
        #[cfg(feature = "dashboard")]
        if let Some(t) = &mut self.tui {
            t.evaluation(metric, value);
            self.held.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            return;
        }
        let _ = (metric, value);
        self.progress.println(line);
    }

    /// Whether the person watching asked the run to stop (the dashboard's `q`).
    pub fn stop_requested(&self) -> bool {
        #[cfg(feature = "dashboard")]
        if let Some(t) = &self.tui {
            return t.interrupter.should_stop();
        }
        false
    }

    /// Ends the display; lines held back by the dashboard are printed now.
    pub fn finish(&mut self) {
        self.progress.finish();
        #[cfg(feature = "dashboard")]
        if let Some(t) = self.tui.take() {
            t.close();
        }
        for line in std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner())) {
            self.progress.println(line);
        }
    }
}

impl Drop for TrainView {
    fn drop(&mut self) {
        // A run that ends with an error closes the dashboard too, so the terminal is restored
        // before the error is printed.
        self.finish();
    }
}

#[cfg(feature = "dashboard")]
mod tui {
    use std::collections::HashMap;
    use std::sync::Arc;

    use burn::data::dataloader::Progress;
    use burn::tensor::{Device, Tensor};
    use burn::train::Interrupter;
    use burn::train::metric::{
        IterationSpeedMetric, LearningRateMetric, LossInput, LossMetric, Metric, MetricAttributes, MetricDefinition, MetricEntry, MetricId, MetricMetadata, Numeric, NumericAttributes,
        NumericEntry, SerializedEntry,
    };
    use burn::train::renderer::tui::TuiMetricsRendererWrapper;
    use burn::train::renderer::{MetricState, MetricsRenderer};

    /// burn-train's dashboard, fed step by step by the command's own loop.
    pub(super) struct Tui {
        renderer: Box<dyn MetricsRenderer>,
        pub(super) interrupter: Interrupter,
        loss: (MetricId, LossMetric),
        lr: (MetricId, LearningRateMetric),
        speed: (MetricId, IterationSpeedMetric),
        evaluations: HashMap<String, MetricId>,
        total: usize,
        steps_here: usize,
        device: Device,
    }

    fn register<Me: Metric>(renderer: &mut dyn MetricsRenderer, metric: Me) -> (MetricId, Me) {
        let id = MetricId::new(Arc::new(metric.name().to_string()));
        renderer.register_metric(MetricDefinition::new(id.clone(), &metric));
        (id, metric)
    }

    impl Tui {
        pub(super) fn new(total: usize, device: &Device) -> Self {
            let interrupter = Interrupter::new();
            let mut renderer: Box<dyn MetricsRenderer> = Box::new(TuiMetricsRendererWrapper::new(interrupter.clone(), None));
            let loss = register(renderer.as_mut(), LossMetric::new());
            let lr = register(renderer.as_mut(), LearningRateMetric::new());
            let speed = register(renderer.as_mut(), IterationSpeedMetric::new());
            // One "epoch" of `total` steps; the dashboard counts epochs from 1.
            renderer.start(1, 1, Some(total), Some("ddpm-train"));
            renderer.start_split("train", total);
            Self { renderer, interrupter, loss, lr, speed, evaluations: HashMap::new(), total, steps_here: 0, device: device.clone() }
        }

        pub(super) fn step(&mut self, step: usize, loss: f64, lr: f64) {
            self.steps_here += 1;
            let metadata = MetricMetadata {
                progress: Progress { items_processed: step, items_total: self.total, unit: Some("steps".into()) },
                iteration: Some(self.steps_here),
                lr: Some(lr.into()),
            };
            let loss_input = LossInput::new(Tensor::<1>::from_floats([loss as f32], &self.device));
            let updates = [
                (self.loss.0.clone(), self.loss.1.update(&loss_input, &metadata), self.loss.1.value()),
                (self.lr.0.clone(), self.lr.1.update(&(), &metadata), self.lr.1.value()),
                (self.speed.0.clone(), self.speed.1.update(&(), &metadata), self.speed.1.value()),
            ];
            for (id, entry, value) in updates {
                if let Ok(entry) = entry {
                    self.renderer.update_train(MetricState::Numeric(MetricEntry::new(id, entry), value));
                }
            }
            self.renderer.update_split(step);
        }

        pub(super) fn evaluation(&mut self, metric: &str, value: f64) {
            let renderer = &mut self.renderer;
            let id = self
                .evaluations
                .entry(metric.to_string())
                .or_insert_with(|| {
                    let id = MetricId::new(Arc::new(metric.to_string()));
                    renderer.register_metric(MetricDefinition {
                        metric_id: id.clone(),
                        name: Arc::new(metric.to_string()),
                        description: Some(format!("{metric} of EMA samples during training")),
                        attributes: MetricAttributes::Numeric(NumericAttributes { unit: None, higher_is_better: false }),
                    });
                    id
                })
                .clone();
            let entry = SerializedEntry::new(format!("{metric} {value:.5}"), value.to_string());
            self.renderer.update_valid(MetricState::Numeric(MetricEntry::new(id, entry), Some(NumericEntry::Value(value))));
        }

        pub(super) fn close(mut self) {
            self.renderer.end_split();
            let _ = self.renderer.on_train_end(None);
            // Dropping the renderer restores the terminal.
        }
    }
}
