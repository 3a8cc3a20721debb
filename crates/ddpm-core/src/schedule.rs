//! Noise schedules: beta sequences and every per-timestep table derived from them, in f64.
//!
//! A [`BetaSchedule`] says how to make `beta_t` for `t = 0..T`; a [`NoiseSchedule`] holds the betas
//! and the tables the forward process, the posterior and the samplers read (the twelve buffers of
//! denoising-diffusion-pytorch's `GaussianDiffusion`, plus the SNR). Everything is computed on the
//! host in f64 and turned into device tensors only where a tensor op needs it, so the numbers are the
//! same on every backend.

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the betas `beta_0 .. beta_{T-1}` are made.
///
/// Names follow the reference implementations: `linear`, `cosine` and `sigmoid` are
/// denoising-diffusion-pytorch's; `scaled_linear` (tqch's `quad`), `warmup10`, `warmup50`, `const`
/// and `jsd` are the original DDPM code's (and tqch/ddpm-torch's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BetaSchedule {
    /// Ho et al. 2020: `beta_t = linspace(s * beta_start, s * beta_end, T)` with `s = 1000 / T`,
    /// as the reference scales it so that any T spans the same total noise. Not clipped: for small T
    /// (T < 20 with the defaults) betas exceed 1 and the schedule is invalid (see
    /// [`NoiseSchedule::validate`]).
    Linear {
        #[serde(default = "default_beta_start")]
        beta_start: f64,
        #[serde(default = "default_beta_end")]
        beta_end: f64,
    },
    /// Nichol & Dhariwal 2021: `abar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2) / abar(0)`,
    /// `beta_t = 1 - abar(t+1)/abar(t)`, clipped to `[0, 0.999]`. Default `s = 0.008`.
    Cosine {
        #[serde(default = "default_cosine_s")]
        s: f64,
    },
    /// Jabri et al. 2022 (RIN): `abar(t) = (sigmoid(end/tau) - sigmoid(((t/T)(end-start)+start)/tau))
    /// / (sigmoid(end/tau) - sigmoid(start/tau))`, normalised by `abar(0)`, betas clipped to
    /// `[0, 0.999]`. Defaults `start = -3, end = 3, tau = 1`. The two end points `sigmoid(start/tau)`
    /// and `sigmoid(end/tau)` are rounded to f32 first, exactly as the reference does.
    Sigmoid {
        #[serde(default = "default_sigmoid_start")]
        start: f64,
        #[serde(default = "default_sigmoid_end")]
        end: f64,
        #[serde(default = "default_tau")]
        tau: f64,
    },
    /// `beta_t = linspace(sqrt(beta_start), sqrt(beta_end), T)^2` (tqch's `quad`, diffusers'
    /// `scaled_linear`). Not rescaled by T.
    ScaledLinear {
        #[serde(default = "default_beta_start")]
        beta_start: f64,
        #[serde(default = "default_beta_end")]
        beta_end: f64,
    },
    /// `beta_t = beta_end`, except the first `floor(frac * T)` steps, which ramp linearly from
    /// `beta_start` to `beta_end`. `warmup10` is `frac = 0.1`, `warmup50` is `frac = 0.5`.
    Warmup {
        #[serde(default = "default_beta_start")]
        beta_start: f64,
        #[serde(default = "default_beta_end")]
        beta_end: f64,
        frac: f64,
    },
    /// `beta_t = beta` for every t.
    Const {
        #[serde(default = "default_beta_end")]
        beta: f64,
    },
    /// `beta_t = 1 / (T - t)`: 1/T, 1/(T-1), ..., 1 (the "Jensen-Shannon divergence" schedule of
    /// Sohl-Dickstein et al. 2015).
    Jsd,
    /// Betas given explicitly; their count sets T.
    Custom { betas: Vec<f64> },
}

