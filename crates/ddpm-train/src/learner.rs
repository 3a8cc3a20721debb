//! Diffusion training through burn-train's `Learner`.
//!
//! [`DiffusionModel`] wraps any [`Denoiser`] network with its process (discrete VP, continuous
//! time or EDM) and implements burn-train's `TrainStep` / `InferenceStep`, so a Burn user trains it
//! with `SupervisedTraining` and gets burn-train's metrics ([`DiffusionOutput`] adapts to
//! `LossMetric`; `LearningRateMetric` and `IterationSpeedMetric` need nothing), its dashboard, its
//! file logger, its checkpointer and its execution strategies (several devices; DDP where the
//! backend has collectives). Two things diffusion needs and the Learner lacks plug into the
//! optimiser hook (`TrainStep::optimize`), which runs once per optimiser step:
//!
//! - the EMA of the weights: `ema` is a second copy of the network inside the module (with its
//!   own parameter ids and no gradients, so the optimiser never touches it), updated after every
//!   optimiser step with [`EmaConfig`]'s decay. Being part of the module, it is saved in every
//!   Learner checkpoint and comes back on resume, together with the step counter;
//! - [`StepOutputs`]: every N optimiser steps, the module's weights (network, EMA, step) as a
//!   burnpack file in `steps/step-NNNNNNN.bpk` and a sample grid of the EMA weights in
//!   `samples/step-NNNNNNN.png`, plus `progress.png`; the Learner itself checkpoints per epoch.
//!
//! Timesteps, noise and the self-conditioning coin come from a host stream seeded from
//! (seed, optimiser step, call within the step), so a resumed run draws what the uninterrupted
//! one would have drawn at the same step. What the Learner does not restore is its data order
//! (its shuffling restarts at the resumed epoch): the `ddpm-train` command's own loop keeps the
//! exact order and resumes bit for bit (see the README's "Two training paths").

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::{Dataset, DatasetError};
use burn::lr_scheduler::{LrScheduler, LrSchedulerRecord};
use burn::module::{Module, ModuleDisplay, ModuleMapper, Param, ParamId};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsParams, ModuleOptimizer, MultiGradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn::train::metric::{Adaptor, LossInput};
use burn::train::{InferenceStep, ItemLazy, TrainOutput, TrainStep};
use ddpm_core::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::InMemory;
use crate::ema::EmaConfig;
use crate::error::Result;

/// A batch of training items: `x0` in the model's range, and class labels for class-conditional
/// networks (the null class where a label was dropped for classifier-free guidance).
#[derive(Debug, Clone)]
pub struct DiffusionBatch<const D: usize> {
    pub x0: Tensor<D>,
    pub classes: Option<Tensor<1, Int>>,
}

/// What a step reports to burn-train's metrics: the batch-mean diffusion loss.
pub struct DiffusionOutput {
    pub loss: Tensor<1>,
}

impl ItemLazy for DiffusionOutput {
    fn sync(self) -> std::result::Result<Self, burn::tensor::ExecutionError> {
        Ok(Self { loss: self.loss.without_autodiff() })
    }
}

impl Adaptor<LossInput> for DiffusionOutput {
    fn adapt(&self) -> LossInput {
        LossInput::new(self.loss.clone())
    }
}

/// What the step needs besides the weights; shared by the forks of a multi-device strategy.
pub struct Setup<const D: usize> {
    pub process: Process,
    pub ema: EmaConfig,
    pub seed: u64,
    /// Calls of `step` since the last optimiser step (gradient accumulation, device shards).
    calls: AtomicU64,
    pub outputs: Option<StepOutputs>,
}

/// Short, for the Learner's summary (which prints skipped fields with `Debug`): the process's
/// tables would fill screens.
impl<const D: usize> std::fmt::Debug for Setup<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let process = match &self.process {
            Process::Gaussian(d) => format!("discrete VP, {} steps", d.num_timesteps()),
            Process::Edm { .. } => "EDM".to_string(),
            Process::Continuous(_) => "continuous time".to_string(),
        };
        let outputs = self.outputs.as_ref().map(|o| format!("every {} steps in {}", o.every, o.dir.display()));
        f.debug_struct("Setup").field("process", &process).field("ema", &self.ema).field("seed", &self.seed).field("outputs", &outputs).finish()
    }
}

