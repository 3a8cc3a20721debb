//! Continuous-time Gaussian diffusion (Kingma et al. 2021, "Variational Diffusion Models"), as the
//! reference's `ContinuousTimeGaussianDiffusion` (eps prediction) and
//! `VParamContinuousTimeGaussianDiffusion` (v prediction): time `t` is uniform in [0, 1], the
//! schedule is a log-SNR curve `l(t)`, `x_t = alpha x0 + sigma eps` with `alpha^2 = sigmoid(l)` and
//! `sigma^2 = sigmoid(-l)`, and the network gets `l(t)` as its time input (so it needs a time
//! embedding for real values: the reference asks for Fourier features).
//!
//! The reference's sampler steps from `t` to `s < t` with `c = -expm1(l_t - l_s)`,
//! `mean = alpha_s (x (1 - c) / alpha_t + c x0)` and variance `sigma_s^2 c`, on `N` uniform steps
//! from 1 to 0; DDIM and the sigma-space solvers work too (`sigma = exp(-l / 2)`).

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use burn::tensor::Tensor;
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::denoiser::{Conditioning, Denoiser, ModelCalls};
use crate::diffusion::{X0Clip, apply_clip};
use crate::error::{Error, Result};
use crate::karras::{Preconditioned, Preconditioning};
use crate::noise::NoiseSource;
use crate::objective::Objective;
use crate::loss::{LossOutput, NoiseLevels};
use crate::sampler::{SampleOptions, check_eta, ddim_update};
use crate::tensor::{from_f64, mean_flat};

/// A log-SNR schedule `l(t)` on [0, 1], decreasing from clean to noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LogSnrSchedule {
    /// The continuous form of DDPM's linear betas: `l(t) = -ln(expm1(1e-4 + 10 t^2))`
    /// (9.21 at t = 0, -10 at t = 1).
    Linear,
    /// The cosine schedule: `l(t) = -ln(max(cos((t + s) / (1 + s) pi / 2)^-2 - 1, 1e-5))`.
    Cosine {
        #[serde(default = "default_cosine_s")]
        s: f64,
    },
    /// Simple diffusion's cosine (Hoogeboom et al. 2023): `l(t) = -2 ln tan(a + t (b - a))` with
    /// `a = atan(exp(-max / 2))`, `b = atan(exp(-min / 2))`, so `l` runs from `logsnr_max` to
    /// `logsnr_min` (15 to -15).
    LogsnrCosine {
        #[serde(default = "default_logsnr_min")]
        logsnr_min: f64,
        #[serde(default = "default_logsnr_max")]
        logsnr_max: f64,
    },
}

fn default_logsnr_min() -> f64 {
    -15.0
}
fn default_logsnr_max() -> f64 {
    15.0
}

/// Simple diffusion's resolution shift of a schedule, for images of side `image_d` whose noise
/// should behave like that of a `noise_d` image: `l + 2 ln(noise_d / image_d)` (shifted), or the
/// interpolation `t l_low(t) + (1 - t) l_high(t)` of the shifts to `noise_d_low` and
/// `noise_d_high`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LogSnrShift {
    Shifted { image_d: f64, noise_d: f64 },
    Interpolated { image_d: f64, noise_d_low: f64, noise_d_high: f64 },
}

impl LogSnrShift {
    /// The shift added to `l(t)`.
    pub fn at(&self, t: f64) -> f64 {
        match *self {
            Self::Shifted { image_d, noise_d } => 2.0 * (noise_d / image_d).ln(),
            Self::Interpolated { image_d, noise_d_low, noise_d_high } => t * 2.0 * (noise_d_low / image_d).ln() + (1.0 - t) * 2.0 * (noise_d_high / image_d).ln(),
        }
    }

