//! `ddpm-train bench`: the cost of a config's network on a device, measured after warm-up: the
//! training step phase by phase (forward, backward, optimiser, EMA), each split by op class (our
//! kernels' counters, `ddpm_kernels::profile`), the no-grad forward pass, the convolutions' rate
//! against the machine's GEMM peak, sampling throughput and peak memory. A table for people, or
//! JSON.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorCreationOptions};
use ddpm_core::prelude::*;
use ddpm_io::memory::{peak_host_bytes, reset_peak_host_bytes};
use ddpm_kernels::profile::{self, OpTimes};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::config::TrainConfig;
use crate::error::Result;
use crate::TrainModel;

/// How long to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    /// Untimed iterations first (kernel compilation, autotuning, allocator warm-up).
    pub warmup: usize,
    /// Timed iterations; the median is reported.
    pub iters: usize,
}

/// One phase's wall time and the part of it each op class of our kernels took
/// (`ddpm_kernels::profile`). `other_s` is the rest: Burn's own ops (element-wise arithmetic,
/// reshapes, the attention products, the autodiff graph) and host work. On devices without our
/// kernels every class is 0 and the whole time is `other_s`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct OpBreakdown {
    pub total_s: f64,
    pub conv_s: f64,
    pub norm_s: f64,
    pub attention_s: f64,
    pub activation_s: f64,
    pub optimizer_s: f64,
    pub linear_s: f64,
    pub other_s: f64,
}

impl OpBreakdown {
    fn new(total_s: f64, ops: &OpTimes) -> Self {
        Self {
            total_s,
            conv_s: ops.conv_s,
            norm_s: ops.norm_s,
            attention_s: ops.attention_s,
            activation_s: ops.activation_s,
            optimizer_s: ops.optimizer_s,
            linear_s: ops.linear_s,
            other_s: (total_s - ops.kernels_s()).max(0.0),
        }
    }

    fn fields(&self) -> [f64; 8] {
        [self.total_s, self.conv_s, self.linear_s, self.norm_s, self.attention_s, self.activation_s, self.optimizer_s, self.other_s]
    }

    /// The iteration with the median total, whole, so that its parts still add up to it.
    fn median(samples: &[OpBreakdown]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(|a, b| a.total_s.total_cmp(&b.total_s));
        sorted[sorted.len() / 2]
    }
}

/// The phases of one training step, as the training loop runs them.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StepPhases {
    /// The loss: noising, the network's forward pass, the objective.
    pub forward: OpBreakdown,
    /// `loss.backward()` and collecting the gradients.
    pub backward: OpBreakdown,
    /// Global-norm clipping and the Adam(W) update.
    pub optimizer: OpBreakdown,
    /// The EMA update.
    pub ema: OpBreakdown,
}

/// What `bench` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub device: String,
    pub parameters: usize,
    pub item_shape: Vec<usize>,
    pub batch_size: usize,
    pub warmup: usize,
    pub iters: usize,
    /// Median seconds of one training step (loss, backward, clipping, Adam, EMA) on `batch_size`
    /// items: the median of the per-step sums of `phases`.
    pub train_step_s: f64,
    /// Median seconds of one no-grad network call on `batch_size` items.
    pub forward_s: f64,
    /// Where the training step's time goes, phase by phase and op class by op class (for each
    /// phase, the iteration with its median time).
    pub phases: StepPhases,
    /// The no-grad network call by op class (the iteration with the median time).
    pub no_grad_forward: OpBreakdown,
    /// Convolution arithmetic of one training step, GFLOP (0 without our kernels).
    pub conv_gflop_per_step: f64,
    /// The convolutions' rate in the training step, GFLOP/s (null without our kernels).
    pub conv_gflops: Option<f64>,
    /// What our GEMM sustains on this machine (a 1024³ product, all threads), GFLOP/s: the
    /// practical f32 peak the convolutions are compared with.
    pub gemm_peak_gflops: Option<f64>,
    /// `conv_gflops / gemm_peak_gflops`.
    pub conv_fraction_of_peak: Option<f64>,
    /// Network calls per sample with the configured sampler.
    pub sampler_calls: usize,
    /// `batch_size / (forward_s * sampler_calls)`: samples per second, from the measured forward time.
    pub samples_per_s: f64,
    /// Training items per second (`batch_size / train_step_s`).
    pub train_items_per_s: f64,
    /// Peak resident memory of this process (host) during this measurement, bytes (`VmHWM`,
    /// reset before it where the kernel allows; Linux only, else null).
    pub peak_host_bytes: Option<u64>,
    /// Peak bytes the device allocator reserved, when the backend reports it (GPU backends).
    pub peak_device_bytes: Option<u64>,
}

