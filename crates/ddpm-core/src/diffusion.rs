//! The discrete Gaussian diffusion: the forward process `q(x_t | x_0)`, the conversions between
//! the parameterisations, the posterior `q(x_{t-1} | x_t, x_0)` and the model's reverse step.
//!
//! Every function takes host timesteps (`&[usize]`, one per batch element) and tensors of any rank
//! `[B, C, ..]` (images, sequences, vectors, video), on any device and in any float dtype: the
//! coefficients come from the f64 [`NoiseSchedule`] and are cast to the input's dtype.

use burn::config::Config;
use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::objective::{LossType, ModelVariance, Objective, loss_weight};
use crate::schedule::{BetaSchedule, NoiseSchedule};
use crate::tensor::{check_same_shape, check_timesteps, extract, per_sample, to_f64_vec};

/// Settings of a [`GaussianDiffusion`]. The defaults are denoising-diffusion-pytorch's
/// `GaussianDiffusion` defaults.
#[derive(Config, Debug, PartialEq)]
pub struct GaussianDiffusionConfig {
    /// Number of diffusion steps T.
    #[config(default = 1000)]
    pub timesteps: usize,
    /// The beta schedule.
    #[config(default = "BetaSchedule::sigmoid()")]
    pub beta_schedule: BetaSchedule,
    /// Rescale the schedule to zero terminal SNR (Lin et al. 2023); pair it with `pred_v`.
    #[config(default = false)]
    pub zero_terminal_snr: bool,
    /// What the network predicts.
    #[config(default = "Objective::PredV")]
    pub objective: Objective,
    /// The reverse-process variance.
    #[config(default = "ModelVariance::FixedSmall")]
    pub variance: ModelVariance,
    /// The training loss.
    #[config(default = "LossType::L2")]
    pub loss_type: LossType,
    /// min-SNR-gamma loss weighting (Hang et al. 2023); `None` is off, the paper uses 5.
    #[config(default = "None")]
    pub min_snr_gamma: Option<f64>,
    /// Offset noise (Guttenberg 2023): adds `strength * N(0, 1)` per sample and channel, constant
    /// over the other dimensions, to the training noise. 0 is off; 0.1 is usual.
    #[config(default = 0.0)]
    pub offset_noise_strength: f64,
    /// Immiscible diffusion (Li et al. 2024): within a batch, assign noise to data by a minimum-cost
    /// matching of their L2 distances before noising.
    #[config(default = false)]
    pub immiscible: bool,
    /// Self-conditioning (Chen et al. 2022): half of the training steps feed a no-grad x0 estimate
    /// back to the network; samplers feed the previous step's x0.
    #[config(default = false)]
    pub self_condition: bool,
    /// Weight lambda of the variational bound in the hybrid loss of a learned variance
    /// (`L_simple + lambda * T * L_t`, Nichol & Dhariwal 2021).
    #[config(default = 0.001)]
    pub vlb_lambda: f64,
    /// The weighted objective's weight of its eps loss (the reference's `pred_noise_loss_weight`).
    #[config(default = 0.1)]
    pub pred_noise_loss_weight: f64,
    /// The weighted objective's weight of its x0 loss (`pred_x_start_loss_weight`).
    #[config(default = 0.1)]
    pub pred_x0_loss_weight: f64,
}

impl GaussianDiffusionConfig {
    /// Computes the schedule and checks the settings.
    pub fn init(&self) -> Result<GaussianDiffusion> {
        let schedule = NoiseSchedule::new(&self.beta_schedule, self.timesteps, self.zero_terminal_snr)?;
        schedule.validate()?;
        if let Some(g) = self.min_snr_gamma {
            if !(g > 0.0) {
                return Err(Error::invalid("min_snr_gamma", g, "gamma must be positive (5 is the paper's value); omit it to turn min-SNR off"));
            }
        }
        if !(self.offset_noise_strength >= 0.0) {
            return Err(Error::invalid("offset_noise_strength", self.offset_noise_strength, "use 0 (off) or a small positive value such as 0.1"));
        }
        if self.loss_type == LossType::Kl && self.variance.is_learned() {
            return Err(Error::invalid("loss_type", "kl", "a learned variance trains with the hybrid loss: use l2 (the bound is added with weight vlb_lambda)"));
        }
        if self.objective == Objective::Weighted && (self.variance.is_learned() || self.loss_type != LossType::L2) {
            return Err(Error::invalid(
                "objective",
                "weighted",
                "the weighted objective trains with its own L2 losses and a fixed variance: use loss_type = l2 and variance fixed_small or fixed_large",
            ));
        }
        Ok(GaussianDiffusion::from_schedule(self.clone(), schedule))
    }
}