    fn check(&self) -> Result<()> {
        let sizes = match *self {
            Self::Shifted { image_d, noise_d } => vec![image_d, noise_d],
            Self::Interpolated { image_d, noise_d_low, noise_d_high } => vec![image_d, noise_d_low, noise_d_high],
        };
        if sizes.iter().any(|&d| !(d > 0.0)) {
            return Err(Error::invalid("shift", format!("{self:?}"), "image and noise sizes must be positive (e.g. image_d 256, noise_d 64)"));
        }
        Ok(())
    }
}

fn default_cosine_s() -> f64 {
    0.008
}

impl LogSnrSchedule {
    /// `l(t)`.
    pub fn log_snr(&self, t: f64) -> f64 {
        match *self {
            Self::Linear => -(1e-4 + 10.0 * t * t).exp_m1().max(1e-20).ln(),
            Self::Cosine { s } => -(((t + s) / (1.0 + s) * PI * 0.5).cos().powi(-2) - 1.0).max(1e-5).ln(),
            Self::LogsnrCosine { logsnr_min, logsnr_max } => {
                let (a, b) = ((-0.5 * logsnr_max).exp().atan(), (-0.5 * logsnr_min).exp().atan());
                -2.0 * (a + t * (b - a)).tan().max(1e-20).ln()
            }
        }
    }
}

impl fmt::Display for LogSnrSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Linear => f.write_str("linear"),
            Self::Cosine { .. } => f.write_str("cosine"),
            Self::LogsnrCosine { .. } => f.write_str("logsnr_cosine"),
        }
    }
}

impl FromStr for LogSnrSchedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine { s: default_cosine_s() }),
            "logsnr_cosine" => Ok(Self::LogsnrCosine { logsnr_min: default_logsnr_min(), logsnr_max: default_logsnr_max() }),
            "learned" => Err(Error::invalid("schedule", s, "a learned schedule is a network trained with the model: set ContinuousDiffusionConfig::learned (ddpm-train: schedule = \"learned\")")),
            other => Err(Error::invalid("schedule", other, "use linear, cosine or logsnr_cosine")),
        }
    }
}

/// `(alpha, sigma)` of log-SNR `l`: `alpha^2 = sigmoid(l)`, `sigma^2 = sigmoid(-l)`.
pub fn alpha_sigma(l: f64) -> (f64, f64) {
    let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
    (sig(l).sqrt(), sig(-l).sqrt())
}


/// Settings of [`ContinuousDiffusion`]; the defaults are the reference's `ContinuousTimeGaussianDiffusion`.
#[derive(burn::config::Config, Debug, PartialEq)]
pub struct ContinuousDiffusionConfig {
    /// The log-SNR schedule.
    #[config(default = "LogSnrSchedule::Linear")]
    pub schedule: LogSnrSchedule,
    /// What the network predicts: eps (the reference's `ContinuousTimeGaussianDiffusion`), v (its
    /// `VParamContinuousTimeGaussianDiffusion`) or x0.
    #[config(default = "Objective::PredNoise")]
    pub objective: Objective,
    /// Min-SNR-gamma loss weighting (Hang et al. 2023); `None` weighs every time equally, as the
    /// reference does by default.
    #[config(default = "None")]
    pub min_snr_gamma: Option<f64>,
    /// Steps of the ancestral sampler.
    #[config(default = 500)]
    pub num_sample_steps: usize,
    /// Simple diffusion's resolution shift of the schedule (none by default).
    #[config(default = "None")]
    pub shift: Option<LogSnrShift>,
    /// Weigh the loss as simple diffusion does, by `loss_weight` of the objective (v:
    /// `min(snr, g) / (snr + 1)`, eps: `min(snr, g) / snr`, without min-SNR `snr / (snr + 1)` and
    /// 1); otherwise every time weighs 1 unless `min_snr_gamma` is set (the reference's
    /// continuous-time classes).
    #[config(default = false)]
    pub snr_weighted: bool,
    /// The reference's learned schedule: the log-SNR comes from a small monotonic network trained
    /// with the model ([`LearnedScheduleModel`]), pinned to the linear schedule's end points.
    /// `schedule` must then be `Linear`.
    #[config(default = "None")]
    pub learned: Option<LearnedLogSnrConfig>,
}