/// A network, its EMA and its process, trainable by burn-train's `Learner`.
#[derive(Module, Debug)]
pub struct DiffusionModel<const D: usize, M: Module> {
    /// The trained network.
    pub net: M,
    /// The exponential moving average of `net`'s weights (own parameter ids, never trained).
    pub ema: M,
    /// Optimiser steps done (saved with the weights).
    steps: Param<Tensor<1, Int>>,
    #[module(skip)]
    setup: Arc<Setup<D>>,
}

/// Gives every parameter a new id and no gradient: the EMA copy must not share ids with the
/// network, or the optimiser would apply the network's gradients to it.
struct Detached;

impl ModuleMapper for Detached {
    fn map_float<const K: usize>(&mut self, p: Param<Tensor<K>>) -> Param<Tensor<K>> {
        Param::initialized(ParamId::new(), p.val().detach()).set_require_grad(false)
    }
}

impl<const D: usize, M: Module + ModuleDisplay + Denoiser<D> + Clone + 'static> DiffusionModel<D, M> {
    /// Wraps `net`; the EMA starts as a copy of it. Draws are seeded with `seed`.
    pub fn new(net: M, process: Process, ema: EmaConfig, seed: u64) -> Self {
        let device = net.devices().first().cloned().unwrap_or_default();
        let copy = net.clone().map(&mut Detached);
        let steps = Param::initialized(ParamId::new(), Tensor::<1, Int>::zeros([1], &device));
        Self { net, ema: copy, steps, setup: Arc::new(Setup { process, ema, seed, calls: AtomicU64::new(0), outputs: None }) }
    }

    /// Writes weights and a sample grid every `outputs.every` optimiser steps.
    pub fn with_outputs(mut self, outputs: StepOutputs) -> Self {
        let s = &self.setup;
        self.setup = Arc::new(Setup { process: s.process.clone(), ema: s.ema.clone(), seed: s.seed, calls: AtomicU64::new(0), outputs: Some(outputs) });
        self
    }

    /// Optimiser steps done.
    pub fn steps(&self) -> usize {
        self.steps.val().into_scalar::<i64>() as usize
    }

    /// The process the network is trained for.
    pub fn process(&self) -> &Process {
        &self.setup.process
    }

    fn loss(&self, batch: DiffusionBatch<D>, stream: u64) -> Tensor<1> {
        // One stream per (seed, step, call): the same draws whatever the run's history.
        let mix = self.setup.seed ^ (self.steps() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let mut rng = ChaCha8Rng::seed_from_u64(mix);
        let mut noise = HostNoise::new(mix.rotate_left(17) ^ 0x5EED);
        let cond = Conditioning { self_cond: None, classes: batch.classes };
        // burn-train's steps cannot return an error: a process that refuses the batch is a
        // programming error of the caller (shapes, classes), reported with its message.
        self.setup.process.training_loss(&self.net, batch.x0, &cond, &mut rng, &mut noise).unwrap_or_else(|e| panic!("diffusion training step: {e}")).loss
    }

    /// The EMA update and the step outputs, after the optimiser moved the network.
    fn after_optimizer(mut self) -> Self {
        self.setup.calls.store(0, Ordering::Relaxed);
        let step = self.steps() + 1;
        self.steps = self.steps.map(|t| t.add_scalar(1));
        if let Some(decay) = self.setup.ema.decay_at(step) {
            self.ema = crate::ema::ema_update_in_order(self.ema, &self.net, decay);
        }
        if let Some(outputs) = &self.setup.outputs
            && step.is_multiple_of(outputs.every.max(1))
            && let Err(e) = outputs.write::<D, M>(step, &self)
        {
            tracing::error!("step {step}: {e}");
        }
        self
    }
}

