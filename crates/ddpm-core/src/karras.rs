//! Samplers in noise-level (sigma) space, after Karras et al. 2022 (EDM) and k-diffusion: a
//! sampler is one function over a denoiser `D(x; sigma) ~ E[x0 | x0 + sigma n = x]` and a
//! decreasing grid of sigmas ending at 0, with the noise it injects drawn from a [`NoiseSource`].
//!
//! Every process becomes such a denoiser through one adapter, [`Preconditioned`], over its
//! [`Preconditioning`]. A discrete-time model does through [`VpDenoiser`]: with
//! `abar = 1 / (1 + sigma^2)` the variance-preserving `x_t = sqrt(abar) x0 + sqrt(1 - abar) eps`
//! is `x / sqrt(1 + sigma^2)` for `x = x0 + sigma eps`, the network is called at the continuous
//! timestep whose log-sigma interpolates the schedule's, and its output (eps, x0 or v) is read as
//! x0. So a model trained with eps, x0 or v prediction samples with Euler, Heun or DPM-Solver++
//! without retraining.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::denoiser::{Conditioning, Denoiser, ModelCalls};
use crate::diffusion::{GaussianDiffusion, X0Clip, apply_clip};
use crate::error::{Error, Result};
use crate::noise::NoiseSource;
use crate::objective::Objective;
use crate::tensor::from_f64;

/// A denoiser in EDM form: `x0 ~ D(x; sigma)` for a batch `x` at one noise level.
pub trait SigmaDenoiser<const D: usize> {
    fn denoise_at(&mut self, x: Tensor<D>, sigma: f64) -> Result<Tensor<D>>;

    /// For CFG++: the unconditional x0 estimate of the last call, whose noise the solver carries
    /// to the next level (see [`crate::guidance`]). `None` (the default): the returned estimate.
    fn renoise_x0(&mut self) -> Option<Tensor<D>> {
        None
    }
}

impl<const D: usize, F> SigmaDenoiser<D> for F
where
    F: FnMut(Tensor<D>, f64) -> Result<Tensor<D>>,
{
    fn denoise_at(&mut self, x: Tensor<D>, sigma: f64) -> Result<Tensor<D>> {
        self(x, sigma)
    }
}

/// How the sigmas between `sigma_max` and `sigma_min` are spaced (a final 0 is appended).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SigmaSpacing {
    /// Karras et al.: `(sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`.
    Karras {
        #[serde(default = "default_rho")]
        rho: f64,
    },
    /// Evenly spaced in log sigma.
    Exponential,
    /// The model's own sigmas at timesteps evenly spaced from T-1 to 0 (k-diffusion's default).
    #[default]
    Discrete,
}

fn default_rho() -> f64 {
    7.0
}

impl SigmaSpacing {
    /// Karras spacing with rho = 7.
    pub fn karras() -> Self {
        Self::Karras { rho: 7.0 }
    }
}

/// The discrete model's noise levels `sigma_t = sqrt((1 - abar_t) / abar_t)`, increasing in t.
pub fn model_sigmas(diffusion: &GaussianDiffusion) -> Vec<f64> {
    diffusion.schedule.alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect()
}

/// `steps` sigmas from the model's largest (or `sigma_max`, when smaller) to its smallest, spaced as
/// asked, then 0. Schedules that end near pure noise (cosine's last sigma is about 2e4, a
/// zero-terminal-SNR schedule's is infinite) spend most of an uncapped Karras grid where nothing
/// changes; EDM's 80 is a good cap.
pub fn sigma_grid(diffusion: &GaussianDiffusion, steps: usize, spacing: SigmaSpacing, sigma_max: Option<f64>) -> Result<Vec<f64>> {
    if steps == 0 {
        return Err(Error::invalid("steps", 0, "a sampler needs at least one step"));
    }
    let sigmas = model_sigmas(diffusion);
    let lo = sigmas[0];
    let hi = sigma_max.map_or(sigmas[sigmas.len() - 1], |cap| cap.min(sigmas[sigmas.len() - 1]));
    if !hi.is_finite() {
        return Err(Error::invalid(
            "zero_terminal_snr",
            true,
            "the last timestep is pure noise (sigma = infinity), which sigma-space samplers cannot start from; cap the grid with sigma_max (e.g. 80) or use ddpm or ddim",
        ));
    }
    if hi <= lo {
        return Err(Error::invalid("sigma_max", hi, format!("the grid must start above the model's smallest sigma {lo}")));
    }
    let mut grid = match spacing {
        SigmaSpacing::Discrete => {
            let last = sigma_to_t(&sigmas, hi);
            (0..steps).map(|i| sigma_at(&sigmas, last * (1.0 - ramp(i, steps)))).collect()
        }
        other => spaced_sigmas(hi, lo, steps, other)?,
    };
    grid.push(0.0);
    Ok(grid)
}

