//! Precision and recall (Kynkaanniemi et al. 2019, "Improved precision and recall metric for
//! assessing generative models") and density and coverage (Naeem et al. 2020, "Reliable fidelity
//! and diversity metrics for generative models") — exactly the definitions of the `prdc` package
//! (clovaai/generative-evaluation-prdc, `compute_prdc`).
//!
//! With `r(x)` the distance from a sample to its k-th nearest neighbour in its own set (itself
//! excluded; `prdc` takes the (k+1)-th smallest distance with the zero self-distance included),
//! `B(x, r)` the open ball, real samples `X` (`N` of them) and fake samples `Y` (`M`):
//!
//! ```text
//! precision = (1/M) #{ j : Y_j in B(X_i, r(X_i)) for some i }
//! recall    = (1/N) #{ i : X_i in B(Y_j, r(Y_j)) for some j }
//! density   = (1/(k M)) sum_j #{ i : Y_j in B(X_i, r(X_i)) }
//! coverage  = (1/N) #{ i : some Y_j in B(X_i, r(X_i)) }      (min_j |X_i - Y_j| < r(X_i))
//! ```
//!
//! Distances are Euclidean, `sqrt(max(|a|^2 + |b|^2 - 2 a.b, 0))` in f64 as scikit-learn computes
//! them, in `256 x 1024` tiles from nalgebra's matrix product, parallel over row tiles with rayon:
//! memory stays at a few tiles per core, so 50 000 x 50 000 is fine (the full matrix would be 20 GB).

use indicatif::ProgressBar;
use nalgebra::DMatrix;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::features::{COL_TILE, FeatureMatrix, FeatureScalar, ROW_TILE, cross_products, distance_from_products, tiles};

/// The `k` of the papers and of `prdc`'s examples.
pub const DEFAULT_NEAREST_K: usize = 3;

/// Precision, recall, density and coverage of fake samples against real ones.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prdc {
    /// Share of fake samples inside some real sample's k-NN ball (fidelity).
    pub precision: f64,
    /// Share of real samples inside some fake sample's k-NN ball (diversity).
    pub recall: f64,
    /// Mean number of real k-NN balls holding a fake sample, divided by k (fidelity; 1 for matching
    /// distributions, can exceed 1).
    pub density: f64,
    /// Share of real samples whose k-NN ball holds at least one fake sample (diversity).
    pub coverage: f64,
    /// The k of the k-NN radii.
    pub nearest_k: usize,
    /// Number of real samples.
    pub real_count: usize,
    /// Number of fake samples.
    pub fake_count: usize,
}

/// [`Prdc`] of `real` and `fake` features (row-major, `dim` values per row) with k-NN radii of
/// `nearest_k` neighbours. Errors when the dimensions do not fit, a set has no more than
/// `nearest_k` samples, `nearest_k` is 0, or a value is not finite.
pub fn prdc<T: FeatureScalar>(real: &[T], fake: &[T], dim: usize, nearest_k: usize) -> Result<Prdc> {
    prdc_with_progress(real, fake, dim, nearest_k, &ProgressBar::hidden())
}

/// [`prdc`], advancing `progress` by one per distance tile (its length is set here).
pub fn prdc_with_progress<T: FeatureScalar>(
    real: &[T],
    fake: &[T],
    dim: usize,
    nearest_k: usize,
    progress: &ProgressBar,
) -> Result<Prdc> {
    let real = FeatureMatrix::new(real, dim, "real features")?;
    let fake = FeatureMatrix::new(fake, dim, "fake features")?;
    check_nearest_k(&real, nearest_k, "real features")?;
    check_nearest_k(&fake, nearest_k, "fake features")?;
    let (n, m) = (real.rows(), fake.rows());
    let tile_pairs = |rows: usize, cols: usize| (rows.div_ceil(ROW_TILE) * cols.div_ceil(COL_TILE)) as u64;
    progress.set_length(tile_pairs(n, n) + tile_pairs(m, m) + tile_pairs(n, m));

    let real_norms = real.squared_norms();
    let fake_norms = fake.squared_norms();
    let real_radii = radii(&real, &real_norms, nearest_k, progress);
    let fake_radii = radii(&fake, &fake_norms, nearest_k, progress);
    let counts = count_ball_memberships(&real, &real_norms, &real_radii, &fake, &fake_norms, &fake_radii, progress);

    let fakes_in_real_balls = counts.real_balls_per_fake.iter().filter(|&&c| c > 0).count();
    let memberships: u64 = counts.real_balls_per_fake.iter().map(|&c| u64::from(c)).sum();
    Ok(Prdc {
        precision: fakes_in_real_balls as f64 / m as f64,
        recall: counts.reals_in_fake_balls as f64 / n as f64,
        density: memberships as f64 / (nearest_k as f64 * m as f64),
        coverage: counts.reals_covered as f64 / n as f64,
        nearest_k,
        real_count: n,
        fake_count: m,
    })
}