impl<const D: usize, M: Module + ModuleDisplay + Denoiser<D> + Clone + 'static> TrainStep for DiffusionModel<D, M> {
    type Input = DiffusionBatch<D>;
    type Output = DiffusionOutput;

    fn step(&self, batch: DiffusionBatch<D>) -> TrainOutput<DiffusionOutput> {
        let call = self.setup.calls.fetch_add(1, Ordering::Relaxed);
        let loss = self.loss(batch, call);
        let grads = loss.backward();
        TrainOutput::new(self, grads, DiffusionOutput { loss: loss.detach() })
    }

    fn optimize(self, optim: &mut ModuleOptimizer, lr: ModuleLearningRate, grads: GradientsParams) -> Self {
        optim.step(lr, self, grads).after_optimizer()
    }

    fn optimize_multi(self, optim: &mut ModuleOptimizer, lr: ModuleLearningRate, grads: MultiGradientsParams) -> Self {
        optim.step_multi(lr, self, grads).after_optimizer()
    }
}

impl<const D: usize, M: Module + ModuleDisplay + Denoiser<D> + Clone + 'static> InferenceStep for DiffusionModel<D, M> {
    type Input = DiffusionBatch<D>;
    type Output = DiffusionOutput;

    /// The validation loss, with draws fixed per batch size so that epochs compare.
    fn step(&self, batch: DiffusionBatch<D>) -> DiffusionOutput {
        let mut rng = ChaCha8Rng::seed_from_u64(self.setup.seed ^ 0x7A11_D000);
        let mut noise = HostNoise::new(self.setup.seed ^ 0x7A11_D001);
        let cond = Conditioning { self_cond: None, classes: batch.classes };
        let loss = self.setup.process.training_loss(&self.net, batch.x0, &cond, &mut rng, &mut noise).unwrap_or_else(|e| panic!("diffusion validation step: {e}")).loss;
        DiffusionOutput { loss }
    }
}

/// Step-based outputs the Learner lacks: every `every` optimiser steps, the weights in
/// `dir/steps/step-NNNNNNN.bpk` (the newest `keep_last` kept) and a grid of `seeds` sampled from
/// the EMA weights in `dir/samples/step-NNNNNNN.png`, with `dir/progress.png` updated.
#[derive(Debug, Clone)]
pub struct StepOutputs {
    pub dir: PathBuf,
    pub every: usize,
    pub keep_last: usize,
    pub item_shape: Vec<usize>,
    pub sampler: Sampler,
    pub seeds: Vec<u64>,
    pub clip: Option<X0Clip>,
}

impl StepOutputs {
    fn write<const D: usize, M: Module + ModuleDisplay + Denoiser<D> + Clone + 'static>(&self, step: usize, model: &DiffusionModel<D, M>) -> Result<()> {
        let name = format!("step-{step:07}");
        let steps = self.dir.join("steps");
        std::fs::create_dir_all(&steps).map_err(|e| crate::fsio::io(&steps, e))?;
        let file = steps.join(format!("{name}.bpk"));
        let tmp = steps.join(format!("{name}.bpk.tmp"));
        model.clone().valid().save_file(&tmp).map_err(|e| crate::fsio::io(&tmp, std::io::Error::other(e.to_string())))?;
        std::fs::rename(&tmp, &file).map_err(|e| crate::fsio::io(&file, e))?;
        let mut older: Vec<PathBuf> = std::fs::read_dir(&steps).map_err(|e| crate::fsio::io(&steps, e))?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "bpk")).collect();
        older.sort();
        let excess = older.len().saturating_sub(self.keep_last.max(1));
        for old in &older[..excess] {
            std::fs::remove_file(old).map_err(|e| crate::fsio::io(old, e))?;
        }
        let samples = self.dir.join("samples");
        std::fs::create_dir_all(&samples).map_err(|e| crate::fsio::io(&samples, e))?;
        let ema = model.ema.clone().valid();
        let device = ema.devices().first().cloned().unwrap_or_default();
        let draw = crate::sample::Draw { clip: self.clip, ..crate::sample::Draw::new(&model.setup.process, &self.item_shape, &device, &self.sampler, &self.seeds, self.seeds.len()) };
        crate::sample::draw_picture::<D, M>(&draw, &ema, &samples.join(format!("{name}.png")), &crate::grid::GridOptions::default())?;
        crate::grid::write_progress(&samples, &self.dir.join("progress.png"), step, &self.item_shape)
    }
}

/// The learning rate of [`crate::config::TrainSection`]: linear warm-up, then constant, cosine or
/// linear decay, stepped once per optimiser step by the Learner (the same schedule as the
/// command's loop).
#[derive(Debug, Clone)]
pub struct WarmupSchedule {
    pub train: crate::config::TrainSection,
    step: usize,
}

