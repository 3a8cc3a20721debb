//! GroupNorm with its per-channel affine and an optional SiLU, forward and backward in one pass
//! each (Burn runs about eight element-wise ops and reductions each way, and its autodiff has no
//! LayerNorm of its own). LayerNorm over the last dimension is the same computation: one group,
//! one pixel, the features as channels.
//!
//! For `x[B, C, S]` cut into `G` groups of `C / G` channels (one group's values are contiguous,
//! `L = S C / G` of them), gain `gamma[C]` and bias `beta[C]`:
//!
//! ```text
//! mean = sum_group x / L,   rstd = 1 / sqrt(sum_group (x - mean)^2 / L + eps)
//! xhat = (x - mean) rstd
//! v = xhat gamma[c] + beta[c]
//! y = v sigmoid(v)          (or y = v without the SiLU)
//! ```
//!
//! and backward, with `dv` the gradient reaching `v`:
//! `dx = rstd (dv gamma - mean_group(dv gamma) - xhat mean_group(dv gamma xhat))`,
//! `dgamma[c] = sum dv xhat`, `dbeta[c] = sum dv` (over the batch and the channel's pixels).

use rayon::prelude::*;

use super::norm::{LANES, lane_sum, sigmoid};
use super::per_task;

/// Sizes of one call: `batch x channels x pixels` (all spatial dimensions flattened), `groups`
/// dividing `channels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupShape {
    pub batch: usize,
    pub channels: usize,
    pub pixels: usize,
    pub groups: usize,
}

impl GroupShape {
    fn channels_per_group(&self) -> usize {
        self.channels / self.groups
    }

    /// Values of one group of one image.
    fn group_len(&self) -> usize {
        self.channels_per_group() * self.pixels
    }
}

/// The inputs of one call.
#[derive(Clone, Copy)]
pub struct GroupInputs<'a> {
    pub x: &'a [f32],
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub eps: f32,
    pub silu: bool,
    pub shape: GroupShape,
}

impl GroupInputs<'_> {
    fn check(&self) {
        let GroupShape { batch, channels, pixels, groups } = self.shape;
        assert!(groups > 0 && channels % groups == 0, "group norm: {groups} groups do not divide {channels} channels");
        assert_eq!(self.x.len(), batch * channels * pixels, "group norm: input size");
        assert_eq!((self.gamma.len(), self.beta.len()), (channels, channels), "group norm: affine sizes");
    }
}

/// Mean and `1 / sqrt(var + eps)` of one group's values, in two passes (the one-pass
/// `E[x^2] - E[x]^2` cancels badly for values far from zero).
#[inline(always)]
fn statistics(values: &[f32], eps: f32) -> (f32, f32) {
    let n = values.len() as f32;
    let mean = lane_sum(values) / n;
    let mut acc = [0.0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += (v - mean) * (v - mean);
        }
    }
    let var = (acc.iter().sum::<f32>() + tail) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// The forward pass: `y` shaped like `x`.
pub fn forward(inputs: GroupInputs<'_>) -> Vec<f32> {
    inputs.check();
    let len = inputs.shape.group_len();
    let mut y = vec![0.0f32; inputs.x.len()];
    if len == 0 {
        return y;
    }
    let run = per_task(len) * len;
    y.par_chunks_mut(run).zip(inputs.x.par_chunks(run)).enumerate().for_each(|(k, (y, x))| forward_groups(inputs, k * run / len, x, y));
    y
}

/// `v` for one value `x` of a channel with gain `g` and bias `b`. Centred before scaling: `x a +
/// (b - mean a)` cancels when x is close to the mean and `a = g rstd` is large (a one-feature
/// LayerNorm has `rstd = 1 / sqrt(eps)`).
#[inline(always)]
fn normalised(x: f32, (mean, rstd): (f32, f32), g: f32, b: f32) -> f32 {
    (x - mean) * rstd * g + b
}

/// The gradient reaching `v` (before the SiLU when there is one) from the output gradient `dy`.
#[inline(always)]
fn value_gradient(x: f32, dy: f32, (mean, rstd): (f32, f32), g: f32, b: f32, silu: bool) -> f32 {
    if silu {
        let v = normalised(x, (mean, rstd), g, b);
        let s = sigmoid(v);
        dy * s * (1.0 + v * (1.0 - s))
    } else {
        dy
    }
}

per_simd_level! {
    /// The groups `first..` of the batch that `x` and `y` hold, one after the other. Compiled once
    /// per SIMD level and picked at run time, so that `fast_exp` vectorises on whatever CPU runs it.
    /// (A task's groups go through one call: a call per LayerNorm row cost as much as the row.)
    fn forward_groups<'a>(inputs: GroupInputs<'a>, first: usize, x: &'a [f32], y: &'a mut [f32]) {
        let len = inputs.shape.group_len();
        for (k, (y, x)) in y.chunks_mut(len).zip(x.chunks(len)).enumerate() {
            forward_group(inputs, (first + k) % inputs.shape.groups, x, y);
        }
    }
}

/// One group of one image.
#[inline(always)]
fn forward_group(inputs: GroupInputs<'_>, group: usize, x: &[f32], y: &mut [f32]) {
    let stats = statistics(x, inputs.eps);
    let (cpg, pixels, silu) = (inputs.shape.channels_per_group(), inputs.shape.pixels, inputs.silu);
    let (gammas, betas) = (&inputs.gamma[group * cpg..][..cpg], &inputs.beta[group * cpg..][..cpg]);
    if pixels == 1 {
        // A LayerNorm row: the channels are the values, one loop over all of them vectorises.
        for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gammas).zip(betas) {
            *y = normalised(x, stats, g, b);
        }
    } else {
        for (k, (&g, &b)) in gammas.iter().zip(betas).enumerate() {
            for (y, &x) in y[k * pixels..][..pixels].iter_mut().zip(&x[k * pixels..][..pixels]) {
                *y = normalised(x, stats, g, b);
            }
        }
    }
    // A pass of its own over the (cached) group: inside the loops above the SiLU did not vectorise.
    if silu {
        y.iter_mut().for_each(|v| *v *= sigmoid(*v));
    }
}

