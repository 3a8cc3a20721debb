//! Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased
//! estimate of the squared maximum mean discrepancy with the cubic polynomial kernel
//!
//! ```text
//! k(x, y) = (x.y / d + 1)^3
//! MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1))
//!           - 2 sum_{i, j} k(x_i, y_j) / (m n)
//! ```
//!
//! averaged over `subsets` random subsets of `subset_size` samples of each set (drawn without
//! replacement), as in the paper and torch-fidelity (defaults 100 subsets of 1000). The reported
//! spread is the population standard deviation of the subset estimates (`np.std`, as
//! torch-fidelity). The subsets come from a seeded ChaCha8 generator: the same seed gives the same
//! number, but not numpy's subsets.

use indicatif::ProgressBar;
use nalgebra::{DMatrix, DMatrixView};
use rand::SeedableRng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::features::{FeatureMatrix, FeatureScalar, gemm};

/// How KID is estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KidOptions {
    /// Number of random subsets averaged.
    pub subsets: usize,
    /// Samples drawn from each set per subset.
    pub subset_size: usize,
    /// Seed of the subset draws.
    pub seed: u64,
}

impl Default for KidOptions {
    /// 100 subsets of 1000 (torch-fidelity's and the paper's defaults), seed 0.
    fn default() -> Self {
        KidOptions { subsets: 100, subset_size: 1000, seed: 0 }
    }
}

/// KID: the mean and the standard deviation of the subset estimates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Kid {
    /// Mean of the unbiased MMD^2 estimates.
    pub mean: f64,
    /// Population standard deviation of the estimates (`np.std`).
    pub std: f64,
    /// Options used.
    #[serde(flatten)]
    pub options: KidOptions,
}

/// [`Kid`] between `real` and `fake` features (row-major, `dim` values per row). Errors when the
/// dimensions do not fit, `subsets` or `subset_size < 2`, `subset_size` exceeds a set's size, or a
/// value is not finite.
pub fn kid<T: FeatureScalar>(real: &[T], fake: &[T], dim: usize, options: &KidOptions) -> Result<Kid> {
    kid_with_progress(real, fake, dim, options, &ProgressBar::hidden())
}

/// [`kid`], advancing `progress` by one per subset (its length is set here).
pub fn kid_with_progress<T: FeatureScalar>(
    real: &[T],
    fake: &[T],
    dim: usize,
    options: &KidOptions,
    progress: &ProgressBar,
) -> Result<Kid> {
    let real = FeatureMatrix::new(real, dim, "real features")?;
    let fake = FeatureMatrix::new(fake, dim, "fake features")?;
    let KidOptions { subsets, subset_size, seed } = *options;
    if subsets == 0 {
        return Err(EvalError::input("kid: subsets is 0; use at least 1 (100 is the usual)"));
    }
    if subset_size < 2 {
        return Err(EvalError::input(format!("kid: subset_size is {subset_size}; the unbiased estimate needs at least 2")));
    }
    for (set, what) in [(&real, "real"), (&fake, "fake")] {
        if subset_size > set.rows() {
            return Err(EvalError::input(format!(
                "kid: subset_size {subset_size} is larger than the {} {what} samples; use a subset size <= {}",
                set.rows(),
                set.rows()
            )));
        }
    }
    // Draw every subset first, in order, so that the result does not depend on the thread count.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let draws: Vec<(Vec<usize>, Vec<usize>)> = (0..subsets)
        .map(|_| {
            let real_rows = index::sample(&mut rng, real.rows(), subset_size).into_vec();
            let fake_rows = index::sample(&mut rng, fake.rows(), subset_size).into_vec();
            (real_rows, fake_rows)
        })
        .collect();
    progress.set_length(subsets as u64);
    let estimates: Vec<f64> = draws
        .par_iter()
        .map(|(real_rows, fake_rows)| {
            let x = gather_rows(&real, real_rows);
            let y = gather_rows(&fake, fake_rows);
            let estimate = mmd2_unbiased(&x, &y, dim);
            progress.inc(1);
            estimate
        })
        .collect();
    let mean = estimates.iter().sum::<f64>() / subsets as f64;
    let variance = estimates.iter().map(|e| (e - mean) * (e - mean)).sum::<f64>() / subsets as f64;
    Ok(Kid { mean, std: variance.sqrt(), options: *options })
}

/// The unbiased MMD^2 with the cubic kernel `(x.y/d + 1)^3` between all of `x` and all of `y`
/// (row-major, `dim` values per row, at least 2 rows each) — one subset of [`kid`].
pub fn polynomial_mmd2_unbiased<T: FeatureScalar>(x: &[T], y: &[T], dim: usize) -> Result<f64> {
    let x = FeatureMatrix::new(x, dim, "first features")?;
    let y = FeatureMatrix::new(y, dim, "second features")?;
    if x.rows() < 2 || y.rows() < 2 {
        return Err(EvalError::input(format!(
            "the unbiased MMD needs at least 2 samples per set ({} and {} given)",
            x.rows(),
            y.rows()
        )));
    }
    Ok(mmd2_unbiased(x.values(), y.values(), dim))
}

fn gather_rows(features: &FeatureMatrix<'_>, rows: &[usize]) -> Vec<f64> {
    rows.iter().flat_map(|&i| features.row(i).iter().copied()).collect()
}

/// MMD^2_u of row-major `x` (`m x dim`) and `y` (`n x dim`), m, n >= 2.
fn mmd2_unbiased(x: &[f64], y: &[f64], dim: usize) -> f64 {
    let (m, n) = ((x.len() / dim) as f64, (y.len() / dim) as f64);
    let xx = kernel_sum(x, x, dim, true);
    let yy = kernel_sum(y, y, dim, true);
    let xy = kernel_sum(x, y, dim, false);
    xx / (m * (m - 1.0)) + yy / (n * (n - 1.0)) - 2.0 * xy / (m * n)
}

/// `sum_{i, j} (a_i.b_j / d + 1)^3`, leaving out `i == j` when `off_diagonal`.
fn kernel_sum(a: &[f64], b: &[f64], dim: usize, off_diagonal: bool) -> f64 {
    let (rows_a, rows_b) = (a.len() / dim, b.len() / dim);
    // Row-major data seen as A (rows_a x dim) and B^T (dim x rows_b): one gemm for all products.
    let a_view = DMatrixView::from_slice_with_strides(a, rows_a, dim, dim, 1);
    let b_transposed = DMatrixView::from_slice_with_strides(b, dim, rows_b, 1, dim);
    let mut products = DMatrix::zeros(rows_a, rows_b);
    gemm(&mut products, 1.0 / dim as f64, &a_view, &b_transposed, 0.0);
    let cube = |p: f64| (p + 1.0).powi(3);
    let total: f64 = products.iter().map(|&p| cube(p)).sum();
    if off_diagonal { total - products.diagonal().iter().map(|&p| cube(p)).sum::<f64>() } else { total }
}