impl WarmupSchedule {
    pub fn new(train: crate::config::TrainSection) -> Self {
        Self { train, step: 0 }
    }
}

impl LrScheduler for WarmupSchedule {
    fn step(&mut self) -> f64 {
        self.step += 1;
        self.train.lr_at(self.step)
    }
    fn to_record(&self) -> LrSchedulerRecord {
        LrSchedulerRecord::new().with_scalar("step", self.step as u64)
    }
    fn load_record(&mut self, record: LrSchedulerRecord) {
        if let Some(step) = record.scalar::<u64>("step") {
            self.step = step as usize;
        }
    }
}

/// Gathers items of an [`InMemory`] set into a [`DiffusionBatch`]: mirrored at random when the set
/// asks for it, labelled (with labels dropped to the null class at `cond_drop_prob`) for
/// class-conditional networks.
pub struct ItemBatcher<const D: usize> {
    pub data: Arc<InMemory>,
    /// `(num_classes, cond_drop_prob)` for class-conditional networks.
    pub labelling: Option<(usize, f64)>,
    pub seed: u64,
    visits: AtomicU64,
}

impl<const D: usize> ItemBatcher<D> {
    pub fn new(data: Arc<InMemory>, labelling: Option<(usize, f64)>, seed: u64) -> Self {
        Self { data, labelling, seed, visits: AtomicU64::new(0) }
    }
}

impl<const D: usize> Batcher<usize, DiffusionBatch<D>> for ItemBatcher<D> {
    fn batch(&self, items: Vec<usize>, device: &Device) -> DiffusionBatch<D> {
        let first = self.visits.fetch_add(items.len() as u64, Ordering::Relaxed);
        let coin = |salt: u64, k: usize| crate::trainer::visit_hash(self.seed ^ salt, first, k);
        let flips: Vec<bool> = (0..items.len()).map(|k| self.data.hflip && coin(0, k) < 0.5).collect();
        let values = self.data.host_batch(&items, &flips);
        let mut shape = [0usize; D];
        shape[0] = items.len();
        shape[1..].copy_from_slice(&self.data.item_shape);
        let classes = match (self.labelling, &self.data.labels) {
            (Some((null, drop)), Some(labels)) => {
                let l: Vec<i64> = items.iter().enumerate().map(|(k, &i)| if coin(0x5EED_D40B, k) < drop { null as i64 } else { labels[i] as i64 }).collect();
                Some(Tensor::<1, Int>::from_data(TensorData::new(l, [items.len()]), device))
            }
            _ => None,
        };
        DiffusionBatch { x0: Tensor::<D>::from_data(TensorData::new(values, shape), device), classes }
    }
}

/// Training and validation loaders over `data`: every item but the last `valid` ones for
/// training (shuffled with `seed`), those for validation.
pub fn dataloaders<const D: usize>(
    data: Arc<InMemory>,
    batch_size: usize,
    valid: usize,
    labelling: Option<(usize, f64)>,
    seed: u64,
) -> (Arc<dyn DataLoader<DiffusionBatch<D>>>, Arc<dyn DataLoader<DiffusionBatch<D>>>) {
    let n = data.len();
    let valid = valid.min(n / 2);
    struct Range(usize, usize);
    impl Dataset<usize> for Range {
        fn get(&self, index: usize) -> std::result::Result<usize, DatasetError> {
            Ok(self.0 + index)
        }
        fn len(&self) -> usize {
            self.1
        }
    }
    let train = DataLoaderBuilder::new(ItemBatcher::<D>::new(data.clone(), labelling, seed)).batch_size(batch_size).shuffle(seed).num_workers(1).build(Range(0, n - valid));
    let valid = DataLoaderBuilder::new(ItemBatcher::<D>::new(data, labelling.map(|(classes, _)| (classes, 0.0)), seed)).batch_size(batch_size).num_workers(1).build(Range(n - valid, valid));
    (train, valid)
}

