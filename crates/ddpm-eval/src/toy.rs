//! Metrics for the 2-D toy sets: the energy distance to a reference sample (any set), and mode
//! coverage for the Gaussian mixtures (`gaussian8`, `gaussian25`), whose modes are known.

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::features::{FeatureMatrix, FeatureScalar};

/// A mixture of isotropic Gaussians with equal weights: its centres and the common standard deviation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeSet {
    /// Mode centres.
    pub centres: Vec<[f64; 2]>,
    /// Standard deviation of every component.
    pub std: f64,
}

impl ModeSet {
    /// `gaussian8`: 8 modes on the unit circle at angles `k pi / 4`, std 0.05.
    pub fn gaussian8() -> Self {
        let angle = |k: usize| k as f64 * std::f64::consts::FRAC_PI_4;
        ModeSet { centres: (0..8).map(|k| [angle(k).cos(), angle(k).sin()]).collect(), std: 0.05 }
    }

    /// `gaussian25`: the 5 x 5 grid `{-1, -0.5, 0, 0.5, 1}^2`, std 0.04.
    pub fn gaussian25() -> Self {
        let coordinate = |i: usize| i as f64 * 0.5 - 1.0;
        ModeSet { centres: (0..25).map(|k| [coordinate(k % 5), coordinate(k / 5)]).collect(), std: 0.04 }
    }

    /// The set called `name` (`gaussian8` or `gaussian25`).
    pub fn named(name: &str) -> Result<Self> {
        match name {
            "gaussian8" => Ok(Self::gaussian8()),
            "gaussian25" => Ok(Self::gaussian25()),
            other => Err(EvalError::input(format!(
                "unknown mode set `{other}`; mode coverage knows gaussian8 and gaussian25 (the other toy sets \
                 have no modes: use the energy distance to a reference sample)"
            ))),
        }
    }
}

/// How many modes the samples reach and how many samples are near a mode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeCoverage {
    /// Modes holding at least `min_count` samples within `3 std`.
    pub modes_hit: usize,
    /// Number of modes.
    pub modes_total: usize,
    /// `modes_hit / modes_total`.
    pub mode_coverage: f64,
    /// Share of samples within `3 std` of some mode ("high-quality" samples).
    pub near_mode_share: f64,
    /// Samples within `3 std` of each mode, in the order of the centres.
    pub counts: Vec<usize>,
    /// Samples a mode needs to count as hit.
    pub min_count: usize,
}

/// Mode coverage of 2-D `samples` (row-major `[N, 2]`) on `modes`: a sample belongs to the mode
/// it is nearest to if it lies within `3 std` of it (the modes of gaussian8/25 are further apart
/// than `6 std`, so this is unambiguous); a mode is hit when at least `min_count` samples belong
/// to it. `min_count = None` takes 1% of the expected count, `max(1, ceil(0.01 N / modes))`.
pub fn mode_coverage<T: FeatureScalar>(samples: &[T], modes: &ModeSet, min_count: Option<usize>) -> Result<ModeCoverage> {
    let samples = FeatureMatrix::new(samples, 2, "samples")?;
    if modes.centres.is_empty() {
        return Err(EvalError::input("mode coverage: the mode set has no centres"));
    }
    if !(modes.std.is_finite() && modes.std > 0.0) {
        return Err(EvalError::input(format!("mode coverage: mode std {} must be a positive number", modes.std)));
    }
    let n = samples.rows();
    // ceil(N / (100 modes)) in integers, so that round-off cannot move the threshold.
    let min_count = min_count.unwrap_or_else(|| n.div_ceil(100 * modes.centres.len()).max(1));
    let radius_sq = (3.0 * modes.std).powi(2);
    let mut counts = vec![0usize; modes.centres.len()];
    for i in 0..n {
        let point = samples.row(i);
        let (nearest, distance_sq) = modes
            .centres
            .iter()
            .map(|c| (point[0] - c[0]).powi(2) + (point[1] - c[1]).powi(2))
            .enumerate()
            .fold((0, f64::INFINITY), |best, (k, d)| if d < best.1 { (k, d) } else { best });
        if distance_sq <= radius_sq {
            counts[nearest] += 1;
        }
    }
    let modes_hit = counts.iter().filter(|&&c| c >= min_count).count();
    let near_mode = counts.iter().sum::<usize>();
    Ok(ModeCoverage {
        modes_hit,
        modes_total: counts.len(),
        mode_coverage: modes_hit as f64 / counts.len() as f64,
        near_mode_share: near_mode as f64 / n as f64,
        counts,
        min_count,
    })
}

/// The energy distance (Szekely & Rizzo) between samples `x` and `y` of dimension `dim`
/// (row-major), the V-statistic (all pairs, as `dcor.energy_distance`):
///
/// ```text
/// E(x, y) = 2/(n m) sum_{i,j} |x_i - y_j| - 1/n^2 sum_{i,i'} |x_i - x_i'| - 1/m^2 sum_{j,j'} |y_j - y_j'|
/// ```
///
/// It is >= 0, and 0 only for identical empirical distributions; `sqrt(E)` is what
/// `scipy.stats.energy_distance` returns for 1-D samples. O(n m) distances, parallel over rows.
pub fn energy_distance<T: FeatureScalar>(x: &[T], y: &[T], dim: usize) -> Result<f64> {
    let x = FeatureMatrix::new(x, dim, "samples")?;
    let y = FeatureMatrix::new(y, dim, "reference samples")?;
    let xy = mean_distance(&x, &y);
    let xx = mean_distance(&x, &x);
    let yy = mean_distance(&y, &y);
    Ok(2.0 * xy - xx - yy)
}

/// `1/(n m) sum_{i,j} |a_i - b_j|`, summed per row then over rows (f64 throughout).
fn mean_distance(a: &FeatureMatrix<'_>, b: &FeatureMatrix<'_>) -> f64 {
    let total: f64 = (0..a.rows())
        .into_par_iter()
        .map(|i| {
            let row = a.row(i);
            (0..b.rows())
                .map(|j| row.iter().zip(b.row(j)).map(|(p, q)| (p - q) * (p - q)).sum::<f64>().sqrt())
                .sum::<f64>()
        })
        .sum();
    total / (a.rows() as f64 * b.rows() as f64)
}
