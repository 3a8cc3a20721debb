//! Timings of the feature-space metrics at FID scale, on random features:
//!
//! - statistics (mean, covariance) of 10 000 x 2048 features, twice, and of 50 000 x 2048 once;
//! - the Frechet distance between two 2048-d statistics, by the default (Cholesky) route and by
//!   the eigen route (`sqrt(S1) S2 sqrt(S1)`) that singular covariances take;
//! - precision/recall/density/coverage on 10 000 real x 10 000 fake 2048-d features (k = 3);
//! - KID, 100 subsets of 1000.
//!
//! ```text
//! cargo run --release -p ddpm-eval --example bench_metrics [-- ROWS DIM]
//! ```
//!
//! `bench_metrics.py` next to this file times the same computations with numpy/scipy
//! (pytorch-fid's `calculate_frechet_distance`) and the `prdc` package.

use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ddpm_eval::frechet::{FeatureStats, frechet_terms, trace_sqrt_product_eigen};
use ddpm_eval::kid::{KidOptions, kid};
use ddpm_eval::prdc::prdc;

/// `rows x dim` features like Inception pool features: non-negative, mean ~0.5, with a per-set
/// offset so the two sets differ.
fn features(rows: usize, dim: usize, offset: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * dim).map(|i| rng.random::<f32>() + offset * ((i % dim) as f32 / dim as f32)).collect()
}

fn timed<T>(label: &str, work: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let result = work();
    println!("{label:<52} {:>8.2} s", start.elapsed().as_secs_f64());
    result
}

fn main() -> ddpm_eval::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("ROWS and DIM are whole numbers"));
    let rows = args.next().unwrap_or(10_000);
    let dim = args.next().unwrap_or(2048);
    println!("{} threads; {rows} x {dim} features per set", rayon::current_num_threads());

    let real = features(rows, dim, 0.0, 1);
    let fake = features(rows, dim, 0.02, 2);
    let real_stats = timed(&format!("stats of {rows} x {dim} (real)"), || FeatureStats::from_features(&real, rows, dim))?;
    let fake_stats = timed(&format!("stats of {rows} x {dim} (fake)"), || FeatureStats::from_features(&fake, rows, dim))?;
    let terms = timed("Frechet distance (default route)", || frechet_terms(&real_stats, &fake_stats))?;
    println!("  FID {:.6} via {:?}", terms.distance(), terms.method);
    let (s1, s2) = (real_stats.sigma_matrix()?, fake_stats.sigma_matrix()?);
    let eigen_trace = timed("Frechet distance, eigen route (sqrt(S1) S2 sqrt(S1))", || trace_sqrt_product_eigen(&s1, &s2));
    let eigen_distance = terms.mean_term + terms.trace_a + terms.trace_b - 2.0 * eigen_trace;
    println!("  FID {eigen_distance:.6} (relative difference {:.1e})", (eigen_distance - terms.distance()).abs() / terms.distance());

    let result = timed(&format!("PRDC {rows} x {rows} x {dim}, k = 3"), || prdc(&real, &fake, dim, 3))?;
    println!(
        "  precision {:.4} recall {:.4} density {:.4} coverage {:.4}",
        result.precision, result.recall, result.density, result.coverage
    );
    let options = KidOptions { subset_size: KidOptions::default().subset_size.min(rows), ..KidOptions::default() };
    let result = timed(&format!("KID, {} subsets of {}", options.subsets, options.subset_size), || kid(&real, &fake, dim, &options))?;
    println!("  KID {:.6} ± {:.6}", result.mean, result.std);
    drop((real, fake));

    let big_rows = 5 * rows;
    let big = features(big_rows, dim, 0.0, 3);
    timed(&format!("stats of {big_rows} x {dim}"), || FeatureStats::from_features(&big, big_rows, dim))?;
    Ok(())
}
