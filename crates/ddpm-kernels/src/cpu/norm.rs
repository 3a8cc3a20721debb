//! RMSNorm over channels, with the FiLM scale-shift and SiLU that follow it in every U-Net block,
//! forward and backward in one pass each (Burn runs about a dozen element-wise passes each way).
//!
//! For `x[B, C, S]`, gain `g[C]`, `scale[B, C]` and `shift[B, C]`:
//!
//! ```text
//! r[b, s] = 1 / max(sqrt(sum_c x[b, c, s]^2), eps)
//! u = x r g sqrt(C)          (the reference's RMSNorm: F.normalize(x, dim=1) * g * sqrt(C))
//! v = u (1 + scale) + shift
//! y = v sigmoid(v)           (or y = v without the SiLU)
//! ```

use rayon::prelude::*;

use super::per_task;

/// `F.normalize`'s floor on the norm.
pub const NORM_EPS: f32 = 1e-12;

/// Sizes of one call: `batch x channels x pixels` (all spatial dimensions flattened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormShape {
    pub batch: usize,
    pub channels: usize,
    pub pixels: usize,
}

/// The inputs of one call. `scale` and `shift` are `[B, C]`; `None` means zeros.
#[derive(Clone, Copy)]
pub struct NormInputs<'a> {
    pub x: &'a [f32],
    pub g: &'a [f32],
    pub scale: Option<&'a [f32]>,
    pub shift: Option<&'a [f32]>,
    pub silu: bool,
    pub shape: NormShape,
}

/// Pixels per task: a block of every channel's values stays in L2 between the two passes.
const BLOCK: usize = 256;

/// `exp(x)` to about 2 ulp in straight-line code that vectorises (libm's `expf` does not): `2^n
/// e^r` with `n = round(x / ln 2)`, `|r| <= ln 2 / 2`, and a degree-6 Taylor polynomial for `e^r`.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // `n` as an integer, read from the low mantissa bits of `shifted` (whose exponent is that of
    // ROUND): `n as i32` is a saturating cast, which LLVM turns into one scalar conversion per lane
    // and made the whole loop scalar. A NaN `x` gives a NaN `p`, so the result stays NaN.
    let k = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    p * f32::from_bits((k.wrapping_add(127) << 23) as u32)
}

/// `1 / (1 + e^-v)` on [`fast_exp`].
#[inline(always)]
pub(super) fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-v))
}

/// The `(b, first pixel, pixel count)` blocks the work is cut into.
fn blocks(shape: NormShape) -> Vec<(usize, usize, usize)> {
    (0..shape.batch).flat_map(|b| (0..shape.pixels).step_by(BLOCK).map(move |s| (b, s, BLOCK.min(shape.pixels - s)))).collect()
}

/// `1 / max(norm, eps)` for the pixels `[s0, s0 + len)` of image `b`.
fn inverse_norms(x: &[f32], shape: NormShape, b: usize, s0: usize, len: usize) -> Vec<f32> {
    let mut sum = vec![0.0f32; len];
    for c in 0..shape.channels {
        let row = &x[(b * shape.channels + c) * shape.pixels + s0..][..len];
        for (acc, v) in sum.iter_mut().zip(row) {
            *acc += v * v;
        }
    }
    sum.iter_mut().for_each(|v| *v = 1.0 / v.sqrt().max(NORM_EPS));
    sum
}

/// The forward pass: `y` shaped like `x`.
pub fn forward(inputs: NormInputs<'_>) -> Vec<f32> {
    let NormShape { batch, channels, pixels } = inputs.shape;
    assert_eq!(inputs.x.len(), batch * channels * pixels);
    let mut y = vec![0.0f32; inputs.x.len()];
    let ptr = SharedOut(y.as_mut_ptr());
    blocks(inputs.shape).into_par_iter().with_min_len(per_task(BLOCK.min(pixels) * channels)).for_each(|(b, s0, len)| forward_block(inputs, b, s0, len, ptr));
    y
}

per_simd_level! {
    /// One block of [`forward`]: pixels `[s0, s0 + len)` of image `b`, every channel. Compiled once per
    /// SIMD level and picked at run time, so that `fast_exp` vectorises on whatever CPU runs it.
    fn forward_block<'a>(inputs: NormInputs<'a>, b: usize, s0: usize, len: usize, y: SharedOut) {
        let NormInputs { x, g, scale, shift, silu, shape } = inputs;
        let NormShape { channels, pixels, .. } = shape;
        let root_c = (channels as f32).sqrt();
        let r = inverse_norms(x, shape, b, s0, len);
        for c in 0..channels {
            let gain = g[c] * root_c * (1.0 + scale.map_or(0.0, |s| s[b * channels + c]));
            let bias = shift.map_or(0.0, |s| s[b * channels + c]);
            let at = (b * channels + c) * pixels + s0;
            // SAFETY: the blocks cover disjoint `(b, pixel range)` pairs, so the ranges
            // `[at, at + len)` written by different tasks never overlap, and `y` outlives the loop.
            let out = unsafe { y.slice(at, len) };
            for ((o, v), r) in out.iter_mut().zip(&x[at..at + len]).zip(&r) {
                let v = v * r * gain + bias;
                *o = if silu { v * sigmoid(v) } else { v };
            }
        }
    }
}

/// Which gradients the backward pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormWanted {
    pub x: bool,
    pub g: bool,
    pub scale: bool,
    pub shift: bool,
}

/// Gradients of [`forward`] (`None` where not wanted).
#[derive(Debug, Default)]
pub struct NormGrads {
    pub x: Option<Vec<f32>>,
    pub g: Option<Vec<f32>>,
    pub scale: Option<Vec<f32>>,
    pub shift: Option<Vec<f32>>,
}

