//! Samplers: ancestral DDPM and DDIM, each a short loop over a [`Denoiser`] and a list of
//! timesteps. Noise comes from a [`NoiseSource`], so a run is replayable; a callback sees every step.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Tensor, TensorCreationOptions};
use serde::{Deserialize, Serialize};

use crate::denoiser::{Conditioning, Denoiser};
use crate::diffusion::{GaussianDiffusion, X0Clip};
use crate::error::{Error, Result};
use crate::karras::{Churn, SigmaSolver, SigmaSpacing};
use crate::noise::NoiseSource;

/// How DDIM picks its S timesteps out of T.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// The reference's: `trunc(linspace(-1, T-1, S+1))` in f32, reversed (`-1` is the end).
    #[default]
    Linspace,
    /// The DDIM paper's `uniform` (tqch's `linear`): `0, k, 2k, ..` with `k = T div S`.
    Uniform,
    /// The DDIM paper's `quad`: `trunc(linspace(0, sqrt(0.8 T), S)^2)`, duplicates dropped.
    Quadratic,
    /// diffusers' `leading`: `i * (T div S)` for `i = 0..S`.
    Leading,
    /// diffusers' `trailing`: `round(T - i T/S) - 1` for `i = 0..S` (always includes T-1).
    Trailing,
}

impl fmt::Display for TimestepSpacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Linspace => "linspace",
            Self::Uniform => "uniform",
            Self::Quadratic => "quadratic",
            Self::Leading => "leading",
            Self::Trailing => "trailing",
        })
    }
}

impl FromStr for TimestepSpacing {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "linspace" => Self::Linspace,
            "uniform" | "linear" => Self::Uniform,
            "quadratic" | "quad" => Self::Quadratic,
            "leading" => Self::Leading,
            "trailing" => Self::Trailing,
            other => return Err(Error::invalid("spacing", other, "use linspace, uniform, quadratic, leading or trailing")),
        })
    }
}

/// The timesteps a DDIM run visits, in descending order; after the last one the sampler returns
/// its x0 prediction.
pub fn ddim_timesteps(spacing: TimestepSpacing, num_timesteps: usize, steps: usize) -> Result<Vec<usize>> {
    let (t_max, s) = (num_timesteps, steps);
    if s == 0 || s > t_max {
        return Err(Error::invalid("steps", s, format!("DDIM takes between 1 and T = {t_max} steps")));
    }
    let mut ts: Vec<i64> = match spacing {
        TimestepSpacing::Linspace => {
            // torch.linspace in float32, then .int() (truncation toward zero).
            let (start, end) = (-1.0f32, (t_max - 1) as f32);
            let step = (end - start) / s as f32;
            let half = (s + 1) / 2;
            (0..=s)
                .map(|i| if i < half { start + step * i as f32 } else { end - step * (s - i) as f32 })
                .map(|v| v as i64)
                .collect()
        }
        TimestepSpacing::Uniform => (0..t_max).step_by(t_max / s).map(|v| v as i64).collect(),
        TimestepSpacing::Quadratic => crate::schedule::torch_linspace(0.0, (0.8 * t_max as f64).sqrt(), s)
            .into_iter()
            .map(|v| (v * v) as i64)
            .collect(),
        TimestepSpacing::Leading => (0..s).map(|i| (i * (t_max / s)) as i64).collect(),
        TimestepSpacing::Trailing => {
            (0..s).map(|i| round_half_even(t_max as f64 - i as f64 * t_max as f64 / s as f64) as i64 - 1).collect()
        }
    };
    ts.retain(|&v| v >= 0 && (v as usize) < t_max);
    ts.sort_unstable_by(|a, b| b.cmp(a));
    ts.dedup();
    Ok(ts.into_iter().map(|v| v as usize).collect())
}

fn round_half_even(v: f64) -> f64 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 && r % 2.0 != 0.0 { r - v.signum() } else { r }
}

/// What a step callback sees.
#[derive(Debug)]
pub struct StepInfo<'a, const D: usize> {
    /// Step number, from 0.
    pub index: usize,
    /// Number of steps in the run.
    pub total: usize,
    /// The timestep of this step.
    pub t: usize,
    /// The timestep stepped to (`None` at the end).
    pub t_next: Option<usize>,
    /// The input of this step.
    pub x_t: &'a Tensor<D>,
    /// The x0 preview (after clipping).
    pub pred_x0: &'a Tensor<D>,
    /// The output of this step.
    pub x_next: &'a Tensor<D>,
}

