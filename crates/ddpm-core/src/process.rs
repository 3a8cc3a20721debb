//! The diffusion a model is trained and sampled with, behind one interface: discrete-time
//! Gaussian diffusion (DDPM and its variants, with every objective and loss of
//! [`GaussianDiffusion`]) or EDM ([`Edm`]). A training loop or a sampling tool holds a [`Process`]
//! and never asks which one it is; the samplers are the same functions for both, fed with the
//! process's denoiser ([`crate::karras::VpDenoiser`] or [`EdmDenoiser`]).

use burn::tensor::{Tensor, TensorCreationOptions};
use rand::Rng;

use crate::continuous::{ContinuousDenoiser, ContinuousDiffusion, ContinuousDiffusionConfig, uniform_times};
use crate::denoiser::{Conditioning, Denoiser, DynDenoiser};
use crate::diffusion::{GaussianDiffusion, GaussianDiffusionConfig, X0Clip};
use crate::edm::{Edm, EdmConfig, EdmDenoiser};
use crate::error::{Error, Result};
use crate::loss::LossOutput;
use crate::karras::{SigmaRun, SigmaSolver, grid_from, sample_sigmas, spaced_sigmas};
use crate::noise::NoiseSource;
use crate::sampler::{SampleOptions, Sampler, check_strength};

/// A diffusion process with what training and sampling need from it.
// One per run: the Gaussian variant's tables need no boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Process {
    /// Discrete-time Gaussian diffusion (Ho et al. 2020 and its variants).
    Gaussian(GaussianDiffusion),
    /// EDM (Karras et al. 2022): preconditioned denoiser, log-normal noise levels, sigma-space
    /// solvers only. With `self_condition`, half the training batches and every sampling step
    /// after the first feed the previous estimate back.
    Edm { edm: Edm, self_condition: bool },
    /// Continuous-time Gaussian diffusion on a log-SNR schedule (Kingma et al. 2021).
    Continuous(ContinuousDiffusion),
}

/// What a [`Process`] is built from: which kind, and its config (defaults the reference's). A
/// training tool reads one from its file and calls [`ProcessConfig::init`]; self-conditioning
/// follows the network, as in the reference (the continuous-time process has none).
#[derive(Debug, Clone)]
pub enum ProcessConfig {
    Gaussian(GaussianDiffusionConfig),
    Edm { edm: EdmConfig, self_condition: bool },
    Continuous(ContinuousDiffusionConfig),
}

impl ProcessConfig {
    /// The process, its tables computed and its settings checked.
    pub fn init(&self) -> Result<Process> {
        Ok(match self {
            Self::Gaussian(c) => Process::Gaussian(c.init()?),
            Self::Edm { edm, self_condition } => Process::Edm { edm: edm.init()?, self_condition: *self_condition },
            Self::Continuous(c) => Process::Continuous(c.init()?),
        })
    }
}

impl From<GaussianDiffusion> for Process {
    fn from(d: GaussianDiffusion) -> Self {
        Self::Gaussian(d)
    }
}

impl Process {
    /// The Gaussian diffusion, or an error naming `what` needs it (the variational bound, RePaint
    /// and the DDPM/DDIM samplers are defined on discrete timesteps).
    pub fn gaussian(&self, what: &str) -> Result<&GaussianDiffusion> {
        match self {
            Self::Gaussian(d) => Ok(d),
            Self::Edm { .. } | Self::Continuous(_) => Err(Error::invalid(
                "diffusion.kind",
                self.kind(),
                format!("{what} needs a discrete-time Gaussian diffusion (kind = \"gaussian\"); this model has no discrete timesteps"),
            )),
        }
    }

