//! Exponential moving average of a module's weights (Burn 0.22 has none built in).
//!
//! `ema <- decay * ema + (1 - decay) * online`, matched parameter by parameter through `ParamId`
//! (stable across optimiser steps). The decay follows either the reference's fixed `beta` applied
//! every `update_every` steps after `update_after_step`, or tqch's warm-up
//! `min(decay, (1 + n) / (10 + n))`.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// EMA settings. Defaults are the reference Trainer's (`ema_decay = 0.995`, `ema_update_every = 10`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmaConfig {
    /// The target decay.
    #[serde(default = "default_decay")]
    pub decay: f64,
    /// Update every this many optimiser steps.
    #[serde(default = "default_every")]
    pub update_every: usize,
    /// Copy the online weights (no averaging) until this step.
    #[serde(default = "default_after")]
    pub update_after_step: usize,
    /// tqch's warm-up: the effective decay is `min(decay, (1 + n) / (10 + n))` at update n.
    #[serde(default)]
    pub warmup: bool,
}

fn default_decay() -> f64 {
    0.995
}
fn default_every() -> usize {
    10
}
fn default_after() -> usize {
    100
}

impl Default for EmaConfig {
    fn default() -> Self {
        Self { decay: default_decay(), update_every: default_every(), update_after_step: default_after(), warmup: false }
    }
}

impl EmaConfig {
    /// The decay used at optimiser step `step` (1-based), or `None` when this step does not update.
    /// Before `update_after_step` the EMA copies the online weights (decay 0).
    pub fn decay_at(&self, step: usize) -> Option<f64> {
        if step % self.update_every.max(1) != 0 {
            return None;
        }
        if step <= self.update_after_step {
            return Some(0.0);
        }
        let n = ((step - self.update_after_step) / self.update_every.max(1)) as f64;
        Some(if self.warmup { self.decay.min((1.0 + n) / (10.0 + n)) } else { self.decay })
    }
}

struct Collect(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let v = p.val().detach();
        let n = v.shape().num_elements();
        self.0.insert(p.id, v.reshape([n]));
    }
}

struct Lerp<'a> {
    online: &'a HashMap<ParamId, Tensor<1>>,
    decay: f64,
    missing: usize,
}

impl ModuleMapper for Lerp<'_> {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(src) = self.online.get(&p.id) else {
            self.missing += 1;
            return p;
        };
        let d = self.decay;
        p.map(|ema| {
            let src = src.clone().to_device(&ema.device()).without_autodiff().reshape(ema.shape());
            if d == 0.0 { src } else { ema * d + src * (1.0 - d) }
        })
    }
}

/// Updates `ema` towards `online` with `decay`. Both must come from the same module (same
/// `ParamId`s; `ema` typically `online.valid()` once). Returns the number of EMA parameters that
/// found no online counterpart (0 when the modules match).
pub fn ema_update<M: Module>(ema: M, online: &M, decay: f64) -> (M, usize) {
    let mut collect = Collect(HashMap::new());
    online.visit(&mut collect);
    let mut lerp = Lerp { online: &collect.0, decay, missing: 0 };
    let ema = ema.map(&mut lerp);
    (ema, lerp.missing)
}
