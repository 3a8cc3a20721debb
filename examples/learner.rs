//! Trains the quickstart network through burn-train's `Learner` and writes a sample grid.
//!
//! ```text
//! cargo run --release --example learner                      # configs/quickstart.toml, 12 epochs (1488 steps)
//! cargo run --release --example learner -- --epochs 16 --resume 12
//! cargo run --release --example learner -- --config configs/toy-gaussian8.toml --epochs 1
//! ```
//!
//! The network, its process and its data come from a ddpm-train config; the training loop is
//! burn-train's: `SupervisedTraining` with its loss, learning-rate and speed metrics, its
//! dashboard on a terminal or plain log lines (`learner::PlainRenderer`), its per-epoch checkpoints (which carry the EMA)
//! and `--resume EPOCH`. [`DiffusionModel`] adds the EMA and, every `train.sample_every`
//! optimiser steps, weights and a sample grid. At the end the EMA weights draw
//! `OUT/grid.png`.

use std::path::PathBuf;
use std::sync::Arc;

use burn::tensor::Device;
use burn::train::metric::{IterationSpeedMetric, LearningRateMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};
use ddpm::train::learner::{DiffusionModel, StepOutputs, WarmupSchedule, dataloaders};
use ddpm::train::{AnyRank, Result, TrainConfig, TrainError, TrainModel, with_model};

const QUICKSTART: &str = include_str!("../configs/quickstart.toml");

struct Options {
    config: Option<PathBuf>,
    epochs: usize,
    resume: Option<usize>,
    out: PathBuf,
}

fn options() -> std::result::Result<Options, String> {
    let mut o = Options { config: None, epochs: 12, resume: None, out: PathBuf::from("runs/learner") };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--config" => o.config = Some(value("--config")?.into()),
            "--epochs" => o.epochs = value("--epochs")?.parse().map_err(|e| format!("--epochs: {e}"))?,
            "--resume" => o.resume = Some(value("--resume")?.parse().map_err(|e| format!("--resume: {e}"))?),
            "--out" => o.out = value("--out")?.into(),
            other => return Err(format!("unknown argument {other}; use --config FILE, --epochs N, --resume EPOCH, --out DIR")),
        }
    }
    Ok(o)
}

/// The Learner run, written once for images, sequences and 2-D points.
struct Fit<'a> {
    cfg: &'a TrainConfig,
    data: Arc<ddpm::train::data::InMemory>,
    options: &'a Options,
}

impl AnyRank for Fit<'_> {
    type Output = PathBuf;

    fn run<const D: usize, M: TrainModel<D>>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<PathBuf> {
        let Fit { cfg, data, options } = self;
        let t = &cfg.train;
        let device = cfg.run.devices()?[0].clone().autodiff();
        device.seed(cfg.run.seed);
        let item_shape = data.item_shape.clone();
        let labelling = cfg.model.num_classes().map(|n| (n, t.cond_drop_prob));
        let model = DiffusionModel::<D, M>::new(init(&device)?, cfg.build_diffusion()?, t.ema.clone(), cfg.run.seed).with_outputs(StepOutputs {
            dir: options.out.clone(),
            every: t.sample_every.max(1),
            keep_last: t.keep_last,
            item_shape: item_shape.clone(),
            sampler: cfg.sample.sampler()?,
            seeds: (0..t.num_samples as u64).map(|i| cfg.run.seed + 7 + i).collect(),
            clip: cfg.sample.clip,
        });
        let (train, valid) = dataloaders::<D>(data, t.batch_size, t.batch_size * 4, labelling, cfg.run.seed);
        let mut training = SupervisedTraining::new(&options.out, train, valid)
            .metrics((LossMetric::new(),))
            .metric_train_numeric(LearningRateMetric::new())
            .metric_train_numeric(IterationSpeedMetric::new())
            .with_default_checkpointers()
            .grads_accumulation(t.grad_accum)
            .num_epochs(options.epochs)
            .summary();
        if let Some(epoch) = options.resume {
            training = training.checkpoint(epoch);
        }
        // burn-train's dashboard on a terminal, a plain line every run.progress_seconds in a log.
        let renderer = ddpm::train::learner::renderer(training.interrupter(), cfg.run.progress_seconds);
        training = training.renderer(renderer);
        let result = training.launch(Learner::new(model, ddpm::train::trainer::optimizer(cfg), WarmupSchedule::new(t.clone())));
        if let Some(e) = result.error {
            return Err(TrainError::Diverged(format!("the Learner stopped: {e}")));
        }
        let model = result.model;
        println!("{} optimiser steps; drawing {} samples from the EMA weights", model.steps(), t.num_samples);
        let sampler = cfg.sample.sampler()?;
        let seeds: Vec<u64> = (0..t.num_samples as u64).map(|i| cfg.run.seed + 7 + i).collect();
        let ema = model.ema.clone();
        let device = device.inner();
        let draw = ddpm::train::sample::Draw { clip: cfg.sample.clip, ..ddpm::train::sample::Draw::new(model.process(), &item_shape, &device, &sampler, &seeds, cfg.sample.batch_size) };
        let grid = options.out.join("grid.png");
        let picture = ddpm::train::grid::GridOptions::for_data(&cfg.data);
        ddpm::train::sample::draw_picture::<D, M>(&draw, &ema, &grid, &picture)?;
        Ok(grid)
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let options = options()?;
    let cfg = match &options.config {
        Some(path) => ddpm::train::load_config(path, &[])?,
        None => ddpm::train::parse_config(QUICKSTART, "configs/quickstart.toml", &[])?,
    };
    let data = Arc::new(ddpm::train::data::load(&cfg.data, cfg.run.seed)?);
    let item_shape = data.item_shape.clone();
    let grid = with_model(&cfg, &item_shape, Fit { cfg: &cfg, data, options: &options })?;
    println!("sample grid: {}", grid.display());
    Ok(())
}