/// Which gradients the backward pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupWanted {
    pub x: bool,
    pub gamma: bool,
    pub beta: bool,
}

/// Gradients of [`forward`] (`None` where not wanted).
#[derive(Debug, Default)]
pub struct GroupGrads {
    pub x: Option<Vec<f32>>,
    pub gamma: Option<Vec<f32>>,
    pub beta: Option<Vec<f32>>,
}

/// The backward pass for the output gradient `dy`.
pub fn backward(inputs: GroupInputs<'_>, dy: &[f32], wanted: GroupWanted) -> GroupGrads {
    inputs.check();
    assert_eq!(dy.len(), inputs.x.len(), "group norm: output gradient size");
    let channels = inputs.shape.channels;
    let len = inputs.shape.group_len();
    let mut dx = vec![0.0f32; inputs.x.len()];
    // Per-channel sums of dv xhat (first half) and dv (second half), one vector per rayon fold.
    let affine = if len == 0 {
        vec![0.0f32; 2 * channels]
    } else {
        let run = per_task(len) * len;
        dx.par_chunks_mut(run)
            .zip(inputs.x.par_chunks(run).zip(dy.par_chunks(run)))
            .enumerate()
            .fold(
                || vec![0.0f32; 2 * channels],
                |mut sums, (k, (dx, (x, dy)))| {
                    backward_groups(inputs, k * run / len, x, dy, dx, &mut sums);
                    sums
                },
            )
            .reduce(
                || vec![0.0f32; 2 * channels],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            )
    };
    let (dgamma, dbeta) = affine.split_at(channels);
    GroupGrads {
        x: wanted.x.then_some(dx),
        gamma: wanted.gamma.then(|| dgamma.to_vec()),
        beta: wanted.beta.then(|| dbeta.to_vec()),
    }
}

per_simd_level! {
    /// The groups `first..` that `x`, `dy` and `dx` hold, as [`forward_groups`]. Compiled per SIMD
    /// level.
    fn backward_groups<'a>(inputs: GroupInputs<'a>, first: usize, x: &'a [f32], dy: &'a [f32], dx: &'a mut [f32], sums: &'a mut [f32]) {
        let len = inputs.shape.group_len();
        for (k, ((dx, x), dy)) in dx.chunks_mut(len).zip(x.chunks(len)).zip(dy.chunks(len)).enumerate() {
            backward_group(inputs, (first + k) % inputs.shape.groups, x, dy, dx, sums);
        }
    }
}

/// One group of one image: writes its part of `dx` and adds its channels' affine gradients to
/// `sums` (`dgamma` then `dbeta`).
#[inline(always)]
fn backward_group(inputs: GroupInputs<'_>, group: usize, x: &[f32], dy: &[f32], dx: &mut [f32], sums: &mut [f32]) {
    let stats @ (mean, rstd) = statistics(x, inputs.eps);
    let GroupShape { channels, pixels, .. } = inputs.shape;
    let (cpg, silu) = (inputs.shape.channels_per_group(), inputs.silu);
    let (gammas, betas) = (&inputs.gamma[group * cpg..][..cpg], &inputs.beta[group * cpg..][..cpg]);
    let (dgamma, dbeta) = sums.split_at_mut(channels);
    let (dgamma, dbeta) = (&mut dgamma[group * cpg..][..cpg], &mut dbeta[group * cpg..][..cpg]);
    // First dx holds `dxhat = dv gamma`, the gradient reaching the normalised value.
    if pixels == 1 {
        for (((((dx, &x), &dy), (&g, &b)), dg), db) in dx.iter_mut().zip(x).zip(dy).zip(gammas.iter().zip(betas)).zip(dgamma.iter_mut()).zip(dbeta.iter_mut()) {
            let dv = value_gradient(x, dy, stats, g, b, silu);
            *dg += dv * (x - mean) * rstd;
            *db += dv;
            *dx = dv * g;
        }
    } else {
        for (k, ((&g, &b), (dg, db))) in gammas.iter().zip(betas).zip(dgamma.iter_mut().zip(dbeta.iter_mut())).enumerate() {
            let at = k * pixels..(k + 1) * pixels;
            let (x, dx) = (&x[at.clone()], &mut dx[at.clone()]);
            for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(&dy[at]) {
                *dx = value_gradient(x, dy, stats, g, b, silu);
            }
            *db += lane_sum(dx);
            *dg += centered_dot(dx, x, mean) * rstd;
            dx.iter_mut().for_each(|d| *d *= g);
        }
    }
    let n = x.len() as f32;
    let mean_dxhat = lane_sum(dx) / n;
    let mean_dxhat_xhat = centered_dot(dx, x, mean) * rstd / n;
    for (dx, &x) in dx.iter_mut().zip(x) {
        *dx = rstd * (*dx - mean_dxhat - (x - mean) * rstd * mean_dxhat_xhat);
    }
}

/// `sum_i a_i (b_i - center)`, in [`LANES`] interleaved partial sums (centred first, so that a
/// large mean does not cancel away the digits).
#[inline(always)]
fn centered_dot(a: &[f32], b: &[f32], center: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * (y - center)).sum();
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * (y - center);
        }
    }
    acc.iter().sum::<f32>() + tail
}
