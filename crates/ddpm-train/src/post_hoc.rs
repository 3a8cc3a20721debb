//! EDM2's post-hoc EMA (Karras et al. 2024, section 3.2): after training, the EMA of any width
//! `sigma_rel` at any stored step, as the least-squares combination of the power-function averages
//! the trainer stored (`train.post_hoc_ema`). The result is a folder that `ddpm-train sample
//! --checkpoint` takes like a checkpoint.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::Serialize;

use crate::checkpoint::{EMA, SnapshotInfo, list_snapshots, snapshot_file, write_folder};
use crate::ema::WeightedSum;
use crate::ema::power::{post_hoc_weights, sigma_rel_to_gamma};
use crate::error::{Result, TrainError};
use crate::TrainModel;

/// What to reconstruct.
#[derive(Debug, Clone)]
pub struct PostHocJob {
    /// The run folder (with `config.toml` and `post-hoc/`).
    pub run_dir: PathBuf,
    /// Width of the wanted average.
    pub sigma_rel: f64,
    /// The step to reconstruct at (a stored snapshot's); default the last.
    pub step: Option<usize>,
    /// Output folder; default `RUN/post-hoc/sigma_rel-S-step-NNNNNNN`.
    pub out_dir: Option<PathBuf>,
}

/// One stored average's share of the result.
#[derive(Debug, Clone, Serialize)]
pub struct Share {
    pub step: usize,
    pub sigma_rel: f64,
    pub weight: f64,
}

/// What a reconstruction did (also written as `post-hoc.json` in the output folder).
#[derive(Debug, Clone, Serialize)]
pub struct PostHocReport {
    pub out_dir: PathBuf,
    pub sigma_rel: f64,
    pub gamma: f64,
    pub step: usize,
    /// `||sum w_i p_i - p|| / ||p||` of the averaging profiles.
    pub relative_error: f64,
    pub shares: Vec<Share>,
}

/// Reconstructs the average and writes it with the run's config.
pub fn reconstruct(job: &PostHocJob) -> Result<PostHocReport> {
    let config_path = job.run_dir.join(crate::checkpoint::CONFIG);
    let cfg = crate::load_config(&config_path, &[])?;
    let snapshots = list_snapshots(&job.run_dir)?;
    let Some((_, last)) = snapshots.last() else {
        return Err(TrainError::Checkpoint {
            path: job.run_dir.join("post-hoc"),
            message: "no post-hoc EMA snapshots; train with train.post_hoc_ema.sigma_rels set (EDM2 keeps [0.05, 0.10])".into(),
        });
    };
    let step = job.step.unwrap_or(last.step);
    if !snapshots.iter().any(|(_, s)| s.step == step) {
        let steps: Vec<String> = snapshots.iter().map(|(_, s)| s.step.to_string()).collect();
        return Err(TrainError::config("--step", format!("no snapshot at step {step}; the run stored steps {}", steps.join(", "))));
    }
    let gamma = sigma_rel_to_gamma(job.sigma_rel).map_err(|e| TrainError::config("--sigma-rel", e.to_string()))?;
    let used: Vec<(PathBuf, SnapshotInfo)> = snapshots.into_iter().filter(|(_, s)| s.step <= step).collect();
    let mut files = Vec::new();
    let mut stored = Vec::new();
    let mut shares = Vec::new();
    for (dir, info) in &used {
        for (k, (&g, &s)) in info.gammas.iter().zip(&info.sigma_rels).enumerate() {
            files.push(dir.join(snapshot_file(k)));
            stored.push((info.step as f64, g));
            shares.push(Share { step: info.step, sigma_rel: s, weight: 0.0 });
        }
    }
    let rec = post_hoc_weights(&stored, (step as f64, gamma))?;
    for (share, w) in shares.iter_mut().zip(&rec.weights) {
        share.weight = *w;
    }
    let out_dir = job.out_dir.clone().unwrap_or_else(|| job.run_dir.join("post-hoc").join(format!("sigma_rel-{:.3}-step-{step:07}", job.sigma_rel)));
    let report = PostHocReport { out_dir: out_dir.clone(), sigma_rel: job.sigma_rel, gamma, step, relative_error: rec.relative_error, shares };
    let device = ddpm_io::device::parse_device(&cfg.run.device)?;
    let item_shape = crate::data::item_shape(&cfg.data)?;
    let config_text = std::fs::read_to_string(&config_path).map_err(|e| crate::fsio::io(&config_path, e))?;
    struct Write<'a> {
        files: &'a [PathBuf],
        weights: &'a [f64],
        device: Device,
        out_dir: &'a Path,
        config: &'a str,
        report: &'a PostHocReport,
    }
    impl crate::AnyRank for Write<'_> {
        type Output = ();
        fn run<const D: usize, M: TrainModel<D>>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<()> {
            let mut sum = WeightedSum::default();
            for (file, &w) in self.files.iter().zip(self.weights) {
                let m = init(&self.device)?
                    .try_load_file(file)
                    .map_err(|e| TrainError::Checkpoint { path: file.clone(), message: format!("cannot load ({e}); the file is truncated or the run's config changed") })?;
                sum.add(&m, w);
            }
            let average = sum.finish(init(&self.device)?);
            write_folder(self.out_dir, |tmp| {
                average.save_file(tmp.join(EMA)).map_err(|e| TrainError::Checkpoint { path: tmp.to_path_buf(), message: format!("saving the average: {e}") })?;
                std::fs::write(tmp.join(crate::checkpoint::CONFIG), self.config).map_err(|e| crate::fsio::io(tmp, e))?;
                std::fs::write(tmp.join("post-hoc.json"), serde_json::to_vec_pretty(self.report).expect("serialises")).map_err(|e| crate::fsio::io(tmp, e))
            })
        }
    }
    crate::with_model(&cfg, &item_shape, Write { files: &files, weights: &rec.weights, device, out_dir: &out_dir, config: &config_text, report: &report })?;
    Ok(report)
}
