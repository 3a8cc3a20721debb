//! Samplers: ancestral DDPM and DDIM, each a short loop over a [`Denoiser`] and a list of
//! timesteps. Noise comes from a [`NoiseSource`], so a run is replayable; a callback sees every step.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::denoiser::{Conditioning, Denoiser, DynDenoiser};
use crate::diffusion::{GaussianDiffusion, X0Clip, apply_clip};
use crate::objective::Objective;
use crate::error::{Error, Result};
use crate::karras::{Churn, SigmaRun, SigmaSolver, SigmaSpacing};
use crate::noise::NoiseSource;
use crate::tensor::time_tensor;

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
    /// diffusers' `linspace`: `round(linspace(0, T - 1, S))` (numpy's f64 `linspace`, round half to
    /// even), which ends at T-1 and starts at 0. Not the reference's [`TimestepSpacing::Linspace`].
    DiffusersLinspace,
}

impl fmt::Display for TimestepSpacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Linspace => "linspace",
            Self::Uniform => "uniform",
            Self::Quadratic => "quadratic",
            Self::Leading => "leading",
            Self::Trailing => "trailing",
            Self::DiffusersLinspace => "diffusers_linspace",
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
            "diffusers_linspace" => Self::DiffusersLinspace,
            other => return Err(Error::invalid("spacing", other, "use linspace, uniform, quadratic, leading, trailing or diffusers_linspace")),
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
        TimestepSpacing::DiffusersLinspace => numpy_linspace(0.0, (t_max - 1) as f64, s).into_iter().map(|v| round_half_even(v) as i64).collect(),
    };
    ts.retain(|&v| v >= 0 && (v as usize) < t_max);
    ts.sort_unstable_by(|a, b| b.cmp(a));
    ts.dedup();
    Ok(ts.into_iter().map(|v| v as usize).collect())
}

/// `numpy.linspace(start, end, n)` in f64: `start + i * ((end - start) / (n - 1))`, the last value
/// set to `end` exactly.
fn numpy_linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n <= 1 {
        return vec![start; n];
    }
    let step = (end - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
    v[n - 1] = end;
    v
}

fn round_half_even(v: f64) -> f64 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 && r % 2.0 != 0.0 { r - v.signum() } else { r }
}

/// One DDIM step: from timestep `t` to timestep `prev`, or past the end (`None`), where the
/// cumulative alpha stepped to is 1 (the x0 prediction is returned) or, under
/// [`DdimOptions::final_alpha_one`] `= false`, `abar_0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DdimStep {
    pub t: usize,
    pub prev: Option<usize>,
}

impl DdimStep {
    /// The reference's pairing of descending `timesteps`: each steps to the next one listed, the
    /// last past the end.
    pub fn chain(timesteps: &[usize]) -> Vec<DdimStep> {
        timesteps.iter().enumerate().map(|(i, &t)| DdimStep { t, prev: timesteps.get(i + 1).copied() }).collect()
    }
}

/// How a DDIM step reads the network and where it ends, beyond `eta`. The defaults are the
/// reference's (denoising-diffusion-pytorch) and keep every existing run unchanged;
/// [`DdimOptions::diffusers`] is diffusers' `DDIMScheduler.step` as `DDIMPipeline` calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdimOptions {
    /// With clipping, recompute eps from the clipped x0, `eps = (x_t / sqrt(abar) - x0) /
    /// sqrt(1/abar - 1)`, so the two agree (the reference; default `true`). `false` keeps the eps the
    /// network's output implies before clipping (diffusers' `use_clipped_model_output = False`:
    /// the output itself for eps-prediction, `(x_t - sqrt(abar) x0) / sqrt(1 - abar)` with the
    /// unclipped x0 for x0-prediction, `sqrt(abar) v + sqrt(1 - abar) x_t` for v-prediction).
    pub rederive_noise: bool,
    /// The cumulative alpha after the last timestep: 1 (default: the last step returns the x0
    /// prediction; diffusers' `set_alpha_to_one = True`) or `abar_0` (`false`; diffusers'
    /// `set_alpha_to_one = False`: the last step lands on `sqrt(abar_0) x0 + c eps + sigma z`).
    pub final_alpha_one: bool,
}

impl Default for DdimOptions {
    fn default() -> Self {
        Self { rederive_noise: true, final_alpha_one: true }
    }
}