fn default_beta_start() -> f64 {
    1e-4
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_cosine_s() -> f64 {
    0.008
}
fn default_sigmoid_start() -> f64 {
    -3.0
}
fn default_sigmoid_end() -> f64 {
    3.0
}
fn default_tau() -> f64 {
    1.0
}

impl Default for BetaSchedule {
    /// The reference `GaussianDiffusion`'s default, `sigmoid`.
    fn default() -> Self {
        Self::sigmoid()
    }
}

impl BetaSchedule {
    /// `linear` with the reference's end points (1e-4, 0.02, scaled by 1000/T).
    pub fn linear() -> Self {
        Self::Linear { beta_start: default_beta_start(), beta_end: default_beta_end() }
    }
    /// `cosine` with `s = 0.008`.
    pub fn cosine() -> Self {
        Self::Cosine { s: default_cosine_s() }
    }
    /// `sigmoid` with `start = -3, end = 3, tau = 1`.
    pub fn sigmoid() -> Self {
        Self::Sigmoid { start: -3.0, end: 3.0, tau: 1.0 }
    }
    /// `scaled_linear` (tqch's `quad`) between 1e-4 and 0.02.
    pub fn scaled_linear() -> Self {
        Self::ScaledLinear { beta_start: default_beta_start(), beta_end: default_beta_end() }
    }

    /// The betas for `timesteps` steps, in f64. `Custom` ignores `timesteps` unless they disagree,
    /// which is an error.
    pub fn betas(&self, timesteps: usize) -> Result<Vec<f64>> {
        if timesteps == 0 {
            return Err(Error::invalid("timesteps", "0", "use at least 1 diffusion step (1000 is usual)"));
        }
        let t = timesteps;
        let betas = match *self {
            Self::Linear { beta_start, beta_end } => {
                let scale = 1000.0 / t as f64;
                torch_linspace(scale * beta_start, scale * beta_end, t)
            }
            Self::Cosine { s } => {
                let abar = |x: f64| ((x + s) / (1.0 + s) * PI * 0.5).cos().powi(2);
                let grid: Vec<f64> = torch_linspace(0.0, t as f64, t + 1).iter().map(|v| v / t as f64).collect();
                let ac: Vec<f64> = grid.iter().map(|&x| abar(x)).collect();
                let ac: Vec<f64> = ac.iter().map(|v| v / ac[0]).collect();
                betas_from_alphas_cumprod(&ac)
            }
            Self::Sigmoid { start, end, tau } => {
                let v_start = f64::from(sigmoid(start / tau) as f32);
                let v_end = f64::from(sigmoid(end / tau) as f32);
                let grid: Vec<f64> = torch_linspace(0.0, t as f64, t + 1).iter().map(|v| v / t as f64).collect();
                let ac: Vec<f64> = grid
                    .iter()
                    .map(|&x| (-sigmoid((x * (end - start) + start) / tau) + v_end) / (v_end - v_start))
                    .collect();
                let ac: Vec<f64> = ac.iter().map(|v| v / ac[0]).collect();
                betas_from_alphas_cumprod(&ac)
            }
            Self::ScaledLinear { beta_start, beta_end } => {
                torch_linspace(beta_start.sqrt(), beta_end.sqrt(), t).into_iter().map(|b| b * b).collect()
            }
            Self::Warmup { beta_start, beta_end, frac } => {
                if !(0.0..=1.0).contains(&frac) {
                    return Err(Error::invalid("frac", frac, "the warm-up fraction must lie in [0, 1]"));
                }
                let warm = (t as f64 * frac) as usize;
                let mut betas = vec![beta_end; t];
                betas[..warm].copy_from_slice(&torch_linspace(beta_start, beta_end, warm));
                betas
            }
            Self::Const { beta } => vec![beta; t],
            Self::Jsd => torch_linspace(t as f64, 1.0, t).into_iter().map(|v| 1.0 / v).collect(),
            Self::Custom { ref betas } => {
                if betas.len() != t {
                    return Err(Error::invalid(
                        "timesteps",
                        t,
                        format!("the custom schedule lists {} betas; set timesteps to {}", betas.len(), betas.len()),
                    ));
                }
                betas.clone()
            }
        };
        Ok(betas)
    }
}

impl fmt::Display for BetaSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Linear { .. } => write!(f, "linear"),
            Self::Cosine { .. } => write!(f, "cosine"),
            Self::Sigmoid { .. } => write!(f, "sigmoid"),
            Self::ScaledLinear { .. } => write!(f, "scaled_linear"),
            Self::Warmup { frac, .. } => write!(f, "warmup{}", (frac * 100.0).round()),
            Self::Const { .. } => write!(f, "const"),
            Self::Jsd => write!(f, "jsd"),
            Self::Custom { .. } => write!(f, "custom"),
        }
    }
}

