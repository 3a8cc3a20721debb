//! SiLU, `y = x sigmoid(x)`, with a vectorisable `exp`, multithreaded; its gradient is
//! `dy s (1 + x (1 - s))` with `s = sigmoid(x)`.

use rayon::prelude::*;

use super::norm::sigmoid;

/// Values per task.
const CHUNK: usize = 1 << 14;

pub fn silu_forward(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| forward_chunk(y, x));
    y
}

per_simd_level! {
    fn forward_chunk(y: &mut [f32], x: &[f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * sigmoid(x);
        }
    }
}

per_simd_level! {
    fn backward_chunk(dx: &mut [f32], x: &[f32], dy: &[f32]) {
        for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
            let s = sigmoid(x);
            *dx = dy * s * (1.0 + x * (1.0 - s));
        }
    }
}

pub fn silu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), dy.len());
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).zip(dy.par_chunks(CHUNK)).for_each(|((dx, x), dy)| backward_chunk(dx, x, dy));
    dx
}