    /// `gaussian`, `edm` or `continuous`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Gaussian(_) => "gaussian",
            Self::Edm { .. } => "edm",
            Self::Continuous(_) => "continuous",
        }
    }

    /// The batch-mean training loss (the graph to call `backward` on), with the process's own
    /// draws: timesteps or noise levels and the self-conditioning coin from `rng`, noise from
    /// `noise`.
    pub fn training_loss<const D: usize, M, R, N>(&self, model: &M, x0: Tensor<D>, cond: &Conditioning<D>, rng: &mut R, noise: &mut N) -> Result<LossOutput>
    where
        M: Denoiser<D>,
        R: Rng + ?Sized,
        N: NoiseSource,
    {
        match self {
            Self::Gaussian(d) => d.training_loss(model, x0, cond, rng, noise),
            Self::Edm { edm, self_condition } => edm.training_loss(model, x0, cond, *self_condition, rng, noise),
            Self::Continuous(d) => d.training_loss(model, x0, cond, rng, noise),
        }
    }

    /// A time input in the middle of the model's range (for timing a forward pass): T/2 for a
    /// discrete model, `c_noise(sigma_data)` for EDM.
    pub fn typical_time(&self) -> f64 {
        match self {
            Self::Gaussian(d) => (d.num_timesteps() / 2) as f64,
            Self::Edm { edm, .. } => edm.c_noise(edm.config.sigma_data),
            Self::Continuous(d) => d.log_snr(0.5),
        }
    }

    /// Network calls per sample of `sampler`.
    pub fn network_calls(&self, sampler: &Sampler) -> usize {
        match self {
            Self::Gaussian(d) => sampler.network_calls(d.num_timesteps()),
            Self::Edm { .. } => sampler.network_calls(usize::MAX),
            Self::Continuous(d) => match sampler {
                Sampler::Ddpm => d.config.num_sample_steps,
                other => other.network_calls(usize::MAX),
            },
        }
    }

    /// Draws a batch of `shape` from noise (the first draw of `noise`) with `sampler`; see
    /// [`crate::sampler::sample`]. EDM takes the sigma-space solvers on its own grid
    /// (`sigma_min` to the smaller of its `sigma_max` and the sampler's), from `x = sigma_max z`.
    pub fn sample<const D: usize, M: Denoiser<D>, N: NoiseSource>(
        &self,
        model: &M,
        shape: [usize; D],
        options: TensorCreationOptions,
        sampler: &Sampler,
        opts: &SampleOptions<D>,
        noise: &mut N,
    ) -> Result<Tensor<D>> {
        let z = noise.normal(shape, options)?;
        self.sample_observed(model, z, sampler, opts, noise, None)
    }

    /// [`Process::sample`] from the standard normal draw `z`, showing `observe(step, steps, x0)`
    /// the x0 estimate of every step (a sampling trajectory). Every sampler of the discrete and
    /// EDM processes has it; a continuous-time model has it with the sigma-space solvers (its
    /// ancestral and DDIM steps are refused with an observer).
    pub fn sample_observed<const D: usize, M: Denoiser<D>, N: NoiseSource>(
        &self,
        model: &M,
        z: Tensor<D>,
        sampler: &Sampler,
        opts: &SampleOptions<D>,
        noise: &mut N,
        observe: Observer<'_, D>,
    ) -> Result<Tensor<D>> {
        self.observed_run(&DynDenoiser(model), z, sampler, opts, noise, observe)
    }

    /// [`Process::sample_observed`]'s body, behind [`DynDenoiser`] (compiled once per rank and
    /// noise source).
    fn observed_run<const D: usize, N: NoiseSource>(
        &self,
        model: &DynDenoiser<'_, D>,
        z: Tensor<D>,
        sampler: &Sampler,
        opts: &SampleOptions<D>,
        noise: &mut N,
        mut observe: Observer<'_, D>,
    ) -> Result<Tensor<D>> {
        match self {
            Self::Gaussian(d) => crate::sampler::sample(d, model, z, sampler, opts, noise, |s: &crate::sampler::StepInfo<'_, D>| {
                if let Some(f) = observe.as_mut() {
                    f(s.index, s.total, s.pred_x0)
                }
            }),
            Self::Edm { edm, self_condition } => {
                let (run, sigmas) = edm_grid(edm, sampler, None)?;
                let x = z.mul_scalar(sigmas[0]);
                let denoiser = edm_denoiser(edm, *self_condition, model, opts)?;
                edm_solve(denoiser, x, SigmaRun { sigmas: &sigmas, ..run }, noise, observe)
            }
            Self::Continuous(d) => {
                if observe.is_some() && !matches!(sampler, Sampler::Sigma { .. }) {
                    return Err(Error::invalid(
                        "sampler",
                        format!("{sampler:?}"),
                        "a continuous-time model shows its x0 trajectory with the sigma-space solvers: euler, heun, dpmpp_2m, ...",
                    ));
                }
                continuous_from(d, model, AtTime { x: z, time: 1.0 }, sampler, opts, noise, observe)
            }
        }
    }

    /// Partial denoising from `x0` (SDEdit; see [`crate::sampler::sdedit`]). For EDM, `strength`
    /// is the position on the Karras ramp of its grid: the start level is
    /// `(sigma_min^(1/rho) + strength (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho`, so 1 starts
    /// from `sigma_max`.
    pub fn sdedit<const D: usize, M: Denoiser<D>, N: NoiseSource>(
        &self,
        model: &M,
        x0: Tensor<D>,
        strength: f64,
        sampler: &Sampler,
        opts: &SampleOptions<D>,
        noise: &mut N,
    ) -> Result<Tensor<D>> {
        self.sdedit_run(&DynDenoiser(model), x0, strength, sampler, opts, noise)
    }

    /// [`Process::sdedit`]'s body, behind [`DynDenoiser`].
    fn sdedit_run<const D: usize, N: NoiseSource>(
        &self,
        model: &DynDenoiser<'_, D>,
        x0: Tensor<D>,
        strength: f64,
        sampler: &Sampler,
        opts: &SampleOptions<D>,
        noise: &mut N,
    ) -> Result<Tensor<D>> {
        match self {
            Self::Gaussian(d) => crate::sampler::sdedit(d, model, x0, strength, sampler, opts, noise),
            Self::Edm { edm, self_condition } => {
                check_strength(strength)?;
                let c = &edm.config;
                let (lo, hi) = (c.sigma_min.powf(1.0 / c.rho), c.sigma_max.powf(1.0 / c.rho));
                let sigma0 = (lo + strength * (hi - lo)).powf(c.rho);
                let (run, grid) = edm_grid(edm, sampler, Some(sigma0))?;
                let sigmas = grid_from(sigma0, grid);
                let x = x0.clone() + noise.normal_like(&x0)?.mul_scalar(sigma0);
                let denoiser = edm_denoiser(edm, *self_condition, model, opts)?;
                edm_solve(denoiser, x, SigmaRun { sigmas: &sigmas, ..run }, noise, None)
            }
            Self::Continuous(d) => {
                check_strength(strength)?;
                let (x_t, _) = d.q_sample_with(model, x0.clone(), &vec![strength; x0.dims()[0]], noise.normal_like(&x0)?)?;
                continuous_from(d, model, AtTime { x: x_t, time: strength }, sampler, opts, noise, None)
            }
        }
    }
}

