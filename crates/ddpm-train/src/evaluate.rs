//! Evaluation during training: every `eval.every` steps, `eval.num_samples` samples of the EMA
//! weights, drawn with a fast sampler from fixed seeds (so evaluations compare), are scored — FID
//! against the training data for images (pytorch-fid's Inception-v3; the data's statistics are
//! computed once and cached in `eval/reference.npz`), FLD for labelled images (a LeNet-5 trained
//! once on the data, `eval/lenet.safetensors`), the toy metrics for 2-D sets — logged to
//! `metrics.jsonl`, and the best checkpoint is kept in `checkpoints/best`. Built with the `eval`
//! feature (on by default); [`crate::eval_plan`] holds what does not need ddpm-eval.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use ddpm_core::Denoiser;
use ddpm_eval::frechet::{FeatureStats, frechet_distance};
use ddpm_eval::fld::{LabelledImages, LeNet5Config, LeNetTrainingConfig, TrainedLeNet, lenet_features, load_lenet, save_lenet, train_lenet};
use ddpm_eval::inception::{InceptionV3, WeightsLookup};
use ddpm_eval::toy::{ModeSet, energy_distance, mode_coverage};

use crate::config::{DataConfig, TrainConfig};
use crate::data::InMemory;
use crate::error::{Result, TrainError};
pub use crate::eval_plan::{EvalMetric, EvalResult, EvalSection, check, metrics_line};
use crate::sample::{Draw, draw};

enum Reference {
    Fid { inception: Box<InceptionV3>, stats: FeatureStats },
    Fld { lenet: Box<TrainedLeNet>, stats: FeatureStats },
    Toy { points: Vec<f32>, modes: Option<ModeSet> },
}

/// Scores samples of a run against its data.
pub struct Evaluator {
    reference: Reference,
    sampler: ddpm_core::Sampler,
    num_samples: usize,
}

/// Images `[N, C, H, W]` in [-1, 1] as Inception input: [0, 1], three channels (grey repeated,
/// alpha dropped, as PIL's `convert('RGB')` does).
fn inception_input(values: Vec<f32>, item_shape: &[usize], device: &Device) -> Tensor<4> {
    let (c, h, w) = (item_shape[0], item_shape[1], item_shape[2]);
    let n = values.len() / (c * h * w);
    let x = Tensor::<4>::from_data(TensorData::new(values, [n, c, h, w]), device).add_scalar(1.0).mul_scalar(0.5).clamp(0.0, 1.0);
    match c {
        1 => Tensor::cat(vec![x.clone(), x.clone(), x], 1),
        3 => x,
        _ => x.narrow(1, 0, 3),
    }
}

fn features(inception: &InceptionV3, values: Vec<f32>, item_shape: &[usize], device: &Device) -> Vec<f32> {
    let x = inception_input(values, item_shape, device);
    inception.features(x).into_data().try_to_vec_as::<f32>().expect("features convert to f32")
}

/// Items `[N, C, H, W]` in [-1, 1] as the FLD classifier's images in [0, 1].
fn unit_range(values: Vec<f32>) -> Vec<f32> {
    values.into_iter().map(|v| ((v + 1.0) * 0.5).clamp(0.0, 1.0)).collect()
}

fn fld_features(lenet: &TrainedLeNet, values: Vec<f32>, item_shape: &[usize], device: &Device) -> Result<Vec<f32>> {
    let item: usize = item_shape.iter().product();
    let shape = [values.len() / item, item_shape[0], item_shape[1], item_shape[2]];
    lenet_features(lenet, &unit_range(values), shape, 256, device).map_err(eval_err)
}

impl Evaluator {
    /// The evaluator of `cfg` (`None` when `eval.every` is 0), with its reference prepared.
    pub fn new(cfg: &TrainConfig, data: &InMemory, device: &Device) -> Result<Option<Self>> {
        let e = &cfg.eval;
        let Some((metric, sampler)) = check(cfg, data)? else { return Ok(None) };
        let reference = match metric {
            EvalMetric::Toy => {
                let DataConfig::Toy { name, .. } = &cfg.data else {
                    return Err(TrainError::config("eval.metric", "the toy metrics need a 2-D toy data set; use fid for images"));
                };
                let all: Vec<usize> = (0..data.len().min(e.num_samples.max(2000))).collect();
                Reference::Toy { points: data.host_batch(&all, &[]), modes: ModeSet::named(name).ok() }
            }
            EvalMetric::Fid => {
                let weights = WeightsLookup::from_env(e.weights.as_deref(), e.download_weights).resolve().map_err(|err| TrainError::config("eval.weights", err.to_string()))?;
                let inception = InceptionV3::from_file(&weights, device).map_err(eval_err)?;
                let stats = reference_stats(cfg, data, "reference.npz", false, |v| Ok(features(&inception, v, &data.item_shape, device)))?;
                Reference::Fid { inception: Box::new(inception), stats }
            }
            EvalMetric::Fld => {
                let (lenet, trained_now) = fld_classifier(cfg, data, device)?;
                let stats = reference_stats(cfg, data, "reference-fld.npz", trained_now, |v| fld_features(&lenet, v, &data.item_shape, device))?;
                Reference::Fld { lenet: Box::new(lenet), stats }
            }
        };
        Ok(Some(Self { reference, sampler, num_samples: e.num_samples }))
    }

