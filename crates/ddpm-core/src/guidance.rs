//! Classifier-free guidance (Ho & Salimans 2022) around any class-conditional [`Denoiser`].
//!
//! With `c` the network output for the asked classes and `u` its output for the null class (the
//! label the network was trained with when its label was dropped), the guided output is
//! `g = u + w (c - u)`: `w = 1` is the conditional model itself (one network call), `w = 0` the
//! unconditional one, `w > 1` pushes samples toward their class. With `rescaled_phi > 0` the
//! guided output is rescaled toward the conditional output's standard deviation (Lin et al. 2024,
//! "Common Diffusion Noise Schedules and Sample Steps are Flawed", eq. 15-16):
//! `g' = phi g std(c)/std(g) + (1 - phi) g`, per sample over all non-batch axes. With
//! `keep_parallel` set (adaptive projected guidance, Sadat et al. 2024, as the reference's
//! `remove_parallel_component`), the update `d = c - u` is split per sample into its part along `c`,
//! `d_par = (<d, c> / <c, c>) c`, and the rest, and the guided output is
//! `g = c + (w - 1) (d - d_par + keep_parallel d_par)`: 0 removes the parallel part, which is what
//! over-saturates images at high scales; 1 is plain guidance. The guidance acts on the raw network
//! output (eps, x0 or v), so it combines with every objective and sampler.
//!
//! CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance") uses the
//! guided output only for the clean estimate and re-noises with the unconditional one: a DDIM
//! step becomes `x_t' = sqrt(a') x0(g) + sqrt(1 - a') eps(u)`, an Euler step
//! `x' = x0(g) + sigma' (x - x0(u)) / sigma`, with `g = u + lambda (c - u)` and `lambda` in [0, 1]
//! (0.2 to 0.8 match plain guidance at 5 to 12). The guidance stores the unconditional output of
//! its last call ([`Denoiser::unconditional_output`]) for the sampler to read; DDIM, Euler and
//! Euler ancestral use it, the other samplers refuse it.

use std::cell::RefCell;

use burn::tensor::{Int, Tensor};

use crate::denoiser::{Conditioning, Denoiser};

/// A class-conditional denoiser with classifier-free guidance.
#[derive(Debug, Clone)]
pub struct ClassifierFreeGuidance<'a, M, const D: usize> {
    pub model: &'a M,
    /// Guidance scale `w` (1: no guidance).
    pub scale: f64,
    /// The label that means "no class".
    pub null_class: i64,
    /// Std rescaling strength in [0, 1] (0: off).
    pub rescaled_phi: f64,
    /// The share of the update's component parallel to the conditional output that is kept
    /// (`None`: no projection, plain guidance; `Some(0.0)`: the parallel part removed).
    pub keep_parallel: Option<f64>,
    /// CFG++: `scale` is lambda in [0, 1] and the sampler re-noises with the unconditional output.
    pub cfg_pp: bool,
    last_unconditional: RefCell<Option<Tensor<D>>>,
}

impl<'a, M, const D: usize> ClassifierFreeGuidance<'a, M, D> {
    pub fn new(model: &'a M, scale: f64, null_class: i64) -> Self {
        Self { model, scale, null_class, rescaled_phi: 0.0, keep_parallel: None, cfg_pp: false, last_unconditional: RefCell::new(None) }
    }

    /// CFG++ with `lambda` in [0, 1] as the scale.
    pub fn cfg_pp(model: &'a M, lambda: f64, null_class: i64) -> Self {
        Self { cfg_pp: true, ..Self::new(model, lambda, null_class) }
    }

    pub fn with_parallel_removal(mut self, keep_parallel: f64) -> Self {
        self.keep_parallel = Some(keep_parallel);
        self
    }

    pub fn with_rescaled_phi(mut self, phi: f64) -> Self {
        self.rescaled_phi = phi;
        self
    }
}

/// `x` split into its component along `y` and the rest, per sample over all non-batch axes.
fn parallel_part<const D: usize>(x: &Tensor<D>, y: &Tensor<D>) -> Tensor<D> {
    let dims = x.dims();
    let b = dims[0];
    let (xf, yf): (Tensor<2>, Tensor<2>) = (
        x.clone().reshape([b as i64, -1]),
        y.clone().reshape([b as i64, -1]),
    );
    let coef = (xf * yf.clone()).sum_dim(1) / (yf.clone() * yf.clone()).sum_dim(1).clamp_min(1e-30);
    (yf * coef).reshape(dims)
}

/// Per-sample standard deviation over all non-batch axes, shaped `[B, 1, ..]` for broadcasting.
fn std_per_sample<const D: usize>(x: &Tensor<D>) -> Tensor<D> {
    let b = x.dims()[0];
    let flat: Tensor<2> = x.clone().reshape([b as i64, -1]);
    let mean = flat.clone().mean_dim(1);
    let var = (flat - mean).powi_scalar(2).mean_dim(1);
    let mut shape = [1i64; D];
    shape[0] = b as i64;
    var.sqrt().reshape(shape)
}