/// Per-block sums, added up after the parallel pass.
struct Partial {
    b: usize,
    g: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

/// The backward pass for the output gradient `dy`.
pub fn backward(inputs: NormInputs<'_>, dy: &[f32], wanted: NormWanted) -> NormGrads {
    let NormInputs { x, shape, .. } = inputs;
    let NormShape { batch, channels, pixels } = shape;
    assert_eq!(dy.len(), x.len());
    let mut dx = if wanted.x { vec![0.0f32; x.len()] } else { Vec::new() };
    let ptr = SharedOut(dx.as_mut_ptr());
    let partials: Vec<Partial> = blocks(shape)
        .into_par_iter()
        .with_min_len(per_task(BLOCK.min(pixels) * channels))
        .map(|(b, s0, len)| backward_block(inputs, dy, wanted, b, (s0, len), ptr))
        .collect();
    let mut grads = NormGrads::default();
    if wanted.g {
        let mut dg = vec![0.0f32; channels];
        for p in &partials {
            dg.iter_mut().zip(&p.g).for_each(|(d, v)| *d += v);
        }
        grads.g = Some(dg);
    }
    let per_image = |pick: fn(&Partial) -> &Vec<f32>| {
        let mut out = vec![0.0f32; batch * channels];
        for p in &partials {
            out[p.b * channels..][..channels].iter_mut().zip(pick(p)).for_each(|(d, v)| *d += v);
        }
        out
    };
    if wanted.scale {
        grads.scale = Some(per_image(|p| &p.scale));
    }
    if wanted.shift {
        grads.shift = Some(per_image(|p| &p.shift));
    }
    if wanted.x {
        grads.x = Some(dx);
    }
    grads
}

per_simd_level! {
    /// One block of [`backward`]: pixels `[s0, s0 + len)` of image `b`, every channel; writes that part
    /// of `dx` and returns the block's sums for the other gradients. Compiled per SIMD level.
    fn backward_block<'a>(inputs: NormInputs<'a>, dy: &'a [f32], wanted: NormWanted, b: usize, (s0, len): (usize, usize), ptr: SharedOut) -> Partial {
        let NormInputs { x, g, scale, shift, silu, shape } = inputs;
        let channels = shape.channels;
        let pixels = shape.pixels;
        let root_c = (channels as f32).sqrt();
        let r = inverse_norms(x, shape, b, s0, len);
        let mut part = Partial { b, g: vec![0.0; channels], scale: vec![0.0; channels], shift: vec![0.0; channels] };
        // sum_c dxhat xhat per pixel, for the normalisation's projection.
        let mut dot = vec![0.0f32; len];
        let (mut xhat, mut dv) = (vec![0.0f32; len], vec![0.0f32; len]);
        let mut scratch = if wanted.x { Vec::new() } else { vec![0.0f32; len] };
        for c in 0..channels {
            let film = 1.0 + scale.map_or(0.0, |s| s[b * channels + c]);
            let bias = shift.map_or(0.0, |s| s[b * channels + c]);
            let gain = g[c] * root_c;
            let at = (b * channels + c) * pixels + s0;
            for (((xh, d), (&xv, &ri)), &dyv) in xhat.iter_mut().zip(dv.iter_mut()).zip(x[at..at + len].iter().zip(&r)).zip(&dy[at..at + len]) {
                *xh = xv * ri;
                let v = *xh * gain * film + bias;
                *d = if silu {
                    let sig = sigmoid(v);
                    dyv * sig * (1.0 + v * (1.0 - sig))
                } else {
                    dyv
                };
            }
            let (sum_dv, sum_dv_xhat) = (lane_sum(&dv), lane_dot(&dv, &xhat));
            part.shift[c] = sum_dv;
            part.scale[c] = sum_dv_xhat * gain;
            part.g[c] = sum_dv_xhat * film * root_c;
            // SAFETY: as in `forward`, blocks write disjoint ranges of `dx` (and only when
            // `wanted.x`, when `dx` holds every value).
            let out = if wanted.x { unsafe { ptr.slice(at, len) } } else { &mut scratch[..] };
            let k = film * gain;
            for (((o, dt), &d), &xh) in out.iter_mut().zip(dot.iter_mut()).zip(&dv).zip(&xhat) {
                *o = d * k;
                *dt += *o * xh;
            }
        }
        if wanted.x {
            for c in 0..channels {
                let at = (b * channels + c) * pixels + s0;
                // SAFETY: the same disjoint range this task wrote above.
                let out = unsafe { ptr.slice(at, len) };
                for (((o, &xv), &ri), &dt) in out.iter_mut().zip(&x[at..at + len]).zip(&r).zip(&dot) {
                    // Where the norm was clamped to eps, r is a constant and has no projection.
                    let projection = if ri < 1.0 / NORM_EPS { xv * ri * dt } else { 0.0 };
                    *o = ri * (*o - projection);
                }
            }
        }
        part
    }
}

/// Lanes of the vectorised sums: independent partial sums the compiler can keep in one register
/// each (a single running `f32` sum is a serial dependency it may not reorder).
pub(super) const LANES: usize = 16;

/// `sum_i a_i`, in [`LANES`] interleaved partial sums.
#[inline(always)]
pub(super) fn lane_sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (s, v) in acc.iter_mut().zip(chunk) {
            *s += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `sum_i a_i b_i`, in [`LANES`] interleaved partial sums.
#[inline(always)]
pub(super) fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// A pointer into an output buffer that parallel tasks write in disjoint ranges.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: the pointer is only dereferenced through `slice`, whose callers guarantee that ranges
// handed to different threads do not overlap and that the buffer outlives the parallel loop.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `[at, at + len)` must be inside the buffer and written by no other task at the same time.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, at: usize, len: usize) -> &mut [f32] {
        // SAFETY: the caller's contract above.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}