/// A step callback that does nothing.
pub fn no_callback<const D: usize>(_: &StepInfo<'_, D>) {}

/// Which sampler, with its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Sampler {
    /// Ancestral sampling over all T steps (Ho et al. 2020, Algorithm 2).
    Ddpm,
    /// DDIM (Song et al. 2021) with `steps` steps; `eta = 0` is deterministic, `eta = 1` matches
    /// DDPM's variance.
    Ddim {
        steps: usize,
        #[serde(default)]
        eta: f64,
        #[serde(default)]
        spacing: TimestepSpacing,
    },
    /// A sigma-space solver ([`crate::karras`]): Euler, Euler ancestral, Heun, DPM-Solver++(2M) or
    /// its SDE variant, on `steps` noise levels spaced by `spacing`. Works with eps, x0 and v models.
    /// `eta` scales the noise of the ancestral and SDE solvers (default 1); `churn` is EDM's, for
    /// Euler and Heun.
    Sigma {
        solver: SigmaSolver,
        steps: usize,
        #[serde(default = "SigmaSpacing::karras")]
        spacing: SigmaSpacing,
        #[serde(default = "one")]
        eta: f64,
        #[serde(default)]
        churn: Churn,
        /// Start the grid here when the model's largest sigma is larger (see
        /// [`crate::karras::sigma_grid`]); `None` starts at the model's largest.
        #[serde(default)]
        sigma_max: Option<f64>,
    },
}

fn one() -> f64 {
    1.0
}

impl Sampler {
    /// Network calls per sample.
    pub fn network_calls(&self, num_timesteps: usize) -> usize {
        match *self {
            Sampler::Ddpm => num_timesteps,
            Sampler::Ddim { steps, .. } => steps.min(num_timesteps),
            Sampler::Sigma { solver: SigmaSolver::Heun, steps, .. } => 2 * steps - 1,
            Sampler::Sigma { steps, .. } => steps,
        }
    }
}

/// Settings shared by the samplers.
#[derive(Debug, Clone, Default)]
pub struct SampleOptions<const D: usize> {
    /// How x0 predictions are clipped (default: to [-1, 1], as the reference).
    pub clip: X0Clip,
    /// Conditioning passed to every network call (self-conditioning is managed by the sampler).
    pub cond: Conditioning<D>,
}