impl<const D: usize, M: Denoiser<D>> Denoiser<D> for ClassifierFreeGuidance<'_, M, D> {
    fn denoise(&self, x_t: Tensor<D>, t: Tensor<1>, cond: &Conditioning<D>) -> Tensor<D> {
        let conditional = self.model.denoise(x_t.clone(), t.clone(), cond);
        // Scale 1 is the conditional model: no second call (the reference crashes here). CFG++
        // always needs the unconditional output, to re-noise with.
        if (self.scale == 1.0 && !self.cfg_pp) || cond.classes.is_none() {
            return conditional;
        }
        let classes = cond.classes.as_ref().expect("checked above");
        let null: Tensor<1, Int> = classes.clone().zeros_like().add_scalar(self.null_class);
        let unconditional = self.model.denoise(x_t, t, &Conditioning { self_cond: cond.self_cond.clone(), classes: Some(null) });
        if self.cfg_pp {
            *self.last_unconditional.borrow_mut() = Some(unconditional.clone());
        }
        let mut update = conditional.clone() - unconditional;
        if let Some(keep) = self.keep_parallel {
            let parallel = parallel_part(&update, &conditional);
            update = update - parallel.mul_scalar(1.0 - keep);
        }
        let guided = conditional.clone() + update.mul_scalar(self.scale - 1.0);
        if self.rescaled_phi <= 0.0 {
            return guided;
        }
        let ratio = std_per_sample(&conditional) / std_per_sample(&guided).clamp_min(1e-12);
        let rescaled = guided.clone() * ratio;
        rescaled.mul_scalar(self.rescaled_phi) + guided.mul_scalar(1.0 - self.rescaled_phi)
    }

    fn unconditional_output(&self) -> Option<Tensor<D>> {
        self.last_unconditional.borrow().clone()
    }

    fn learned_log_snr(&self, t: Tensor<1>) -> Option<Tensor<1>> {
        self.model.learned_log_snr(t)
    }
}

/// A noise-aware classifier for classifier guidance: `grad_{x_t} log p(y | x_t, t)` for each
/// sample's class `y` (Dhariwal & Nichol 2021). Implemented by ddpm-train's trained classifiers;
/// any autodiff-capable Burn module can implement it.
pub trait ClassifierGradient<const D: usize> {
    fn log_prob_grad(&self, x_t: Tensor<D>, t: Tensor<1>, classes: Tensor<1, Int>) -> Tensor<D>;
}

/// Classifier guidance (Dhariwal & Nichol 2021, Algorithm 2 in eps form) around any denoiser of a
/// discrete Gaussian diffusion: `eps' = eps - s sqrt(1 - abar_t) grad log p(y | x_t)`, written back
/// in the model's own parameterisation (`x0' = x0 + s (1 - abar)/sqrt(abar) g`,
/// `v' = v - s sqrt((1 - abar)/abar) g`), so it works with every sampler. `abar` at a fractional
/// timestep (the sigma-space solvers) is read from the schedule's log-sigma interpolation, as the
/// solvers do. Samples without class labels are not guided.
pub struct ClassifierGuidance<'a, const D: usize, M> {
    pub model: &'a M,
    pub classifier: &'a dyn ClassifierGradient<D>,
    pub diffusion: &'a crate::diffusion::GaussianDiffusion,
    /// Guidance scale `s` (0: off).
    pub scale: f64,
    sigmas: Vec<f64>,
}

impl<'a, const D: usize, M> ClassifierGuidance<'a, D, M> {
    pub fn new(model: &'a M, classifier: &'a dyn ClassifierGradient<D>, diffusion: &'a crate::diffusion::GaussianDiffusion, scale: f64) -> crate::error::Result<Self> {
        use crate::objective::Objective;
        if matches!(diffusion.objective(), Objective::Mean | Objective::Weighted) {
            return Err(crate::error::Error::invalid("objective", diffusion.objective(), "classifier guidance reads the output as eps, x0 or v; use pred_noise, pred_x0 or pred_v"));
        }
        if !(scale >= 0.0) {
            return Err(crate::error::Error::invalid("classifier_scale", scale, "use 0 (off) or a positive scale (1 to 10 are usual)"));
        }
        Ok(Self { model, classifier, diffusion, scale, sigmas: crate::karras::model_sigmas(diffusion) })
    }
}

impl<const D: usize, M: Denoiser<D>> Denoiser<D> for ClassifierGuidance<'_, D, M> {
    fn denoise(&self, x_t: Tensor<D>, t: Tensor<1>, cond: &Conditioning<D>) -> Tensor<D> {
        use crate::objective::Objective;
        let out = self.model.denoise(x_t.clone(), t.clone(), cond);
        let Some(classes) = cond.classes.clone().filter(|_| self.scale > 0.0) else { return out };
        // A malformed output is left for the sampler to report.
        let Ok((main, variance)) = self.diffusion.split_output(out.clone()) else { return out };
        let grad = self.classifier.log_prob_grad(x_t.clone(), t.clone(), classes);
        let coefficient: Vec<f64> = crate::tensor::to_f64_vec(&t)
            .into_iter()
            .map(|ti| {
                let sigma = crate::karras::sigma_at(&self.sigmas, ti.clamp(0.0, (self.sigmas.len() - 1) as f64));
                let abar = 1.0 / (1.0 + sigma * sigma);
                let (a, s) = (abar.sqrt(), (1.0 - abar).sqrt());
                self.scale
                    * match self.diffusion.objective() {
                        Objective::PredNoise => -s,
                        Objective::PredX0 => s * s / a,
                        _ => -s / a,
                    }
            })
            .collect();
        let guided = main + grad * crate::tensor::per_sample(coefficient, &x_t);
        match variance {
            Some(v) => Tensor::cat(vec![guided, v], 1),
            None => guided,
        }
    }

    fn unconditional_output(&self) -> Option<Tensor<D>> {
        self.model.unconditional_output()
    }
}
