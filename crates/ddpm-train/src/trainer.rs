//! The training loop.
//!
//! A custom loop rather than burn-train's `Learner`: diffusion training is counted in optimiser
//! steps, not epochs, and needs an EMA of the weights, step-based checkpoints that carry the EMA,
//! the RNG positions and the data order, and sample grids from the EMA weights; the Learner
//! checkpoints per epoch and knows none of these.
//!
//! Each step: a batch in the seeded order -> timesteps, noise and the self-conditioning coin from
//! seeded host streams -> `Process::training_loss` (Gaussian or EDM) -> backward -> global gradient-norm
//! clipping -> Adam(W) with linear warm-up -> EMA -> every N steps a checkpoint, a sample grid and a
//! metrics line. Everything a step draws comes from state saved in the checkpoint, so a resumed run
//! continues exactly where the interrupted one stopped.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use ddpm_core::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use crate::checkpoint::RunState;
use crate::config::TrainConfig;
use crate::data::{BatchOrder, InMemory};
use crate::ema::ema_update;
use crate::error::{Result, TrainError};
#[cfg(not(feature = "eval"))]
use crate::eval_plan::NoEvaluator as Evaluator;
#[cfg(feature = "eval")]
use crate::evaluate::Evaluator;

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: usize,
    pub final_loss: f64,
    pub last_checkpoint: Option<PathBuf>,
    pub seconds: f64,
    /// Where `--overwrite` moved the run that was in the folder before.
    pub replaced: Option<PathBuf>,
}

/// Options that are not part of the config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from this checkpoint folder.
    pub resume: Option<PathBuf>,
    /// Continue from the newest complete checkpoint of `run.out_dir` (a run stopped before its
    /// first checkpoint starts again from step 0); ignored when `resume` names a folder.
    pub resume_latest: bool,
    /// Start a fresh run even when `run.out_dir` holds one, moving the old run aside.
    pub overwrite: bool,
    /// Show progress: a bar on a terminal, else a plain line every `run.progress_seconds`.
    pub progress: bool,
    /// Stop (as if killed) after this many steps of this process, without a final checkpoint.
    pub stop_after: Option<usize>,
    /// How progress is shown (when `progress`).
    pub dashboard: crate::dashboard::Dashboard,
}

/// Adam, or AdamW with `train.weight_decay`, eps 1e-8 as PyTorch's: burn-optim's update with
/// ddpm-kernels' fused pass on Flex (`FusedAdam`).
pub fn optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    let t = &cfg.train;
    ddpm_kernels::FusedAdam::new([t.adam_betas[0] as f32, t.adam_betas[1] as f32], 1e-8, t.weight_decay as f32).init()
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
    // Each tensor's sum of squares stays on the device; their total is read back once per step.
    fn sq<const D: usize>(g: &GradientsParams, id: burn::module::ParamId) -> Option<Tensor<1>> {
        g.get::<D>(id).map(ddpm_kernels::sum_of_squares)
    }
    fn scale<const D: usize>(g: &mut GradientsParams, id: burn::module::ParamId, f: f64) {
        if let Some(t) = g.remove::<D>(id) {
            g.register::<D>(id, t * f);
        }
    }
    let squares: Vec<Tensor<1>> = ids
        .0
        .iter()
        .filter_map(|&(id, d)| match d {
            1 => sq::<1>(grads, id),
            2 => sq::<2>(grads, id),
            3 => sq::<3>(grads, id),
            4 => sq::<4>(grads, id),
            5 => sq::<5>(grads, id),
            _ => None,
        })
        .collect();
    let total = if squares.is_empty() { 0.0 } else { Tensor::cat(squares, 0).sum().into_scalar::<f64>().sqrt() };
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

/// One batch assembled on the loader thread, with the data-order position after it.
struct HostBatch {
    values: Vec<f32>,
    /// Class labels (class-conditional runs), the null class where the label was dropped.
    labels: Option<Vec<i64>>,
    epoch: u64,
    offset: usize,
}

