//! Softmax attention, `O = softmax(scale Q K^T) V` per head, forward and backward in one call each
//! (Burn runs a product, a scaling, five softmax passes and a second product, each with its own
//! autodiff node and buffers).
//!
//! Per head, with `Q[N, D]`, `K[M, D]`, `V[M, E]` and the probabilities `P = softmax_rows(scale Q K^T)`:
//!
//! ```text
//! O  = P V
//! dV = P^T dO
//! dP = dO V^T
//! dS = P (dP - rowsum(P dP))       (element-wise; the softmax's Jacobian)
//! dQ = scale dS K
//! dK = scale dS^T Q
//! ```
//!
//! The backward pass recomputes `P` from `Q` and `K` rather than keeping it: one `N x M` product
//! per head against keeping every attention map of the step alive until the backward pass.
//!
//! Linear attention (the reference U-Net's outer stages) is here too: per head, with `Q[D, N]`,
//! `K[D, M]`, `V[E, M]` (channels first, as the network lays them out),
//!
//! ```text
//! Qs = scale softmax_columns(Q)     (over D, per query)
//! Ks = softmax_rows(K)              (over M, per channel)
//! C  = Ks V^T                       ([D, E])
//! O  = C^T Qs                       ([E, N])
//! ```
//!
//! and backward `dC = Qs dO^T`, `dQs = C dO`, `dKs = dC V`, `dV = dC^T Ks`, then each softmax's
//! Jacobian: `dK = Ks (dKs - rowsum(Ks dKs))`, `dQ = Qs (dQs - colsum(dQs Qs / scale))`.

use rayon::prelude::*;

use super::matmul::{MatRef, matmul};
use super::norm::{fast_exp, lane_sum};
use super::per_task;

/// Sizes of one call: `heads` independent problems (batch x heads), `n` queries, `m` keys, key
/// width `d`, value width `e`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub heads: usize,
    pub n: usize,
    pub m: usize,
    pub d: usize,
    pub e: usize,
}

/// `P = softmax_rows(scale Q K^T)` of one head into `p[N, M]`.
fn probabilities(q: &[f32], k: &[f32], s: AttentionShape, scale: f32, p: &mut [f32]) {
    matmul(p, MatRef::row_major(q, s.n, s.d), MatRef::row_major(k, s.m, s.d).t(), false);
    softmax_rows(p, s.m, scale);
}