impl BenchReport {
    /// The report as a table for people: phases by op class, the convolutions' rate, memory.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} ({} parameters) on {}, batch {} of {:?}, median of {} steps after {} warm-up\n",
            self.model, self.parameters, self.device, self.batch_size, self.item_shape, self.iters, self.warmup
        );
        out += &format!("{:<16}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}\n", "phase (ms)", "total", "conv", "linear", "norm", "attn", "act", "optim", "other");
        let p = &self.phases;
        let step = OpBreakdown {
            total_s: self.train_step_s,
            ..[p.forward, p.backward, p.optimizer, p.ema].iter().fold(OpBreakdown::default(), |a, b| OpBreakdown {
                total_s: 0.0,
                conv_s: a.conv_s + b.conv_s,
                norm_s: a.norm_s + b.norm_s,
                attention_s: a.attention_s + b.attention_s,
                activation_s: a.activation_s + b.activation_s,
                optimizer_s: a.optimizer_s + b.optimizer_s,
                linear_s: a.linear_s + b.linear_s,
                other_s: a.other_s + b.other_s,
            })
        };
        for (name, row) in [("forward", p.forward), ("backward", p.backward), ("optimizer", p.optimizer), ("ema", p.ema), ("train step", step), ("no-grad forward", self.no_grad_forward)] {
            out += &format!("{name:<16}");
            for v in row.fields() {
                out += &format!("{:>9.2}", v * 1e3);
            }
            out += "\n";
        }
        if let (Some(rate), Some(peak)) = (self.conv_gflops, self.gemm_peak_gflops) {
            out += &format!(
                "convolutions: {:.1} GFLOP per step at {:.0} GFLOP/s, {:.0}% of the {:.0} GFLOP/s our GEMM sustains here\n",
                self.conv_gflop_per_step,
                rate,
                100.0 * rate / peak,
                peak
            );
        }
        out += &format!(
            "{:.1} training items/s; sampling with {} network calls per sample: {:.2} samples/s",
            self.train_items_per_s, self.sampler_calls, self.samples_per_s
        );
        if let Some(bytes) = self.peak_host_bytes {
            out += &format!("; peak RSS {:.0} MiB", bytes as f64 / (1 << 20) as f64);
        }
        if let Some(bytes) = self.peak_device_bytes {
            out += &format!("; device peak {:.0} MiB", bytes as f64 / (1 << 20) as f64);
        }
        out
    }
}

impl BenchReport {
    /// The column names of [`BenchReport::sweep_row`].
    pub fn sweep_header() -> String {
        format!(
            "{:<16}{:>6}{:>11}{:>10}{:>11}{:>10}{:>10}{:>10}{:>11}",
            "item shape", "batch", "step ms", "items/s", "no-grad ms", "conv GF/s", "% peak", "other %", "RSS MiB"
        )
    }

