//! The training loop.
//!
//! A custom loop rather than burn-train's `Learner`: diffusion training is counted in optimiser
//! steps, not epochs, and needs an EMA of the weights, step-based checkpoints that carry the EMA,
//! the RNG positions and the data order, and sample grids from the EMA weights; the Learner
//! checkpoints per epoch and knows none of these.
//!
//! Each step: a batch in the seeded order -> timesteps, noise and the self-conditioning coin from
//! seeded host streams -> `GaussianDiffusion::training_loss` -> backward -> global gradient-norm
//! clipping -> Adam(W) with linear warm-up -> EMA -> every N steps a checkpoint, a sample grid and a
//! metrics line. Everything a step draws comes from state saved in the checkpoint, so a resumed run
//! continues exactly where the interrupted one stopped.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorCreationOptions};
use ddpm_core::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::data::{BatchOrder, InMemory};
use crate::ema::ema_update;
use crate::error::{Result, TrainError};
use crate::grid::write_grid;

/// Where a run stands; saved with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimiser steps done.
    pub step: usize,
    /// Word position of the timestep / coin stream (seeded by `seed`).
    pub rng_word_pos: u128,
    /// Word position of the noise stream (seeded by `seed + 1`).
    pub noise_word_pos: u128,
    /// Data order: epoch and offset within it.
    pub epoch: u64,
    pub offset: usize,
    /// The last logged (moving-average) loss.
    pub loss: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: usize,
    pub final_loss: f64,
    pub last_checkpoint: Option<PathBuf>,
    pub seconds: f64,
}

/// Options that are not part of the config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from this checkpoint folder.
    pub resume: Option<PathBuf>,
    /// Stop after the first optimiser step.
    pub dry_run: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Stop (as if killed) after this many steps of this process, without a final checkpoint.
    pub stop_after: Option<usize>,
}

fn optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    let t = &cfg.train;
    let (b1, b2) = (t.adam_betas[0] as f32, t.adam_betas[1] as f32);
    if t.weight_decay > 0.0 {
        AdamWConfig::new().with_beta_1(b1).with_beta_2(b2).with_epsilon(1e-8).with_weight_decay(t.weight_decay as f32).init()
    } else {
        AdamConfig::new().with_beta_1(b1).with_beta_2(b2).with_epsilon(1e-8).init()
    }
}

/// Scales all gradients so that their global L2 norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`); returns the norm before clipping.
pub fn clip_global_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    struct Ids(Vec<(burn::module::ParamId, usize)>);
    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.push((p.id, D));
        }
    }
    let mut ids = Ids(Vec::new());
    model.visit(&mut ids);
    fn sq<const D: usize>(g: &GradientsParams, id: burn::module::ParamId) -> f64 {
        g.get::<D>(id).map(|t| t.powi_scalar(2).sum().into_scalar::<f64>()).unwrap_or(0.0)
    }
    fn scale<const D: usize>(g: &mut GradientsParams, id: burn::module::ParamId, f: f64) {
        if let Some(t) = g.remove::<D>(id) {
            g.register::<D>(id, t * f);
        }
    }
    let total: f64 = ids
        .0
        .iter()
        .map(|&(id, d)| match d {
            1 => sq::<1>(grads, id),
            2 => sq::<2>(grads, id),
            3 => sq::<3>(grads, id),
            4 => sq::<4>(grads, id),
            5 => sq::<5>(grads, id),
            _ => 0.0,
        })
        .sum::<f64>()
        .sqrt();
    if max_norm > 0.0 && total > max_norm {
        let f = max_norm / (total + 1e-6);
        for &(id, d) in &ids.0 {
            match d {
                1 => scale::<1>(grads, id, f),
                2 => scale::<2>(grads, id, f),
                3 => scale::<3>(grads, id, f),
                4 => scale::<4>(grads, id, f),
                5 => scale::<5>(grads, id, f),
                _ => {}
            }
        }
    }
    total
}

