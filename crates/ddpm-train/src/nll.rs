//! `ddpm-train nll`: negative log-likelihood in bits/dim of data items under a checkpoint, through
//! the variational bound of ddpm-core (`sum_t L_t + L_prior`, with the discretised 8-bit decoder
//! at t = 0; Ho et al. 2020, eq. 5 and Sec. 3.3), as the papers report it for images.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use ddpm_core::prelude::*;
use serde::Serialize;

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::sample::Weights;
use crate::{TrainModel, WithModel};

/// What `nll` reports.
#[derive(Debug, Clone, Serialize)]
pub struct NllReport {
    /// Mean bound over the items, bits per dimension.
    pub bits_per_dim: f64,
    /// Standard error of that mean.
    pub std_error: f64,
    /// Mean prior term `L_T` (bits/dim).
    pub prior_bits_per_dim: f64,
    pub items: usize,
    pub seconds: f64,
}

/// The bound for the first `items` items of the config's data (in data order), with noise from
/// `seed`; images only (the decoder term is for 8-bit pixels).
pub fn nll(cfg: &TrainConfig, checkpoint: PathBuf, weights: Weights, items: usize, seed: u64, progress: bool) -> Result<NllReport> {
    let data = crate::data::load(&cfg.data, cfg.run.seed)?;
    if data.item_shape.len() != 3 {
        return Err(TrainError::config("data.kind", "bits/dim is defined here for images (8-bit pixels); this data set holds vectors or sequences"));
    }
    let n = items.min(data.len());
    if n == 0 {
        return Err(TrainError::config("--num", "evaluate at least one item"));
    }
    let device = ddpm_io::device::parse_device(&cfg.run.device)?;
    let diffusion = cfg.build_diffusion()?.gaussian("the NLL bound")?.clone();
    let source = crate::pipeline::Source::detect(&checkpoint)?;
    struct Run<'a> {
        cfg: &'a TrainConfig,
        data: &'a crate::data::InMemory,
        source: &'a crate::pipeline::Source,
        weights: Weights,
        device: Device,
        diffusion: GaussianDiffusion,
        n: usize,
        seed: u64,
        progress: bool,
    }
    impl WithModel for Run<'_> {
        type Output = (Vec<f64>, Vec<f64>);
        fn images<M: TrainModel<4>>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<Self::Output> {
            let model = crate::pipeline::load_into::<4, M>(self.source, init(&self.device)?, self.weights)?;
            let mut noise = HostNoise::new(self.seed);
            let (mut totals, mut priors) = (Vec::new(), Vec::new());
            let mode = crate::progress::ProgressMode::new(!self.progress, self.cfg.run.progress_seconds);
            let bar = crate::progress::Progress::new("nll", self.n as u64, 0, 1.0, "items", mode);
            let indices: Vec<usize> = (0..self.n).collect();
            let mut shape = vec![0];
            shape.extend_from_slice(&self.data.item_shape);
            for chunk in indices.chunks(self.cfg.sample.batch_size.max(1)) {
                shape[0] = chunk.len();
                let x0 = Tensor::<4>::from_data(TensorData::new(self.data.host_batch(chunk, &[]), shape.clone()), &self.device);
                let bpd = self.diffusion.bits_per_dim(&model, x0, &Conditioning::none(), &mut noise, X0Clip::Static)?;
                totals.extend(ddpm_core::tensor::to_f64_vec(&bpd.total));
                priors.extend(ddpm_core::tensor::to_f64_vec(&bpd.prior));
                bar.inc(chunk.len() as u64);
            }
            bar.finish();
            Ok((totals, priors))
        }
        fn sequences<M: TrainModel<3>>(self, _: &dyn Fn(&Device) -> Result<M>) -> Result<Self::Output> {
            unreachable!("refused above: images only")
        }
        fn vectors<M: TrainModel<2>>(self, _: &dyn Fn(&Device) -> Result<M>) -> Result<Self::Output> {
            unreachable!("refused above: images only")
        }
    }
    let started = Instant::now();
    let (totals, priors) = crate::with_model(
        cfg,
        &data.item_shape.clone(),
        Run { cfg, data: &data, source: &source, weights, device, diffusion, n, seed, progress },
    )?;
    let mean = totals.iter().sum::<f64>() / n as f64;
    let var = if n > 1 { totals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
    Ok(NllReport {
        bits_per_dim: mean,
        std_error: (var / n as f64).sqrt(),
        prior_bits_per_dim: priors.iter().sum::<f64>() / n as f64,
        items: n,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Records `report` in the run that `checkpoint` belongs to (`RUN/checkpoints/step-N`): appends
/// `{"step": N, "time": ..., "nll": {"bits_per_dim", "std_error", "items"}}` to `RUN/metrics.jsonl`
/// (which `nll.png` and TensorBoard-minded readers take) and redraws the run's plots. Returns the
/// run folder, or `None` for a checkpoint outside a run folder (a `.pt`, a safetensors file).
pub fn record_in_run(checkpoint: &std::path::Path, report: &NllReport) -> Result<Option<PathBuf>> {
    use std::io::Write;
    let Ok(state) = crate::checkpoint::read_state(checkpoint) else { return Ok(None) };
    let Some(run) = checkpoint.parent().filter(|p| p.file_name().is_some_and(|n| n == "checkpoints")).and_then(|p| p.parent()) else { return Ok(None) };
    let log = run.join(crate::run_dir::METRICS);
    if !log.is_file() {
        return Ok(None);
    }
    let line = serde_json::json!({
        "step": state.step,
        "time": crate::fsio::unix_time(),
        "nll": { "bits_per_dim": report.bits_per_dim, "std_error": report.std_error, "items": report.items },
    });
    // One short line in append mode: it lands whole beside a trainer writing the same log.
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).map_err(|e| crate::fsio::io(&log, e))?;
    writeln!(file, "{line}").map_err(|e| crate::fsio::io(&log, e))?;
    crate::plot::refresh_run_plots(run)?;
    Ok(Some(run.to_path_buf()))
}