fn ramp(i: usize, steps: usize) -> f64 {
    if steps == 1 { 0.0 } else { i as f64 / (steps - 1) as f64 }
}

/// `steps` noise levels from `hi` down to `lo` (no final 0) with a spacing that needs no model
/// table: Karras or exponential. `Discrete` is refused: it needs a discrete model's sigmas.
pub fn spaced_sigmas(hi: f64, lo: f64, steps: usize, spacing: SigmaSpacing) -> Result<Vec<f64>> {
    Ok(match spacing {
        SigmaSpacing::Karras { rho } => {
            let (a, b) = (hi.powf(1.0 / rho), lo.powf(1.0 / rho));
            (0..steps).map(|i| (a + ramp(i, steps) * (b - a)).powf(rho)).collect()
        }
        SigmaSpacing::Exponential => (0..steps).map(|i| (hi.ln() + ramp(i, steps) * (lo.ln() - hi.ln())).exp()).collect(),
        SigmaSpacing::Discrete => {
            return Err(Error::invalid("sigma_spacing", "discrete", "this model has no discrete timesteps; use karras or exponential"));
        }
    })
}

/// The sigma at continuous timestep `t` (log-linear between the table's entries).
pub(crate) fn sigma_at(sigmas: &[f64], t: f64) -> f64 {
    let i = (t.floor() as usize).min(sigmas.len() - 1);
    let j = (i + 1).min(sigmas.len() - 1);
    let w = t - i as f64;
    ((1.0 - w) * sigmas[i].ln() + w * sigmas[j].ln()).exp()
}

/// The continuous timestep of `sigma`: log sigma interpolated in the (increasing) table, clamped to
/// [0, T-1] (k-diffusion's `sigma_to_t`).
pub fn sigma_to_t(sigmas: &[f64], sigma: f64) -> f64 {
    let ls = sigma.ln();
    if ls <= sigmas[0].ln() {
        return 0.0;
    }
    let last = sigmas.len() - 1;
    if ls >= sigmas[last].ln() {
        return last as f64;
    }
    let i = sigmas.partition_point(|s| s.ln() <= ls).saturating_sub(1).min(last - 1);
    let (a, b) = (sigmas[i].ln(), sigmas[i + 1].ln());
    i as f64 + (ls - a) / (b - a)
}

/// What a process supplies to the sigma-space solvers (k-diffusion's scalings): the network's
/// input and time input for `x = x0 + sigma n`, and how its output reads as x0. Discrete VP
/// ([`VpScalings`]), continuous time (`continuous::ContinuousScalings`) and EDM
/// (`edm::EdmScalings`: `c_in`, `c_noise`, `c_skip`, `c_out`) are the three.
pub trait Preconditioning<const D: usize> {
    /// The network's input and time input for the batch `x` at noise level `sigma`.
    fn input(&self, x: &Tensor<D>, sigma: f64) -> Result<(Tensor<D>, Tensor<1>)>;
    /// The x0 estimate that the network's `output` for `x` at `sigma` stands for.
    fn x0(&self, output: Tensor<D>, x: &Tensor<D>, sigma: f64) -> Result<Tensor<D>>;
}

/// A network under a [`Preconditioning`] as a [`SigmaDenoiser`], the one adapter of every
/// process. The network is called through [`ModelCalls`] (self-conditioning on the previous
/// estimate), and a CFG++ guidance's unconditional estimate is kept for the solver
/// ([`SigmaDenoiser::renoise_x0`]).
pub struct Preconditioned<'a, const D: usize, M, P> {
    pub scalings: P,
    calls: ModelCalls<'a, D, M>,
    renoise: Option<Tensor<D>>,
}

impl<'a, const D: usize, M: Denoiser<D>, P> Preconditioned<'a, D, M, P> {
    pub fn with_scalings(scalings: P, model: &'a M, cond: Conditioning<D>, self_condition: bool) -> Self {
        Self { scalings, calls: ModelCalls::new(model, cond, self_condition), renoise: None }
    }
}

