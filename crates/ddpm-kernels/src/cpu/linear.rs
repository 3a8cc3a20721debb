//! A linear layer over rows, `y[R, O] = x[R, I] w[I, O] + b[O]` (Burn's weight layout), forward
//! and backward on our GEMM: `dx = dy w^T`, `dw = x^T dy`, `db = sum_rows dy`. Burn's own Linear is
//! a matmul and a broadcast add, each with its autodiff node, on a GEMM that ran a 1000 x 128 x 128
//! product at about half the speed of ours.

use rayon::prelude::*;

use super::matmul::{MatRef, matmul, product_of};
use super::per_task;

/// Sizes of one call: `rows` input rows of `inputs` values, `outputs` values out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenseShape {
    pub rows: usize,
    pub inputs: usize,
    pub outputs: usize,
}

/// The forward pass: `y[rows, outputs]`.
pub fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, s: DenseShape) -> Vec<f32> {
    assert_eq!((x.len(), w.len()), (s.rows * s.inputs, s.inputs * s.outputs), "linear: operand sizes");
    let (x, w) = (MatRef::row_major(x, s.rows, s.inputs), MatRef::row_major(w, s.inputs, s.outputs));
    let Some(b) = bias else {
        return product_of(x, w);
    };
    assert_eq!(b.len(), s.outputs, "linear: bias size");
    // The bias rows, then the product added onto them: no zeroing pass.
    let mut y = Vec::with_capacity(s.rows * s.outputs);
    (0..s.rows).for_each(|_| y.extend_from_slice(b));
    matmul(&mut y, x, w, true);
    y
}

/// Which gradients the backward pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearWanted {
    pub input: bool,
    pub weight: bool,
    pub bias: bool,
}

/// Gradients of [`forward`] (`None` where not wanted).
#[derive(Debug, Default)]
pub struct LinearGrads {
    pub input: Option<Vec<f32>>,
    pub weight: Option<Vec<f32>>,
    pub bias: Option<Vec<f32>>,
}

/// The backward pass for the output gradient `dy[rows, outputs]`.
pub fn backward(x: &[f32], w: &[f32], dy: &[f32], s: DenseShape, wanted: LinearWanted) -> LinearGrads {
    assert_eq!((x.len(), w.len(), dy.len()), (s.rows * s.inputs, s.inputs * s.outputs, s.rows * s.outputs), "linear: operand sizes");
    let dy_m = MatRef::row_major(dy, s.rows, s.outputs);
    let input = wanted.input.then(|| product_of(dy_m, MatRef::row_major(w, s.inputs, s.outputs).t()));
    let weight = wanted.weight.then(|| product_of(MatRef::row_major(x, s.rows, s.inputs).t(), dy_m));
    let bias = wanted.bias.then(|| column_sums(dy, s.outputs));
    LinearGrads { input, weight, bias }
}

/// `sum_r m[r, c]` for each column `c` of a row-major matrix `columns` wide.
fn column_sums(m: &[f32], columns: usize) -> Vec<f32> {
    if columns == 0 {
        return Vec::new();
    }
    m.par_chunks(columns)
        .with_min_len(per_task(columns))
        .fold(|| vec![0.0f32; columns], |mut sum, row| {
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            sum
        })
        .reduce(|| vec![0.0f32; columns], |mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        })
}
