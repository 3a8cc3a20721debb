//! Inpainting with RePaint (Lugmayr et al. 2022): Algorithm 1 with the paper's time-travel
//! schedule. An unconditional model fills the unknown region of `x0_known` under a mask `m`
//! (1 = known) as follows; at each reverse step from timestep `t`:
//!
//! - known:   `x_{t-1}^k = sqrt(abar_{t-1}) x0 + sqrt(1 - abar_{t-1}) eps` (the data, noised afresh),
//!   and the data itself after the last step;
//! - unknown: `x_{t-1}^u ~ p(x_{t-1} | x_t)`, the model's ancestral DDPM step;
//! - `x_{t-1} = m x_{t-1}^k + (1 - m) x_{t-1}^u`.
//!
//! Resampling harmonises the two regions: the walk over timesteps ([`repaint_walk`]) goes down,
//! and at every `jump_length`-th timestep jumps back up `jump_length` steps, `resample - 1` times,
//! each up-step drawn from the forward process `x_{t+1} = sqrt(1 - beta_{t+1}) x_t +
//! sqrt(beta_{t+1}) z`. `resample = 1` is plain replacement (no time travel). The paper uses
//! `jump_length = 10`, `resample = 10`. (The reference package's `repaint` loop is not this
//! algorithm; this module follows the paper.)

use std::collections::HashMap;

use burn::tensor::Tensor;

use crate::denoiser::{Denoiser, DynDenoiser};
use crate::diffusion::GaussianDiffusion;
use crate::error::{Error, Result};
use crate::noise::NoiseSource;
use crate::sampler::{SampleOptions, StepInfo};
use crate::tensor::time_tensor;

/// RePaint's time travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RePaint {
    /// How far each jump goes back up, in timesteps. Paper: 10.
    pub jump_length: usize,
    /// How many times each jump point is passed going down (1: no resampling). Paper: 10.
    pub resample: usize,
}

impl Default for RePaint {
    fn default() -> Self {
        Self {
            jump_length: 10,
            resample: 10,
        }
    }
}

impl RePaint {
    fn check(&self) -> Result<()> {
        if self.jump_length == 0 {
            return Err(Error::invalid(
                "jump_length",
                0,
                "jumps go back at least 1 timestep (the paper uses 10)",
            ));
        }
        if self.resample == 0 {
            return Err(Error::invalid(
                "resample",
                0,
                "use at least 1 (1 turns resampling off; the paper uses 10)",
            ));
        }
        Ok(())
    }
}

/// The levels RePaint visits, from `num_timesteps - 1` (pure noise) to `-1` (data): consecutive
/// entries differ by one; a step down is a reverse (network) step, a step up a forward noising step.
/// Jump points are the timesteps `0, j, 2j, ..` below `num_timesteps - j`; each sends the walk back
/// up `j` levels `resample - 1` times.
pub fn repaint_walk(num_timesteps: usize, repaint: &RePaint) -> Result<Vec<i64>> {
    repaint.check()?;
    let j = repaint.jump_length;
    let mut jumps: HashMap<i64, usize> = (0..num_timesteps.saturating_sub(j))
        .step_by(j)
        .map(|t| (t as i64, repaint.resample - 1))
        .collect();
    let mut walk = Vec::new();
    let mut t = num_timesteps as i64;
    while t >= 1 {
        t -= 1;
        walk.push(t);
        if let Some(left) = jumps.get_mut(&t)
            && *left > 0
        {
            *left -= 1;
            for _ in 0..j {
                t += 1;
                walk.push(t);
            }
        }
    }
    walk.push(-1);
    Ok(walk)
}

/// What an inpainting run keeps: `x0` (in the model's range) where `mask` is 1. `mask` broadcasts
/// against `x0`, e.g. `[B, 1, H, W]`.
#[derive(Debug, Clone)]
pub struct Known<const D: usize> {
    pub x0: Tensor<D>,
    pub mask: Tensor<D>,
}

/// Inpaints `known.x0` where `known.mask` is 0, keeping it where the mask is 1, starting from
/// x_T, the first draw of `noise` (shaped as `known.x0`). Noise is then drawn in a fixed order
/// (the known region's noise, then the reverse step's, at each step down; one draw per step up),
/// so a run can be replayed. The callback sees every reverse step.
pub fn repaint<const D: usize, M, N, F>(
    diffusion: &GaussianDiffusion,
    model: &M,
    known: Known<D>,
    repaint: &RePaint,
    opts: &SampleOptions<D>,
    noise: &mut N,
    mut callback: F,
) -> Result<Tensor<D>>
where
    M: Denoiser<D>,
    N: NoiseSource,
    F: FnMut(&StepInfo<'_, D>),
{
    repaint_run(diffusion, &DynDenoiser(model), known, repaint, opts, noise, &mut callback)
}

/// [`repaint`]'s body, behind [`DynDenoiser`] (compiled once per rank and noise source).
fn repaint_run<const D: usize, N: NoiseSource>(
    diffusion: &GaussianDiffusion,
    model: &DynDenoiser<'_, D>,
    known: Known<D>,
    repaint: &RePaint,
    opts: &SampleOptions<D>,
    noise: &mut N,
    callback: &mut dyn FnMut(&StepInfo<'_, D>),
) -> Result<Tensor<D>> {
    let Known { x0: x0_known, mask } = known;
    let mut x_t = noise.normal_like(&x0_known)?;
    let walk = repaint_walk(diffusion.num_timesteps(), repaint)?;
    let total = walk.windows(2).filter(|w| w[1] < w[0]).count();
    let s = &diffusion.schedule;
    let b = x_t.dims()[0];
    let keep = mask.clone();
    let fill = mask.neg().add_scalar(1.0);
    let mut calls = diffusion.model_calls(model, &opts.cond);
    let mut index = 0;
    for pair in walk.windows(2) {
        let (from, to) = (pair[0], pair[1]);
        if to > from {
            let beta = s.betas[to as usize];
            x_t = x_t.clone().mul_scalar((1.0 - beta).sqrt())
                + noise.normal_like(&x_t)?.mul_scalar(beta.sqrt());
            continue;
        }
        let step = from as usize;
        let known = if to >= 0 {
            let t_prev = to as usize;
            x0_known.clone().mul_scalar(s.sqrt_alphas_cumprod[t_prev])
                + noise
                    .normal_like(&x_t)?
                    .mul_scalar(s.sqrt_one_minus_alphas_cumprod[t_prev])
        } else {
            x0_known.clone()
        };
        let t = vec![step; b];
        let out = calls.call_without_cfg_pp(x_t.clone(), time_tensor(&t, &x_t), "RePaint")?;
        let rev = diffusion.reverse_step(out, x_t.clone(), &t, opts.clip)?;
        let unknown = crate::sampler::ancestral_draw(&rev, step, noise)?;
        let next = known * keep.clone() + unknown * fill.clone();
        callback(&StepInfo {
            index,
            total,
            t: step,
            t_next: step.checked_sub(1),
            x_t: &x_t,
            pred_x0: &rev.pred_x0,
            x_next: &next,
        });
        index += 1;
        calls.remember(&rev.pred_x0);
        x_t = next;
    }
    Ok(x_t)
}