impl ContinuousDiffusionConfig {
    pub fn init(&self) -> Result<ContinuousDiffusion> {
        if matches!(self.objective, Objective::Mean | Objective::Weighted) {
            return Err(Error::invalid("objective", self.objective, "continuous-time diffusion predicts pred_noise, pred_x0 or pred_v"));
        }
        if self.num_sample_steps == 0 {
            return Err(Error::invalid("num_sample_steps", 0, "sample with at least one step"));
        }
        if let Some(g) = self.min_snr_gamma
            && !(g > 0.0)
        {
            return Err(Error::invalid("min_snr_gamma", g, "give a positive gamma (5 is usual)"));
        }
        if let LogSnrSchedule::Cosine { s } = self.schedule
            && !(s >= 0.0)
        {
            return Err(Error::invalid("s", s, "the cosine offset must be >= 0"));
        }
        if let LogSnrSchedule::LogsnrCosine { logsnr_min, logsnr_max } = self.schedule
            && !(logsnr_min < logsnr_max)
        {
            return Err(Error::invalid("logsnr_min", logsnr_min, format!("must be below logsnr_max {logsnr_max}")));
        }
        if let Some(shift) = &self.shift {
            shift.check()?;
        }
        if let Some(l) = &self.learned {
            if self.schedule != LogSnrSchedule::Linear || self.shift.is_some() {
                return Err(Error::invalid("schedule", "learned", "the learned schedule spans the linear schedule's log-SNR range: use schedule linear and no shift"));
            }
            if l.hidden_dim == 0 || !(0.0..=1.0).contains(&l.frac_gradient) {
                return Err(Error::invalid("learned", format!("{l:?}"), "hidden_dim must be positive and frac_gradient in [0, 1]"));
            }
        }
        Ok(ContinuousDiffusion { config: self.clone() })
    }
}

/// The continuous-time process.
#[derive(Debug, Clone)]
pub struct ContinuousDiffusion {
    pub config: ContinuousDiffusionConfig,
}

impl ContinuousDiffusion {
    /// `l(t)` of the configured fixed schedule, shifted when configured. (A learned schedule
    /// shares the linear schedule's end points `l(0)` and `l(1)`; between them ask
    /// [`ContinuousDiffusion::log_snrs`] with the model.)
    pub fn log_snr(&self, t: f64) -> f64 {
        self.config.schedule.log_snr(t) + self.config.shift.map_or(0.0, |s| s.at(t))
    }

    /// `l` at `times` as a tensor: the fixed schedule's values, or the model's learned schedule
    /// (differentiable, for training it).
    pub fn log_snrs<const D: usize, M: Denoiser<D>>(&self, model: &M, times: &[f64], like: &Tensor<D>) -> Result<Tensor<1>> {
        if self.config.learned.is_none() {
            return Ok(from_f64(times.iter().map(|&t| self.log_snr(t)).collect(), [times.len()], like));
        }
        model.learned_log_snr(from_f64(times.to_vec(), [times.len()], like)).ok_or_else(|| {
            Error::invalid("schedule", "learned", "the network carries no learned schedule: train it with the learned schedule (ddpm-train wraps the network) or pick linear or cosine")
        })
    }

    /// [`ContinuousDiffusion::log_snrs`] read back to the host.
    pub fn host_log_snrs<const D: usize, M: Denoiser<D>>(&self, model: &M, times: &[f64], like: &Tensor<D>) -> Result<Vec<f64>> {
        Ok(crate::tensor::to_f64_vec(&self.log_snrs(model, times, like)?.detach()))
    }

    /// `sigma = exp(-l / 2)` in the variance-exploding view `x / alpha = x0 + sigma eps`.
    pub fn sigma_ve(&self, t: f64) -> f64 {
        (-0.5 * self.log_snr(t)).exp()
    }

