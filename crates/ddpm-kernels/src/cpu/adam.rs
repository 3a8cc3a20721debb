//! Adam / AdamW as one multithreaded pass over a parameter, its gradient and both moments
//! (Burn's Adam makes about thirteen single-threaded passes).
//!
//! With `t` the step number (from 1), as burn-optim computes it:
//!
//! ```text
//! m = b1 m + (1 - b1) g
//! v = b2 v + (1 - b2) g^2
//! p = p (1 - lr wd) - lr c m / (sqrt(v) + eps sqrt(1 - b2^t)),   c = sqrt(1 - b2^t) / (1 - b1^t)
//! ```

use rayon::prelude::*;

/// The per-step constants of one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub beta_1: f32,
    pub beta_2: f32,
    /// `lr c`: the step size with both bias corrections folded in.
    pub step: f32,
    /// `eps sqrt(1 - b2^t)`.
    pub eps_hat: f32,
    /// `1 - lr wd` (decoupled weight decay; 1 without).
    pub decay: f32,
}

impl AdamStep {
    /// The constants of step `t` (1-based) for learning rate `lr`.
    pub fn new(lr: f64, beta_1: f32, beta_2: f32, epsilon: f32, weight_decay: f32, t: usize) -> Self {
        let t = t as i32;
        let bias_2 = (1.0 - beta_2.powi(t)).sqrt();
        let correction = bias_2 / (1.0 - beta_1.powi(t));
        Self { beta_1, beta_2, step: (lr as f32) * correction, eps_hat: epsilon * bias_2, decay: 1.0 - (lr as f32) * weight_decay }
    }
}

/// Values per task.
const CHUNK: usize = 1 << 14;

/// One update in place: `param`, `m` and `v` are overwritten.
pub fn adam_step(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], s: AdamStep) {
    let n = param.len();
    assert!(grad.len() == n && m.len() == n && v.len() == n, "adam_step: parameter, gradient and moments differ in length");
    let (b1, b2, c1, c2) = (s.beta_1, s.beta_2, 1.0 - s.beta_1, 1.0 - s.beta_2);
    param.par_chunks_mut(CHUNK).zip(grad.par_chunks(CHUNK)).zip(m.par_chunks_mut(CHUNK)).zip(v.par_chunks_mut(CHUNK)).for_each(
        |(((p, g), m), v)| {
            for i in 0..p.len() {
                let gi = g[i];
                let mi = b1 * m[i] + c1 * gi;
                let vi = b2 * v[i] + c2 * gi * gi;
                m[i] = mi;
                v[i] = vi;
                p[i] = p[i] * s.decay - s.step * mi / (vi.sqrt() + s.eps_hat);
            }
        },
    );
}

/// The EMA update in place, `ema = ema decay + online (1 - decay)`, in one multithreaded pass
/// (Burn's `ema * d + online * (1 - d)` is three single-threaded passes and two new buffers).
pub fn lerp_in_place(ema: &mut [f32], online: &[f32], decay: f32) {
    assert_eq!(ema.len(), online.len(), "lerp_in_place: the EMA and online values differ in length");
    let keep = 1.0 - decay;
    ema.par_chunks_mut(CHUNK).zip(online.par_chunks(CHUNK)).for_each(|(e, o)| {
        for (e, &o) in e.iter_mut().zip(o) {
            *e = *e * decay + o * keep;
        }
    });
}

/// `Σ x²`: f32 sums over [`CHUNK`]-value chunks in interleaved lanes, in parallel, added in
/// chunk order in f64 (a gradient's part of the global norm; `powi(2).sum()` writes a squared copy
/// first). The same result on every run and thread count.
pub fn sum_of_squares(x: &[f32]) -> f64 {
    let parts: Vec<f32> = x.par_chunks(CHUNK).map(|c| super::norm::lane_dot(c, c)).collect();
    parts.iter().map(|&p| f64::from(p)).sum()
}
