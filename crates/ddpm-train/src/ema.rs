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

/// Where the EMA finds each parameter's online value: by `ParamId` (the EMA is a `valid()` copy
/// of the online module), or in module order (a copy with ids of its own).
enum Online<'a> {
    ById(&'a HashMap<ParamId, Tensor<1>>),
    InOrder(std::vec::IntoIter<Tensor<1>>),
}

struct Lerp<'a> {
    online: Online<'a>,
    decay: f64,
    missing: usize,
}

impl ModuleMapper for Lerp<'_> {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let src = match &mut self.online {
            Online::ById(map) => map.get(&p.id).cloned(),
            Online::InOrder(values) => values.next(),
        };
        let Some(src) = src else {
            self.missing += 1;
            return p;
        };
        let d = self.decay;
        p.map(|ema| {
            let ema = ema.detach();
            // A plain EMA takes the online value off autodiff; one that lives inside an autodiff
            // module (the Learner's) stays on its device, untracked.
            let src = if ema.device().is_autodiff() { src.to_device(&ema.device()) } else { src.to_device(&ema.device()).without_autodiff() }.reshape(ema.shape());
            if d == 0.0 { src } else { ddpm_kernels::ema_lerp(ema, src, d) }
        })
    }
}

/// Updates `ema` towards `online` with `decay`. Both must come from the same module (same
/// `ParamId`s; `ema` typically `online.valid()` once). Returns the number of EMA parameters that
/// found no online counterpart (0 when the modules match).
pub fn ema_update<M: Module>(ema: M, online: &M, decay: f64) -> (M, usize) {
    let mut collect = Collect(HashMap::new());
    online.visit(&mut collect);
    let mut lerp = Lerp { online: Online::ById(&collect.0), decay, missing: 0 };
    let ema = ema.map(&mut lerp);
    (ema, lerp.missing)
}

/// Updates `ema` towards `online` with `decay`, pairing parameters in module order: for an EMA
/// that is a copy of the same network with parameter ids of its own (the Learner's, which must not
/// share ids with the trained network).
pub fn ema_update_in_order<M: Module>(ema: M, online: &M, decay: f64) -> M {
    let mut values = Ordered(Vec::new());
    online.visit(&mut values);
    ema.map(&mut Lerp { online: Online::InOrder(values.0.into_iter()), decay, missing: 0 })
}

/// EDM2's power-function EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics
/// of Diffusion Models", section 3): at step `t` (from 1) the average is
/// `theta_hat(t) = (gamma + 1) / t^(gamma + 1) * integral_0^t tau^gamma theta(tau) dtau`, kept by
/// `theta_hat <- beta theta_hat + (1 - beta) theta` with `beta = (1 - 1/t)^(gamma + 1)`. Its width
/// is stated as the relative standard deviation of that profile,
/// `sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3)))`.
pub mod power {
    use crate::error::{Result, TrainError};

    /// `sigma_rel` of exponent `gamma`.
    pub fn gamma_to_sigma_rel(gamma: f64) -> f64 {
        ((gamma + 1.0) / ((gamma + 2.0).powi(2) * (gamma + 3.0))).sqrt()
    }

    /// The largest `sigma_rel` a power profile has (at `gamma = (sqrt 5 - 3) / 2`, about 0.3).
    pub fn max_sigma_rel() -> f64 {
        gamma_to_sigma_rel((5f64.sqrt() - 3.0) / 2.0)
    }