/// A discrete Gaussian diffusion process with its schedule tables.
#[derive(Debug, Clone)]
pub struct GaussianDiffusion {
    /// The settings it was built from.
    pub config: GaussianDiffusionConfig,
    /// The f64 tables.
    pub schedule: NoiseSchedule,
    /// Per-timestep loss weight (see [`loss_weight`]).
    pub loss_weight: Vec<f64>,
    fixed_large_log_variance: Vec<f64>,
    log_betas: Vec<f64>,
}

/// The posterior `q(x_{t-1} | x_t, x_0) = N(mean, variance)`; variance and log-variance are
/// `[B, 1, .., 1]`.
#[derive(Debug, Clone)]
pub struct Posterior<const D: usize> {
    pub mean: Tensor<D>,
    pub variance: Tensor<D>,
    pub log_variance: Tensor<D>,
}

/// A network output read in every parameterisation.
#[derive(Debug, Clone)]
pub struct Prediction<const D: usize> {
    /// The implied noise eps.
    pub pred_noise: Tensor<D>,
    /// The implied clean data x0 (after clipping, when asked for).
    pub pred_x0: Tensor<D>,
    /// The variance half of the output, for a learned variance.
    pub variance_output: Option<Tensor<D>>,
}

/// The model's reverse step `p(x_{t-1} | x_t) = N(mean, exp(log_variance))`.
#[derive(Debug, Clone)]
pub struct ReverseStep<const D: usize> {
    pub mean: Tensor<D>,
    /// `[B, 1, .., 1]` for a fixed variance, the full shape for a learned one.
    pub log_variance: Tensor<D>,
    pub pred_x0: Tensor<D>,
    pub pred_noise: Tensor<D>,
}

/// How a predicted x0 is kept in the data range during sampling.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum X0Clip {
    /// No clipping.
    None,
    /// Clamp to `[-1, 1]` (the reference's `clip_denoised = True`).
    #[default]
    Static,
    /// Dynamic thresholding (Saharia et al. 2022, Imagen): per sample, `s = max(1, q_p(|x0|))`
    /// with `q_p` the `percentile` quantile, then `x0 = clamp(x0, -s, s) / s`.
    Dynamic { percentile: f64 },
}

impl GaussianDiffusion {
    /// A diffusion over an already computed schedule (its length overrides `config.timesteps`).
    pub fn from_schedule(mut config: GaussianDiffusionConfig, schedule: NoiseSchedule) -> Self {
        config.timesteps = schedule.num_timesteps();
        let loss_weight = loss_weight(config.objective, &schedule.snr, config.min_snr_gamma);
        let fixed_large_log_variance = schedule.fixed_large_log_variance();
        let log_betas = schedule.betas.iter().map(|b| b.ln()).collect();
        Self { config, schedule, loss_weight, fixed_large_log_variance, log_betas }
    }

    /// Number of diffusion steps T.
    pub fn num_timesteps(&self) -> usize {
        self.schedule.num_timesteps()
    }

    /// The objective.
    pub fn objective(&self) -> Objective {
        self.config.objective
    }

    pub(crate) fn check_t<const D: usize>(&self, t: &[usize], x: &Tensor<D>) -> Result<()> {
        check_timesteps(t, x.dims()[0], self.num_timesteps())
    }

    /// `x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`.
    pub fn q_sample<const D: usize>(&self, x0: Tensor<D>, t: &[usize], noise: Tensor<D>) -> Result<Tensor<D>> {
        self.check_t(t, &x0)?;
        check_same_shape("noise (must match x0)", &x0, &noise)?;
        let s = &self.schedule;
        Ok(extract(&s.sqrt_alphas_cumprod, t, &x0) * x0.clone()
            + extract(&s.sqrt_one_minus_alphas_cumprod, t, &x0) * noise)
    }

    /// `x0 = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps`.
    pub fn predict_start_from_noise<const D: usize>(&self, x_t: Tensor<D>, t: &[usize], eps: Tensor<D>) -> Tensor<D> {
        let s = &self.schedule;
        extract(&s.sqrt_recip_alphas_cumprod, t, &x_t) * x_t.clone() - extract(&s.sqrt_recipm1_alphas_cumprod, t, &x_t) * eps
    }

    /// `eps = (sqrt(1/abar_t) x_t - x0) / sqrt(1/abar_t - 1)`.
    pub fn predict_noise_from_start<const D: usize>(&self, x_t: Tensor<D>, t: &[usize], x0: Tensor<D>) -> Tensor<D> {
        let s = &self.schedule;
        (extract(&s.sqrt_recip_alphas_cumprod, t, &x_t) * x_t.clone() - x0) / extract(&s.sqrt_recipm1_alphas_cumprod, t, &x_t)
    }

    /// `v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0`.
    pub fn predict_v<const D: usize>(&self, x0: Tensor<D>, t: &[usize], eps: Tensor<D>) -> Tensor<D> {
        let s = &self.schedule;
        extract(&s.sqrt_alphas_cumprod, t, &x0) * eps - extract(&s.sqrt_one_minus_alphas_cumprod, t, &x0) * x0.clone()
    }