/// The distance from every row of `features` to its `nearest_k`-th nearest other row (`prdc`'s
/// `compute_nearest_neighbour_distances`).
pub fn nearest_neighbour_radii<T: FeatureScalar>(features: &[T], dim: usize, nearest_k: usize) -> Result<Vec<f64>> {
    let features = FeatureMatrix::new(features, dim, "features")?;
    check_nearest_k(&features, nearest_k, "features")?;
    Ok(radii(&features, &features.squared_norms(), nearest_k, &ProgressBar::hidden()))
}

fn check_nearest_k(features: &FeatureMatrix<'_>, nearest_k: usize, what: &str) -> Result<()> {
    if nearest_k == 0 {
        return Err(EvalError::input("nearest_k is 0; the k-NN radius needs k >= 1 (the papers use 3 or 5)"));
    }
    if features.rows() <= nearest_k {
        return Err(EvalError::input(format!(
            "{what}: {} samples, but the {nearest_k}-th nearest neighbour needs at least {}; use more samples or a smaller k",
            features.rows(),
            nearest_k + 1
        )));
    }
    Ok(())
}

/// k-NN radii: per row, the `k` smallest distances to the other rows are kept sorted while the
/// column tiles stream by; the radius is the largest of them.
fn radii(features: &FeatureMatrix<'_>, norms: &[f64], k: usize, progress: &ProgressBar) -> Vec<f64> {
    let n = features.rows();
    let column_tiles = tiles(n, COL_TILE);
    tiles(n, ROW_TILE)
        .into_par_iter()
        .flat_map_iter(|rows| {
            let mut nearest = vec![f64::INFINITY; rows.len() * k];
            let mut products = DMatrix::zeros(0, 0);
            for columns in &column_tiles {
                cross_products(features, rows.clone(), features, columns.clone(), &mut products);
                for (local, i) in rows.clone().enumerate() {
                    let best = &mut nearest[local * k..(local + 1) * k];
                    let dots = products.column(local);
                    for (j, &dot) in columns.clone().zip(dots.iter()) {
                        if j == i {
                            continue;
                        }
                        let distance = distance_from_products(norms[i], norms[j], dot);
                        if distance < best[k - 1] {
                            // Insert into the sorted k smallest.
                            let at = best.partition_point(|&b| b <= distance);
                            best.copy_within(at..k - 1, at + 1);
                            best[at] = distance;
                        }
                    }
                }
                progress.inc(1);
            }
            nearest.chunks_exact(k).map(|best| best[k - 1]).collect::<Vec<_>>()
        })
        .collect()
}

/// What the real x fake distances say, gathered per real row tile and summed.
struct BallCounts {
    /// For each fake sample, the number of real k-NN balls it lies in.
    real_balls_per_fake: Vec<u32>,
    /// Real samples inside at least one fake k-NN ball.
    reals_in_fake_balls: usize,
    /// Real samples whose k-NN ball holds at least one fake sample.
    reals_covered: usize,
}

fn count_ball_memberships(
    real: &FeatureMatrix<'_>,
    real_norms: &[f64],
    real_radii: &[f64],
    fake: &FeatureMatrix<'_>,
    fake_norms: &[f64],
    fake_radii: &[f64],
    progress: &ProgressBar,
) -> BallCounts {
    let m = fake.rows();
    let column_tiles = tiles(m, COL_TILE);
    let empty = || BallCounts { real_balls_per_fake: vec![0; m], reals_in_fake_balls: 0, reals_covered: 0 };
    tiles(real.rows(), ROW_TILE)
        .into_par_iter()
        .fold(empty, |mut counts, rows| {
            let mut in_fake_ball = vec![false; rows.len()];
            let mut covered = vec![false; rows.len()];
            let mut products = DMatrix::zeros(0, 0);
            for columns in &column_tiles {
                cross_products(real, rows.clone(), fake, columns.clone(), &mut products);
                for (local, i) in rows.clone().enumerate() {
                    let dots = products.column(local);
                    for (j, &dot) in columns.clone().zip(dots.iter()) {
                        let distance = distance_from_products(real_norms[i], fake_norms[j], dot);
                        if distance < real_radii[i] {
                            counts.real_balls_per_fake[j] += 1;
                            covered[local] = true;
                        }
                        if distance < fake_radii[j] {
                            in_fake_ball[local] = true;
                        }
                    }
                }
                progress.inc(1);
            }
            counts.reals_in_fake_balls += in_fake_ball.iter().filter(|&&b| b).count();
            counts.reals_covered += covered.iter().filter(|&&b| b).count();
            counts
        })
        .reduce(empty, |mut a, b| {
            a.real_balls_per_fake.iter_mut().zip(&b.real_balls_per_fake).for_each(|(x, y)| *x += y);
            a.reals_in_fake_balls += b.reals_in_fake_balls;
            a.reals_covered += b.reals_covered;
            a
        })
}