/// A uniform number in [0, 1) for the visit of `item` in `epoch`: a hash of (seed, epoch, item),
/// so that augmentation and label dropping are part of the resumable data order rather than of an
/// RNG stream.
pub(crate) fn visit_hash(seed: u64, epoch: u64, item: usize) -> f64 {
    let mut z = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (item as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

/// How the loader labels a batch: `(num_classes, cond_drop_prob)` for class-conditional runs.
type Labelling = Option<(usize, f64)>;

/// Fills `tx` with batches in the seeded order from `(epoch, offset)` until the receiver is gone.
/// Runs on its own thread so that assembling a batch (gathering, flipping, converting) overlaps the
/// network's step instead of stalling it.
fn load_batches(data: &InMemory, seed: u64, batch_size: usize, labelling: Labelling, epoch: u64, offset: usize, tx: std::sync::mpsc::SyncSender<HostBatch>) {
    let mut order = BatchOrder::resume(seed, data.len(), epoch, offset);
    loop {
        let mut indices = Vec::with_capacity(batch_size);
        let mut flips = Vec::with_capacity(batch_size);
        let mut labels = Vec::with_capacity(batch_size);
        for _ in 0..batch_size {
            let i = order.next(1)[0];
            indices.push(i);
            flips.push(data.hflip && visit_hash(seed, order.epoch, i) < 0.5);
            if let (Some((null, drop)), Some(all)) = (labelling, &data.labels) {
                let dropped = visit_hash(seed ^ 0x5EED_D40B, order.epoch, i) < drop;
                labels.push(if dropped { null as i64 } else { all[i] as i64 });
            }
        }
        let values = data.host_batch(&indices, &flips);
        let labels = labelling.map(|_| labels);
        if tx.send(HostBatch { values, labels, epoch: order.epoch, offset: order.offset }).is_err() {
            return;
        }
    }
}

/// How one optimiser step runs: the devices that share each batch (empty: the model's own device
/// alone), the global gradient-norm clip (0: off) and the learning rate.
#[derive(Debug, Clone, Copy)]
pub struct StepSettings<'a> {
    pub replicas: &'a [Device],
    pub grad_clip: f64,
    pub lr: f64,
}

/// The outcome of one optimiser step.
pub struct StepOutcome<M> {
    pub model: M,
    /// Mean training loss over the accumulated batches.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// One optimiser step over `batches` (their gradients summed, each loss divided by their number,
/// as the reference's `gradient_accumulate_every` does): loss -> backward -> global-norm clipping
/// -> Adam(W) at `lr`. With more than one device in `replicas`, each batch is split along its
/// first axis into one shard per device; every device runs a copy of the network (`fork` keeps the
/// parameter ids) on its shard, and the gradients are moved to the main device and summed there,
/// which is what Burn's multi-device strategy does. Shard k of a batch takes the same timesteps and
/// noise as micro-batch k of `grad_accum` would, so N devices compute what N accumulated
/// micro-batches compute. A non-finite loss is an error.
pub fn optimizer_step<const D: usize, M: Module + Denoiser<D> + Clone, R: rand::Rng, N: NoiseSource>(
    diffusion: &Process,
    model: M,
    optim: &mut ModuleOptimizer,
    batches: impl ExactSizeIterator<Item = (Tensor<D>, Conditioning<D>)>,
    settings: &StepSettings<'_>,
    rng: &mut R,
    noise: &mut N,
) -> Result<StepOutcome<M>> {
    let StepSettings { replicas, grad_clip, lr } = *settings;
    let shards = replicas.len().max(1);
    let parts = (batches.len() * shards).max(1);
    let mut accumulated = GradientsAccumulator::<M>::new();
    let mut losses = Vec::with_capacity(parts);
    for (x0, cond) in batches {
        let pieces = if shards > 1 { x0.chunk(shards, 0) } else { vec![x0] };
        let labels: Vec<Option<Tensor<1, Int>>> = match &cond.classes {
            Some(c) if shards > 1 => c.clone().chunk(shards, 0).into_iter().map(Some).collect(),
            other => vec![other.clone(); shards],
        };
        for (k, (piece, classes)) in pieces.into_iter().zip(labels).enumerate() {
            let (net, piece, classes) = if shards > 1 {
                (model.clone().fork(&replicas[k]), piece.to_device(&replicas[k]), classes.map(|c| c.to_device(&replicas[k])))
            } else {
                (model.clone(), piece, classes)
            };
            let loss = diffusion.training_loss(&net, piece, &Conditioning { self_cond: None, classes }, rng, noise)?.loss;
            let loss = if parts > 1 { loss.div_scalar(parts as f64) } else { loss };
            // Read back after every device has its work queued, so the devices overlap.
            losses.push(loss.clone().detach());
            let mut grads = GradientsParams::from_grads(loss.backward(), &net);
            if shards > 1 {
                grads = grads.to_device(&replicas[0], &model);
            }
            accumulated.accumulate(&model, grads);
        }
    }
    let mut loss_sum = 0.0;
    for l in losses {
        let value: f64 = l.into_scalar::<f64>();
        if !value.is_finite() {
            return Err(TrainError::Diverged(format!("the loss became {}", value * parts as f64)));
        }
        loss_sum += value;
    }
    let mut grads = accumulated.grads();
    let grad_norm = clip_global_norm(&model, &mut grads, grad_clip);
    let model = optim.step(lr, model, grads);
    Ok(StepOutcome { model, loss: loss_sum, grad_norm })
}

/// Trains the network `init` builds on `data`, in the run folder of `cfg`.
pub fn train<const D: usize, M, F>(cfg: &TrainConfig, init: F, data: &InMemory, opts: &RunOptions) -> Result<TrainSummary>
where
    M: Module + Denoiser<D> + Clone,
    F: Fn(&Device) -> Result<M>,
{
    let devices = cfg.run.devices()?;
    let device = devices[0].clone();
    let train_device = device.clone().autodiff();
    let replicas: Vec<Device> = if devices.len() > 1 { devices.iter().map(|d| d.clone().autodiff()).collect() } else { Vec::new() };
    let diffusion = cfg.build_diffusion()?;
    let t = &cfg.train;
    if !replicas.is_empty() && t.batch_size % replicas.len() != 0 {
        return Err(TrainError::config(
            "train.batch_size",
            format!("{} is not divisible by the {} devices of run.devices; each device takes an equal share", t.batch_size, replicas.len()),
        ));
    }
    let labelling: Labelling = match cfg.model.num_classes() {
        None => None,
        Some(n) => {
            if data.labels.is_none() || data.num_classes != n {
                return Err(TrainError::config(
                    "model.num_classes",
                    format!(
                        "{n} classes, but the data set has {}; class-conditional training needs labelled data (cifar10, mnist, the gaussian8/25 toy sets) with that many classes",
                        if data.labels.is_some() { format!("{} classes", data.num_classes) } else { "no labels".into() }
                    ),
                ));
            }
            if !(0.0..1.0).contains(&t.cond_drop_prob) {
                return Err(TrainError::config("train.cond_drop_prob", format!("{} is not a probability below 1", t.cond_drop_prob)));
            }
            Some((n, t.cond_drop_prob))
        }
    };
    if t.batch_size == 0 || t.steps == 0 || t.grad_accum == 0 {
        return Err(TrainError::config("train.batch_size", "batch_size, grad_accum and steps must be at least 1"));
    }
    if data.len() < t.batch_size {
        return Err(TrainError::config("train.batch_size", format!("the data set has {} items, fewer than one batch of {}", data.len(), t.batch_size)));
    }
    // Settings that can be checked without the folder are checked before it is touched.
    let post_hoc = &t.post_hoc_ema;
    let gammas = post_hoc.gammas()?;
    crate::eval_plan::check(cfg, data)?;
    let out = &cfg.run.out_dir;
    let resume = match (&opts.resume, opts.resume_latest) {
        (Some(dir), _) => Some(crate::run_dir::ResumeFrom::Checkpoint(dir.clone())),
        (None, true) => Some(crate::run_dir::resume_latest(out)?),
        (None, false) => None,
    };
    let replaced = match &resume {
        Some(crate::run_dir::ResumeFrom::Checkpoint(dir)) => {
            crate::run_dir::prepare_resume(out, crate::checkpoint::read_state(dir)?.step)?;
            None
        }
        Some(crate::run_dir::ResumeFrom::Start) => {
            crate::run_dir::prepare_resume(out, 0)?;
            None
        }
        None => crate::run_dir::prepare_fresh(out, opts.overwrite)?,
    };
    if opts.progress {
        if let Some(aside) = &replaced {
            tracing::info!("moved the run that was in {} to {}", out.display(), aside.display());
        }
        if resume == Some(crate::run_dir::ResumeFrom::Start) {
            tracing::info!("{} has no checkpoint yet: starting its run again from step 0", out.display());
        }
    }
    // The config goes first: once it is there, a kill at any later moment leaves a folder that
    // `--resume` continues (from step 0 if no checkpoint was written yet).
    fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let config_text = toml::to_string(cfg).expect("config renders");
    write_atomic(&out.join("config.toml"), config_text.as_bytes())?;
    fs::create_dir_all(out.join("checkpoints")).map_err(|e| io(out, e))?;
    fs::create_dir_all(out.join("samples")).map_err(|e| io(out, e))?;

    // Weight initialisation draws from the backend's generator: seed it so a run is reproducible.
    // (Flex's generator is process-global, so two runs initialising at once in one process, as
    // parallel tests do, can disturb each other's draws; separate processes do not.)
    train_device.seed(cfg.run.seed);
    let mut model = init(&train_device)?;
    let mut ema = model.valid();
    // EDM2's power-function averages, one per post-hoc sigma_rel.
    let mut power: Vec<_> = gammas.iter().map(|_| model.valid()).collect();
    let mut optim = optimizer(cfg);
    let seed = cfg.run.seed;
    let mut state = RunState { step: 0, rng_word_pos: 0, noise_word_pos: 0, epoch: 0, offset: 0, loss: f64::NAN, best_eval: None, run_id: Some(crate::run_dir::new_run_id()), imported_from: None };
    if let Some(crate::run_dir::ResumeFrom::Checkpoint(dir)) = &resume {
        let (m, e, o, s) = crate::checkpoint::load(dir, model, ema, optim)?;
        (model, ema, optim, state) = (m, e, o, s);
        power = crate::checkpoint::load_power(dir, power)?;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_word_pos(state.rng_word_pos);
    let mut noise = HostNoise::resume(seed.wrapping_add(1), state.noise_word_pos);
    let mut batch_shape = [0usize; D];
    batch_shape[0] = t.batch_size;
    batch_shape[1..].copy_from_slice(&data.item_shape);

    let evaluator = Evaluator::new(cfg, data, &device)?;
    let metrics_path = out.join(crate::run_dir::METRICS);
    let mut metrics = fs::OpenOptions::new().create(true).append(true).open(&metrics_path).map_err(|e| io(&metrics_path, e))?;
    let mut events = crate::tensorboard::EventWriter::create(out)?;
    let mut view = crate::dashboard::TrainView::new(opts.dashboard, !opts.progress, cfg.run.progress_seconds, t.steps, state.step, (t.batch_size * t.grad_accum) as f64, &device);
    let start = Instant::now();
    let mut last_checkpoint = None;
    let mut steps_here = 0;
    let mut window = Instant::now();
    let (tx, rx) = std::sync::mpsc::sync_channel::<HostBatch>(2 * t.grad_accum);
    std::thread::scope(|scope| -> Result<TrainSummary> {
        let (epoch, offset) = (state.epoch, state.offset);
        scope.spawn(move || load_batches(data, seed, t.batch_size, labelling, epoch, offset, tx));
        // `rx` is dropped when this closure returns, which ends the loader thread.
        let rx = rx;
        while state.step < t.steps {
            let mut position = (state.epoch, state.offset);
            let mut batches = Vec::with_capacity(t.grad_accum);
            for _ in 0..t.grad_accum {
                let b = rx.recv().expect("the loader thread runs until the receiver is dropped");
                position = (b.epoch, b.offset);
                let classes = b.labels.map(|l| Tensor::<1, Int>::from_data(TensorData::new(l, [t.batch_size]), &train_device));
                batches.push((Tensor::<D>::from_data(TensorData::new(b.values, batch_shape), &train_device), Conditioning { self_cond: None, classes }));
            }
            let lr = t.lr_at(state.step + 1);
            let settings = StepSettings { replicas: &replicas, grad_clip: t.grad_clip, lr };
            let step = optimizer_step(&diffusion, model, &mut optim, batches.into_iter(), &settings, &mut rng, &mut noise).map_err(|e| match e {
                TrainError::Diverged(m) => TrainError::Diverged(format!(
                    "{m} at step {}; the last good checkpoint stays in {}. Lower train.lr or set train.grad_clip",
                    state.step + 1,
                    out.join("checkpoints").display()
                )),
                other => other,
            })?;
            model = step.model;
            let loss = step.loss;
            (state.epoch, state.offset) = position;
            state.step += 1;
            steps_here += 1;
            if let Some(decay) = t.ema.decay_at(state.step) {
                ema = ema_update(ema, &model, decay).0;
            }
            if !power.is_empty() {
                let with_beta = power.into_iter().zip(&gammas).map(|(p, &g)| (p, crate::ema::power::beta(state.step, g))).collect();
                power = crate::ema::ema_update_all(with_beta, &model);
            }
            state.loss = if state.loss.is_nan() { loss } else { 0.98 * state.loss + 0.02 * loss };
            view.step(state.step, loss, state.loss, lr);
            if state.step % t.log_every.max(1) == 0 || state.step == t.steps {
                let ips = (t.log_every.max(1) * t.batch_size * t.grad_accum) as f64 / window.elapsed().as_secs_f64().max(1e-9);
                window = Instant::now();
                // serde_json writes a non-finite number (an infinite gradient norm) as null.
                let line = serde_json::json!({
                    "step": state.step,
                    "time": unix_time(),
                    "loss": loss,
                    "loss_ema": state.loss,
                    "lr": lr,
                    "grad_norm": step.grad_norm,
                    "images_per_s": ips,
                });
                writeln!(metrics, "{line}").map_err(|e| io(&metrics_path, e))?;
                events.scalars(
                    state.step as u64,
                    &[("train/loss", loss), ("train/loss_ema", state.loss), ("train/lr", lr), ("train/grad_norm", step.grad_norm), ("train/images_per_s", ips)],
                )?;
            }
            if opts.stop_after == Some(steps_here) {
                return Ok(TrainSummary { steps: state.step, final_loss: state.loss, last_checkpoint, seconds: start.elapsed().as_secs_f64(), replaced });
            }
            let done = state.step == t.steps;
            if let Some(ev) = &evaluator
                && (state.step % cfg.eval.every == 0 || done)
            {
                let result = ev.evaluate::<D, M>(cfg, &diffusion, &ema, &data.item_shape, &device)?;
                writeln!(metrics, "{}", crate::eval_plan::metrics_line(state.step, &result)).map_err(|e| io(out, e))?;
                events.scalars(state.step as u64, &[(&format!("eval/{}", result.metric), result.value)])?;
                let line = format!("step {}: {} {:.5} ({} samples, {:.1} s)", state.step, result.metric, result.value, result.num_samples, result.seconds);
                view.evaluation(&result.metric, result.value, line);
                if cfg.eval.keep_best && state.best_eval.is_none_or(|best| result.value < best) {
                    state.best_eval = Some(result.value);
                    state.rng_word_pos = rng.get_word_pos();
                    state.noise_word_pos = noise.word_pos();
                    let parts = crate::checkpoint::Parts { model: &model, ema: &ema, power: &power, optim: &optim, state: &state, config: &config_text };
                    crate::checkpoint::save_as(&crate::checkpoint::best_dir(out), &parts)?;
                }
            }
            // The dashboard's `q`: stop after a checkpoint, so that --resume continues the run.
            let stop = view.stop_requested();
            if state.step % t.checkpoint_every.max(1) == 0 || done || stop {
                state.rng_word_pos = rng.get_word_pos();
                state.noise_word_pos = noise.word_pos();
                let parts = crate::checkpoint::Parts { model: &model, ema: &ema, power: &power, optim: &optim, state: &state, config: &config_text };
                last_checkpoint = Some(crate::checkpoint::save(out, &parts, t.keep_last)?);
                plots(out);
            }
            if stop {
                view.finish();
                tracing::info!("stopped at step {} on request; continue with --resume", state.step);
                return Ok(TrainSummary { steps: state.step, final_loss: state.loss, last_checkpoint, seconds: start.elapsed().as_secs_f64(), replaced });
            }
            if !power.is_empty() && (state.step % post_hoc.snapshot_every.max(1) == 0 || done) {
                let info = crate::checkpoint::SnapshotInfo { step: state.step, sigma_rels: post_hoc.sigma_rels.clone(), gammas: gammas.clone() };
                crate::checkpoint::save_snapshot(out, &power, &info)?;
            }
            if (t.sample_every > 0 && state.step % t.sample_every == 0) || done {
                let path = out.join("samples").join(format!("step-{:07}.png", state.step));
                sample_grid::<D, M>(cfg, &diffusion, &ema, &device, &data.item_shape, &path)?;
                crate::grid::write_progress(&out.join("samples"), &out.join("progress.png"), state.step, &data.item_shape)?;
            }
        }
        view.finish();
        plots(out);
        Ok(TrainSummary { steps: state.step, final_loss: state.loss, last_checkpoint, seconds: start.elapsed().as_secs_f64(), replaced })
    })
}

/// Samples `cfg.train.num_samples` items with the EMA weights (seeds `run.seed + 7 + i`) and
/// writes a PNG grid (images), a scatter plot (2-D points) or line plots (sequences).
pub fn sample_grid<const D: usize, M: Module + Denoiser<D> + Clone>(
    cfg: &TrainConfig,
    diffusion: &Process,
    ema: &M,
    device: &Device,
    item_shape: &[usize],
    path: &Path,
) -> Result<()> {
    let base = cfg.run.seed.wrapping_add(7);
    let seeds: Vec<u64> = (0..cfg.train.num_samples as u64).map(|i| base.wrapping_add(i)).collect();
    let sampler = cfg.sample.sampler()?;
    let what = crate::sample::Draw {
        guidance: crate::sample::Guidance::from_config(cfg)?,
        clip: cfg.sample.clip,
        ..crate::sample::Draw::new(diffusion, item_shape, device, &sampler, &seeds, cfg.sample.batch_size)
    };
    crate::sample::draw_picture::<D, M>(&what, ema, path, &crate::grid::GridOptions::for_data(&cfg.data))
}

/// Redraws the run's plots (`loss.png`, `lr.png`, `eval.png`; see [`crate::plot`]) from its
/// metrics log. A plot that cannot be drawn is reported and does not stop the run.
fn plots(out: &Path) {
    if let Err(e) = crate::plot::refresh_run_plots(out) {
        tracing::warn!("the plots were not redrawn: {e}");
    }
}

pub(crate) use crate::fsio::{io, unix_time};
pub use crate::fsio::write_atomic;