    /// Samples `num_samples` items from `ema` (seeds 1e9 + i) and scores them.
    pub fn evaluate<const D: usize, M: Denoiser<D>>(
        &self,
        cfg: &TrainConfig,
        diffusion: &ddpm_core::Process,
        ema: &M,
        item_shape: &[usize],
        device: &Device,
    ) -> Result<EvalResult> {
        let started = Instant::now();
        let seeds: Vec<u64> = (0..self.num_samples as u64).map(|i| 1_000_000_000 + i).collect();
        let guidance = crate::sample::Guidance::from_config(cfg)?;
        let mut samples: Vec<f32> = Vec::with_capacity(self.num_samples * item_shape.iter().product::<usize>());
        let mut image_features: Vec<f32> = Vec::new();
        let what = Draw { guidance, clip: cfg.sample.clip, ..Draw::new(diffusion, item_shape, device, &self.sampler, &seeds, cfg.sample.batch_size) };
        draw::<D, M>(&what, ema, |_, v| {
            match &self.reference {
                Reference::Fid { inception, .. } => image_features.extend(features(inception, v, item_shape, device)),
                Reference::Fld { lenet, .. } => image_features.extend(fld_features(lenet, v, item_shape, device)?),
                Reference::Toy { .. } => samples.extend(v),
            }
            Ok(())
        })?;
        let n = self.num_samples;
        let (metric, value, details) = match &self.reference {
            Reference::Fid { stats, .. } | Reference::Fld { stats, .. } => {
                let fake = FeatureStats::from_features(&image_features, n, image_features.len() / n).map_err(eval_err)?;
                let distance = frechet_distance(stats, &fake).map_err(eval_err)?;
                let name = if matches!(self.reference, Reference::Fid { .. }) { "fid" } else { "fld" };
                (name, distance, serde_json::json!({ name: distance }))
            }
            Reference::Toy { points, modes } => {
                let ed = energy_distance(&samples, points, 2).map_err(eval_err)?;
                let mut details = serde_json::json!({ "energy_distance": ed });
                if let Some(m) = modes {
                    let c = mode_coverage(&samples, m, None).map_err(eval_err)?;
                    details["near_mode_share"] = c.near_mode_share.into();
                    details["modes_hit"] = c.modes_hit.into();
                }
                ("energy_distance", ed, details)
            }
        };
        Ok(EvalResult { metric, value, details, num_samples: n, seconds: started.elapsed().as_secs_f64() })
    }
}

fn eval_err(e: ddpm_eval::EvalError) -> TrainError {
    TrainError::config("eval", e.to_string())
}

/// The FLD classifier: `eval.classifier` (default `eval/lenet.safetensors` in the run folder) when
/// it exists, else trained on the labelled training data and saved there; `true` when trained now.
fn fld_classifier(cfg: &TrainConfig, data: &InMemory, device: &Device) -> Result<(TrainedLeNet, bool)> {
    let path = cfg.eval.classifier.clone().unwrap_or_else(|| cfg.run.out_dir.join("eval").join("lenet.safetensors"));
    if path.is_file() {
        return Ok((load_lenet(&path, device).map_err(eval_err)?, false));
    }
    let (Some(labels), true, 3) = (&data.labels, data.num_classes >= 2, data.item_shape.len()) else {
        return Err(TrainError::config(
            "eval.metric",
            "fld trains a LeNet-5 classifier on the data's class labels: use it with labelled images (cifar10, mnist, shapes), give a trained \
             one in eval.classifier, or use fid",
        ));
    };
    let all: Vec<usize> = (0..data.len()).collect();
    let [c, h, w] = [data.item_shape[0], data.item_shape[1], data.item_shape[2]];
    let images = LabelledImages { values: unit_range(data.host_batch(&all, &[])), shape: [all.len(), c, h, w], labels: labels.clone(), num_classes: data.num_classes };
    let config = LeNet5Config::new().with_channels(if c == 1 { 1 } else { 3 }).with_num_classes(data.num_classes);
    let training = LeNetTrainingConfig::new().with_epochs(cfg.eval.classifier_epochs).with_seed(cfg.run.seed);
    let trained = train_lenet(&images, &config, &training, device, true).map_err(eval_err)?;
    save_lenet(&trained, &path).map_err(eval_err)?;
    tracing::info!("FLD classifier trained on {} items (held-out accuracy {:.4}), saved as {}", all.len(), trained.accuracy, path.display());
    Ok((trained, true))
}

/// The reference statistics: `eval.reference`, or those cached as `eval/<cache_name>` in the run
/// folder (unless `stale`), or computed now from at most `eval.reference_items` training items (in
/// data order) with `features` and cached.
fn reference_stats(
    cfg: &TrainConfig,
    data: &InMemory,
    cache_name: &str,
    stale: bool,
    mut features: impl FnMut(Vec<f32>) -> Result<Vec<f32>>,
) -> Result<FeatureStats> {
    if let Some(path) = &cfg.eval.reference {
        return ddpm_eval::stats::read_stats_npz(path).map_err(eval_err);
    }
    let cache = cfg.run.out_dir.join("eval").join(cache_name);
    if cache.is_file() && !stale {
        return ddpm_eval::stats::read_stats_npz(&cache).map_err(eval_err);
    }
    let n = data.len().min(cfg.eval.reference_items);
    if n < 2 {
        return Err(TrainError::config("eval.reference_items", "the reference needs at least 2 items"));
    }
    let mut feats = Vec::new();
    let indices: Vec<usize> = (0..n).collect();
    for chunk in indices.chunks(cfg.sample.batch_size.max(1)) {
        feats.extend(features(data.host_batch(chunk, &[]))?);
    }
    let stats = FeatureStats::from_features(&feats, n, feats.len() / n).map_err(eval_err)?;
    std::fs::create_dir_all(cache.parent().expect("has a parent")).map_err(|e| crate::fsio::io(&cache, e))?;
    ddpm_eval::stats::write_stats_npz(&cache, &stats).map_err(eval_err)?;
    Ok(stats)
}