impl<const D: usize, M: Denoiser<D>, P: Preconditioning<D>> SigmaDenoiser<D> for Preconditioned<'_, D, M, P> {
    fn denoise_at(&mut self, x: Tensor<D>, sigma: f64) -> Result<Tensor<D>> {
        let (input, time) = self.scalings.input(&x, sigma)?;
        let (output, unconditional) = self.calls.call(input, time);
        self.renoise = unconditional.map(|u| self.scalings.x0(u, &x, sigma)).transpose()?;
        let x0 = self.scalings.x0(output, &x, sigma)?;
        self.calls.remember(&x0);
        Ok(x0)
    }

    fn renoise_x0(&mut self) -> Option<Tensor<D>> {
        self.renoise.take()
    }
}

/// A discrete-time model's scalings (see the module docs): the network sees
/// `x_t = x / sqrt(1 + sigma^2)` at the continuous timestep whose log-sigma interpolates the
/// schedule's; its output (eps, x0 or v) is read as x0, clipped by `clip`.
pub struct VpScalings<'a> {
    pub diffusion: &'a GaussianDiffusion,
    pub clip: X0Clip,
    sigmas: Vec<f64>,
}

impl VpScalings<'_> {
    /// `(sqrt(abar), sqrt(1 - abar))` with `abar = 1 / (1 + sigma^2)`.
    fn scales(sigma: f64) -> (f64, f64) {
        let abar = 1.0 / (1.0 + sigma * sigma);
        (abar.sqrt(), (1.0 - abar).sqrt())
    }
}

impl<const D: usize> Preconditioning<D> for VpScalings<'_> {
    fn input(&self, x: &Tensor<D>, sigma: f64) -> Result<(Tensor<D>, Tensor<1>)> {
        let b = x.dims()[0];
        let x_t = x.clone().mul_scalar(Self::scales(sigma).0);
        let time = from_f64(vec![sigma_to_t(&self.sigmas, sigma); b], [b], &x_t);
        Ok((x_t, time))
    }

    fn x0(&self, output: Tensor<D>, x: &Tensor<D>, sigma: f64) -> Result<Tensor<D>> {
        let (sa, s1a) = Self::scales(sigma);
        let (out, _variance) = self.diffusion.split_output(output)?;
        apply_clip(self.diffusion.objective().x0_at(out, x.clone().mul_scalar(sa), sa, s1a)?, self.clip)
    }
}

/// A discrete-time model of this crate as a sigma-space denoiser (see the module docs).
/// Self-conditioning follows the diffusion's setting, as in the DDPM/DDIM samplers.
pub type VpDenoiser<'a, const D: usize, M> = Preconditioned<'a, D, M, VpScalings<'a>>;

impl<'a, const D: usize, M: Denoiser<D>> Preconditioned<'a, D, M, VpScalings<'a>> {
    pub fn new(diffusion: &'a GaussianDiffusion, model: &'a M, clip: X0Clip, cond: Conditioning<D>) -> Result<Self> {
        if diffusion.objective() == Objective::Mean {
            return Err(Error::invalid(
                "objective",
                "mean",
                "a mean-predicting model has no x0 at continuous timesteps; sample it with ddpm or ddim",
            ));
        }
        let scalings = VpScalings { diffusion, clip, sigmas: model_sigmas(diffusion) };
        Ok(Self::with_scalings(scalings, model, cond, diffusion.config.self_condition))
    }
}

/// Which sigma-space solver.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigmaSolver {
    /// First-order ODE steps.
    Euler,
    /// Euler steps to `sigma_down` plus fresh noise of `sigma_up` (`eta` scales the noise).
    EulerAncestral,
    /// Second-order Heun (EDM Algorithm 2): an Euler step corrected with the slope at its end,
    /// except on the last step to 0.
    Heun,
    /// DPM-Solver++(2M): second-order multistep in log-sigma on the x0 estimates.
    DpmSolver2m,
    /// DPM-Solver++(2M) SDE: the same with noise injected each step (`eta` scales it).
    DpmSolver2mSde,
    /// DPM-Solver++(3M) SDE: third-order multistep on the last three x0 estimates, noise injected
    /// each step (`eta` scales it).
    DpmSolver3mSde,
}

