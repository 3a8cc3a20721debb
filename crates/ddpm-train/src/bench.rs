//! `ddpm-train bench`: the cost of a config's network on a device, measured after warm-up, as
//! JSON: parameters, median training-step time, median no-grad forward time, sampling throughput
//! and peak memory.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorCreationOptions};
use ddpm_core::prelude::*;
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
    /// Median seconds of one optimiser step (loss, backward, clipping, Adam) on `batch_size` items.
    pub train_step_s: f64,
    /// Median seconds of one no-grad network call on `batch_size` items.
    pub forward_s: f64,
    /// Network calls per sample with the configured sampler.
    pub sampler_calls: usize,
    /// `batch_size / (forward_s * sampler_calls)`: samples per second, from the measured forward time.
    pub samples_per_s: f64,
    /// Training items per second (`batch_size / train_step_s`).
    pub train_items_per_s: f64,
    /// Peak resident memory of this process (host), bytes (`VmHWM`; Linux only, else null).
    pub peak_host_bytes: Option<u64>,
    /// Peak bytes the device allocator reserved, when the backend reports it (GPU backends).
    pub peak_device_bytes: Option<u64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Peak resident memory of this process (`VmHWM`, Linux), bytes.
pub(crate) fn peak_host_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Measures the network of `cfg` on random data of the configured shape.
pub fn bench(cfg: &TrainConfig, opts: BenchOptions) -> Result<BenchReport> {
    let item_shape = crate::data::item_shape(&cfg.data)?;
    struct Bench<'a>(&'a TrainConfig, &'a [usize], BenchOptions);
    impl crate::AnyRank for Bench<'_> {
        type Output = BenchReport;
        fn run<const D: usize, M: TrainModel<D>>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<BenchReport> {
            let (cfg, item_shape, opts) = (self.0, self.1, self.2);
            let device = ddpm_core::device::parse_device(&cfg.run.device)?;
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
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.run.seed);
            let mut noise = HostNoise::new(cfg.run.seed);
            let mut peak_device = None::<u64>;
            let mut note_memory = |d: &Device| {
                if let Some(u) = d.memory_pool_usage() {
                    peak_device = Some(peak_device.unwrap_or(0).max(u.bytes_reserved));
                }
            };
            let mut step_times = Vec::new();
            for i in 0..opts.warmup + opts.iters {
                let x0: Tensor<D> = noise.normal(shape, TensorCreationOptions::new(train_device.clone()))?.clamp(-1.0, 1.0);
                let started = Instant::now();
                let step = crate::trainer::optimizer_step(&diffusion, model, &mut optim, std::iter::once((x0, Conditioning::none())), &crate::trainer::StepSettings { replicas: &[], grad_clip: t.grad_clip, lr: t.lr }, &mut rng, &mut noise)?;
                model = step.model;
                train_device.sync().map_err(|e| crate::TrainError::config("run.device", format!("{e:?}")))?;
                if i >= opts.warmup {
                    step_times.push(started.elapsed().as_secs_f64());
                }
                note_memory(&device);
            }
            let net = model.valid();
            let mut forward_times = Vec::new();
            for i in 0..opts.warmup + opts.iters {
                let x: Tensor<D> = noise.normal(shape, TensorCreationOptions::new(device.clone()))?;
                let time = Tensor::<1>::full([t.batch_size], diffusion.typical_time(), &device);
                let started = Instant::now();
                let y = net.denoise(x, time, &Conditioning::none());
                let _ = y.into_data();
                if i >= opts.warmup {
                    forward_times.push(started.elapsed().as_secs_f64());
                }
                note_memory(&device);
            }
            let sampler_calls = diffusion.network_calls(&cfg.sample.sampler()?);
            let (train_step_s, forward_s) = (median(step_times), median(forward_times));
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