impl FromStr for BetaSchedule {
    type Err = Error;

    /// Parses a schedule name with its default parameters: `linear`, `cosine`, `sigmoid`,
    /// `scaled_linear` (or `quad`), `warmup10`, `warmup50`, `const`, `jsd`.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "linear" => Self::linear(),
            "cosine" => Self::cosine(),
            "sigmoid" => Self::sigmoid(),
            "scaled_linear" | "quad" => Self::scaled_linear(),
            "warmup10" => Self::Warmup { beta_start: 1e-4, beta_end: 0.02, frac: 0.1 },
            "warmup50" => Self::Warmup { beta_start: 1e-4, beta_end: 0.02, frac: 0.5 },
            "const" => Self::Const { beta: 0.02 },
            "jsd" => Self::Jsd,
            other => {
                return Err(Error::invalid(
                    "beta_schedule",
                    other,
                    "use one of linear, cosine, sigmoid, scaled_linear, quad, warmup10, warmup50, const, jsd",
                ));
            }
        })
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `torch.linspace(start, end, steps)` in f64, with PyTorch's symmetric evaluation (the first half
/// counted from `start`, the second from `end`), so that the end points are exact.
pub fn torch_linspace(start: f64, end: f64, steps: usize) -> Vec<f64> {
    match steps {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (steps - 1) as f64;
            let half = steps / 2;
            (0..steps)
                .map(|i| if i < half { start + step * i as f64 } else { end - step * (steps - 1 - i) as f64 })
                .collect()
        }
    }
}

// diffusers' schedules, emulating torch's float32 arithmetic bit for bit, so that weights trained
// with diffusers sample with the exact tables they were trained on (see ddpm_models::diffusers).

/// `torch.linspace(start, end, n, dtype=torch.float32)` on the CPU: `start`, `end` and
/// `step = (end - start) / (n - 1)` in f32, each value `start + i step` (first half) or
/// `end - (n - 1 - i) step` (second half) rounded once to f32. Checked bit for bit against
/// torch 2.14 (AVX512) on the schedules diffusers builds; other CPUs can differ by an ulp.
pub fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (s, e) = (start as f32, end as f32);
    match n {
        0 => Vec::new(),
        1 => vec![s],
        _ => {
            let step = (e - s) / (n - 1) as f32;
            let half = n / 2;
            // The f64 product of two f32 values is exact; one rounding of the sum to f32 follows.
            (0..n)
                .map(|i| {
                    if i < half {
                        (f64::from(s) + f64::from(step) * i as f64) as f32
                    } else {
                        (f64::from(e) - f64::from(step) * (n - 1 - i) as f64) as f32
                    }
                })
                .collect()
        }
    }
}