/// burn-train's renderer for logs: when standard output is not a terminal (nohup, CI, a cluster
/// job), one line at most every `every` seconds and at the end of each split, e.g.
/// `learner train: epoch 3/12, 512/1984 items, Loss 0.1210, Learning Rate 0.001, Iteration Speed
/// 6.24`, instead of burn-train's own CLI renderer, which prints a debug dump per iteration. On a
/// terminal [`renderer`] gives burn-train's dashboard.
pub struct PlainRenderer {
    every: std::time::Duration,
    last: Option<std::time::Instant>,
    names: std::collections::HashMap<burn::train::metric::MetricId, String>,
    values: std::collections::BTreeMap<(String, String), f64>,
    split: String,
    epoch: usize,
    epochs: usize,
    items: usize,
    total: usize,
}

impl PlainRenderer {
    pub fn new(every_seconds: f64) -> Self {
        Self {
            every: std::time::Duration::from_secs_f64(every_seconds.max(0.0)),
            last: None,
            names: Default::default(),
            values: Default::default(),
            split: "train".into(),
            epoch: 1,
            epochs: 1,
            items: 0,
            total: 0,
        }
    }

    fn record(&mut self, split: &str, state: burn::train::renderer::MetricState) {
        if let burn::train::renderer::MetricState::Numeric(entry, Some(value)) = state {
            let v = value.current();
            let name = self.names.get(&entry.metric_id).cloned().unwrap_or_else(|| "metric".into());
            self.values.insert((split.to_string(), name), v);
        }
    }

    fn line(&mut self, force: bool) {
        if !force && self.last.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        println!("{}", self.status());
    }

    /// The line it prints: split, epoch, items and the split's latest metric values.
    pub fn status(&self) -> String {
        let metrics: Vec<String> = self.values.iter().filter(|((s, _), _)| *s == self.split).map(|((_, n), v)| format!("{n} {v:.4}")).collect();
        format!("learner {}: epoch {}/{}, {}/{} items, {}", self.split, self.epoch, self.epochs, self.items, self.total, metrics.join(", "))
    }
}

impl burn::train::renderer::MetricsRendererTraining for PlainRenderer {
    fn update_train(&mut self, state: burn::train::renderer::MetricState) {
        self.record("train", state);
    }
    fn update_valid(&mut self, state: burn::train::renderer::MetricState) {
        self.record("valid", state);
    }
}

impl burn::train::renderer::MetricsRendererEvaluation for PlainRenderer {
    fn update_test(&mut self, _name: burn::train::renderer::EvaluationName, state: burn::train::renderer::MetricState) {
        self.record("test", state);
    }
}

impl burn::train::logger::TrainingProgressLogger for PlainRenderer {
    fn start(&mut self, total_epochs: usize, starting_epoch: usize, _total_items: Option<usize>, _label: Option<&str>) {
        (self.epochs, self.epoch) = (total_epochs, starting_epoch.max(1));
    }
    fn update_epoch(&mut self, epoch: usize) {
        self.epoch = epoch + 1;
    }
    fn start_split(&mut self, split: &str, total_items: usize) {
        (self.split, self.total, self.items) = (split.to_string(), total_items, 0);
    }
    fn update_split(&mut self, items_processed: usize) {
        self.items = items_processed;
        self.line(false);
    }
    fn end_split(&mut self) {
        self.line(true);
    }
    fn end(&mut self) {}
    fn log_event_training(&mut self, _event: String) {}
}

impl burn::train::logger::EvaluationProgressLogger for PlainRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}
    fn start_test(&mut self, name: &str, total_items: usize) {
        (self.split, self.total, self.items) = (name.to_string(), total_items, 0);
    }
    fn update_test_progress(&mut self, items_processed: usize) {
        self.items = items_processed;
        self.line(false);
    }
    fn end_test(&mut self) {
        self.line(true);
    }
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _event: String) {}
}

impl burn::train::renderer::MetricsRenderer for PlainRenderer {
    fn manual_close(&mut self) {}
    fn register_metric(&mut self, definition: burn::train::metric::MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name.to_string());
    }
}

/// The renderer for a Learner run: burn-train's dashboard when standard output is a terminal,
/// [`PlainRenderer`] lines every `every_seconds` otherwise.
pub fn renderer(interrupter: burn::train::Interrupter, every_seconds: f64) -> Box<dyn burn::train::renderer::MetricsRenderer> {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        burn::train::renderer::default_renderer(interrupter, None)
    } else {
        Box::new(PlainRenderer::new(every_seconds))
    }
}