/// Draws x_T from `noise` (the first draw) and runs `sampler`. Returns samples in the model's data
/// range ([-1, 1] for images; see [`unnormalize_to_zero_one`]).
pub fn sample<const D: usize, M, N, F>(
    diffusion: &GaussianDiffusion,
    model: &M,
    shape: [usize; D],
    options: TensorCreationOptions,
    sampler: &Sampler,
    opts: &SampleOptions<D>,
    noise: &mut N,
    callback: F,
) -> Result<Tensor<D>>
where
    M: Denoiser<D>,
    N: NoiseSource,
    F: FnMut(&StepInfo<'_, D>),
{
    let x_t = noise.normal(shape, options)?;
    match *sampler {
        Sampler::Ddpm => ddpm_sample(diffusion, model, x_t, opts, noise, callback),
        Sampler::Ddim { steps, eta, spacing } => {
            let ts = ddim_timesteps(spacing, diffusion.num_timesteps(), steps)?;
            ddim_sample(diffusion, model, x_t, &ts, eta, opts, noise, callback)
        }
        Sampler::Sigma { solver, steps, spacing, eta, churn, sigma_max } => {
            let sigmas = crate::karras::sigma_grid(diffusion, steps, spacing, sigma_max)?;
            // x_T ~ N(0, 1) of the variance-preserving model is x / sqrt(1 + sigma^2) in sigma space.
            let x = x_t.mul_scalar((1.0 + sigmas[0] * sigmas[0]).sqrt());
            sigma_steps(diffusion, model, x, &sigmas, solver, eta, churn, opts, noise, callback)
        }
    }
}

/// A sigma-space solver on a discrete model, from `x` (at noise level `sigmas[0]`) down `sigmas`,
/// each step reported at its nearest timestep.
#[allow(clippy::too_many_arguments)]
fn sigma_steps<const D: usize, M, N, F>(
    diffusion: &GaussianDiffusion,
    model: &M,
    x: Tensor<D>,
    sigmas: &[f64],
    solver: SigmaSolver,
    eta: f64,
    churn: Churn,
    opts: &SampleOptions<D>,
    noise: &mut N,
    mut callback: F,
) -> Result<Tensor<D>>
where
    M: Denoiser<D>,
    N: NoiseSource,
    F: FnMut(&StepInfo<'_, D>),
{
    let mut denoiser = crate::karras::VpDenoiser::new(diffusion, model, opts.clip, opts.cond.clone())?;
    let table = crate::karras::model_sigmas(diffusion);
    let t_of = |s: f64| crate::karras::sigma_to_t(&table, s).round() as usize;
    let total = sigmas.len() - 1;
    crate::karras::sample_sigmas(&mut denoiser, x, sigmas, solver, eta, churn, noise, |i, x_in, x0, x_out| {
        let next = sigmas[i + 1];
        callback(&StepInfo { index: i, total, t: t_of(sigmas[i]), t_next: (next > 0.0).then(|| t_of(next)), x_t: x_in, pred_x0: x0, x_next: x_out })
    })
}

/// Ancestral DDPM from `x_t` at t = T-1 down to 0: at each step the reverse mean around the
/// (clipped) x0 prediction plus `exp(0.5 ln sigma_t^2) z`, with no noise at t = 0.
pub fn ddpm_sample<const D: usize, M, N, F>(
    diffusion: &GaussianDiffusion,
    model: &M,
    x_t: Tensor<D>,
    opts: &SampleOptions<D>,
    noise: &mut N,
    callback: F,
) -> Result<Tensor<D>>
where
    M: Denoiser<D>,
    N: NoiseSource,
    F: FnMut(&StepInfo<'_, D>),
{
    ddpm_sample_from(diffusion, model, x_t, diffusion.num_timesteps() - 1, opts, noise, callback)
}

/// [`ddpm_sample`] from `x_t` at timestep `start` (partial denoising).
pub fn ddpm_sample_from<const D: usize, M, N, F>(
    diffusion: &GaussianDiffusion,
    model: &M,
    mut x_t: Tensor<D>,
    start: usize,
    opts: &SampleOptions<D>,
    noise: &mut N,
    mut callback: F,
) -> Result<Tensor<D>>
where
    M: Denoiser<D>,
    N: NoiseSource,
    F: FnMut(&StepInfo<'_, D>),
{
    let b = x_t.dims()[0];
    let total = start + 1;
    let mut self_cond = None;
    for (index, step) in (0..total).rev().enumerate() {
        let t = vec![step; b];
        let cond = step_conditioning(diffusion, opts, &self_cond);
        let out = diffusion.run_model(model, x_t.clone(), &t, &cond);
        refuse_cfg_pp(model, "ancestral DDPM sampling")?;
        let rev = diffusion.reverse_step(out, x_t.clone(), &t, opts.clip)?;
        let next = if step > 0 {
            rev.mean + (rev.log_variance * 0.5).exp() * noise.normal_like(&x_t)?
        } else {
            rev.mean
        };
        callback(&StepInfo { index, total, t: step, t_next: step.checked_sub(1), x_t: &x_t, pred_x0: &rev.pred_x0, x_next: &next });
        self_cond = Some(rev.pred_x0);
        x_t = next;
    }
    Ok(x_t)
}

/// DDIM over descending `timesteps`: with `a = abar_t`, `a' = abar_t'`,
/// `sigma = eta sqrt((1 - a/a')(1 - a')/(1 - a))`, `c = sqrt(1 - a' - sigma^2)`,
/// `x_t' = sqrt(a') x0 + c eps + sigma z`, where eps is re-derived from the clipped x0; after the
/// last timestep the x0 prediction is returned. Noise is drawn only when `sigma > 0`.
#[allow(clippy::too_many_arguments)]
pub fn ddim_sample<const D: usize, M, N, F>(
    diffusion: &GaussianDiffusion,
    model: &M,
    mut x_t: Tensor<D>,
    timesteps: &[usize],
    eta: f64,
    opts: &SampleOptions<D>,
    noise: &mut N,
    mut callback: F,
) -> Result<Tensor<D>>
where
    M: Denoiser<D>,
    N: NoiseSource,
    F: FnMut(&StepInfo<'_, D>),
{
    if !(eta >= 0.0) {
        return Err(Error::invalid("eta", eta, "DDIM's eta must be >= 0 (0 deterministic, 1 DDPM-like)"));
    }
    if timesteps.windows(2).any(|w| w[0] <= w[1]) || timesteps.iter().any(|&t| t >= diffusion.num_timesteps()) {
        return Err(Error::invalid("timesteps", format!("{timesteps:?}"), "DDIM timesteps must be strictly descending and below T"));
    }
    let b = x_t.dims()[0];
    let ac = &diffusion.schedule.alphas_cumprod;
    let total = timesteps.len();
    let mut self_cond = None;
    for (index, &step) in timesteps.iter().enumerate() {
        let t = vec![step; b];
        let t_next = timesteps.get(index + 1).copied();
        let cond = step_conditioning(diffusion, opts, &self_cond);
        let out = diffusion.run_model(model, x_t.clone(), &t, &cond);
        let pred = diffusion.predictions(out, x_t.clone(), &t, opts.clip, true)?;
        // CFG++ re-noises with the unconditional output's noise estimate.
        let renoise = match model.unconditional_output() {
            Some(u) => diffusion.predictions(u, x_t.clone(), &t, opts.clip, true)?.pred_noise,
            None => pred.pred_noise.clone(),
        };
        let next = match t_next {
            None => pred.pred_x0.clone(),
            Some(tn) => {
                let (a, a_next) = (ac[step], ac[tn]);
                let sigma = eta * ((1.0 - a / a_next) * (1.0 - a_next) / (1.0 - a)).sqrt();
                let c = (1.0 - a_next - sigma * sigma).sqrt();
                let mut next = pred.pred_x0.clone().mul_scalar(a_next.sqrt()) + renoise.mul_scalar(c);
                if sigma > 0.0 {
                    next = next + noise.normal_like(&x_t)?.mul_scalar(sigma);
                }
                next
            }
        };
        callback(&StepInfo { index, total, t: step, t_next, x_t: &x_t, pred_x0: &pred.pred_x0, x_next: &next });
        self_cond = Some(pred.pred_x0);
        x_t = next;
    }
    Ok(x_t)
}

/// Partial denoising (SDEdit, Meng et al. 2022): noise `x0` to the level of timestep
/// `t0 = round(strength (T - 1))` and run `sampler` from there. Small strengths keep the input's
/// layout, 1 starts from (almost) pure noise. DDIM steps from `t0` to its timesteps below `t0`;
/// the sigma-space solvers from `sigma(t0)` to their noise levels below it. The noise that lifts
/// `x0` is the first draw from `noise`.
#[allow(clippy::too_many_arguments)]
pub fn sdedit<const D: usize, M, N, F>(
    diffusion: &GaussianDiffusion,
    model: &M,
    x0: Tensor<D>,
    strength: f64,
    sampler: &Sampler,
    opts: &SampleOptions<D>,
    noise: &mut N,
    callback: F,
) -> Result<Tensor<D>>
where
    M: Denoiser<D>,
    N: NoiseSource,
    F: FnMut(&StepInfo<'_, D>),
{
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(Error::invalid("strength", strength, "give a noise strength in (0, 1]: 0.3 keeps much of the input, 1 keeps little"));
    }
    let b = x0.dims()[0];
    let t0 = (strength * (diffusion.num_timesteps() - 1) as f64).round() as usize;
    let eps = noise.normal_like(&x0)?;
    match *sampler {
        Sampler::Ddpm => {
            let x_t = diffusion.q_sample(x0, &vec![t0; b], eps)?;
            ddpm_sample_from(diffusion, model, x_t, t0, opts, noise, callback)
        }
        Sampler::Ddim { steps, eta, spacing } => {
            let ts: Vec<usize> = std::iter::once(t0).chain(ddim_timesteps(spacing, diffusion.num_timesteps(), steps)?.into_iter().filter(|&t| t < t0)).collect();
            let x_t = diffusion.q_sample(x0, &vec![t0; b], eps)?;
            ddim_sample(diffusion, model, x_t, &ts, eta, opts, noise, callback)
        }
        Sampler::Sigma { solver, steps, spacing, eta, churn, sigma_max } => {
            let table = crate::karras::model_sigmas(diffusion);
            let sigma0 = table[t0];
            let sigmas: Vec<f64> =
                std::iter::once(sigma0).chain(crate::karras::sigma_grid(diffusion, steps, spacing, sigma_max)?.into_iter().filter(|&s| s < sigma0 * (1.0 - 1e-9))).collect();
            let x = x0 + eps.mul_scalar(sigmas[0]);
            sigma_steps(diffusion, model, x, &sigmas, solver, eta, churn, opts, noise, callback)
        }
    }
}

/// An error when `model` asks for CFG++ re-noising, which `sampler` does not do.
pub(crate) fn refuse_cfg_pp<const D: usize, M: Denoiser<D>>(model: &M, sampler: &str) -> Result<()> {
    if model.unconditional_output().is_some() {
        return Err(Error::invalid("cfg_pp", true, format!("{sampler} has no CFG++ form; use ddim, euler or euler_ancestral, or plain guidance")));
    }
    Ok(())
}

pub(crate) fn step_conditioning<const D: usize>(
    diffusion: &GaussianDiffusion,
    opts: &SampleOptions<D>,
    previous_x0: &Option<Tensor<D>>,
) -> Conditioning<D> {
    let self_cond = if diffusion.config.self_condition { previous_x0.clone() } else { None };
    opts.cond.with_self_cond(self_cond)
}

/// `[0, 1] -> [-1, 1]`: `2x - 1`.
pub fn normalize_to_neg_one_one<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x * 2.0 - 1.0
}

/// `[-1, 1] -> [0, 1]`: `(x + 1) / 2`.
pub fn unnormalize_to_zero_one<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    (x + 1.0) * 0.5
}
