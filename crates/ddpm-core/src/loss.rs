//! The training loss: one function for every objective, weighting and trick of the reference.

use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, RngExt};

use crate::denoiser::{Conditioning, Denoiser};
use crate::diffusion::{GaussianDiffusion, X0Clip};
use crate::error::{Error, Result};
use crate::noise::NoiseSource;
use crate::objective::LossType;
use crate::tensor::{check_same_shape, extract, mean_flat, options_like, to_f64_vec};

/// One training loss evaluation, the same shape for every process.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The batch mean, shape `[1]`; call `backward()` on it.
    pub loss: Tensor<1>,
    /// The weighted loss of each sample, `[B]`.
    pub per_sample: Tensor<1>,
    /// Where each sample was noised.
    pub levels: NoiseLevels,
}

/// Where each sample of a loss was noised, in its process's own terms.
#[derive(Debug, Clone, PartialEq)]
pub enum NoiseLevels {
    /// Discrete timesteps (Gaussian diffusion).
    Timesteps(Vec<usize>),
    /// Times in [0, 1] (continuous-time diffusion).
    Times(Vec<f64>),
    /// Noise levels sigma (EDM).
    Sigmas(Vec<f64>),
}

impl LossOutput {
    /// The output whose loss is the mean of `per_sample`.
    pub fn from_per_sample(per_sample: Tensor<1>, levels: NoiseLevels) -> Self {
        Self { loss: per_sample.clone().mean(), per_sample, levels }
    }
}

impl GaussianDiffusion {
    /// Draws timesteps (uniform over `0..T`, from `rng`), noise (from `noise`, plus offset noise
    /// when configured) and the self-conditioning coin, then returns [`GaussianDiffusion::loss_at`].
    pub fn training_loss<const D: usize, M, N, R>(
        &self,
        model: &M,
        x0: Tensor<D>,
        cond: &Conditioning<D>,
        rng: &mut R,
        noise: &mut N,
    ) -> Result<LossOutput>
    where
        M: Denoiser<D>,
        N: NoiseSource,
        R: Rng + ?Sized,
    {
        let dims = x0.dims();
        let t: Vec<usize> = (0..dims[0]).map(|_| rng.random_range(0..self.num_timesteps())).collect();
        let mut eps = noise.normal_like(&x0)?;
        let strength = self.config.offset_noise_strength;
        if strength > 0.0 {
            let mut shape = [1usize; D];
            shape[0] = dims[0];
            if D > 1 {
                shape[1] = dims[1];
            }
            eps = eps + noise.normal(shape, options_like(&x0))?.mul_scalar(strength);
        }
        let self_cond = self.config.self_condition && rng.random_bool(0.5);
        self.loss_at(model, x0, &t, eps, cond, self_cond)
    }

