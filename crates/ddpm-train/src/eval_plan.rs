//! What an in-training evaluation will do and what it logs, without ddpm-eval: the `[eval]`
//! settings checked against the data, the result and its `metrics.jsonl` line. The scoring itself
//! is [`crate::evaluate`], built with the `eval` feature (on by default); without it a config that
//! asks for evaluation is refused with the fix.

use serde::Serialize;

use crate::config::{DataConfig, TrainConfig};
pub use crate::config::{EvalMetric, EvalSection};
use crate::data::InMemory;
use crate::error::{Result, TrainError};

/// One evaluation's result; `value` is the score that decides the best checkpoint (lower is better).
#[derive(Debug, Clone, Serialize)]
pub struct EvalResult {
    pub metric: &'static str,
    pub value: f64,
    pub details: serde_json::Value,
    pub num_samples: usize,
    pub seconds: f64,
}

/// Checks the `[eval]` settings against the data without preparing anything (no weights
/// looked up, nothing written): the metric, the sampler and the sample count.
pub fn check(cfg: &TrainConfig, data: &InMemory) -> Result<Option<(EvalMetric, ddpm_core::Sampler)>> {
    let e = &cfg.eval;
    if e.every == 0 {
        return Ok(None);
    }
    let toy = matches!(cfg.data, DataConfig::Toy { .. });
    let metric = e.metric.unwrap_or(if toy { EvalMetric::Toy } else { EvalMetric::Fid });
    let mut section = cfg.sample.clone();
    section.sampler = e.sampler.clone();
    section.steps = e.steps;
    let sampler = section.sampler().map_err(|_| TrainError::config("eval.sampler", format!("`{}` is not a sampler", e.sampler)))?;
    if e.num_samples < 2 {
        return Err(TrainError::config("eval.num_samples", "evaluate at least 2 samples"));
    }
    match metric {
        EvalMetric::Toy if !toy => Err(TrainError::config("eval.metric", "the toy metrics need a 2-D toy data set; use fid for images")),
        EvalMetric::Fid if data.item_shape.len() != 3 => Err(TrainError::config("eval.metric", "FID needs images; use toy for 2-D sets")),
        _ => Ok(Some((metric, sampler))),
    }
}

/// The metrics line of an evaluation.
pub fn metrics_line(step: usize, r: &EvalResult) -> String {
    serde_json::json!({ "step": step, "eval": { "metric": r.metric, "value": r.value, "details": r.details, "num_samples": r.num_samples, "seconds": r.seconds } })
        .to_string()
}

/// The evaluator of a build without the `eval` feature: none, and a config that asks for one is
/// an error naming the fix.
#[cfg(not(feature = "eval"))]
pub enum NoEvaluator {}

#[cfg(not(feature = "eval"))]
impl NoEvaluator {
    pub fn new(cfg: &TrainConfig, data: &InMemory, _device: &burn::tensor::Device) -> Result<Option<Self>> {
        match check(cfg, data)? {
            None => Ok(None),
            Some(_) => Err(TrainError::config(
                "eval.every",
                "this ddpm-train was built without its `eval` feature (FID, FLD and the toy metrics during training); \
                 rebuild with default features, or set eval.every = 0",
            )),
        }
    }

    pub fn evaluate<const D: usize, M: ddpm_core::Denoiser<D>>(
        &self,
        _cfg: &TrainConfig,
        _diffusion: &ddpm_core::Process,
        _ema: &M,
        _item_shape: &[usize],
        _device: &burn::tensor::Device,
    ) -> Result<EvalResult> {
        match *self {}
    }
}
