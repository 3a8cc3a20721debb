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

use multiversion::multiversion;
use rayon::prelude::*;

use super::matmul::{MatRef, matmul};
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

/// Each row of `p` (rows of `width` values) replaced by `softmax(scale row)`, with libm's `exp`
/// (the same as Burn's softmax; the rows are short, so `exp` is not where the time goes).
#[multiversion(targets = "simd")]
fn softmax_rows(p: &mut [f32], width: usize, scale: f32) {
    for row in p.chunks_exact_mut(width) {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut sum = 0.0f32;
        for v in row.iter_mut() {
            *v = ((*v - max) * scale).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
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

/// `dp` (the gradient for `P`) becomes `scale P (dP - rowsum(P dP))`: the gradient for `Q K^T`.
#[multiversion(targets = "simd")]
fn softmax_jacobian(p: &[f32], dp: &mut [f32], width: usize, scale: f32) {
    for (p, dp) in p.chunks_exact(width).zip(dp.chunks_exact_mut(width)) {
        let dot: f32 = p.iter().zip(dp.iter()).map(|(a, b)| a * b).sum();
        for (g, &pv) in dp.iter_mut().zip(p) {
            *g = scale * pv * (*g - dot);
        }
    }
}