impl DdimOptions {
    /// diffusers' `DDIMScheduler.step` with `use_clipped_model_output = False` and the given
    /// `set_alpha_to_one`.
    pub fn diffusers(set_alpha_to_one: bool) -> Self {
        Self { rederive_noise: false, final_alpha_one: set_alpha_to_one }
    }
}

/// One DDIM run: its `(t, prev)` steps, the noise scale `eta` (0 deterministic, 1 DDPM-like) and
/// how each step reads the network ([`DdimOptions`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DdimRun {
    pub steps: Vec<DdimStep>,
    pub eta: f64,
    pub options: DdimOptions,
}

impl DdimRun {
    /// The reference's DDIM over descending `timesteps` ([`DdimStep::chain`], default options).
    pub fn reference(timesteps: &[usize], eta: f64) -> Self {
        Self { steps: DdimStep::chain(timesteps), eta, options: DdimOptions::default() }
    }

    /// diffusers' DDIM over its own steps ([`diffusers_ddim_steps`], [`DdimOptions::diffusers`]).
    pub fn diffusers(steps: Vec<DdimStep>, eta: f64, set_alpha_to_one: bool) -> Self {
        Self { steps, eta, options: DdimOptions::diffusers(set_alpha_to_one) }
    }
}

/// The steps of diffusers' `DDIMScheduler` for `steps` inference steps out of `num_timesteps`:
/// the timesteps of `set_timesteps` (`leading`: `i * (T div S) + steps_offset`, `trailing`:
/// `round(arange(T, 0, -T/S)) - 1`, `diffusers_linspace`: `round(linspace(0, T - 1, S))`,
/// descending; `steps_offset` only shifts `leading`, as in diffusers), each paired by `step` with
/// `prev = t - T div S`, past the end when negative. With `diffusers_linspace` the previous
/// timestep is generally not the next one listed (T = 1000, S = 10: 999 steps to 899, then 888
/// to 788, ...), exactly as diffusers computes it.
pub fn diffusers_ddim_steps(spacing: TimestepSpacing, num_timesteps: usize, steps: usize, steps_offset: usize) -> Result<Vec<DdimStep>> {
    let (t_max, s) = (num_timesteps, steps);
    if s == 0 || s > t_max {
        return Err(Error::invalid("steps", s, format!("DDIM takes between 1 and T = {t_max} steps")));
    }
    let ratio = t_max / s;
    let ts: Vec<i64> = match spacing {
        TimestepSpacing::Leading => (0..s).rev().map(|i| (i * ratio + steps_offset) as i64).collect(),
        TimestepSpacing::Trailing => {
            // numpy.arange(T, 0, -T/S): ceil(-T / (-T/S)) values (one more than S when the quotient
            // rounds up, which diffusers keeps), filled as numpy does: `T`, `T + step`, then
            // `T + i * ((T + step) - T)`.
            let (start, step) = (t_max as f64, -(t_max as f64 / s as f64));
            let n = ((0.0 - start) / step).ceil() as usize;
            let delta = (start + step) - start;
            (0..n)
                .map(|i| match i {
                    0 => start,
                    1 => start + step,
                    _ => start + i as f64 * delta,
                })
                .map(|v| round_half_even(v) as i64 - 1)
                .collect()
        }
        TimestepSpacing::DiffusersLinspace => {
            numpy_linspace(0.0, (t_max - 1) as f64, s).into_iter().rev().map(|v| round_half_even(v) as i64).collect()
        }
        other => {
            return Err(Error::invalid(
                "spacing",
                other,
                "diffusers' DDIMScheduler spaces its timesteps as leading, trailing or linspace (here diffusers_linspace)",
            ));
        }
    };
    if let Some(&bad) = ts.iter().find(|&&t| t < 0 || t as usize >= t_max) {
        return Err(Error::invalid(
            "steps",
            s,
            format!(
                "diffusers' {spacing} spacing with T = {t_max}, steps_offset = {steps_offset} gives timestep {bad}, outside 0..{t_max} \
                 (diffusers would index its alphas_cumprod with it); pick another number of steps or steps_offset"
            ),
        ));
    }
    Ok(ts.iter().map(|&t| DdimStep { t: t as usize, prev: usize::try_from(t - ratio as i64).ok() }).collect())
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
    /// diffusers' DDIM (`DDIMScheduler` as `DDIMPipeline` runs it, [`DdimOptions::diffusers`]):
    /// the timesteps of `spacing` (`leading` shifted by `steps_offset`, `trailing`,
    /// `diffusers_linspace`), each stepping to `t - T div steps` ([`diffusers_ddim_steps`]), eps
    /// read from the unclipped output, the last step to `abar = 1` (`set_alpha_to_one`) or `abar_0`.
    /// Discrete Gaussian diffusion only.
    DiffusersDdim {
        steps: usize,
        #[serde(default)]
        eta: f64,
        #[serde(default = "leading")]
        spacing: TimestepSpacing,
        #[serde(default)]
        steps_offset: usize,
        #[serde(default = "yes")]
        set_alpha_to_one: bool,
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

fn yes() -> bool {
    true
}

fn leading() -> TimestepSpacing {
    TimestepSpacing::Leading
}

impl Sampler {
    /// Network calls per sample.
    pub fn network_calls(&self, num_timesteps: usize) -> usize {
        match *self {
            Sampler::Ddpm => num_timesteps,
            Sampler::Ddim { steps, .. } | Sampler::DiffusersDdim { steps, .. } => steps.min(num_timesteps),
            // Heun's last step, to 0, takes one call.
            Sampler::Sigma { solver, steps, .. } => solver.row().calls_per_step * steps - (solver.row().calls_per_step - 1),
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

/// Runs `sampler` from the standard normal draw `z` (x_T; usually the first draw of `noise`).
/// Returns samples in the model's data range ([-1, 1] for images; see [`unnormalize_to_zero_one`]).
pub fn sample<const D: usize, M, N, F>(
    diffusion: &GaussianDiffusion,
    model: &M,
    z: Tensor<D>,
    sampler: &Sampler,
    opts: &SampleOptions<D>,
    noise: &mut N,
    mut callback: F,
) -> Result<Tensor<D>>
where
    M: Denoiser<D>,
    N: NoiseSource,
    F: FnMut(&StepInfo<'_, D>),
{
    run_sampler(diffusion, &DynDenoiser(model), z, sampler, opts, noise, &mut callback)
}

/// [`sample`]'s body, behind [`DynDenoiser`] (compiled once per rank and noise source).
fn run_sampler<const D: usize, N: NoiseSource>(
    diffusion: &GaussianDiffusion,
    model: &DynDenoiser<'_, D>,
    z: Tensor<D>,
    sampler: &Sampler,
    opts: &SampleOptions<D>,
    noise: &mut N,
    callback: &mut dyn FnMut(&StepInfo<'_, D>),
) -> Result<Tensor<D>> {
    match *sampler {
        Sampler::Ddpm => ddpm_sample(diffusion, model, z, opts, noise, callback),
        Sampler::Ddim { steps, eta, spacing } => {
            let ts = ddim_timesteps(spacing, diffusion.num_timesteps(), steps)?;
            ddim_sample(diffusion, model, z, &DdimRun::reference(&ts, eta), opts, noise, callback)
        }
        Sampler::DiffusersDdim { steps, eta, spacing, steps_offset, set_alpha_to_one } => {
            let steps = diffusers_ddim_steps(spacing, diffusion.num_timesteps(), steps, steps_offset)?;
            ddim_sample(diffusion, model, z, &DdimRun::diffusers(steps, eta, set_alpha_to_one), opts, noise, callback)
        }
        Sampler::Sigma { solver, steps, spacing, eta, churn, sigma_max } => {
            let sigmas = crate::karras::sigma_grid(diffusion, steps, spacing, sigma_max)?;
            // x_T ~ N(0, 1) of the variance-preserving model is x / sqrt(1 + sigma^2) in sigma space.
            let x = z.mul_scalar((1.0 + sigmas[0] * sigmas[0]).sqrt());
            sigma_steps(diffusion, model, x, SigmaRun { sigmas: &sigmas, solver, eta, churn }, opts, noise, callback)
        }
    }
}

/// A sigma-space solver on a discrete model, from `x` (at noise level `sigmas[0]`) down the grid,
/// each step reported at its nearest timestep.
fn sigma_steps<const D: usize, M, N, F>(
    diffusion: &GaussianDiffusion,
    model: &M,
    x: Tensor<D>,
    run: SigmaRun<'_>,
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
    let sigmas = run.sigmas;
    let total = sigmas.len() - 1;
    crate::karras::sample_sigmas(&mut denoiser, x, run, noise, |i, x_in, x0, x_out| {
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
    x_t: Tensor<D>,
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
    ddpm_steps(diffusion, &DynDenoiser(model), x_t, start, opts, noise, &mut callback)
}

/// [`ddpm_sample_from`]'s body, behind [`DynDenoiser`].
fn ddpm_steps<const D: usize, N: NoiseSource>(
    diffusion: &GaussianDiffusion,
    model: &DynDenoiser<'_, D>,
    mut x_t: Tensor<D>,
    start: usize,
    opts: &SampleOptions<D>,
    noise: &mut N,
    callback: &mut dyn FnMut(&StepInfo<'_, D>),
) -> Result<Tensor<D>> {
    let b = x_t.dims()[0];
    let total = start + 1;
    let mut calls = diffusion.model_calls(model, &opts.cond);
    for (index, step) in (0..total).rev().enumerate() {
        let t = vec![step; b];
        let out = calls.call_without_cfg_pp(x_t.clone(), time_tensor(&t, &x_t), "ancestral DDPM sampling")?;
        let rev = diffusion.reverse_step(out, x_t.clone(), &t, opts.clip)?;
        let next = ancestral_draw(&rev, step, noise)?;
        callback(&StepInfo { index, total, t: step, t_next: step.checked_sub(1), x_t: &x_t, pred_x0: &rev.pred_x0, x_next: &next });
        calls.remember(&rev.pred_x0);
        x_t = next;
    }
    Ok(x_t)
}

/// DDIM over `run.steps`: with `a = abar_t`, `a' = abar_prev`,
/// `sigma = eta sqrt((1 - a/a')(1 - a')/(1 - a))`, `c = sqrt(1 - a' - sigma^2)`,
/// `x_prev = sqrt(a') x0 + c eps + sigma z`, where eps is re-derived from the clipped x0 (or read
/// before clipping, [`DdimOptions::rederive_noise`]). The reference's DDIM is
/// [`DdimRun::reference`], diffusers' [`DdimRun::diffusers`] with [`diffusers_ddim_steps`]. The
/// timesteps must descend strictly and each `prev` lie below its `t`; a step past the end lands on
/// `abar = 1` (returning the x0 prediction) or on `abar_0`. Noise is drawn only when `sigma > 0`.
pub fn ddim_sample<const D: usize, M, N, F>(
    diffusion: &GaussianDiffusion,
    model: &M,
    x_t: Tensor<D>,
    run: &DdimRun,
    opts: &SampleOptions<D>,
    noise: &mut N,
    mut callback: F,
) -> Result<Tensor<D>>
where
    M: Denoiser<D>,
    N: NoiseSource,
    F: FnMut(&StepInfo<'_, D>),
{
    ddim_steps(diffusion, &DynDenoiser(model), x_t, run, opts, noise, &mut callback)
}

/// [`ddim_sample`]'s body, behind [`DynDenoiser`].
fn ddim_steps<const D: usize, N: NoiseSource>(
    diffusion: &GaussianDiffusion,
    model: &DynDenoiser<'_, D>,
    mut x_t: Tensor<D>,
    run: &DdimRun,
    opts: &SampleOptions<D>,
    noise: &mut N,
    callback: &mut dyn FnMut(&StepInfo<'_, D>),
) -> Result<Tensor<D>> {
    let DdimRun { steps, eta, options: ddim } = run;
    let eta = *eta;
    check_eta(eta)?;
    let t_max = diffusion.num_timesteps();
    if steps.windows(2).any(|w| w[0].t <= w[1].t) || steps.iter().any(|s| s.t >= t_max || s.prev.is_some_and(|p| p >= s.t)) {
        let shown: Vec<String> = steps.iter().map(|s| format!("{} -> {}", s.t, s.prev.map_or("end".to_string(), |p| p.to_string()))).collect();
        return Err(Error::invalid(
            "timesteps",
            format!("[{}]", shown.join(", ")),
            format!("DDIM timesteps must be strictly descending and below T = {t_max}, each stepping to a smaller timestep"),
        ));
    }
    let b = x_t.dims()[0];
    let ac = &diffusion.schedule.alphas_cumprod;
    let total = steps.len();
    let mut calls = diffusion.model_calls(model, &opts.cond);
    for (index, &DdimStep { t: step, prev: t_next }) in steps.iter().enumerate() {
        let t = vec![step; b];
        let (out, unconditional) = calls.call(x_t.clone(), time_tensor(&t, &x_t));
        // CFG++ re-noises with the unconditional output's noise estimate.
        let (pred_x0, renoise) = if ddim.rederive_noise {
            let pred = diffusion.predictions(out, x_t.clone(), &t, opts.clip, true)?;
            let renoise = match unconditional {
                Some(u) => diffusion.predictions(u, x_t.clone(), &t, opts.clip, true)?.pred_noise,
                None => pred.pred_noise,
            };
            (pred.pred_x0, renoise)
        } else {
            let (x0, eps) = unclipped_noise(diffusion, out, &x_t, &t, opts.clip)?;
            let renoise = match unconditional {
                Some(u) => unclipped_noise(diffusion, u, &x_t, &t, opts.clip)?.1,
                None => eps,
            };
            (x0, renoise)
        };
        let a_next = match t_next {
            Some(tn) => Some(ac[tn]),
            None if ddim.final_alpha_one => None,
            None => Some(ac[0]),
        };
        let next = match a_next {
            None => pred_x0.clone(),
            Some(a_next) => ddim_update(pred_x0.clone(), renoise, ac[step], a_next, eta, noise)?,
        };
        callback(&StepInfo { index, total, t: step, t_next, x_t: &x_t, pred_x0: &pred_x0, x_next: &next });
        calls.remember(&pred_x0);
        x_t = next;
    }
    Ok(x_t)
}

pub(crate) fn check_eta(eta: f64) -> Result<()> {
    if !(eta >= 0.0) {
        return Err(Error::invalid("eta", eta, "DDIM's eta must be >= 0 (0 deterministic, 1 DDPM-like)"));
    }
    Ok(())
}

/// One DDIM update from cumulative alpha `a` to `a_next`: `sqrt(a_next) x0 + c eps + sigma z` with
/// `sigma = eta sqrt((1 - a/a_next)(1 - a_next)/(1 - a))` and `c = sqrt(1 - a_next - sigma^2)`;
/// `z` is drawn only when `sigma > 0`.
pub(crate) fn ddim_update<const D: usize, N: NoiseSource>(x0: Tensor<D>, eps: Tensor<D>, a: f64, a_next: f64, eta: f64, noise: &mut N) -> Result<Tensor<D>> {
    let sigma = eta * ((1.0 - a / a_next) * (1.0 - a_next) / (1.0 - a)).max(0.0).sqrt();
    let next = x0.mul_scalar(a_next.sqrt()) + eps.mul_scalar((1.0 - a_next - sigma * sigma).max(0.0).sqrt());
    Ok(if sigma > 0.0 { next.clone() + noise.normal_like(&next)?.mul_scalar(sigma) } else { next })
}

/// The clipped x0 and the eps the output implies before clipping (diffusers' DDIM, see
/// [`DdimOptions::rederive_noise`]). v-prediction takes `eps = sqrt(abar) v + sqrt(1 - abar) x_t`
/// directly, which stays finite at `abar = 0` (zero terminal SNR).
fn unclipped_noise<const D: usize>(
    diffusion: &GaussianDiffusion,
    output: Tensor<D>,
    x_t: &Tensor<D>,
    t: &[usize],
    clip: X0Clip,
) -> Result<(Tensor<D>, Tensor<D>)> {
    let eps_from_v = if diffusion.objective() == Objective::PredV {
        let (v, _) = diffusion.split_output(output.clone())?;
        Some(diffusion.predict_noise_from_v(x_t.clone(), t, v))
    } else {
        None
    };
    let raw = diffusion.predictions(output, x_t.clone(), t, X0Clip::None, false)?;
    Ok((apply_clip(raw.pred_x0, clip)?, eps_from_v.unwrap_or(raw.pred_noise)))
}

/// Partial denoising (SDEdit, Meng et al. 2022): noise `x0` to the level of timestep
/// `t0 = round(strength (T - 1))` and run `sampler` from there. Small strengths keep the input's
/// layout, 1 starts from (almost) pure noise. DDIM steps from `t0` to its timesteps below `t0`;
/// the sigma-space solvers from `sigma(t0)` to their noise levels below it. The noise that lifts
/// `x0` is the first draw from `noise`.
pub fn sdedit<const D: usize, M, N>(
    diffusion: &GaussianDiffusion,
    model: &M,
    x0: Tensor<D>,
    strength: f64,
    sampler: &Sampler,
    opts: &SampleOptions<D>,
    noise: &mut N,
) -> Result<Tensor<D>>
where
    M: Denoiser<D>,
    N: NoiseSource,
{
    sdedit_from(diffusion, &DynDenoiser(model), x0, strength, sampler, opts, noise)
}

/// [`sdedit`]'s body, behind [`DynDenoiser`].
fn sdedit_from<const D: usize, N: NoiseSource>(
    diffusion: &GaussianDiffusion,
    model: &DynDenoiser<'_, D>,
    x0: Tensor<D>,
    strength: f64,
    sampler: &Sampler,
    opts: &SampleOptions<D>,
    noise: &mut N,
) -> Result<Tensor<D>> {
    check_strength(strength)?;
    let b = x0.dims()[0];
    let t0 = (strength * (diffusion.num_timesteps() - 1) as f64).round() as usize;
    let eps = noise.normal_like(&x0)?;
    match *sampler {
        Sampler::Ddpm => {
            let x_t = diffusion.q_sample(x0, &vec![t0; b], eps)?;
            ddpm_sample_from(diffusion, model, x_t, t0, opts, noise, no_callback)
        }
        Sampler::Ddim { steps, eta, spacing } => {
            let ts: Vec<usize> = std::iter::once(t0).chain(ddim_timesteps(spacing, diffusion.num_timesteps(), steps)?.into_iter().filter(|&t| t < t0)).collect();
            let x_t = diffusion.q_sample(x0, &vec![t0; b], eps)?;
            ddim_sample(diffusion, model, x_t, &DdimRun::reference(&ts, eta), opts, noise, no_callback)
        }
        Sampler::DiffusersDdim { steps, eta, spacing, steps_offset, set_alpha_to_one } => {
            // From t0 to the first of diffusers' timesteps below it, then diffusers' own steps.
            let below: Vec<DdimStep> = diffusers_ddim_steps(spacing, diffusion.num_timesteps(), steps, steps_offset)?.into_iter().filter(|s| s.t < t0).collect();
            let first = DdimStep { t: t0, prev: below.first().map(|s| s.t) };
            let all: Vec<DdimStep> = std::iter::once(first).chain(below).collect();
            let x_t = diffusion.q_sample(x0, &vec![t0; b], eps)?;
            ddim_sample(diffusion, model, x_t, &DdimRun::diffusers(all, eta, set_alpha_to_one), opts, noise, no_callback)
        }
        Sampler::Sigma { solver, steps, spacing, eta, churn, sigma_max } => {
            let sigma0 = crate::karras::model_sigmas(diffusion)[t0];
            let sigmas = crate::karras::grid_from(sigma0, crate::karras::sigma_grid(diffusion, steps, spacing, sigma_max)?);
            let x = x0 + eps.mul_scalar(sigmas[0]);
            sigma_steps(diffusion, model, x, SigmaRun { sigmas: &sigmas, solver, eta, churn }, opts, noise, no_callback)
        }
    }
}

/// SDEdit's strength: in (0, 1].
pub(crate) fn check_strength(strength: f64) -> Result<()> {
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(Error::invalid("strength", strength, "give a noise strength in (0, 1]: 0.3 keeps much of the input, 1 keeps little"));
    }
    Ok(())
}

/// The ancestral step's draw from `p(x_{t-1} | x_t)`: `mean + exp(0.5 ln sigma_t^2) z`, the mean
/// alone at t = 0.
pub(crate) fn ancestral_draw<const D: usize, N: NoiseSource>(rev: &crate::diffusion::ReverseStep<D>, step: usize, noise: &mut N) -> Result<Tensor<D>> {
    Ok(if step > 0 { rev.mean.clone() + (rev.log_variance.clone() * 0.5).exp() * noise.normal_like(&rev.mean)? } else { rev.mean.clone() })
}

/// `[0, 1] -> [-1, 1]`: `2x - 1`.
pub fn normalize_to_neg_one_one<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x * 2.0 - 1.0
}

/// `[-1, 1] -> [0, 1]`: `(x + 1) / 2`.
pub fn unnormalize_to_zero_one<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    (x + 1.0) * 0.5
}
