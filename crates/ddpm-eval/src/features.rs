//! Feature matrices as the metrics see them — `rows x dim` values, row-major, in f64 — and the
//! tiled matrix product that the distance- and kernel-based metrics are built on.
//!
//! The metrics accept `f32` (what a network produces) or `f64` features; both are checked here
//! once (shape, finiteness) and seen as f64, because the quantities built from them
//! (`|a|^2 + |b|^2 - 2 a.b`, covariances, cubic kernels) lose too many digits in f32.

use std::borrow::Cow;
use std::ops::Range;

use nalgebra::{DMatrix, DMatrixView, Dyn, Matrix, Storage, StorageMut};
use rayon::prelude::*;

use crate::error::{EvalError, Result};

/// Rows of the left operand per parallel task in the tiled products: small enough to balance
/// the work over the cores, large enough for the matrix product to run at full speed.
pub(crate) const ROW_TILE: usize = 256;
/// Rows of the right operand per tile: a `ROW_TILE x COL_TILE` f64 tile is 2 MiB.
pub(crate) const COL_TILE: usize = 1024;

/// A feature value type the metrics accept: `f32` or `f64`.
pub trait FeatureScalar: Copy + Send + Sync + Into<f64> + 'static {
    /// The values as f64: borrowed when they already are, widened otherwise.
    fn to_f64_slice(values: &[Self]) -> Cow<'_, [f64]>;
}

impl FeatureScalar for f64 {
    fn to_f64_slice(values: &[f64]) -> Cow<'_, [f64]> {
        Cow::Borrowed(values)
    }
}

impl FeatureScalar for f32 {
    fn to_f64_slice(values: &[f32]) -> Cow<'_, [f64]> {
        Cow::Owned(values.par_iter().map(|&v| f64::from(v)).collect())
    }
}

/// A checked row-major `rows x dim` feature matrix in f64 (borrowed when the input was f64).
#[derive(Debug, Clone)]
pub struct FeatureMatrix<'a> {
    values: Cow<'a, [f64]>,
    rows: usize,
    dim: usize,
}

impl<'a> FeatureMatrix<'a> {
    /// Sees `values` as rows of `dim` values. `what` names the matrix in errors ("real features").
    ///
    /// Errors when `dim` is 0, when the length is not a whole, non-zero number of rows, or when a
    /// value is NaN or infinite.
    pub fn new<T: FeatureScalar>(values: &'a [T], dim: usize, what: &str) -> Result<Self> {
        if dim == 0 {
            return Err(EvalError::input(format!("{what}: the feature dimension is 0; pass the number of values per row")));
        }
        if values.is_empty() {
            return Err(EvalError::input(format!("{what}: no features (0 rows of {dim})")));
        }
        if !values.len().is_multiple_of(dim) {
            return Err(EvalError::input(format!(
                "{what}: {} values are not a whole number of rows of {dim}; check the feature dimension",
                values.len()
            )));
        }
        let values = T::to_f64_slice(values);
        if let Some(index) = values.par_iter().position_first(|v| !v.is_finite()) {
            return Err(EvalError::input(format!(
                "{what}: value {} at row {}, column {} is not finite; the features must be finite numbers",
                values[index],
                index / dim,
                index % dim
            )));
        }
        Ok(FeatureMatrix { rows: values.len() / dim, values, dim })
    }

    /// Like [`FeatureMatrix::new`], also checking that there are exactly `rows` rows.
    pub fn with_rows<T: FeatureScalar>(values: &'a [T], rows: usize, dim: usize, what: &str) -> Result<Self> {
        if values.len() != rows.saturating_mul(dim) {
            return Err(EvalError::input(format!(
                "{what}: {} values given for {rows} rows of {dim} ({} expected)",
                values.len(),
                rows.saturating_mul(dim)
            )));
        }
        Self::new(values, dim, what)
    }

    /// Number of rows (samples).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row (the feature dimension).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// All values, row-major.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// The rows in `rows`, row-major.
    pub fn row_block(&self, rows: Range<usize>) -> &[f64] {
        &self.values[rows.start * self.dim..rows.end * self.dim]
    }