/// A sample `x` (in the variance-preserving form) at diffusion time `time`.
struct AtTime<const D: usize> {
    x: Tensor<D>,
    time: f64,
}

/// A continuous-time model from `x` at time `start` down to 0: the ancestral sampler on
/// `num_sample_steps * start` uniform steps, DDIM on `steps * start`, or a sigma-space solver on
/// its grid below `sigma(start)` (capped by the sampler's `sigma_max`).
fn continuous_from<const D: usize, M: Denoiser<D>, N: NoiseSource>(
    d: &ContinuousDiffusion,
    model: &M,
    from: AtTime<D>,
    sampler: &Sampler,
    opts: &SampleOptions<D>,
    noise: &mut N,
    observe: Observer<'_, D>,
) -> Result<Tensor<D>> {
    let AtTime { x, time: start } = from;
    let scaled = |steps: usize| ((steps as f64 * start).round() as usize).max(1);
    match *sampler {
        Sampler::Ddpm => d.ancestral(model, x, &uniform_times(start, scaled(d.config.num_sample_steps)), opts, noise),
        Sampler::Ddim { steps, eta, spacing } => {
            if !matches!(spacing, crate::sampler::TimestepSpacing::Linspace | crate::sampler::TimestepSpacing::Uniform) {
                return Err(Error::invalid("spacing", format!("{spacing:?}"), "continuous-time DDIM steps evenly in time: use linspace or uniform"));
            }
            d.ddim(model, x, &uniform_times(start, scaled(steps)), eta, opts, noise)
        }
        Sampler::DiffusersDdim { .. } => Err(Error::invalid("sampler", "diffusers_ddim", "diffusers' DDIM steps over discrete timesteps; continuous-time models take ddim")),
        Sampler::Sigma { solver, steps, spacing, eta, churn, sigma_max } => {
            // From noise the grid starts at the cap, as the discrete samplers do; a partial start
            // (SDEdit) begins at its own level.
            let ends = d.host_log_snrs(model, &[start, 0.0], &x)?;
            let (hi, lo) = ((-0.5 * ends[0]).exp(), (-0.5 * ends[1]).exp());
            let top = if start < 1.0 { hi } else { sigma_max.map_or(hi, |cap| cap.min(hi)) };
            if top <= lo {
                return Err(Error::invalid("sigma_max", top, format!("the grid must start above the model's smallest sigma {lo}")));
            }
            let mut sigmas = spaced_sigmas(top, lo, steps, spacing)?;
            sigmas.push(0.0);
            // x_t = alpha (x0 + sigma eps) with alpha = 1 / sqrt(1 + sigma^2).
            let x = x.mul_scalar((1.0 + sigmas[0] * sigmas[0]).sqrt());
            let mut denoiser = ContinuousDenoiser::new(d, model, opts.clip, opts.cond.clone());
            sample_sigmas(&mut denoiser, x, SigmaRun { sigmas: &sigmas, solver, eta, churn }, noise, observer(observe, sigmas.len() - 1))
        }
    }
}