/// Everything the crates, the configs and the command line say about one sigma-space solver. A
/// new solver is a [`SigmaSolver`] variant, its update in [`sample_sigmas`] and its row in
/// [`SOLVERS`]; parsers, help texts, network-call counts and support checks read the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SolverRow {
    pub solver: SigmaSolver,
    /// The name users write (`sample.sampler`, `--sampler`): k-diffusion's function without `sample_`.
    pub name: &'static str,
    /// Network calls per step (Heun makes one fewer on its last step, to 0).
    pub calls_per_step: usize,
    /// Injects fresh noise each step, scaled by `eta` (default 1).
    pub stochastic: bool,
    /// Takes EDM's churn (`s_churn`, `s_tmin`, `s_tmax`, `s_noise`).
    pub churn: bool,
    /// Has a CFG++ form (steps along the unconditional slope).
    pub cfg_pp: bool,
    /// One line for help texts and docs.
    pub help: &'static str,
}

/// The sigma-space solvers, in the order help texts list them.
pub const SOLVERS: [SolverRow; 6] = [
    SolverRow { solver: SigmaSolver::Euler, name: "euler", calls_per_step: 1, stochastic: false, churn: true, cfg_pp: true, help: "first-order ODE steps (Karras et al. 2022, Algorithm 2 with its churn)" },
    SolverRow { solver: SigmaSolver::EulerAncestral, name: "euler_ancestral", calls_per_step: 1, stochastic: true, churn: false, cfg_pp: true, help: "Euler to sigma_down, then fresh noise of sigma_up" },
    SolverRow { solver: SigmaSolver::Heun, name: "heun", calls_per_step: 2, stochastic: false, churn: true, cfg_pp: false, help: "second-order Heun, EDM's sampler (churn optional)" },
    SolverRow { solver: SigmaSolver::DpmSolver2m, name: "dpmpp_2m", calls_per_step: 1, stochastic: false, churn: false, cfg_pp: false, help: "DPM-Solver++(2M): second-order multistep ODE" },
    SolverRow { solver: SigmaSolver::DpmSolver2mSde, name: "dpmpp_2m_sde", calls_per_step: 1, stochastic: true, churn: false, cfg_pp: false, help: "DPM-Solver++(2M) SDE (midpoint)" },
    SolverRow { solver: SigmaSolver::DpmSolver3mSde, name: "dpmpp_3m_sde", calls_per_step: 1, stochastic: true, churn: false, cfg_pp: false, help: "DPM-Solver++(3M) SDE: third-order multistep" },
];

impl SigmaSolver {
    /// This solver's row of [`SOLVERS`].
    pub fn row(self) -> &'static SolverRow {
        SOLVERS.iter().find(|r| r.solver == self).expect("every solver has a row in SOLVERS")
    }

    /// The solver users call `name` (see [`SolverRow::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        SOLVERS.iter().find(|r| r.name == name).map(|r| r.solver)
    }

    /// The names of all solvers, comma-separated, for messages.
    pub fn names() -> String {
        SOLVERS.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
    }
}

/// EDM's stochastic "churn": at sigmas in `[s_tmin, s_tmax]`, raise the noise level by a factor
/// `1 + min(s_churn / steps, sqrt 2 - 1)` with fresh noise of scale `s_noise` before the step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    #[serde(default)]
    pub s_churn: f64,
    #[serde(default)]
    pub s_tmin: f64,
    #[serde(default = "default_tmax")]
    pub s_tmax: f64,
    #[serde(default = "default_snoise")]
    pub s_noise: f64,
}

fn default_tmax() -> f64 {
    f64::INFINITY
}
fn default_snoise() -> f64 {
    1.0
}

impl Default for Churn {
    fn default() -> Self {
        Self { s_churn: 0.0, s_tmin: 0.0, s_tmax: f64::INFINITY, s_noise: 1.0 }
    }
}

/// SDEdit's cut: a run that starts at `sigma0` and continues on the levels of `grid` below it.
pub fn grid_from(sigma0: f64, grid: Vec<f64>) -> Vec<f64> {
    std::iter::once(sigma0).chain(grid.into_iter().filter(|&s| s < sigma0 * (1.0 - 1e-9))).collect()
}