    /// One line of a sweep: the size of the work and what it cost.
    pub fn sweep_row(&self) -> String {
        let shape = self.item_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        let p = &self.phases;
        let other = p.forward.other_s + p.backward.other_s + p.optimizer.other_s + p.ema.other_s;
        let opt = |v: Option<f64>, scale: f64| v.map_or("-".to_string(), |v| format!("{:.0}", v * scale));
        format!(
            "{:<16}{:>6}{:>11.1}{:>10.1}{:>11.1}{:>10}{:>10}{:>10.0}{:>11}",
            shape,
            self.batch_size,
            self.train_step_s * 1e3,
            self.train_items_per_s,
            self.forward_s * 1e3,
            opt(self.conv_gflops, 1.0),
            opt(self.conv_fraction_of_peak, 100.0),
            100.0 * other / self.train_step_s,
            opt(self.peak_host_bytes.map(|b| b as f64), 1.0 / (1 << 20) as f64),
        )
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Our GEMM's rate on this machine, measured once per process.
fn gemm_peak_gflops() -> Option<f64> {
    static PEAK: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *PEAK.get_or_init(|| ddpm_kernels::profile::gemm_peak_flops().map(|f| f * 1e-9))
}

/// Turns the kernels' op counters on for as long as it lives.
struct Profiling;

impl Profiling {
    fn start() -> Self {
        profile::enable(true);
        profile::take();
        Self
    }
}

impl Drop for Profiling {
    fn drop(&mut self) {
        profile::enable(false);
    }
}

/// Measures the network of `cfg` on random data of the configured shape: each phase of a training
/// step (as `trainer::optimizer_step` and the EMA update run it) and the no-grad forward pass,
/// split by op class.
pub fn bench(cfg: &TrainConfig, opts: BenchOptions) -> Result<BenchReport> {
    let item_shape = crate::data::item_shape(&cfg.data)?;
    struct Bench<'a>(&'a TrainConfig, &'a [usize], BenchOptions);
    impl crate::AnyRank for Bench<'_> {
        type Output = BenchReport;
        fn run<const D: usize, M: TrainModel<D>>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<BenchReport> {
            let (cfg, item_shape, opts) = (self.0, self.1, self.2);
            let device = ddpm_io::device::parse_device(&cfg.run.device)?;
            let train_device = device.clone().autodiff();
            train_device.seed(cfg.run.seed);
            let diffusion = cfg.build_diffusion()?;
            let t = &cfg.train;
            let mut shape = [0usize; D];
            shape[0] = t.batch_size;
            shape[1..].copy_from_slice(item_shape);
            let mut model = init(&train_device)?;
            let parameters = burn::module::Module::num_params(&model);
            let mut optim = crate::trainer::optimizer(cfg);
            let mut ema = model.valid();
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.run.seed);
            let mut noise = HostNoise::new(cfg.run.seed);
            let mut peak_device = None::<u64>;
            let mut note_memory = |d: &Device| {
                if let Some(u) = d.memory_pool_usage() {
                    peak_device = Some(peak_device.unwrap_or(0).max(u.bytes_reserved));
                }
            };
            let sync = |d: &Device| d.sync().map_err(|e| crate::TrainError::config("run.device", format!("{e:?}")));
            // The time since `clock` with the op counters since the last lap; restarts the clock.
            let lap = |clock: &mut Instant| {
                let ops = profile::take();
                let phase = OpBreakdown::new(clock.elapsed().as_secs_f64(), &ops);
                *clock = Instant::now();
                (phase, ops.conv_flops)
            };
            reset_peak_host_bytes();
            let _profiling = Profiling::start();
            let (mut steps, mut step_flops) = (Vec::new(), 0u64);
            for i in 0..opts.warmup + opts.iters {
                let x0: Tensor<D> = noise.normal(shape, TensorCreationOptions::new(train_device.clone()))?.clamp(-1.0, 1.0);
                sync(&train_device)?;
                profile::take();
                let mut clock = Instant::now();
                let loss = diffusion.training_loss(&model, x0, &Conditioning::none(), &mut rng, &mut noise)?.loss;
                sync(&train_device)?;
                let (forward, f0) = lap(&mut clock);
                let mut grads = GradientsParams::from_grads(loss.backward(), &model);
                sync(&train_device)?;
                let (backward, f1) = lap(&mut clock);
                crate::trainer::clip_global_norm(&model, &mut grads, t.grad_clip);
                model = optim.step(t.lr, model, grads);
                sync(&train_device)?;
                let (optimizer, f2) = lap(&mut clock);
                ema = crate::ema::ema_update(ema, &model, t.ema.decay).0;
                sync(&device)?;
                let (ema_phase, f3) = lap(&mut clock);
                if i >= opts.warmup {
                    steps.push(StepPhases { forward, backward, optimizer, ema: ema_phase });
                    step_flops = f0 + f1 + f2 + f3;
                }
                note_memory(&device);
            }
            let net = model.valid();
            let mut forwards = Vec::new();
            for i in 0..opts.warmup + opts.iters {
                let x: Tensor<D> = noise.normal(shape, TensorCreationOptions::new(device.clone()))?;
                let time = Tensor::<1>::full([t.batch_size], diffusion.typical_time(), &device);
                sync(&device)?;
                profile::take();
                let mut clock = Instant::now();
                let _ = net.denoise(x, time, &Conditioning::none()).into_data();
                let (phase, _) = lap(&mut clock);
                if i >= opts.warmup {
                    forwards.push(phase);
                }
                note_memory(&device);
            }
            let pick = |f: fn(&StepPhases) -> OpBreakdown| OpBreakdown::median(&steps.iter().map(f).collect::<Vec<_>>());
            let phases = StepPhases { forward: pick(|p| p.forward), backward: pick(|p| p.backward), optimizer: pick(|p| p.optimizer), ema: pick(|p| p.ema) };
            let train_step_s = median(steps.iter().map(|p| p.forward.total_s + p.backward.total_s + p.optimizer.total_s + p.ema.total_s).collect());
            let conv_s = phases.forward.conv_s + phases.backward.conv_s;
            let conv_gflops = (step_flops > 0 && conv_s > 0.0).then(|| step_flops as f64 * 1e-9 / conv_s);
            let gemm_peak = if conv_gflops.is_some() { gemm_peak_gflops() } else { None };
            let no_grad_forward = OpBreakdown::median(&forwards);
            let forward_s = no_grad_forward.total_s;
            let sampler_calls = diffusion.network_calls(&cfg.sample.sampler()?);
            Ok(BenchReport {
                model: cfg.model.kind().to_string(),
                device: cfg.run.device.clone(),
                parameters,
                item_shape: item_shape.to_vec(),
                batch_size: t.batch_size,
                warmup: opts.warmup,
                iters: opts.iters,
                train_step_s,
                forward_s,
                phases,
                no_grad_forward,
                conv_gflop_per_step: step_flops as f64 * 1e-9,
                conv_gflops,
                gemm_peak_gflops: gemm_peak,
                conv_fraction_of_peak: conv_gflops.zip(gemm_peak).map(|(r, p)| r / p),
                sampler_calls,
                samples_per_s: t.batch_size as f64 / (forward_s * sampler_calls as f64),
                train_items_per_s: t.batch_size as f64 / train_step_s,
                peak_host_bytes: peak_host_bytes(),
                peak_device_bytes: peak_device,
            })
        }
    }
    if opts.iters == 0 {
        return Err(crate::TrainError::config("--iters", "measure at least one iteration"));
    }
    crate::with_model(cfg, &item_shape, Bench(cfg, &item_shape, opts))
}