    /// `x_t = alpha x0 + sigma eps` at `times` (one per batch element) on the fixed schedule;
    /// returns `x_t` and the log-SNRs.
    pub fn q_sample<const D: usize>(&self, x0: Tensor<D>, times: &[f64], eps: Tensor<D>) -> Result<(Tensor<D>, Vec<f64>)> {
        let no_model = |x: Tensor<D>, _: Tensor<1>, _: &Conditioning<D>| x;
        let (x_t, l) = self.q_sample_with(&no_model, x0, times, eps)?;
        Ok((x_t, crate::tensor::to_f64_vec(&l)))
    }

    /// [`ContinuousDiffusion::q_sample`] with `model`'s schedule; the log-SNRs as a tensor.
    pub fn q_sample_with<const D: usize, M: Denoiser<D>>(&self, model: &M, x0: Tensor<D>, times: &[f64], eps: Tensor<D>) -> Result<(Tensor<D>, Tensor<1>)> {
        let b = x0.dims()[0];
        if times.len() != b {
            return Err(Error::Shape { what: "times (one per batch element)".into(), expected: vec![b], got: vec![times.len()] });
        }
        let l = self.log_snrs(model, times, &x0)?;
        let (alpha, sigma) = coefficients(l.clone());
        Ok((x0 * alpha + eps * sigma, l))
    }

    /// Per-sample `w(l) mean((f(x_t, l) - target)^2)` at given times and noise, and its batch
    /// mean. The target is eps, x0 or `v = alpha eps - sigma x0`; `w` is 1, or with min-SNR-gamma
    /// or `snr_weighted` the objective's x0-loss weight (`min(snr, g) / snr` for eps, `min(snr, g)`
    /// for x0, `min(snr, g) / (snr + 1)` for v; no clipping without gamma). With a learned schedule
    /// the loss differentiates it too, through `alpha`, `sigma`, the network's time input and `w`.
    pub fn loss_at<const D: usize, M: Denoiser<D>>(&self, model: &M, x0: Tensor<D>, times: &[f64], eps: Tensor<D>, cond: &Conditioning<D>) -> Result<LossOutput> {
        let (x_t, l) = self.q_sample_with(model, x0.clone(), times, eps.clone())?;
        let (alpha, sigma) = coefficients(l.clone());
        let out = model.denoise(x_t, l.clone(), &cond.with_self_cond(None));
        let target = match self.config.objective {
            Objective::PredNoise => eps,
            Objective::PredX0 => x0.clone(),
            _ => eps * alpha - x0.clone() * sigma,
        };
        let diff = out - target;
        let mut per = mean_flat(diff.clone() * diff);
        if self.config.snr_weighted || self.config.min_snr_gamma.is_some() {
            let snr = l.exp();
            let clipped = match self.config.min_snr_gamma {
                Some(g) => snr.clone().clamp_max(g),
                None => snr.clone(),
            };
            let ones = snr.ones_like();
            per = per * crate::objective::weight_of(self.config.objective, snr, clipped, || ones);
        }
        Ok(LossOutput::from_per_sample(per, NoiseLevels::Times(times.to_vec())))
    }

    /// The loss with times uniform in [0, 1) from `rng` and noise from `noise`.
    pub fn training_loss<const D: usize, M: Denoiser<D>, R: Rng + ?Sized, N: NoiseSource>(
        &self,
        model: &M,
        x0: Tensor<D>,
        cond: &Conditioning<D>,
        rng: &mut R,
        noise: &mut N,
    ) -> Result<LossOutput> {
        let times: Vec<f64> = (0..x0.dims()[0]).map(|_| rng.random::<f64>()).collect();
        let eps = noise.normal_like(&x0)?;
        self.loss_at(model, x0, &times, eps, cond)
    }

    /// The x0 that the network's `output` at `x_t` and log-SNR `l` stands for, clipped.
    fn x0_at<const D: usize>(&self, output: Tensor<D>, x_t: Tensor<D>, l: f64, clip: X0Clip) -> Result<Tensor<D>> {
        let (a, s) = alpha_sigma(l);
        apply_clip(self.config.objective.x0_at(output, x_t, a, s)?, clip)
    }