    /// `|x_i|^2` for every row.
    pub fn squared_norms(&self) -> Vec<f64> {
        self.values.par_chunks(self.dim).map(|row| row.iter().map(|v| v * v).sum()).collect()
    }
}

/// Splits `0..count` into consecutive ranges of at most `tile` elements.
pub(crate) fn tiles(count: usize, tile: usize) -> Vec<Range<usize>> {
    (0..count).step_by(tile).map(|start| start..(start + tile).min(count)).collect()
}

/// Dot products of two row blocks: `out[(j, i)] = b_j . a_i` for `a_i` in `a_rows` and `b_j` in
/// `b_rows`, i.e. `out = B A^T` with shape `(b_rows.len(), a_rows.len())`.
///
/// `out` is column-major, so the products of one `a` row with all the `b` rows are contiguous.
/// The product is nalgebra's `gemm` on strided views of the row-major data (no copies); it runs
/// on one core — the callers parallelise over tiles.
pub(crate) fn cross_products(
    a: &FeatureMatrix<'_>,
    a_rows: Range<usize>,
    b: &FeatureMatrix<'_>,
    b_rows: Range<usize>,
    out: &mut DMatrix<f64>,
) {
    debug_assert_eq!(a.dim, b.dim);
    let dim = a.dim;
    let (a_count, b_count) = (a_rows.len(), b_rows.len());
    // Row-major `a_count x dim` data is the column-major `dim x a_count` matrix A^T.
    let a_transposed = DMatrixView::from_slice_with_strides(a.row_block(a_rows), dim, a_count, 1, dim);
    let b_view = DMatrixView::from_slice_with_strides(b.row_block(b_rows), b_count, dim, dim, 1);
    if out.shape() != (b_count, a_count) {
        *out = DMatrix::zeros(b_count, a_count);
    }
    gemm(out, 1.0, &b_view, &a_transposed, 0.0);
}

/// `out = alpha a b + beta out` with nalgebra's `gemm`, safe for any strides and sizes.
///
/// nalgebra hands products whose dimensions all exceed 5 to matrixmultiply, which takes any
/// strides. Smaller ones go through a gemv loop that, in nalgebra 0.35 (`axcpy_uninit`), walks
/// a strided column of `a` as if its span were its length — out of bounds for the row-major views
/// used here (a debug build stops on it). Those products are made on contiguous copies instead.
pub(crate) fn gemm<SO, SA, SB>(
    out: &mut Matrix<f64, Dyn, Dyn, SO>,
    alpha: f64,
    a: &Matrix<f64, Dyn, Dyn, SA>,
    b: &Matrix<f64, Dyn, Dyn, SB>,
    beta: f64,
) where
    SO: StorageMut<f64, Dyn, Dyn>,
    SA: Storage<f64, Dyn, Dyn>,
    SB: Storage<f64, Dyn, Dyn>,
{
    /// nalgebra's `SMALL_DIM` in `gemm_uninit`.
    const NALGEBRA_SMALL_DIM: usize = 5;
    let small = [out.nrows(), out.ncols(), a.nrows(), a.ncols()].into_iter().any(|n| n <= NALGEBRA_SMALL_DIM);
    let contiguous_columns = out.strides().0 == 1 && a.strides().0 == 1;
    if small && !contiguous_columns {
        let product = a.clone_owned() * b.clone_owned();
        if beta == 0.0 {
            out.zip_apply(&product, |o, p| *o = alpha * p);
        } else {
            out.zip_apply(&product, |o, p| *o = alpha * p + beta * *o);
        }
    } else {
        out.gemm(alpha, a, b, beta);
    }
}

/// The Euclidean distance from `|a|^2`, `|b|^2` and `a.b`: `sqrt(max(|a|^2 + |b|^2 - 2 a.b, 0))`,
/// the expansion scikit-learn's `euclidean_distances` uses (round-off can make it slightly
/// negative for near-equal points, hence the clamp).
#[inline]
pub(crate) fn distance_from_products(a_norm_sq: f64, b_norm_sq: f64, dot: f64) -> f64 {
    (a_norm_sq + b_norm_sq - 2.0 * dot).max(0.0).sqrt()
}