/// The ancestral split of a step from `sigma` to `next`: deterministic to `sigma_down`, then noise
/// of `sigma_up`, with `sigma_down^2 + sigma_up^2 = next^2`.
pub fn ancestral_step(sigma: f64, next: f64, eta: f64) -> (f64, f64) {
    if next == 0.0 || eta == 0.0 {
        return (next, 0.0);
    }
    let up = (eta * (next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt()).min(next);
    ((next * next - up * up).sqrt(), up)
}

/// One sigma-space run: the grid `sigmas` (decreasing, ending at 0), the solver, `eta` (the
/// scale of the injected noise of the ancestral and SDE solvers) and `churn` (Euler and Heun).
#[derive(Debug, Clone, Copy)]
pub struct SigmaRun<'a> {
    pub sigmas: &'a [f64],
    pub solver: SigmaSolver,
    pub eta: f64,
    pub churn: Churn,
}

/// Runs `run.solver` from `x` (already at noise level `sigmas[0]`) down the grid to 0. Noise comes
/// from `noise`, so a run can be replayed. `each_step(i, x_in, x0, x_out)` sees the input of step
/// i, the x0 estimate it used and its output.
pub fn sample_sigmas<const D: usize, S: SigmaDenoiser<D>, N: NoiseSource>(
    denoiser: &mut S,
    x: Tensor<D>,
    run: SigmaRun<'_>,
    noise: &mut N,
    mut each_step: impl FnMut(usize, &Tensor<D>, &Tensor<D>, &Tensor<D>),
) -> Result<Tensor<D>> {
    solve_sigmas(denoiser, x, run, &mut |like: &Tensor<D>| noise.normal_like(like), &mut each_step)
}