    /// `(x0, eps)` that the network's `output` at `x_t` and log-SNR `l` stands for, x0 clipped as
    /// asked and eps re-derived from it.
    fn predict<const D: usize>(&self, output: Tensor<D>, x_t: Tensor<D>, l: f64, clip: X0Clip) -> Result<(Tensor<D>, Tensor<D>)> {
        let (a, s) = alpha_sigma(l);
        let x0 = self.x0_at(output, x_t.clone(), l, clip)?;
        let eps = (x_t - x0.clone().mul_scalar(a)).div_scalar(s);
        Ok((x0, eps))
    }

    /// The reference's ancestral sampler from `x` at `times[0]` down the decreasing `times` (ending
    /// at 0): `mean = alpha_s (x (1 - c) / alpha_t + c x0)`, `c = -expm1(l_t - l_s)`, plus
    /// `sigma_s sqrt(c) z` except on the last step. The result is clipped like x0.
    pub fn ancestral<const D: usize, M: Denoiser<D>, N: NoiseSource>(&self, model: &M, mut x: Tensor<D>, times: &[f64], opts: &SampleOptions<D>, noise: &mut N) -> Result<Tensor<D>> {
        let SampleOptions { clip, cond } = opts;
        let clip = *clip;
        check_times(times)?;
        let ls = self.host_log_snrs(model, times, &x)?;
        // The reference's continuous-time process has no self-conditioning.
        let mut calls = ModelCalls::new(model, cond.clone(), false);
        for (w, lw) in times.windows(2).zip(ls.windows(2)) {
            let (l, l_next) = (lw[0], lw[1]);
            let c = -(l - l_next).exp_m1();
            let (a, _) = alpha_sigma(l);
            let (a_next, s_next) = alpha_sigma(l_next);
            let out = calls.call_without_cfg_pp(x.clone(), one_time(l, &x), "the continuous-time ancestral sampler")?;
            let (x0, _) = self.predict(out, x.clone(), l, clip)?;
            let mean = (x.mul_scalar((1.0 - c) / a) + x0.mul_scalar(c)).mul_scalar(a_next);
            x = if w[1] == 0.0 { mean } else { mean.clone() + noise.normal_like(&mean)?.mul_scalar(s_next * c.sqrt()) };
        }
        apply_clip(x, clip)
    }

    /// DDIM on continuous times: `x_s = alpha_s x0 + sqrt(sigma_s^2 - r^2) eps + r z` with
    /// `r = eta sqrt((1 - a_t / a_s)(1 - a_s) / (1 - a_t))`, `a = alpha^2`; the last step (to t = 0)
    /// returns x0. With a CFG++ guidance the noise estimate comes from the unconditional output.
    pub fn ddim<const D: usize, M: Denoiser<D>, N: NoiseSource>(&self, model: &M, mut x: Tensor<D>, times: &[f64], eta: f64, opts: &SampleOptions<D>, noise: &mut N) -> Result<Tensor<D>> {
        let SampleOptions { clip, cond } = opts;
        let clip = *clip;
        check_times(times)?;
        check_eta(eta)?;
        let ls = self.host_log_snrs(model, times, &x)?;
        let mut calls = ModelCalls::new(model, cond.clone(), false);
        for (w, lw) in times.windows(2).zip(ls.windows(2)) {
            let l = lw[0];
            let (out, unconditional) = calls.call(x.clone(), one_time(l, &x));
            let (x0, eps) = self.predict(out, x.clone(), l, clip)?;
            if w[1] == 0.0 {
                return Ok(x0);
            }
            let eps = match unconditional {
                Some(u) => self.predict(u, x.clone(), l, clip)?.1,
                None => eps,
            };
            let (a_t, a_s) = (alpha_sigma(l).0.powi(2), alpha_sigma(lw[1]).0.powi(2));
            x = ddim_update(x0, eps, a_t, a_s, eta, noise)?;
        }
        Ok(x)
    }
}