/// Who watches a sampling run: `observe(step, steps, x0)` sees the x0 estimate of every step.
pub type Observer<'a, const D: usize> = Option<&'a mut dyn FnMut(usize, usize, &Tensor<D>)>;

/// `sample_sigmas`' per-step hook from an optional x0 observer of a run of `steps` steps.
fn observer<'a, const D: usize>(mut observe: Observer<'a, D>, steps: usize) -> impl FnMut(usize, &Tensor<D>, &Tensor<D>, &Tensor<D>) + 'a {
    move |i, _, x0, _| {
        if let Some(f) = observe.as_mut() {
            f(i, steps, x0)
        }
    }
}

/// The solver settings (with an empty grid) and the noise levels (ending at 0) of a sigma-space
/// sampler on EDM's range.
fn edm_grid(edm: &Edm, sampler: &Sampler, cap: Option<f64>) -> Result<(SigmaRun<'static>, Vec<f64>)> {
    let Sampler::Sigma { solver, steps, spacing, eta, churn, sigma_max } = *sampler else {
        return Err(Error::invalid(
            "sampler",
            format!("{sampler:?}"),
            format!("an EDM model samples with the sigma-space solvers: {} (heun is EDM's)", SigmaSolver::names()),
        ));
    };
    if steps == 0 {
        return Err(Error::invalid("steps", 0, "a sampler needs at least one step"));
    }
    let c = &edm.config;
    let hi = [Some(c.sigma_max), sigma_max, cap].into_iter().flatten().fold(f64::INFINITY, f64::min);
    let mut sigmas = spaced_sigmas(hi, c.sigma_min, steps, spacing)?;
    sigmas.push(0.0);
    Ok((SigmaRun { sigmas: &[], solver, eta, churn }, sigmas))
}

/// EDM's denoiser for sampling: estimates clamped to [-1, 1] under static clipping, as is the result.
fn edm_denoiser<'a, const D: usize, M: Denoiser<D>>(edm: &'a Edm, self_condition: bool, model: &'a M, opts: &SampleOptions<D>) -> Result<EdmDenoiser<'a, D, M>> {
    let clamp = match opts.clip {
        X0Clip::None => false,
        X0Clip::Static => true,
        X0Clip::Dynamic { .. } => {
            return Err(Error::invalid("clip", "dynamic", "EDM sampling clamps its estimates to [-1, 1] (static) or not at all (none)"));
        }
    };
    Ok(EdmDenoiser::new(edm, model, opts.cond.clone(), clamp, self_condition))
}

fn edm_solve<const D: usize, M: Denoiser<D>, N: NoiseSource>(mut denoiser: EdmDenoiser<'_, D, M>, x: Tensor<D>, run: SigmaRun<'_>, noise: &mut N, observe: Observer<'_, D>) -> Result<Tensor<D>> {
    let x = sample_sigmas(&mut denoiser, x, run, noise, observer(observe, run.sigmas.len() - 1))?;
    Ok(if denoiser.scalings.clamp { x.clamp(-1.0, 1.0) } else { x })
}