/// [`sample_sigmas`] behind trait objects: compiled once per rank, not once per denoiser, noise
/// source and hook (the solvers were 8% of ddpm-train's generated code).
fn solve_sigmas<const D: usize>(
    denoiser: &mut dyn SigmaDenoiser<D>,
    mut x: Tensor<D>,
    run: SigmaRun<'_>,
    draw: &mut dyn FnMut(&Tensor<D>) -> Result<Tensor<D>>,
    each_step: &mut dyn FnMut(usize, &Tensor<D>, &Tensor<D>, &Tensor<D>),
) -> Result<Tensor<D>> {
    let SigmaRun { sigmas, solver, eta, churn } = run;
    if sigmas.len() < 2 || sigmas.windows(2).any(|w| w[1] > w[0]) || *sigmas.last().expect("len >= 2") != 0.0 {
        return Err(Error::invalid("sigmas", format!("{sigmas:?}"), "the grid must decrease and end at 0"));
    }
    let steps = sigmas.len() - 1;
    let mut old_x0: Option<Tensor<D>> = None;
    let mut h_last: Option<f64> = None;
    // The estimate and step before those (DPM-Solver++(3M)).
    let mut older: Option<(Tensor<D>, f64)> = None;
    for i in 0..steps {
        let (mut sigma, next) = (sigmas[i], sigmas[i + 1]);
        // With churn on, the noise is drawn at every step (scaled by 0 outside [s_tmin, s_tmax]),
        // as EDM's Algorithm 2 and the reference's sampler do, so their recorded draws replay.
        if solver.row().churn && churn.s_churn > 0.0 {
            let gamma = if (churn.s_tmin..=churn.s_tmax).contains(&sigma) { (churn.s_churn / steps as f64).min(std::f64::consts::SQRT_2 - 1.0) } else { 0.0 };
            let raised = sigma * (1.0 + gamma);
            let z = draw(&x)?;
            x = x + z.mul_scalar(churn.s_noise * (raised * raised - sigma * sigma).sqrt());
            sigma = raised;
        }
        let x_in = x.clone();
        let x0 = denoiser.denoise_at(x.clone(), sigma)?;
        let slope = (x.clone() - x0.clone()).div_scalar(sigma);
        // CFG++: step along the unconditional slope from the guided estimate,
        // `x0 + s' (x - x0_u) / s = x + slope_u (s' - s) + (x0 - x0_u)`.
        let renoise = denoiser.renoise_x0();
        if renoise.is_some() && !solver.row().cfg_pp {
            let with: Vec<&str> = SOLVERS.iter().filter(|r| r.cfg_pp).map(|r| r.name).collect();
            return Err(Error::invalid("cfg_pp", true, format!("{} has no CFG++ form; use ddim or {}, or plain guidance", solver.row().name, with.join(" or "))));
        }
        let first_order = |x: Tensor<D>, to: f64| match &renoise {
            Some(x0_u) => x.clone() + (x - x0_u.clone()).mul_scalar((to - sigma) / sigma) + (x0.clone() - x0_u.clone()),
            None => x + slope.clone().mul_scalar(to - sigma),
        };
        x = match solver {
            SigmaSolver::Euler => first_order(x, next),
            SigmaSolver::EulerAncestral => {
                let (down, up) = ancestral_step(sigma, next, eta);
                let x = first_order(x, down);
                if up > 0.0 { x.clone() + draw(&x)?.mul_scalar(up) } else { x }
            }
            SigmaSolver::Heun => {
                let euler = x.clone() + slope.clone().mul_scalar(next - sigma);
                if next == 0.0 {
                    euler
                } else {
                    let x0_next = denoiser.denoise_at(euler.clone(), next)?;
                    let slope_next = (euler - x0_next).div_scalar(next);
                    x + (slope + slope_next).mul_scalar(0.5 * (next - sigma))
                }
            }
            SigmaSolver::DpmSolver2m => {
                if next == 0.0 {
                    x0.clone()
                } else {
                    let h = sigma.ln() - next.ln();
                    let blended = match (&old_x0, h_last) {
                        (Some(old), Some(hl)) => {
                            let r = hl / h;
                            x0.clone().mul_scalar(1.0 + 1.0 / (2.0 * r)) - old.clone().mul_scalar(1.0 / (2.0 * r))
                        }
                        _ => x0.clone(),
                    };
                    h_last = Some(h);
                    x.mul_scalar(next / sigma) - blended.mul_scalar((-h).exp_m1())
                }
            }
            SigmaSolver::DpmSolver2mSde => {
                if next == 0.0 {
                    x0.clone()
                } else {
                    let h = sigma.ln() - next.ln();
                    let eta_h = eta * h;
                    let mut x = x.mul_scalar(next / sigma * (-eta_h).exp()) + x0.clone().mul_scalar(-(-h - eta_h).exp_m1());
                    if let (Some(old), Some(hl)) = (&old_x0, h_last) {
                        let r = hl / h;
                        x = x + (x0.clone() - old.clone()).mul_scalar(-0.5 * (-h - eta_h).exp_m1() / r);
                    }
                    if eta > 0.0 {
                        let z = draw(&x)?;
                        x = x + z.mul_scalar(next * (-(-2.0 * eta_h).exp_m1()).sqrt());
                    }
                    h_last = Some(h);
                    x
                }
            }
            SigmaSolver::DpmSolver3mSde => {
                if next == 0.0 {
                    x0.clone()
                } else {
                    let h = sigma.ln() - next.ln();
                    let h_eta = h * (eta + 1.0);
                    let mut x = x.mul_scalar((-h_eta).exp()) + x0.clone().mul_scalar(-(-h_eta).exp_m1());
                    let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
                    match (&old_x0, h_last, &older) {
                        (Some(x0_1), Some(h_1), Some((x0_2, h_2))) => {
                            let (r0, r1) = (h_1 / h, h_2 / h);
                            let d1_0 = (x0.clone() - x0_1.clone()).div_scalar(r0);
                            let d1_1 = (x0_1.clone() - x0_2.clone()).div_scalar(r1);
                            let d1 = d1_0.clone() + (d1_0.clone() - d1_1.clone()).mul_scalar(r0 / (r0 + r1));
                            let d2 = (d1_0 - d1_1).div_scalar(r0 + r1);
                            let phi_3 = phi_2 / h_eta - 0.5;
                            x = x + d1.mul_scalar(phi_2) - d2.mul_scalar(phi_3);
                        }
                        (Some(x0_1), Some(h_1), None) => {
                            x = x + (x0.clone() - x0_1.clone()).mul_scalar(phi_2 * h / h_1);
                        }
                        _ => {}
                    }
                    if eta > 0.0 {
                        let z = draw(&x)?;
                        x = x + z.mul_scalar(next * (-(-2.0 * h * eta).exp_m1()).sqrt());
                    }
                    older = old_x0.clone().zip(h_last);
                    h_last = Some(h);
                    x
                }
            }
        };
        each_step(i, &x_in, &x0, &x);
        old_x0 = Some(x0);
    }
    Ok(x)
}