    /// `x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v`.
    pub fn predict_start_from_v<const D: usize>(&self, x_t: Tensor<D>, t: &[usize], v: Tensor<D>) -> Tensor<D> {
        let s = &self.schedule;
        extract(&s.sqrt_alphas_cumprod, t, &x_t) * x_t.clone() - extract(&s.sqrt_one_minus_alphas_cumprod, t, &x_t) * v
    }

    /// `eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v` (from v without going through x0).
    pub fn predict_noise_from_v<const D: usize>(&self, x_t: Tensor<D>, t: &[usize], v: Tensor<D>) -> Tensor<D> {
        let s = &self.schedule;
        extract(&s.sqrt_one_minus_alphas_cumprod, t, &x_t) * x_t.clone() + extract(&s.sqrt_alphas_cumprod, t, &x_t) * v
    }

    /// `x0 = (mu - coef2_t x_t) / coef1_t`, inverting the posterior mean.
    pub fn predict_start_from_mean<const D: usize>(&self, x_t: Tensor<D>, t: &[usize], mean: Tensor<D>) -> Tensor<D> {
        let s = &self.schedule;
        (mean - extract(&s.posterior_mean_coef2, t, &x_t) * x_t.clone()) / extract(&s.posterior_mean_coef1, t, &x_t)
    }

    /// The posterior `q(x_{t-1} | x_t, x0)`: mean `coef1_t x0 + coef2_t x_t`, variance `beta~_t`,
    /// log-variance `ln max(beta~_t, 1e-20)`.
    pub fn q_posterior<const D: usize>(&self, x0: Tensor<D>, x_t: Tensor<D>, t: &[usize]) -> Posterior<D> {
        let s = &self.schedule;
        Posterior {
            mean: extract(&s.posterior_mean_coef1, t, &x_t) * x0 + extract(&s.posterior_mean_coef2, t, &x_t) * x_t.clone(),
            variance: extract(&s.posterior_variance, t, &x_t),
            log_variance: extract(&s.posterior_log_variance_clipped, t, &x_t),
        }
    }

    /// The training target of the objective for data `x0`, noise `eps` and `x_t = q_sample(x0, t, eps)`.
    pub fn target<const D: usize>(&self, x0: Tensor<D>, x_t: Tensor<D>, t: &[usize], eps: Tensor<D>) -> Tensor<D> {
        match self.config.objective {
            Objective::PredNoise => eps,
            Objective::PredX0 | Objective::Weighted => x0,
            Objective::PredV => self.predict_v(x0, t, eps),
            Objective::Mean => self.q_posterior(x0, x_t, t).mean,
        }
    }

    /// Splits a network output into the objective's part and, for a learned variance, the variance
    /// part (channels are dimension 1).
    pub fn split_output<const D: usize>(&self, output: Tensor<D>) -> Result<(Tensor<D>, Option<Tensor<D>>)> {
        if !self.config.variance.is_learned() {
            return Ok((output, None));
        }
        let c = output.dims()[1];
        if c % 2 != 0 {
            return Err(Error::invalid(
                "variance",
                "learned_range",
                format!("a learned variance needs a network with twice the data channels, but its output has {c}"),
            ));
        }
        let mut halves = output.chunk(2, 1);
        let var = halves.pop().expect("two halves");
        Ok((halves.pop().expect("two halves"), Some(var)))
    }

    /// Reads a network output as eps and x0 (the reference's `model_predictions`). With `clip`, x0 is
    /// clipped and, when `rederive_noise`, eps is recomputed from the clipped x0 so the two agree.
    pub fn predictions<const D: usize>(
        &self,
        output: Tensor<D>,
        x_t: Tensor<D>,
        t: &[usize],
        clip: X0Clip,
        rederive_noise: bool,
    ) -> Result<Prediction<D>> {
        self.check_t(t, &x_t)?;
        let (out, variance_output) = self.split_output(output)?;
        if self.config.objective == Objective::Weighted {
            let parts = crate::objective::weighted_parts(out, &x_t, |eps| self.predict_start_from_noise(x_t.clone(), t, eps))?;
            let x0 = apply_clip(parts.blend(parts.from_eps.clone(), parts.x0.clone()), clip)?;
            return Ok(Prediction { pred_noise: self.predict_noise_from_start(x_t, t, x0.clone()), pred_x0: x0, variance_output });
        }
        check_same_shape("network output (must match x_t)", &x_t, &out)?;
        let clipping = clip != X0Clip::None;
        let (pred_noise, pred_x0) = match self.config.objective {
            Objective::PredNoise => {
                let x0 = apply_clip(self.predict_start_from_noise(x_t.clone(), t, out.clone()), clip)?;
                let eps = if clipping && rederive_noise { self.predict_noise_from_start(x_t.clone(), t, x0.clone()) } else { out };
                (eps, x0)
            }
            Objective::PredX0 => {
                let x0 = apply_clip(out, clip)?;
                (self.predict_noise_from_start(x_t.clone(), t, x0.clone()), x0)
            }
            Objective::PredV => {
                let x0 = apply_clip(self.predict_start_from_v(x_t.clone(), t, out), clip)?;
                (self.predict_noise_from_start(x_t.clone(), t, x0.clone()), x0)
            }
            Objective::Mean => {
                let x0 = apply_clip(self.predict_start_from_mean(x_t.clone(), t, out), clip)?;
                (self.predict_noise_from_start(x_t.clone(), t, x0.clone()), x0)
            }
            Objective::Weighted => unreachable!("handled above"),
        };
        Ok(Prediction { pred_noise, pred_x0, variance_output })
    }