fn check_times(times: &[f64]) -> Result<()> {
    if times.len() < 2 || times.windows(2).any(|w| w[1] >= w[0]) || times.iter().any(|t| !(0.0..=1.0).contains(t)) || *times.last().expect("len >= 2") != 0.0 {
        return Err(Error::invalid("times", format!("{times:?}"), "continuous times must decrease within [0, 1] and end at 0"));
    }
    Ok(())
}

/// `(alpha, sigma) = (sqrt(sigmoid(l)), sqrt(sigmoid(-l)))` per sample, shaped `[B, 1, ..]`.
fn coefficients<const D: usize>(l: Tensor<1>) -> (Tensor<D>, Tensor<D>) {
    let mut shape = [1usize; D];
    shape[0] = l.dims()[0];
    let a = burn::tensor::activation::sigmoid(l.clone()).sqrt().reshape(shape);
    let s = burn::tensor::activation::sigmoid(l.neg()).sqrt().reshape(shape);
    (a, s)
}

/// The time input `l` for every element of the batch `x`.
fn one_time<const D: usize>(l: f64, x: &Tensor<D>) -> Tensor<1> {
    let b = x.dims()[0];
    from_f64(vec![l; b], [b], x)
}

/// `steps + 1` times evenly spaced from `start` down to 0.
pub fn uniform_times(start: f64, steps: usize) -> Vec<f64> {
    (0..=steps).map(|i| start * (1.0 - i as f64 / steps as f64)).collect()
}

/// A continuous-time model's scalings: `l = -2 ln sigma`, the network called on
/// `x / sqrt(1 + sigma^2)` at `l`, its output read as x0 (clipped by `clip`).
pub struct ContinuousScalings<'a> {
    pub diffusion: &'a ContinuousDiffusion,
    pub clip: X0Clip,
}

impl<const D: usize> Preconditioning<D> for ContinuousScalings<'_> {
    fn input(&self, x: &Tensor<D>, sigma: f64) -> Result<(Tensor<D>, Tensor<1>)> {
        let l = -2.0 * sigma.ln();
        let x_t = x.clone().mul_scalar(alpha_sigma(l).0);
        let time = from_f64(vec![l; x_t.dims()[0]], [x_t.dims()[0]], &x_t);
        Ok((x_t, time))
    }

    fn x0(&self, output: Tensor<D>, x: &Tensor<D>, sigma: f64) -> Result<Tensor<D>> {
        let l = -2.0 * sigma.ln();
        self.diffusion.x0_at(output, x.clone().mul_scalar(alpha_sigma(l).0), l, self.clip)
    }
}

/// A continuous-time model as a sigma-space denoiser (no self-conditioning: the reference's
/// continuous-time process has none).
pub type ContinuousDenoiser<'a, const D: usize, M> = Preconditioned<'a, D, M, ContinuousScalings<'a>>;

impl<'a, const D: usize, M: Denoiser<D>> Preconditioned<'a, D, M, ContinuousScalings<'a>> {
    pub fn new(diffusion: &'a ContinuousDiffusion, model: &'a M, clip: X0Clip, cond: Conditioning<D>) -> Self {
        Self::with_scalings(ContinuousScalings { diffusion, clip }, model, cond, false)
    }
}

/// Settings of the learned log-SNR schedule; defaults are the reference's.
#[derive(burn::config::Config, Debug, PartialEq)]
pub struct LearnedLogSnrConfig {
    /// Width of the monotonic network's hidden layer.
    #[config(default = 1024)]
    pub hidden_dim: usize,
    /// Share of the loss gradient that reaches the schedule (`l f + detach(l) (1 - f)`), to train
    /// it more slowly than the network.
    #[config(default = 1.0)]
    pub frac_gradient: f64,
}

/// A linear layer whose weights and bias enter through their absolute values, so it is
/// non-decreasing in every input.
#[derive(burn::module::Module, Debug)]
pub struct MonotonicLinear {
    pub weight: burn::module::Param<Tensor<2>>,
    pub bias: burn::module::Param<Tensor<1>>,
}

