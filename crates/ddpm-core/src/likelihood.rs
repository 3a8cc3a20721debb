//! Gaussian KL, the discretised Gaussian decoder likelihood and the variational bound in bits/dim
//! (Ho et al. 2020 Sec. 3.3; Nichol & Dhariwal 2021).

use std::f64::consts::{LN_2, PI};

use burn::tensor::{Bool, Tensor, TensorData};

use crate::denoiser::{Conditioning, Denoiser};
use crate::diffusion::{GaussianDiffusion, X0Clip};
use crate::error::Result;
use crate::noise::NoiseSource;
use crate::tensor::mean_flat;

/// `KL(N(m1, e^{lv1}) || N(m2, e^{lv2})) = 0.5 (-1 + lv2 - lv1 + e^{lv1 - lv2} + (m1 - m2)^2 e^{-lv2})`,
/// elementwise, in nats. Log-variances may be `[B, 1, ..]` and broadcast.
pub fn normal_kl<const D: usize>(mean1: Tensor<D>, logvar1: Tensor<D>, mean2: Tensor<D>, logvar2: Tensor<D>) -> Tensor<D> {
    let diff = mean1 - mean2;
    ((logvar2.clone() - logvar1.clone()).sub_scalar(1.0) + (logvar1 - logvar2.clone()).exp() + diff.clone() * diff * logvar2.neg().exp())
        .mul_scalar(0.5)
}

/// `Phi(x) ~ 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, the approximation the DDPM code uses.
pub fn approx_standard_normal_cdf<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715)).mul_scalar((2.0 / PI).sqrt());
    (inner.tanh() + 1.0).mul_scalar(0.5)
}

/// Log-likelihood of data `x` in [-1, 1], quantised to 256 levels (bin width 2/255), under
/// `N(means, exp(log_scales)^2)`: `ln(Phi(x+1/255) - Phi(x-1/255))`, with the outer bins open
/// (`x < -0.999` takes `ln Phi(x+1/255)`, `x > 0.999` takes `ln(1 - Phi(x-1/255))`); every log is of a
/// value clamped to at least 1e-12. Elementwise, in nats.
pub fn discretized_gaussian_log_likelihood<const D: usize>(x: Tensor<D>, means: Tensor<D>, log_scales: Tensor<D>) -> Tensor<D> {
    let centered = x.clone() - means;
    let inv_stdv = log_scales.neg().exp();
    let cdf_plus = approx_standard_normal_cdf((centered.clone() + 1.0 / 255.0) * inv_stdv.clone());
    let cdf_min = approx_standard_normal_cdf((centered - 1.0 / 255.0) * inv_stdv);
    let log_cdf_plus = cdf_plus.clone().clamp_min(1e-12).log();
    let log_one_minus_cdf_min = (cdf_min.clone().neg() + 1.0).clamp_min(1e-12).log();
    let log_cdf_delta = (cdf_plus - cdf_min).clamp_min(1e-12).log();
    log_cdf_delta
        .mask_where(x.clone().greater_elem(0.999), log_one_minus_cdf_min)
        .mask_where(x.lower_elem(-0.999), log_cdf_plus)
}

/// The bound's pieces for one batch, in bits per dimension.
#[derive(Debug, Clone)]
pub struct BitsPerDim {
    /// `-log2 p(x0)` bound per sample: `sum_t L_t + L_prior`.
    pub total: Tensor<1>,
    /// `L_prior = KL(q(x_{T-1} | x0) || N(0, I))` per sample.
    pub prior: Tensor<1>,
    /// `L_t` per timestep (index t), each per sample; `terms[0]` is the decoder NLL.
    pub terms: Vec<Tensor<1>>,
}

impl GaussianDiffusion {
    /// `L_t` per sample in bits/dim: `KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) / (D ln 2)` for t > 0
    /// and the discretised decoder NLL `-log2 p(x0|x_1)` per dimension for t = 0.
    pub fn vb_terms_bpd<const D: usize>(
        &self,
        output: Tensor<D>,
        x0: Tensor<D>,
        x_t: Tensor<D>,
        t: &[usize],
        clip: X0Clip,
    ) -> Result<Tensor<1>> {
        self.check_t(t, &x_t)?;
        let truth = self.q_posterior(x0.clone(), x_t.clone(), t);
        let step = self.reverse_step(output, x_t.clone(), t, clip)?;
        let kl = mean_flat(normal_kl(truth.mean, truth.log_variance, step.mean.clone(), step.log_variance.clone())) / LN_2;
        let nll = mean_flat(discretized_gaussian_log_likelihood(x0, step.mean, step.log_variance.mul_scalar(0.5)).neg()) / LN_2;
        let at_zero: Vec<bool> = t.iter().map(|&v| v == 0).collect();
        let mask = Tensor::<1, Bool>::from_data(TensorData::new(at_zero, [t.len()]), &x_t.device());
        Ok(kl.mask_where(mask, nll))
    }

    /// `KL(q(x_{T-1} | x0) || N(0, I))` per sample in bits/dim: the price of starting from pure noise.
    pub fn prior_bpd<const D: usize>(&self, x0: Tensor<D>) -> Tensor<1> {
        let last = vec![self.num_timesteps() - 1; x0.dims()[0]];
        let s = &self.schedule;
        let mean = crate::tensor::extract(&s.sqrt_alphas_cumprod, &last, &x0) * x0.clone();
        let logvar = crate::tensor::extract(&s.log_one_minus_alphas_cumprod, &last, &x0);
        let zeros = x0.zeros_like();
        mean_flat(normal_kl(mean, logvar, zeros.clone(), zeros)) / LN_2
    }

    /// The full variational bound on `-log2 p(x0)` per dimension: every `L_t` (one network call per
    /// timestep, noise from `noise`) plus the prior term. `x0` must be in [-1, 1].
    pub fn bits_per_dim<const D: usize, M: Denoiser<D>, N: NoiseSource>(
        &self,
        model: &M,
        x0: Tensor<D>,
        cond: &Conditioning<D>,
        noise: &mut N,
        clip: X0Clip,
    ) -> Result<BitsPerDim> {
        let b = x0.dims()[0];
        let mut terms = Vec::with_capacity(self.num_timesteps());
        let mut total = self.prior_bpd(x0.clone());
        let prior = total.clone();
        for step in (0..self.num_timesteps()).rev() {
            let t = vec![step; b];
            let eps = noise.normal_like(&x0)?;
            let x_t = self.q_sample(x0.clone(), &t, eps)?;
            let out = self.run_model(model, x_t.clone(), &t, cond);
            let term = self.vb_terms_bpd(out, x0.clone(), x_t, &t, clip)?;
            total = total + term.clone();
            terms.push(term);
        }
        terms.reverse();
        Ok(BitsPerDim { total, prior, terms })
    }
}