    /// The exponent of `sigma_rel`: the root of the paper's cubic on the branch where `sigma_rel`
    /// falls as `gamma` grows (EDM2 takes the largest real root). Solved by bisection.
    pub fn sigma_rel_to_gamma(sigma_rel: f64) -> Result<f64> {
        let top = max_sigma_rel();
        if !(sigma_rel > 0.0 && sigma_rel <= top) {
            return Err(TrainError::config("sigma_rel", format!("{sigma_rel} is not in (0, {top:.4}]; EDM2 uses 0.05 and 0.10 for its two stored averages")));
        }
        let (mut lo, mut hi) = ((5f64.sqrt() - 3.0) / 2.0, 1.0);
        while gamma_to_sigma_rel(hi) > sigma_rel {
            hi *= 2.0;
        }
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if gamma_to_sigma_rel(mid) > sigma_rel { lo = mid } else { hi = mid }
        }
        Ok(0.5 * (lo + hi))
    }

    /// The update weight `beta` at step `t` (1-based): 0 at the first step.
    pub fn beta(t: usize, gamma: f64) -> f64 {
        (1.0 - 1.0 / t.max(1) as f64).powf(gamma + 1.0)
    }

    /// `<p_a, p_b>` of two power profiles `p(tau) = (g + 1) tau^g / t^(g + 1)` on `[0, t]`, computed
    /// in logs (the powers overflow for long runs).
    fn inner(a: (f64, f64), b: (f64, f64)) -> f64 {
        let ((ta, ga), (tb, gb)) = (a, b);
        let g = ga + gb + 1.0;
        (((ga + 1.0) * (gb + 1.0) / g).ln() + g * ta.min(tb).ln() - (ga + 1.0) * ta.ln() - (gb + 1.0) * tb.ln()).exp()
    }

    /// A post-hoc reconstruction: the weights of the stored averages and how well their sum
    /// matches the asked profile.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Reconstruction {
        pub weights: Vec<f64>,
        /// `||sum_i w_i p_i - p_target|| / ||p_target||` in L2 over time.
        pub relative_error: f64,
    }

    /// The least-squares weights `w` with `sum_i w_i p_i ~ p_target` (EDM2's post-hoc EMA): stored
    /// averages `(t_i, gamma_i)` (steps and exponents), target `(t, gamma)`. Solves the normal
    /// equations `A w = b`, `A_ij = <p_i, p_j>`, `b_i = <p_i, p_target>`, by SVD with a
    /// relative cut-off (A is nearly singular when snapshots are close).
    pub fn post_hoc_weights(stored: &[(f64, f64)], target: (f64, f64)) -> Result<Reconstruction> {
        if stored.is_empty() {
            return Err(TrainError::config("post_hoc_ema", "no stored averages to reconstruct from; train with train.post_hoc_ema.sigma_rels set"));
        }
        let n = stored.len();
        let a = nalgebra::DMatrix::from_fn(n, n, |i, j| inner(stored[i], stored[j]));
        let b = nalgebra::DVector::from_fn(n, |i, _| inner(stored[i], target));
        let svd = a.clone().svd(true, true);
        let cutoff = svd.singular_values.max() * 1e-12;
        let w = svd.solve(&b, cutoff).map_err(|e| TrainError::config("post_hoc_ema", format!("the least-squares solve failed: {e}")))?;
        let c = inner(target, target);
        let residual = ((w.transpose() * &a * &w)[(0, 0)] - 2.0 * w.dot(&b) + c).max(0.0);
        Ok(Reconstruction { weights: w.iter().copied().collect(), relative_error: (residual / c).sqrt() })
    }
}

/// EDM2's post-hoc EMA settings: power-function averages kept during training and stored as
/// snapshots, from which `ddpm-train post-hoc-ema` builds the average of any width afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PostHocEmaConfig {
    /// Widths (`sigma_rel`, each in (0, 0.3]) of the power-function averages kept during training;
    /// EDM2 keeps 0.05 and 0.10. Default: none (off).
    #[serde(default)]
    pub sigma_rels: Vec<f64>,
    /// Store a snapshot of every average every this many steps (and at the end). Default 1000.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: usize,
}

fn default_snapshot_every() -> usize {
    1000
}

impl PostHocEmaConfig {
    /// The exponents of the configured widths (empty when off).
    pub fn gammas(&self) -> crate::error::Result<Vec<f64>> {
        self.sigma_rels
            .iter()
            .map(|&s| power::sigma_rel_to_gamma(s).map_err(|e| crate::error::TrainError::config("train.post_hoc_ema.sigma_rels", e.to_string())))
            .collect()
    }
}

/// Updates every average in `emas` (with its own decay) towards `online`, reading `online` once.
pub fn ema_update_all<M: Module>(emas: Vec<(M, f64)>, online: &M) -> Vec<M> {
    let mut collect = Collect(HashMap::new());
    online.visit(&mut collect);
    emas.into_iter()
        .map(|(ema, decay)| {
            ema.map(&mut Lerp { online: Online::ById(&collect.0), decay, missing: 0 })
        })
        .collect()
}

struct Ordered(Vec<Tensor<1>>);

impl ModuleVisitor for Ordered {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let v = p.val().detach();
        let n = v.shape().num_elements();
        self.0.push(v.reshape([n]));
    }
}

struct Replace(std::vec::IntoIter<Tensor<1>>);

impl ModuleMapper for Replace {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let v = self.0.next().expect("the modules have the same parameters");
        p.map(|old| v.to_device(&old.device()).reshape(old.shape()))
    }
}

/// `sum_i w_i * module_i`, parameter by parameter in module order (the modules are one network),
/// accumulated one module at a time so that only the sum is held in memory.
#[derive(Default)]
pub struct WeightedSum {
    sum: Option<Vec<Tensor<1>>>,
}

impl WeightedSum {
    pub fn add<M: Module>(&mut self, module: &M, weight: f64) {
        let mut values = Ordered(Vec::new());
        module.visit(&mut values);
        self.sum = Some(match self.sum.take() {
            None => values.0.into_iter().map(|v| v * weight).collect(),
            Some(acc) => acc.into_iter().zip(values.0).map(|(a, v)| a + v * weight).collect(),
        });
    }

    /// The sum, as the parameters of `template` (same network).
    pub fn finish<M: Module>(self, template: M) -> M {
        template.map(&mut Replace(self.sum.unwrap_or_default().into_iter()))
    }
}