    /// Log-variance of the reverse step for the configured [`ModelVariance`].
    pub fn model_log_variance<const D: usize>(&self, x_t: &Tensor<D>, t: &[usize], variance_output: Option<Tensor<D>>) -> Result<Tensor<D>> {
        let s = &self.schedule;
        Ok(match self.config.variance {
            ModelVariance::FixedSmall => extract(&s.posterior_log_variance_clipped, t, x_t),
            ModelVariance::FixedLarge => extract(&self.fixed_large_log_variance, t, x_t),
            ModelVariance::LearnedRange => {
                let v = variance_output.ok_or_else(|| Error::invalid("variance", "learned_range", "the network output carries no variance channels"))?;
                let min_log = extract(&s.posterior_log_variance_clipped, t, x_t);
                let max_log = extract(&self.log_betas, t, x_t);
                let frac = (v + 1.0) / 2.0;
                frac.clone() * max_log + (frac.neg() + 1.0) * min_log
            }
        })
    }

    /// The model's reverse step from a network output (the reference's `p_mean_variance`): x0 from
    /// the output, clipped as asked, and the posterior mean around it.
    pub fn reverse_step<const D: usize>(&self, output: Tensor<D>, x_t: Tensor<D>, t: &[usize], clip: X0Clip) -> Result<ReverseStep<D>> {
        let pred = self.predictions(output, x_t.clone(), t, clip, false)?;
        let log_variance = self.model_log_variance(&x_t, t, pred.variance_output)?;
        let mean = self.q_posterior(pred.pred_x0.clone(), x_t, t).mean;
        Ok(ReverseStep { mean, log_variance, pred_x0: pred.pred_x0, pred_noise: pred.pred_noise })
    }

    /// The network as a sampler calls it: `cond` on every call, self-conditioned when this
    /// diffusion is.
    pub fn model_calls<'a, const D: usize, M: crate::Denoiser<D>>(&self, model: &'a M, cond: &crate::Conditioning<D>) -> crate::ModelCalls<'a, D, M> {
        crate::ModelCalls::new(model, cond.clone(), self.config.self_condition)
    }

    /// Calls the network on `x_t` at timesteps `t`.
    pub fn run_model<const D: usize, M: crate::Denoiser<D>>(
        &self,
        model: &M,
        x_t: Tensor<D>,
        t: &[usize],
        cond: &crate::Conditioning<D>,
    ) -> Tensor<D> {
        let time = crate::tensor::time_tensor(t, &x_t);
        model.denoise(x_t, time, cond)
    }
}

/// Applies an [`X0Clip`] to a predicted x0.
pub fn apply_clip<const D: usize>(x0: Tensor<D>, clip: X0Clip) -> Result<Tensor<D>> {
    Ok(match clip {
        X0Clip::None => x0,
        X0Clip::Static => x0.clamp(-1.0, 1.0),
        X0Clip::Dynamic { percentile } => {
            if !(percentile > 0.0 && percentile <= 1.0) {
                return Err(Error::invalid("percentile", percentile, "dynamic thresholding takes a quantile in (0, 1]; Imagen uses 0.995"));
            }
            let b = x0.dims()[0];
            let n = x0.shape().num_elements() / b;
            let sorted = x0.clone().abs().reshape([b, n]).sort(1);
            // torch.quantile's linear interpolation between the two nearest ranks.
            let pos = percentile * (n - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            let w = pos - lo as f64;
            let q = sorted.clone().narrow(1, lo, 1) * (1.0 - w) + sorted.narrow(1, hi, 1) * w;
            let s: Vec<f64> = to_f64_vec(&q).into_iter().map(|v| v.max(1.0)).collect();
            // clamp(x0, -s, s) / s == clamp(x0 / s, -1, 1) for s > 0.
            (x0.clone() / per_sample(s, &x0)).clamp(-1.0, 1.0)
        }
    })
}