/// Trains the network `init` builds on `data`, in the run folder of `cfg`.
pub fn train<const D: usize, M, F>(cfg: &TrainConfig, init: F, data: &InMemory, opts: &RunOptions) -> Result<TrainSummary>
where
    M: Module + Denoiser<D> + Clone,
    F: Fn(&Device) -> Result<M>,
{
    let device = ddpm_core::device::parse_device(&cfg.run.device)?;
    let train_device = device.clone().autodiff();
    let diffusion = cfg.diffusion.to_core()?.init()?;
    let t = &cfg.train;
    if t.batch_size == 0 || t.steps == 0 {
        return Err(TrainError::config("train.batch_size", "batch_size and steps must be at least 1"));
    }
    let out = &cfg.run.out_dir;
    fs::create_dir_all(out.join("checkpoints")).map_err(|e| io(out, e))?;
    fs::create_dir_all(out.join("samples")).map_err(|e| io(out, e))?;
    write_atomic(&out.join("config.toml"), toml::to_string(cfg).expect("config renders").as_bytes())?;

    // Weight initialisation draws from the backend's generator: seed it so a run is reproducible.
    // (Flex's generator is process-global, so two runs initialising at once in one process, as
    // parallel tests do, can disturb each other's draws; separate processes do not.)
    train_device.seed(cfg.run.seed);
    let mut model = init(&train_device)?;
    let mut ema = model.valid();
    let mut optim = optimizer(cfg);
    let seed = cfg.run.seed;
    let mut state = RunState { step: 0, rng_word_pos: 0, noise_word_pos: 0, epoch: 0, offset: 0, loss: f64::NAN };
    if let Some(dir) = &opts.resume {
        let (m, e, o, s) = crate::checkpoint::load(dir, model, ema, optim)?;
        (model, ema, optim, state) = (m, e, o, s);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_word_pos(state.rng_word_pos);
    let mut noise = HostNoise::resume(seed.wrapping_add(1), state.noise_word_pos);
    let mut order = BatchOrder::resume(seed, data.len(), state.epoch, state.offset);

    let mut metrics = fs::OpenOptions::new().create(true).append(true).open(out.join("metrics.jsonl")).map_err(|e| io(out, e))?;
    let bar = opts.progress.then(|| {
        let b = indicatif::ProgressBar::new(t.steps as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        b.set_position(state.step as u64);
        b
    });
    let start = Instant::now();
    let mut last_checkpoint = None;
    let mut steps_here = 0;
    let mut window = Instant::now();
    while state.step < t.steps {
        let idx = order.next(t.batch_size);
        let x0: Tensor<D> = data.batch(&idx, &train_device);
        let out_loss = diffusion.training_loss(&model, x0, &Conditioning::none(), &mut rng, &mut noise)?;
        let loss: f64 = out_loss.loss.clone().into_scalar::<f64>();
        if !loss.is_finite() {
            return Err(TrainError::Diverged(format!(
                "the loss became {loss} at step {}; the last good checkpoint stays in {}. Lower train.lr or set train.grad_clip",
                state.step + 1,
                out.join("checkpoints").display()
            )));
        }
        let mut grads = GradientsParams::from_grads(out_loss.loss.backward(), &model);
        let grad_norm = clip_global_norm(&model, &mut grads, t.grad_clip);
        let lr = if t.warmup_steps > 0 { t.lr * ((state.step + 1) as f64 / t.warmup_steps as f64).min(1.0) } else { t.lr };
        model = optim.step(lr, model, grads);
        state.step += 1;
        steps_here += 1;
        if let Some(decay) = t.ema.decay_at(state.step) {
            ema = ema_update(ema, &model, decay).0;
        }
        state.loss = if state.loss.is_nan() { loss } else { 0.98 * state.loss + 0.02 * loss };
        if let Some(b) = &bar {
            b.set_position(state.step as u64);
            b.set_message(format!("loss {:.4}", state.loss));
        }
        if state.step % t.log_every.max(1) == 0 || state.step == t.steps {
            let ips = (t.log_every.max(1) * t.batch_size) as f64 / window.elapsed().as_secs_f64().max(1e-9);
            window = Instant::now();
            writeln!(
                metrics,
                "{{\"step\": {}, \"loss\": {loss}, \"loss_ema\": {}, \"lr\": {lr}, \"grad_norm\": {grad_norm}, \"images_per_s\": {ips:.2}}}",
                state.step, state.loss
            )
            .map_err(|e| io(out, e))?;
        }
        if opts.stop_after == Some(steps_here) {
            return Ok(TrainSummary { steps: state.step, final_loss: state.loss, last_checkpoint, seconds: start.elapsed().as_secs_f64() });
        }
        let done = state.step == t.steps || opts.dry_run;
        if state.step % t.checkpoint_every.max(1) == 0 || done {
            state.rng_word_pos = rng.get_word_pos();
            state.noise_word_pos = noise.word_pos();
            (state.epoch, state.offset) = (order.epoch, order.offset);
            last_checkpoint = Some(crate::checkpoint::save(out, &model, &ema, &optim, &state, t.keep_last)?);
        }
        if (t.sample_every > 0 && state.step % t.sample_every == 0) || done {
            let path = out.join("samples").join(format!("step-{:07}.png", state.step));
            sample_grid::<D, M>(cfg, &diffusion, &ema, &device, data, &path)?;
        }
        if opts.dry_run {
            break;
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    crate::grid::write_loss_curve(&out.join("metrics.jsonl"), &out.join("loss.png"))?;
    Ok(TrainSummary { steps: state.step, final_loss: state.loss, last_checkpoint, seconds: start.elapsed().as_secs_f64() })
}

/// Samples `cfg.train.num_samples` items with the EMA weights and writes a PNG grid (images) or
/// a scatter plot (2-D points).
pub fn sample_grid<const D: usize, M: Module + Denoiser<D> + Clone>(
    cfg: &TrainConfig,
    diffusion: &GaussianDiffusion,
    ema: &M,
    device: &Device,
    data: &InMemory,
    path: &Path,
) -> Result<()> {
    let n = cfg.train.num_samples;
    let mut shape = [0usize; D];
    shape[0] = n;
    shape[1..].copy_from_slice(&data.item_shape);
    let sampler = cfg.sample.sampler()?;
    let opts = SampleOptions { clip: if data.item_shape.len() == 1 { X0Clip::None } else { X0Clip::Static }, cond: Conditioning::none() };
    let mut noise = HostNoise::new(cfg.run.seed.wrapping_add(7));
    let x = sample(diffusion, ema, shape, TensorCreationOptions::new(device.clone()), &sampler, &opts, &mut noise, no_callback)?;
    let values = ddpm_core::tensor::to_f64_vec(&x);
    write_grid(path, &values, &data.item_shape)
}

pub(crate) fn io(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Io { path: path.to_path_buf(), message: e.to_string() }
}

/// Writes a file through a temporary name and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io(path, e))
}