    /// The loss for given timesteps and noise (the reference's `p_losses`):
    /// `x_t = q_sample(x0, t, eps)`; with `self_cond`, a no-grad x0 estimate from a first network call
    /// is fed back; then per sample `w_t * mean(|f(x_t) - target|^p)` for L1/L2 (plus
    /// `vlb_lambda * T * L_t` with the mean frozen, for a learned variance), or `L_t` in bits/dim for
    /// `kl`. With `immiscible`, `eps` is first reassigned across the batch (see
    /// [`assign_noise`]). The weighted objective has its own loss: `|blend - x0|^2 +
    /// 0.1 |x0_pred - x0|^2 + 0.1 |eps_pred - eps|^2` per sample (weights configurable).
    pub fn loss_at<const D: usize, M: Denoiser<D>>(
        &self,
        model: &M,
        x0: Tensor<D>,
        t: &[usize],
        eps: Tensor<D>,
        cond: &Conditioning<D>,
        self_cond: bool,
    ) -> Result<LossOutput> {
        self.check_t(t, &x0)?;
        check_same_shape("noise (must match x0)", &x0, &eps)?;
        let eps = if self.config.immiscible { assign_noise(x0.clone(), eps)? } else { eps };
        let x_t = self.q_sample(x0.clone(), t, eps.clone())?;
        let cond = cond.self_conditioned(self_cond, |first| {
            let output = self.run_model(model, x_t.clone(), t, first).detach();
            Ok(self.predictions(output, x_t.clone(), t, X0Clip::None, false)?.pred_x0)
        })?;
        let output = self.run_model(model, x_t.clone(), t, &cond);
        if self.config.objective == crate::objective::Objective::Weighted {
            // The reference's: the blend of x0(eps) (clamped to [-2, 2]) and x0 against x0, plus
            // weighted eps and x0 losses.
            let parts = crate::objective::weighted_parts(output, &x0, |e| self.predict_start_from_noise(x_t.clone(), t, e).clamp(-2.0, 2.0))?;
            let sq = |a: Tensor<D>, b: Tensor<D>| {
                let d = a - b;
                mean_flat(d.clone() * d)
            };
            let blended = parts.blend(parts.from_eps.clone(), parts.x0.clone());
            let per_sample = sq(blended, x0.clone())
                + sq(parts.x0, x0).mul_scalar(self.config.pred_x0_loss_weight)
                + sq(parts.eps, eps).mul_scalar(self.config.pred_noise_loss_weight);
            return Ok(LossOutput::from_per_sample(per_sample, NoiseLevels::Timesteps(t.to_vec())));
        }
        let per_sample = match self.config.loss_type {
            LossType::Kl => self.vb_terms_bpd(output, x0, x_t, t, X0Clip::None)?,
            kind => {
                let (out, var) = self.split_output(output)?;
                check_same_shape("network output (must match x0)", &x0, &out)?;
                let target = self.target(x0.clone(), x_t.clone(), t, eps);
                let diff = out.clone() - target;
                let elementwise = if kind == LossType::L1 { diff.abs() } else { diff.clone() * diff };
                let weights = extract(&self.loss_weight, t, &elementwise).reshape([t.len()]);
                let simple = mean_flat(elementwise) * weights;
                match var {
                    Some(var) => {
                        let frozen = Tensor::cat(vec![out.detach(), var], 1);
                        let vb = self.vb_terms_bpd(frozen, x0, x_t, t, X0Clip::None)?;
                        simple + vb.mul_scalar(self.config.vlb_lambda * self.num_timesteps() as f64)
                    }
                    None => simple,
                }
            }
        };
        Ok(LossOutput::from_per_sample(per_sample, NoiseLevels::Timesteps(t.to_vec())))
    }
}

/// Immiscible noise assignment (Li et al. 2024): the permutation `p` of the batch's noise that
/// minimises `sum_i ||x0_i - eps_{p(i)}||_2` (an exact linear assignment, as scipy's
/// `linear_sum_assignment`), and the noise reordered by it.
pub fn assign_noise<const D: usize>(x0: Tensor<D>, eps: Tensor<D>) -> Result<Tensor<D>> {
    let perm = noise_assignment(&x0, &eps)?;
    let idx: Vec<i64> = perm.iter().map(|&i| i as i64).collect();
    let n = idx.len();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &eps.device());
    Ok(eps.select(0, idx))
}

/// The permutation of [`assign_noise`]: `perm[i]` is the noise sample given to data sample `i`.
pub fn noise_assignment<const D: usize>(x0: &Tensor<D>, eps: &Tensor<D>) -> Result<Vec<usize>> {
    let b = x0.dims()[0];
    let n = x0.shape().num_elements() / b.max(1);
    let (xs, es) = (to_f64_vec(x0), to_f64_vec(eps));
    let mut cost = vec![0.0; b * b];
    for i in 0..b {
        for j in 0..b {
            let d2: f64 = (0..n).map(|k| (xs[i * n + k] - es[j * n + k]).powi(2)).sum();
            cost[i * b + j] = d2.sqrt();
        }
    }
    let (_, cols) = lsap::solve(b, b, &cost, false)
        .map_err(|e| Error::invalid("immiscible", "true", format!("the noise assignment failed ({e}); check the batch for NaN values")))?;
    Ok(cols)
}