impl MonotonicLinear {
    fn new(d_in: usize, d_out: usize, device: &burn::tensor::Device) -> Self {
        // PyTorch's nn.Linear initialisation: U(-1/sqrt(in), 1/sqrt(in)).
        let k = 1.0 / (d_in as f64).sqrt();
        let u = burn::tensor::Distribution::Uniform(-k, k);
        Self {
            weight: burn::module::Param::from_tensor(Tensor::random([d_in, d_out], u, device)),
            bias: burn::module::Param::from_tensor(Tensor::random([d_out], u, device)),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        x.matmul(self.weight.val().abs()) + self.bias.val().abs().unsqueeze_dim::<2>(0)
    }
}

/// The reference's `learned_noise_schedule` (Kingma et al. 2021, appendix H and I.2): a
/// monotonic network `m(t) = h(t) + l3(sigmoid(l2(h(t))))`, `h = l1(t)`, rescaled so that
/// `l(t) = l_max + (l_min - l_max) (m(t) - m(0)) / (m(1) - m(0))` runs from the linear schedule's
/// `l(0)` to its `l(1)`.
#[derive(burn::module::Module, Debug)]
pub struct LearnedLogSnr {
    pub l1: MonotonicLinear,
    pub l2: MonotonicLinear,
    pub l3: MonotonicLinear,
    pub log_snr_max: f64,
    pub log_snr_min: f64,
    pub frac_gradient: f64,
}

impl LearnedLogSnrConfig {
    pub fn init(&self, device: &burn::tensor::Device) -> LearnedLogSnr {
        LearnedLogSnr {
            l1: MonotonicLinear::new(1, 1, device),
            l2: MonotonicLinear::new(1, self.hidden_dim, device),
            l3: MonotonicLinear::new(self.hidden_dim, 1, device),
            log_snr_max: LogSnrSchedule::Linear.log_snr(0.0),
            log_snr_min: LogSnrSchedule::Linear.log_snr(1.0),
            frac_gradient: self.frac_gradient,
        }
    }
}

impl LearnedLogSnr {
    fn net(&self, t: Tensor<2>) -> Tensor<2> {
        let h = self.l1.forward(t);
        h.clone() + self.l3.forward(burn::tensor::activation::sigmoid(self.l2.forward(h)))
    }

    /// `l(t)` for times `[N]` in [0, 1].
    pub fn forward(&self, t: Tensor<1>) -> Tensor<1> {
        let n = t.dims()[0];
        let t = t.reshape([n, 1]);
        let (zero, one) = (self.net(t.zeros_like()), self.net(t.ones_like()));
        let m = self.net(t);
        let normed = ((m - zero.clone()) / (one - zero)).mul_scalar(self.log_snr_min - self.log_snr_max).add_scalar(self.log_snr_max);
        let f = self.frac_gradient;
        let l = if f >= 1.0 { normed } else { normed.clone().mul_scalar(f) + normed.detach().mul_scalar(1.0 - f) };
        l.reshape([n])
    }
}

/// A network trained together with a learned log-SNR schedule: it denoises as `net` and tells
/// the continuous process its schedule ([`Denoiser::learned_log_snr`]). Checkpoints, EMA and the
/// optimiser treat the pair as one module.
#[derive(burn::module::Module, Debug)]
pub struct LearnedScheduleModel<M> {
    pub net: M,
    pub schedule: LearnedLogSnr,
}

impl<const D: usize, M: Denoiser<D>> Denoiser<D> for LearnedScheduleModel<M> {
    fn denoise(&self, x_t: Tensor<D>, t: Tensor<1>, cond: &Conditioning<D>) -> Tensor<D> {
        self.net.denoise(x_t, t, cond)
    }

    fn learned_log_snr(&self, t: Tensor<1>) -> Option<Tensor<1>> {
        Some(self.schedule.forward(t))
    }
}