per_simd_level! {
    /// Each row of `p` (rows of `width` values) replaced by `softmax(scale row)`, with [`fast_exp`]
    /// (libm's `expf` does not vectorise, and took a tenth of the attention's time).
    fn softmax_rows(p: &mut [f32], width: usize, scale: f32) {
        for row in p.chunks_exact_mut(width) {
            // Scaled first, so that the maximum taken is that of the softmax's input for any sign.
            row.iter_mut().for_each(|v| *v *= scale);
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            // The sum in a pass of its own: inside the exp loop its order keeps the loop scalar.
            row.iter_mut().for_each(|v| *v = fast_exp(*v - max));
            let inv = 1.0 / lane_sum(row);
            row.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

/// The forward pass: `O[heads, N, E]`.
pub fn forward(q: &[f32], k: &[f32], v: &[f32], s: AttentionShape, scale: f32) -> Vec<f32> {
    let AttentionShape { heads, n, m, d, e } = s;
    assert_eq!((q.len(), k.len(), v.len()), (heads * n * d, heads * m * d, heads * m * e), "attention: inputs do not match {s:?}");
    let mut out = vec![0.0f32; heads * n * e];
    if n * e == 0 {
        return out;
    }
    out.par_chunks_mut(n * e).enumerate().with_min_len(per_task(n * (m + e))).for_each(|(h, o)| {
        let mut p = vec![0.0f32; n * m];
        probabilities(&q[h * n * d..][..n * d], &k[h * m * d..][..m * d], s, scale, &mut p);
        matmul(o, MatRef::row_major(&p, n, m), MatRef::row_major(&v[h * m * e..][..m * e], m, e), false);
    });
    out
}

/// Gradients of [`forward`] for `dO`.
#[derive(Debug)]
pub struct AttentionGrads {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// The backward pass for the output gradient `d_out[heads, N, E]`.
pub fn backward(q: &[f32], k: &[f32], v: &[f32], d_out: &[f32], s: AttentionShape, scale: f32) -> AttentionGrads {
    let AttentionShape { heads, n, m, d, e } = s;
    assert_eq!(d_out.len(), heads * n * e, "attention: the output gradient does not match {s:?}");
    let (mut dq, mut dk, mut dv) = (vec![0.0f32; heads * n * d], vec![0.0f32; heads * m * d], vec![0.0f32; heads * m * e]);
    if heads * n * m > 0 {
        dq.par_chunks_mut(n * d.max(1))
            .zip(dk.par_chunks_mut(m * d.max(1)))
            .zip(dv.par_chunks_mut(m * e.max(1)))
            .enumerate()
            .with_min_len(per_task(n * m * 2 + (n + m) * (d + e)))
            .for_each(|(h, ((dq, dk), dv))| {
                let (q, k, v, d_out) = (&q[h * n * d..][..n * d], &k[h * m * d..][..m * d], &v[h * m * e..][..m * e], &d_out[h * n * e..][..n * e]);
                let mut p = vec![0.0f32; n * m];
                probabilities(q, k, s, scale, &mut p);
                matmul(dv, MatRef::row_major(&p, n, m).t(), MatRef::row_major(d_out, n, e), false);
                let mut ds = vec![0.0f32; n * m];
                matmul(&mut ds, MatRef::row_major(d_out, n, e), MatRef::row_major(v, m, e).t(), false);
                softmax_jacobian(&p, &mut ds, m, scale);
                matmul(dq, MatRef::row_major(&ds, n, m), MatRef::row_major(k, m, d), false);
                matmul(dk, MatRef::row_major(&ds, n, m).t(), MatRef::row_major(q, n, d), false);
            });
    }
    AttentionGrads { q: dq, k: dk, v: dv }
}

per_simd_level! {
    /// `dp` (the gradient for `P`) becomes `scale P (dP - rowsum(P dP))`: the gradient for `Q K^T`.
    fn softmax_jacobian(p: &[f32], dp: &mut [f32], width: usize, scale: f32) {
        for (p, dp) in p.chunks_exact(width).zip(dp.chunks_exact_mut(width)) {
            let dot: f32 = p.iter().zip(dp.iter()).map(|(a, b)| a * b).sum();
            for (g, &pv) in dp.iter_mut().zip(p) {
                *g = scale * pv * (*g - dot);
            }
        }
    }
}

/// Sizes of one linear-attention call: `heads` problems, key/query width `d`, `n` queries, `m`
/// keys, value width `e`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearShape {
    pub heads: usize,
    pub d: usize,
    pub n: usize,
    pub m: usize,
    pub e: usize,
}

per_simd_level! {
    /// Each column of `p[rows, cols]` replaced by `scale softmax(column)`.
    fn softmax_columns(p: &mut [f32], rows: usize, cols: usize, scale: f32) {
        let mut max = vec![f32::NEG_INFINITY; cols];
        for row in p.chunks_exact(cols) {
            max.iter_mut().zip(row).for_each(|(m, &v)| *m = m.max(v));
        }
        let mut sum = vec![0.0f32; cols];
        for row in p.chunks_exact_mut(cols) {
            for ((v, s), &m) in row.iter_mut().zip(sum.iter_mut()).zip(&max) {
                *v = fast_exp(*v - m);
                *s += *v;
            }
        }
        sum.iter_mut().for_each(|s| *s = scale / *s);
        for row in p.chunks_exact_mut(cols).take(rows) {
            row.iter_mut().zip(&sum).for_each(|(v, s)| *v *= s);
        }
    }
}

/// `Qs`, `Ks` and `C` of one head (see the module doc).
fn linear_parts(q: &[f32], k: &[f32], v: &[f32], s: LinearShape, scale: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let LinearShape { d, n, m, e, .. } = s;
    let mut qs = q.to_vec();
    softmax_columns(&mut qs, d, n, scale);
    let mut ks = k.to_vec();
    softmax_rows(&mut ks, m, 1.0);
    let mut c = vec![0.0f32; d * e];
    matmul(&mut c, MatRef::row_major(&ks, d, m), MatRef::row_major(v, e, m).t(), false);
    (qs, ks, c)
}

/// Linear attention forward: `O[heads, E, N]` from `Q[heads, D, N]`, `K[heads, D, M]`, `V[heads, E, M]`.
pub fn linear_forward(q: &[f32], k: &[f32], v: &[f32], s: LinearShape, scale: f32) -> Vec<f32> {
    let LinearShape { heads, d, n, m, e } = s;
    assert_eq!((q.len(), k.len(), v.len()), (heads * d * n, heads * d * m, heads * e * m), "linear attention: inputs do not match {s:?}");
    let mut out = vec![0.0f32; heads * e * n];
    if e * n == 0 {
        return out;
    }
    out.par_chunks_mut(e * n).enumerate().with_min_len(per_task(d * (n + m) + e * (n + m))).for_each(|(h, o)| {
        let (qs, _, c) = linear_parts(&q[h * d * n..][..d * n], &k[h * d * m..][..d * m], &v[h * e * m..][..e * m], s, scale);
        matmul(o, MatRef::row_major(&c, d, e).t(), MatRef::row_major(&qs, d, n), false);
    });
    out
}

/// Linear attention backward for `d_out[heads, E, N]`: the gradients for `Q`, `K` and `V`.
pub fn linear_backward(q: &[f32], k: &[f32], v: &[f32], d_out: &[f32], s: LinearShape, scale: f32) -> AttentionGrads {
    let LinearShape { heads, d, n, m, e } = s;
    assert_eq!(d_out.len(), heads * e * n, "linear attention: the output gradient does not match {s:?}");
    let (mut dq, mut dk, mut dv) = (vec![0.0f32; heads * d * n], vec![0.0f32; heads * d * m], vec![0.0f32; heads * e * m]);
    if heads * d * n * m * e > 0 {
        dq.par_chunks_mut(d * n)
            .zip(dk.par_chunks_mut(d * m))
            .zip(dv.par_chunks_mut(e * m))
            .enumerate()
            .with_min_len(per_task(2 * (d * (n + m) + e * (n + m))))
            .for_each(|(h, ((dq, dk), dv))| {
                let (q, k, v, d_out) = (&q[h * d * n..][..d * n], &k[h * d * m..][..d * m], &v[h * e * m..][..e * m], &d_out[h * e * n..][..e * n]);
                let (qs, ks, c) = linear_parts(q, k, v, s, scale);
                let mut dc = vec![0.0f32; d * e];
                matmul(&mut dc, MatRef::row_major(&qs, d, n), MatRef::row_major(d_out, e, n).t(), false);
                matmul(dq, MatRef::row_major(&c, d, e), MatRef::row_major(d_out, e, n), false);
                matmul(dk, MatRef::row_major(&dc, d, e), MatRef::row_major(v, e, m), false);
                matmul(dv, MatRef::row_major(&dc, d, e).t(), MatRef::row_major(&ks, d, m), false);
                softmax_jacobian(&ks, dk, m, 1.0);
                column_softmax_jacobian(&qs, dq, n, scale);
            });
    }
    AttentionGrads { q: dq, k: dk, v: dv }
}

per_simd_level! {
    /// `dqs` (the gradient for `Qs = scale softmax_columns(Q)`) becomes the gradient for `Q`:
    /// `Qs (dQs - colsum(dQs Qs) / scale)`.
    fn column_softmax_jacobian(qs: &[f32], dqs: &mut [f32], cols: usize, scale: f32) {
        let mut dot = vec![0.0f32; cols];
        for (row, grad) in qs.chunks_exact(cols).zip(dqs.chunks_exact(cols)) {
            dot.iter_mut().zip(row.iter().zip(grad)).for_each(|(acc, (a, b))| *acc += a * b);
        }
        let inv_scale = 1.0 / scale;
        for (row, grad) in qs.chunks_exact(cols).zip(dqs.chunks_exact_mut(cols)) {
            for ((g, &p), &t) in grad.iter_mut().zip(row).zip(&dot) {
                *g = p * (*g - t * inv_scale);
            }
        }
    }
}