/// `torch.cumprod` of f32 values on the CPU: a running f64 product, each entry rounded to f32.
pub fn torch_cumprod_f32(values: &[f32]) -> Vec<f32> {
    let mut acc = 1f64;
    values
        .iter()
        .map(|&v| {
            acc *= f64::from(v);
            acc as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` in f32 as torch computes it (ddpm-core's own f64 rescale
/// is [`BetaSchedule`]'s `zero_terminal_snr`): `sqrt(abar)` shifted so the
/// last is 0 and scaled so the first keeps its value, squared back, turned into betas.
pub fn rescale_zero_terminal_snr_f32(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut s: Vec<f32> = torch_cumprod_f32(&alphas).into_iter().map(f32::sqrt).collect();
    let (first, last) = (s[0], s[s.len() - 1]);
    let scale = first / (first - last);
    for v in &mut s {
        *v = (*v - last) * scale;
    }
    let bar: Vec<f32> = s.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for w in bar.windows(2) {
        out.push(1.0 - w[1] / w[0]);
    }
    out
}

/// diffusers' `betas_for_alpha_bar`: `min(1 - abar((i+1)/T) / abar(i/T), 0.999)` in f64 (Python
/// floats), then f32.
pub fn betas_for_alpha_bar_f32(t: usize, alpha_bar: impl Fn(f64) -> f64) -> Vec<f32> {
    (0..t)
        .map(|i| {
            let (t1, t2) = (i as f64 / t as f64, (i + 1) as f64 / t as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// `beta_t = clip(1 - abar_{t+1} / abar_t, 0, 0.999)` for a grid of T+1 cumulative products.
fn betas_from_alphas_cumprod(ac: &[f64]) -> Vec<f64> {
    ac.windows(2).map(|w| (1.0 - w[1] / w[0]).clamp(0.0, 0.999)).collect()
}

/// Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1:
/// shift and scale `sqrt(abar_t)` so that the last step has zero SNR (`abar_{T-1} = 0`) while the
/// first keeps its value, then recover the betas. The last beta becomes 1, so train with `pred_v`
/// (an eps-prediction cannot recover x0 from pure noise).
pub fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    let sqrt_ac: Vec<f64> = betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc.sqrt()
        })
        .collect();
    let (first, last) = (sqrt_ac[0], sqrt_ac[sqrt_ac.len() - 1]);
    let ac: Vec<f64> =
        sqrt_ac.iter().map(|s| ((s - last) * first / (first - last)).powi(2)).collect();
    let mut out = Vec::with_capacity(ac.len());
    out.push(1.0 - ac[0]);
    for w in ac.windows(2) {
        out.push(1.0 - w[1] / w[0]);
    }
    out
}

/// All per-timestep tables of a discrete Gaussian diffusion, in f64, index `t = 0..T`.
///
/// With `abar_t = prod_{s<=t} (1 - beta_s)`:
/// - `q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`
/// - posterior `q(x_{t-1} | x_t, x_0) = N(coef1_t x_0 + coef2_t x_t, beta~_t I)` with
///   `beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)`,
///   `coef1_t = beta_t sqrt(abar_{t-1}) / (1 - abar_t)`,
///   `coef2_t = (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t)`.
///
/// The tables are computed exactly as the reference does, NaNs included for invalid betas; call
/// [`NoiseSchedule::validate`] before training or sampling with a schedule of unknown origin.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    /// `beta_t`.
    pub betas: Vec<f64>,
    /// `alpha_t = 1 - beta_t`.
    pub alphas: Vec<f64>,
    /// `abar_t = prod_{s<=t} alpha_s`.
    pub alphas_cumprod: Vec<f64>,
    /// `abar_{t-1}`, with `abar_{-1} = 1`.
    pub alphas_cumprod_prev: Vec<f64>,
    /// `sqrt(abar_t)`.
    pub sqrt_alphas_cumprod: Vec<f64>,
    /// `sqrt(1 - abar_t)`.
    pub sqrt_one_minus_alphas_cumprod: Vec<f64>,
    /// `ln(1 - abar_t)`.
    pub log_one_minus_alphas_cumprod: Vec<f64>,
    /// `sqrt(1 / abar_t)`.
    pub sqrt_recip_alphas_cumprod: Vec<f64>,
    /// `sqrt(1 / abar_t - 1)`.
    pub sqrt_recipm1_alphas_cumprod: Vec<f64>,
    /// `beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)` (0 at t = 0).
    pub posterior_variance: Vec<f64>,
    /// `ln(max(beta~_t, 1e-20))`: the reference clamps so that t = 0 gives -46.05 rather than -inf.
    pub posterior_log_variance_clipped: Vec<f64>,
    /// `beta_t sqrt(abar_{t-1}) / (1 - abar_t)`.
    pub posterior_mean_coef1: Vec<f64>,
    /// `(1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t)`.
    pub posterior_mean_coef2: Vec<f64>,
    /// Signal-to-noise ratio `abar_t / (1 - abar_t)`.
    pub snr: Vec<f64>,
}

impl NoiseSchedule {
    /// Derives every table from the betas.
    pub fn from_betas(betas: Vec<f64>) -> Self {
        let n = betas.len();
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut acc = 1.0;
        for a in &alphas {
            acc *= a;
            alphas_cumprod.push(acc);
        }
        let mut alphas_cumprod_prev = vec![1.0];
        alphas_cumprod_prev.extend_from_slice(&alphas_cumprod[..n.saturating_sub(1)]);
        let map = |f: &dyn Fn(usize) -> f64| (0..n).map(f).collect::<Vec<f64>>();
        let ac = &alphas_cumprod;
        let acp = &alphas_cumprod_prev;
        let posterior_variance = map(&|t| betas[t] * (1.0 - acp[t]) / (1.0 - ac[t]));
        Self {
            sqrt_alphas_cumprod: map(&|t| ac[t].sqrt()),
            sqrt_one_minus_alphas_cumprod: map(&|t| (1.0 - ac[t]).sqrt()),
            log_one_minus_alphas_cumprod: map(&|t| (1.0 - ac[t]).ln()),
            sqrt_recip_alphas_cumprod: map(&|t| (1.0 / ac[t]).sqrt()),
            sqrt_recipm1_alphas_cumprod: map(&|t| (1.0 / ac[t] - 1.0).sqrt()),
            // NaN must stay NaN, as torch.clamp keeps it; f64::max would turn it into the bound.
            posterior_log_variance_clipped: posterior_variance
                .iter()
                .map(|&v| if v.is_nan() { v } else { v.max(1e-20).ln() })
                .collect(),
            posterior_mean_coef1: map(&|t| betas[t] * acp[t].sqrt() / (1.0 - ac[t])),
            posterior_mean_coef2: map(&|t| (1.0 - acp[t]) * alphas[t].sqrt() / (1.0 - ac[t])),
            snr: map(&|t| ac[t] / (1.0 - ac[t])),
            posterior_variance,
            alphas_cumprod_prev,
            alphas_cumprod,
            alphas,
            betas,
        }
    }

    /// The schedule `kind` for `timesteps` steps, optionally rescaled to zero terminal SNR.
    pub fn new(kind: &BetaSchedule, timesteps: usize, zero_terminal_snr: bool) -> Result<Self> {
        let mut betas = kind.betas(timesteps)?;
        if zero_terminal_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        Ok(Self::from_betas(betas))
    }

    /// Number of diffusion steps T.
    pub fn num_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// Checks that every beta lies in (0, 1] and that every table a sampler reads is finite.
    /// The reference accepts, for example, `linear` with T = 10 (betas up to 2.0, NaN tables);
    /// ddpm-rs refuses to train or sample with it.
    pub fn validate(&self) -> Result<()> {
        for (t, &b) in self.betas.iter().enumerate() {
            if !(b > 0.0 && b <= 1.0) {
                return Err(Error::invalid(
                    "beta_schedule",
                    format!("beta[{t}] = {b}"),
                    "every beta must lie in (0, 1]; the reference's linear schedule leaves that range for \
                     T < 20 (its end points scale with 1000/T): use more timesteps or the cosine/sigmoid schedule",
                ));
            }
        }
        let last = self.num_timesteps() - 1;
        for (t, &v) in self.posterior_mean_coef1.iter().enumerate() {
            if !v.is_finite() || !self.posterior_mean_coef2[t].is_finite() {
                return Err(Error::invalid(
                    "beta_schedule",
                    format!("posterior coefficient at t = {t} is {v}"),
                    "the schedule makes the posterior undefined; check the betas",
                ));
            }
        }
        if !self.alphas_cumprod[last].is_finite() {
            return Err(Error::invalid("beta_schedule", "alphas_cumprod", "the cumulative product is not finite"));
        }
        Ok(())
    }

    /// `ln(beta_t)` with the first entry replaced by `ln(beta~_1)`: the "fixed-large" variance of
    /// Ho et al., as tqch and OpenAI's improved-diffusion write it (beta_0 would give the decoder a
    /// variance far larger than the posterior's at t = 0).
    pub fn fixed_large_log_variance(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.betas.iter().map(|b| b.ln()).collect();
        if self.num_timesteps() > 1 {
            v[0] = self.posterior_variance[1].ln();
        }
        v
    }
}
