//! The feature-space metrics against their reference implementations: pytorch-fid's
//! `calculate_frechet_distance` (scipy.linalg.sqrtm), numpy's mean/cov and `.npz` files, the `prdc`
//! package, torch-fidelity's KID estimator and scipy's energy distance — values from
//! tests/fixtures/make_metric_fixtures.py, stored in tests/fixtures/metrics/.

use std::path::{Path, PathBuf};
use std::process::Command;

use nalgebra::DMatrix;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use ddpm_eval::frechet::{
    FeatureStats, TraceSqrtMethod, frechet_distance, frechet_terms, symmetric_psd_sqrt, trace_sqrt_product_cholesky,
    trace_sqrt_product_eigen,
};
use ddpm_eval::kid::{KidOptions, kid, polynomial_mmd2_unbiased};
use ddpm_eval::prdc::{nearest_neighbour_radii, prdc};
use ddpm_eval::stats::{
    FeatureArray, load_or_compute_stats, read_features_npy, read_stats_npz, write_features_npy, write_stats_npz,
};
use ddpm_eval::toy::{ModeSet, energy_distance, mode_coverage};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics").join(name)
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-eval-metrics-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Array `key` of an `.npz` fixture as f64, with its shape.
fn npz_array(file: &str, key: &str) -> (Vec<u64>, Vec<f64>) {
    npz_array_at(&fixture(file), key)
}

/// Array `key` of an `.npz` file, read with the zip crate and npyz alone (not ddpm-eval's reader).
fn npz_array_at(path: &std::path::Path, key: &str) -> (Vec<u64>, Vec<f64>) {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let entry = archive.by_name(&format!("{key}.npy")).unwrap_or_else(|e| panic!("{} has no {key}: {e}", path.display()));
    let npy = npyz::NpyFile::new(entry).unwrap();
    (npy.shape().to_vec(), npy.into_vec::<f64>().unwrap())
}

/// Statistics from the arrays `mu_key` and `sigma_key` of a fixture.
fn npz_stats(file: &str, mu_key: &str, sigma_key: &str) -> FeatureStats {
    FeatureStats::new(npz_array(file, mu_key).1, npz_array(file, sigma_key).1, 0).unwrap()
}

fn relative_error(value: f64, reference: f64) -> f64 {
    (value - reference).abs() / reference.abs()
}

fn max_relative_error(values: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(values.len(), reference.len());
    let scale = reference.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    values.iter().zip(reference).map(|(v, r)| (v - r).abs()).fold(0.0, f64::max) / scale
}

// ---------------------------------------------------------------------------------------------
// Frechet distance

/// Checks one fixture case against pytorch-fid, with both trace-sqrt routes where they apply, and
/// returns the method the automatic choice took.
fn check_frechet_case(case: &str, a: &FeatureStats, b: &FeatureStats) -> TraceSqrtMethod {
    let reference = &expected()["frechet"][case];
    assert_eq!(reference["eps_retry"], false, "{case}: pytorch-fid retried with eps; the fixture no longer tests sqrtm itself");
    let reference = reference["pytorch_fid"].as_f64().unwrap();
    let terms = frechet_terms(a, b).unwrap();
    let error = relative_error(terms.distance(), reference);
    println!("{case}: ours {} pytorch-fid {reference} relative error {error:.2e} ({:?})", terms.distance(), terms.method);
    assert!(error < 1e-6, "{case}: {} vs pytorch-fid {reference}", terms.distance());
    assert_eq!(frechet_distance(a, b).unwrap(), terms.distance());

    // The eigen route always applies; the Cholesky one when the first covariance is positive definite.
    let (s1, s2) = (a.sigma_matrix().unwrap(), b.sigma_matrix().unwrap());
    let with_trace = |trace: f64| terms.mean_term + terms.trace_a + terms.trace_b - 2.0 * trace;
    let eigen = with_trace(trace_sqrt_product_eigen(&s1, &s2));
    assert!(relative_error(eigen, reference) < 1e-6, "{case} eigen route: {eigen} vs {reference}");
    if let Some(trace) = trace_sqrt_product_cholesky(&s1, &s2) {
        assert!(relative_error(with_trace(trace), reference) < 1e-6, "{case} Cholesky route: {} vs {reference}", with_trace(trace));
    }
    terms.method
}

#[test]
fn frechet_distance_matches_pytorch_fid_at_d64() {
    let a = npz_stats("frechet_d64.npz", "mu1", "sigma1");
    let b = npz_stats("frechet_d64.npz", "mu2", "sigma2");
    assert_eq!(check_frechet_case("d64", &a, &b), TraceSqrtMethod::Cholesky);
    assert_eq!(check_frechet_case("d64_swapped", &b, &a), TraceSqrtMethod::Cholesky);
}

#[test]
fn frechet_distance_of_near_singular_covariances_matches_pytorch_fid() {
    let a = npz_stats("frechet_d64.npz", "mu1", "sigma1");
    let b = npz_stats("frechet_d64.npz", "mu2", "sigma2");
    let (_, rank_deficient) = npz_array("frechet_singular.npz", "sigma_rank_deficient");
    let (_, ill_conditioned) = npz_array("frechet_singular.npz", "sigma_ill_conditioned");
    let low_rank = FeatureStats::new(a.mu.clone(), rank_deficient, 0).unwrap();
    // Rank 39 of 64: no Cholesky factor, so the eigen route with its clamped eigenvalues.
    assert_eq!(check_frechet_case("rank_deficient", &low_rank, &b), TraceSqrtMethod::Eigen);
    // The singular covariance second: the product is still singular, the first factor is not.
    assert_eq!(check_frechet_case("rank_deficient_second", &b, &low_rank), TraceSqrtMethod::Cholesky);
    let ill = FeatureStats::new(a.mu.clone(), ill_conditioned, 0).unwrap();
    check_frechet_case("ill_conditioned", &ill, &b);
}

#[test]
fn frechet_distance_of_identical_statistics_is_zero() {
    let a = npz_stats("frechet_d64.npz", "mu1", "sigma1");
    let terms = frechet_terms(&a, &a).unwrap();
    let pytorch_fid = expected()["frechet"]["same"]["pytorch_fid"].as_f64().unwrap();
    println!("identical: ours {} pytorch-fid {pytorch_fid} (tr S = {})", terms.distance(), terms.trace_a);
    assert!(terms.distance().abs() < 1e-10 * terms.trace_a, "{}", terms.distance());
}

#[test]
fn psd_square_root_squares_back_and_clamps_round_off() {
    let (_, sigma) = npz_array("frechet_singular.npz", "sigma_rank_deficient");
    let s = DMatrix::from_row_slice(64, 64, &sigma);
    let root = symmetric_psd_sqrt(&s);
    let error = (&root * &root - &s).amax() / s.amax();
    println!("|sqrt(S)^2 - S| / |S| = {error:.2e}");
    assert!(error < 1e-12);
    assert!(root.iter().all(|v| v.is_finite()));
}

#[test]
fn frechet_distance_errors_name_the_problem() {
    let a = npz_stats("frechet_d64.npz", "mu1", "sigma1");
    let small = FeatureStats::new(vec![0.0; 32], DMatrix::<f64>::identity(32, 32).as_slice().to_vec(), 0).unwrap();
    let message = frechet_distance(&a, &small).unwrap_err().to_string();
    assert!(message.contains("different dimensions (64 and 32)"), "{message}");

    let mut nan = a.clone();
    nan.sigma[3 * 64 + 5] = f64::NAN;
    let message = frechet_distance(&nan, &a).unwrap_err().to_string();
    assert!(message.contains("sigma[3, 5] = NaN is not finite"), "{message}");

    let mut asymmetric = a.clone();
    asymmetric.sigma[64] += 1.0;
    let message = frechet_distance(&a, &asymmetric).unwrap_err().to_string();
    assert!(message.contains("not symmetric"), "{message}");

    let message = FeatureStats::new(vec![0.0; 3], vec![1.0; 8], 0).unwrap_err().to_string();
    assert!(message.contains("sigma has 8 values but a 3 x 3 covariance has 9"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Statistics and files

#[test]
fn statistics_match_numpy_mean_and_cov() {
    let features = read_features_npy(&fixture("features.npy")).unwrap();
    assert_eq!((features.rows, features.dim), (200, 16));
    let stats = FeatureStats::from_features(&features.values, 200, 16).unwrap();
    let numpy = read_stats_npz(&fixture("features_stats.npz")).unwrap();
    let (mu_error, sigma_error) = (max_relative_error(&stats.mu, &numpy.mu), max_relative_error(&stats.sigma, &numpy.sigma));
    println!("f64 features: mu error {mu_error:.2e}, sigma error {sigma_error:.2e}");
    assert!(mu_error < 1e-13 && sigma_error < 1e-13);
    assert_eq!((stats.n, stats.d), (200, 16));

    // float32 features (widened exactly) against numpy's float32 statistics in a compressed npz.
    let features32 = read_features_npy(&fixture("features_f32.npy")).unwrap();
    let values32: Vec<f32> = features32.values.iter().map(|&v| v as f32).collect();
    assert!(features32.values.iter().zip(&values32).all(|(&w, &v)| w == f64::from(v)));
    let stats32 = FeatureStats::from_features(&values32, 200, 16).unwrap();
    let numpy32 = read_stats_npz(&fixture("features_stats_f32.npz")).unwrap();
    let (mu_error, sigma_error) = (max_relative_error(&stats32.mu, &numpy32.mu), max_relative_error(&stats32.sigma, &numpy32.sigma));
    println!("f32 features: mu error {mu_error:.2e}, sigma error {sigma_error:.2e} (numpy rounds to float32)");
    assert!(mu_error < 1e-6 && sigma_error < 1e-6);
}

#[test]
fn covariance_is_exact_over_block_and_tile_boundaries() {
    // 4500 rows (three row blocks of the covariance, the last partial) and d = 300 (three column
    // tiles, the last partial), against a direct two-pass sum.
    let (n, d) = (4500, 300);
    let values: Vec<f64> = (0..n * d).map(|i| ((i * 7919 % 1009) as f64 / 1009.0 - 0.5) + (i % d) as f64 * 0.01).collect();
    let stats = FeatureStats::from_features(&values, n, d).unwrap();
    let x = DMatrix::from_row_slice(n, d, &values);
    let mean = x.row_mean();
    let centred = DMatrix::from_fn(n, d, |i, j| x[(i, j)] - mean[j]);
    let direct = centred.transpose() * &centred / (n - 1) as f64;
    let error = max_relative_error(&stats.sigma, direct.as_slice());
    println!("covariance vs direct: {error:.2e}");
    assert!(error < 1e-12);
    assert!(max_relative_error(&stats.mu, mean.as_slice()) < 1e-13);
    // Symmetric exactly (mirrored, not recomputed).
    assert!((0..d).all(|i| (0..d).all(|j| stats.sigma[i * d + j] == stats.sigma[j * d + i])));
}

#[test]
fn statistics_round_trip_through_npz() {
    let dir = scratch("stats-round-trip");
    let features = read_features_npy(&fixture("features.npy")).unwrap();
    let stats = FeatureStats::from_features(&features.values, features.rows, features.dim).unwrap();
    let path = dir.join("stats.npz");
    write_stats_npz(&path, &stats).unwrap();
    assert_eq!(read_stats_npz(&path).unwrap(), stats);
    // Only the file itself is left (the temporary one was renamed).
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    // What a reader that knows only mu and sigma (pytorch-fid) sees.
    let (shape, sigma) = npz_array_at(&path, "sigma");
    assert_eq!(shape, [16, 16]);
    assert_eq!(sigma, stats.sigma);
    // Stats files and feature files both give statistics.
    assert_eq!(load_or_compute_stats(&path, None).unwrap(), stats);
    assert_eq!(load_or_compute_stats(&fixture("features.npy"), None).unwrap(), stats);
}

#[test]
fn features_round_trip_through_npy() {
    let dir = scratch("features-round-trip");
    let values: Vec<f32> = (0..35).map(|i| i as f32 * 0.25 - 3.0).collect();
    let path = dir.join("features.npy");
    write_features_npy(&path, &values, 7, 5).unwrap();
    let read = read_features_npy(&path).unwrap();
    assert_eq!((read.rows, read.dim), (7, 5));
    assert_eq!(read.values, values.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
    // numpy's Fortran-order files hold the same rows.
    let fortran = read_features_npy(&fixture("features_fortran.npy")).unwrap();
    let c_order = read_features_npy(&fixture("features.npy")).unwrap();
    assert_eq!((fortran.rows, fortran.dim), (20, 16));
    assert_eq!(fortran.values, c_order.values[..20 * 16]);
    let message = write_features_npy(&path, &values, 6, 5).unwrap_err().to_string();
    assert!(message.contains("35 values given for [6, 5] features (30 expected)"), "{message}");
}

#[test]
fn file_errors_name_the_file_and_the_key() {
    // frechet_d64.npz holds mu1/sigma1/mu2/sigma2, not mu/sigma.
    let path = fixture("frechet_d64.npz");
    let message = read_stats_npz(&path).unwrap_err().to_string();
    assert!(message.contains("frechet_d64.npz") && message.contains("no array `mu`"), "{message}");
    assert!(message.contains("mu1") && message.contains("sigma2"), "lists the keys present: {message}");

    let missing = fixture("no-such-file.npz");
    let message = read_stats_npz(&missing).unwrap_err().to_string();
    assert!(message.contains("no-such-file.npz") && message.contains("cannot open"), "{message}");

    // A feature file where statistics are expected, and statistics with a malformed sigma.
    let dir = scratch("file-errors");
    let not_npz = dir.join("stats.npz");
    std::fs::copy(fixture("features.npy"), &not_npz).unwrap();
    let message = read_stats_npz(&not_npz).unwrap_err().to_string();
    assert!(message.contains("stats.npz") && message.contains("cannot open as an .npz archive"), "{message}");

    let message = read_features_npy(&fixture("expected.json")).unwrap_err().to_string();
    assert!(message.contains("expected.json") && message.contains("not a numpy .npy file"), "{message}");

    let message = load_or_compute_stats(&dir, None).unwrap_err().to_string();
    assert!(message.contains("is a directory") && message.contains(".npy"), "{message}");
    let extractor = |_: &Path| -> ddpm_eval::Result<FeatureArray> {
        Ok(FeatureArray { values: vec![0.0, 1.0, 2.0, 4.0, 4.0, 7.0], rows: 3, dim: 2 })
    };
    let from_folder = load_or_compute_stats(&dir, Some(&extractor)).unwrap();
    assert_eq!(from_folder.mu, vec![2.0, 4.0]);
    assert_eq!(from_folder.sigma, vec![4.0, 6.0, 6.0, 9.0]);

    let message = load_or_compute_stats(&fixture("expected.json"), None).unwrap_err().to_string();
    assert!(message.contains("expected.json") && message.contains("unknown kind of file"), "{message}");

    let message = FeatureStats::from_features(&[1.0_f32, 2.0, 3.0], 2, 2).unwrap_err().to_string();
    assert!(message.contains("3 values given for 2 rows of 2 (4 expected)"), "{message}");
    let message = FeatureStats::from_features(&[1.0_f64, f64::INFINITY, 3.0, 4.0], 2, 2).unwrap_err().to_string();
    assert!(message.contains("row 0, column 1 is not finite"), "{message}");
    let message = FeatureStats::from_features(&[1.0_f64, 2.0], 1, 2).unwrap_err().to_string();
    assert!(message.contains("at least 2"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Precision, recall, density, coverage

#[test]
fn prdc_matches_the_prdc_package() {
    let real = read_features_npy(&fixture("prdc_real.npy")).unwrap();
    let fake = read_features_npy(&fixture("prdc_fake.npy")).unwrap();
    assert_eq!((real.rows, fake.rows, real.dim), (500, 400, 16));
    let expected = expected();
    for k in [3, 5] {
        let ours = prdc(&real.values, &fake.values, 16, k).unwrap();
        let reference = &expected["prdc"][format!("k{k}")];
        println!("k = {k}: ours {ours:?}\n       prdc {reference}");
        for (name, value) in [("precision", ours.precision), ("recall", ours.recall), ("density", ours.density), ("coverage", ours.coverage)] {
            let reference = reference[name].as_f64().unwrap();
            assert!((value - reference).abs() < 1e-12, "k = {k} {name}: {value} vs prdc {reference}");
        }
        assert_eq!((ours.nearest_k, ours.real_count, ours.fake_count), (k, 500, 400));
    }
    let radii = nearest_neighbour_radii(&real.values, 16, 3).unwrap();
    let reference: Vec<f64> = expected["prdc"]["real_radii_k3_first10"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let error = max_relative_error(&radii[..10], &reference);
    println!("k-NN radii vs prdc: {error:.2e}");
    assert!(error < 1e-12);
}

#[test]
fn prdc_of_a_set_against_itself_and_in_f32() {
    let real = read_features_npy(&fixture("prdc_real.npy")).unwrap();
    // Every sample is at distance 0 from its copy, inside its own (positive) radius.
    let same = prdc(&real.values, &real.values, 16, 3).unwrap();
    assert_eq!((same.precision, same.recall, same.coverage), (1.0, 1.0, 1.0));
    // A copy shifted far away shares no ball.
    let far: Vec<f64> = real.values.iter().map(|v| v + 100.0).collect();
    let apart = prdc(&real.values, &far, 16, 3).unwrap();
    assert_eq!((apart.precision, apart.recall, apart.density, apart.coverage), (0.0, 0.0, 0.0, 0.0));
    // f32 input (widened to f64) gives the same counts as the f64 values it rounds to.
    let fake = read_features_npy(&fixture("prdc_fake.npy")).unwrap();
    let (real32, fake32): (Vec<f32>, Vec<f32>) =
        (real.values.iter().map(|&v| v as f32).collect(), fake.values.iter().map(|&v| v as f32).collect());
    let widened = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
    assert_eq!(prdc(&real32, &fake32, 16, 3).unwrap(), prdc(&widened(&real32), &widened(&fake32), 16, 3).unwrap());
}

#[test]
fn prdc_tiles_match_a_direct_computation() {
    // 1283 x 1027 samples end in partial tiles of 3 rows (256-row and 1024-column tiles), and
    // d = 3: the products nalgebra makes without matrixmultiply.
    let (n, m, d, k) = (1283, 1027, 3, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let real: Vec<f64> = (0..n * d).map(|_| rng.random::<f64>()).collect();
    let fake: Vec<f64> = (0..m * d).map(|_| 1.2 * rng.random::<f64>() - 0.1).collect();
    let distance = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let radii = |x: &[f64], rows: usize| -> Vec<f64> {
        (0..rows)
            .map(|i| {
                let mut all: Vec<f64> = (0..rows).filter(|&j| j != i).map(|j| distance(&x[i * d..(i + 1) * d], &x[j * d..(j + 1) * d])).collect();
                all.sort_by(f64::total_cmp);
                all[k - 1]
            })
            .collect()
    };
    let (real_radii, fake_radii) = (radii(&real, n), radii(&fake, m));
    let cross = |i: usize, j: usize| distance(&real[i * d..(i + 1) * d], &fake[j * d..(j + 1) * d]);
    let in_real_ball = |j: usize| (0..n).filter(|&i| cross(i, j) < real_radii[i]).count();
    let counts: Vec<usize> = (0..m).map(in_real_ball).collect();
    let precision = counts.iter().filter(|&&c| c > 0).count() as f64 / m as f64;
    let density = counts.iter().sum::<usize>() as f64 / (k * m) as f64;
    let recall = (0..n).filter(|&i| (0..m).any(|j| cross(i, j) < fake_radii[j])).count() as f64 / n as f64;
    let coverage = (0..n).filter(|&i| (0..m).any(|j| cross(i, j) < real_radii[i])).count() as f64 / n as f64;

    let ours = prdc(&real, &fake, d, k).unwrap();
    println!("direct {precision} {recall} {density} {coverage}; tiled {ours:?}");
    assert_eq!((ours.precision, ours.recall, ours.density, ours.coverage), (precision, recall, density, coverage));
    assert!(max_relative_error(&nearest_neighbour_radii(&real, d, k).unwrap(), &real_radii) < 1e-12);
}

#[test]
fn prdc_errors_name_the_problem() {
    let message = prdc(&[0.0_f64; 12], &[0.0; 12], 4, 3).unwrap_err().to_string();
    assert!(message.contains("real features: 3 samples, but the 3-th nearest neighbour needs at least 4"), "{message}");
    let message = prdc(&[0.0_f64; 40], &[0.0; 42], 4, 3).unwrap_err().to_string();
    assert!(message.contains("fake features: 42 values are not a whole number of rows of 4"), "{message}");
    let message = prdc(&[0.0_f64; 40], &[0.0; 40], 4, 0).unwrap_err().to_string();
    assert!(message.contains("nearest_k is 0"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// KID

/// Unbiased MMD^2 with k(x, y) = (x.y/d + 1)^3, straight from the definition.
fn direct_mmd2(x: &[f64], y: &[f64], d: usize) -> f64 {
    let kernel = |a: &[f64], b: &[f64]| (a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>() / d as f64 + 1.0).powi(3);
    let (m, n) = (x.len() / d, y.len() / d);
    let row = |s: &[f64], i: usize| s[i * d..(i + 1) * d].to_vec();
    let mut xx = 0.0;
    let mut yy = 0.0;
    let mut xy = 0.0;
    for i in 0..m {
        for j in 0..m {
            if i != j {
                xx += kernel(&row(x, i), &row(x, j));
            }
        }
        for j in 0..n {
            xy += kernel(&row(x, i), &row(y, j));
        }
    }
    for i in 0..n {
        for j in 0..n {
            if i != j {
                yy += kernel(&row(y, i), &row(y, j));
            }
        }
    }
    xx / (m * (m - 1)) as f64 + yy / (n * (n - 1)) as f64 - 2.0 * xy / (m * n) as f64
}

#[test]
fn kid_estimator_matches_the_definition_and_torch_fidelity() {
    let real = read_features_npy(&fixture("prdc_real.npy")).unwrap();
    let fake = read_features_npy(&fixture("prdc_fake.npy")).unwrap();
    let (fake100, real100) = (&fake.values[..100 * 16], &real.values[..100 * 16]);
    let ours = polynomial_mmd2_unbiased(fake100, real100, 16).unwrap();
    let torch_fidelity = expected()["kid"]["mmd2_first100"].as_f64().unwrap();
    let direct = direct_mmd2(fake100, real100, 16);
    println!("MMD^2: ours {ours} direct {direct} torch-fidelity {torch_fidelity}");
    assert!(relative_error(ours, direct) < 1e-12 && relative_error(ours, torch_fidelity) < 1e-12);
    // Different set sizes, and sets of 3 and 4 rows (products nalgebra makes without matrixmultiply).
    for (rows_x, rows_y) in [(60, 45), (4, 3)] {
        let (x, y) = (&real.values[..rows_x * 16], &fake.values[..rows_y * 16]);
        assert!(relative_error(polynomial_mmd2_unbiased(x, y, 16).unwrap(), direct_mmd2(x, y, 16)) < 1e-12);
    }

    // Subsets as large as the sets are the sets themselves (MMD ignores order): every estimate is
    // the direct one, the spread 0.
    let whole = kid(fake100, real100, 16, &KidOptions { subsets: 4, subset_size: 100, seed: 3 }).unwrap();
    assert!(relative_error(whole.mean, direct) < 1e-12 && whole.std < 1e-12 * direct.abs(), "{whole:?}");
}

#[test]
fn kid_is_seeded_and_independent_of_the_thread_count() {
    let real = read_features_npy(&fixture("prdc_real.npy")).unwrap();
    let fake = read_features_npy(&fixture("prdc_fake.npy")).unwrap();
    let options = KidOptions { subsets: 20, subset_size: 100, seed: 7 };
    let first = kid(&real.values, &fake.values, 16, &options).unwrap();
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let serial = one_thread.install(|| kid(&real.values, &fake.values, 16, &options)).unwrap();
    assert_eq!(first, serial);
    let other = kid(&real.values, &fake.values, 16, &KidOptions { seed: 8, ..options }).unwrap();
    assert_ne!(first.mean, other.mean);
    // The fakes are shifted and narrower: a clearly positive discrepancy, many spreads from 0.
    println!("KID {first:?}");
    assert!(first.mean > 5.0 * first.std / (20f64).sqrt(), "{first:?}");
    // Subset estimates scatter around the full-set estimate.
    let full = polynomial_mmd2_unbiased(&fake.values, &real.values, 16).unwrap();
    assert!((first.mean - full).abs() < 4.0 * first.std / (20f64).sqrt(), "KID {first:?} vs full-set MMD {full}");

    let message = kid(&real.values, &fake.values, 16, &KidOptions::default()).unwrap_err().to_string();
    assert!(message.contains("subset_size 1000 is larger than the 500 real samples; use a subset size <= 500"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Toy sets

#[test]
fn mode_sets_are_the_training_mixtures() {
    let eight = ModeSet::gaussian8();
    assert_eq!((eight.centres.len(), eight.std), (8, 0.05));
    assert!(eight.centres.iter().all(|c| (c[0].hypot(c[1]) - 1.0).abs() < 1e-15));
    assert!((eight.centres[1][0] - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-15);
    let grid = ModeSet::gaussian25();
    assert_eq!((grid.centres.len(), grid.std), (25, 0.04));
    assert_eq!(grid.centres[0], [-1.0, -1.0]);
    assert_eq!(grid.centres[7], [0.0, -0.5]);
    assert_eq!(grid.centres[24], [1.0, 1.0]);
    assert_eq!(ModeSet::named("gaussian25").unwrap(), grid);
    let message = ModeSet::named("spiral").unwrap_err().to_string();
    assert!(message.contains("unknown mode set `spiral`"), "{message}");
}

#[test]
fn mode_coverage_counts_modes_and_near_samples() {
    let modes = ModeSet::gaussian8();
    // 10 samples at each centre, each nudged by 2.9 std (inside the 3-std radius).
    let near: Vec<f64> = modes.centres.iter().flat_map(|c| (0..10).flat_map(move |_| [c[0] + 0.145, c[1]])).collect();
    let all = mode_coverage(&near, &modes, None).unwrap();
    assert_eq!((all.modes_hit, all.modes_total, all.mode_coverage, all.near_mode_share), (8, 8, 1.0, 1.0));
    assert_eq!(all.counts, vec![10; 8]);
    assert_eq!(all.min_count, 1);

    // Just outside 3 std, and far away: nothing counts.
    let outside: Vec<f64> = modes.centres.iter().flat_map(|c| [c[0] + 0.151, c[1]]).collect();
    let none = mode_coverage(&outside, &modes, None).unwrap();
    assert_eq!((none.modes_hit, none.mode_coverage, none.near_mode_share), (0, 0.0, 0.0));
    let far = mode_coverage(&[5.0_f32, 5.0, -4.0, 3.0], &modes, None).unwrap();
    assert_eq!((far.modes_hit, far.near_mode_share), (0, 0.0));

    // Two modes missing, one with too few samples for min_count = 3, plus 10 stray samples.
    let mut samples = Vec::new();
    for (k, c) in modes.centres.iter().enumerate() {
        let count = match k {
            0 | 1 => 0,
            2 => 2,
            _ => 5,
        };
        for _ in 0..count {
            samples.extend([c[0], c[1]]);
        }
    }
    samples.extend([0.0; 20]);
    let partial = mode_coverage(&samples, &modes, Some(3)).unwrap();
    assert_eq!(partial.counts, vec![0, 0, 2, 5, 5, 5, 5, 5]);
    assert_eq!((partial.modes_hit, partial.mode_coverage), (5, 5.0 / 8.0));
    assert!((partial.near_mode_share - 27.0 / 37.0).abs() < 1e-15);

    // The default threshold: 1% of the expected count, so 1600 samples on 8 modes need 2 each.
    let mut crowded: Vec<f64> = modes.centres[..7].iter().flat_map(|c| (0..228).flat_map(move |_| [c[0], c[1]])).collect();
    crowded.extend([modes.centres[7][0], modes.centres[7][1]]);
    crowded.extend([0.0; 6]);
    let result = mode_coverage(&crowded, &modes, None).unwrap();
    assert_eq!((result.min_count, result.modes_hit), (2, 7));

    let message = mode_coverage(&[0.0_f64; 3], &modes, None).unwrap_err().to_string();
    assert!(message.contains("samples: 3 values are not a whole number of rows of 2"), "{message}");
}

#[test]
fn energy_distance_matches_scipy_in_one_dimension() {
    let energy = &expected()["energy"];
    let to_points = |key: &str| -> Vec<f64> { energy[key].as_array().unwrap().iter().flat_map(|v| [v.as_f64().unwrap(), 0.0]).collect() };
    let (u, v) = (to_points("u"), to_points("v"));
    let ours = energy_distance(&u, &v, 2).unwrap();
    let scipy = energy["scipy_energy_distance"].as_f64().unwrap();
    println!("sqrt(energy) ours {} scipy {scipy}", ours.sqrt());
    assert!(relative_error(ours.sqrt(), scipy) < 1e-12);
    assert!(energy_distance(&u, &u, 2).unwrap().abs() < 1e-14);
    // Symmetric, and positive for different samples in 2-D.
    let w: Vec<f64> = u.chunks(2).flat_map(|p| [p[0], p[0] * 0.5]).collect();
    let (uw, wu) = (energy_distance(&u, &w, 2).unwrap(), energy_distance(&w, &u, 2).unwrap());
    assert!(uw > 0.0 && (uw - wu).abs() < 1e-14);
}

// ---------------------------------------------------------------------------------------------
// Command line

fn ddpm_eval(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ddpm-eval")).args(args).output().unwrap();
    (output.status.success(), String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn command_line_prints_the_metrics() {
    let dir = scratch("cli");
    let stats = dir.join("stats.npz");
    let (ok, out, err) = ddpm_eval(&["stats", "--features", path_str(&fixture("features.npy")), "--out", path_str(&stats), "--json"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((report["n"].as_u64(), report["d"].as_u64()), (Some(200), Some(16)));

    // Our statistics against numpy's, from files: FID ~ 0.
    let (ok, out, err) = ddpm_eval(&["fid", "--real", path_str(&fixture("features_stats.npz")), "--fake", path_str(&stats), "--json"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(report["fid"].as_f64().unwrap().abs() < 1e-9, "{report}");
    assert_eq!(report["fake"]["n"].as_u64(), Some(200));
    let (ok, out, _) = ddpm_eval(&["fid", "--real", path_str(&fixture("features.npy")), "--fake", path_str(&stats)]);
    assert!(ok && out.starts_with("FID "), "{out}");

    let (real, fake) = (fixture("prdc_real.npy"), fixture("prdc_fake.npy"));
    let (ok, out, err) = ddpm_eval(&["prdc", "--real", path_str(&real), "--fake", path_str(&fake), "--json"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let reference = &expected()["prdc"]["k3"];
    for name in ["precision", "recall", "density", "coverage"] {
        assert!((report["result"][name].as_f64().unwrap() - reference[name].as_f64().unwrap()).abs() < 1e-12, "{name}: {report}");
    }
    let (ok, out, err) = ddpm_eval(&["kid", "--real", path_str(&real), "--fake", path_str(&fake), "--subset-size", "100", "--subsets", "5"]);
    assert!(ok && out.starts_with("KID "), "{out}{err}");

    let points = dir.join("points.npy");
    let centres: Vec<f32> = ModeSet::gaussian8().centres.iter().flat_map(|c| [c[0] as f32, c[1] as f32]).collect();
    write_features_npy(&points, &centres, 8, 2).unwrap();
    let (ok, out, err) = ddpm_eval(&["toy", "--samples", path_str(&points), "--set", "gaussian8", "--reference", path_str(&points), "--json"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["mode_coverage"]["modes_hit"].as_u64(), Some(8));
    assert!(report["energy_distance"].as_f64().unwrap().abs() < 1e-12);

    // Errors go to stderr with a non-zero status and name the file.
    let (ok, _, err) = ddpm_eval(&["fid", "--real", path_str(&fixture("frechet_d64.npz")), "--fake", path_str(&stats)]);
    assert!(!ok && err.contains("frechet_d64.npz") && err.contains("no array `mu`"), "{err}");
    let (ok, _, err) = ddpm_eval(&["prdc", "--real", path_str(&real), "--fake", path_str(&points)]);
    assert!(!ok && err.contains("16-d features") && err.contains("2-d ones"), "{err}");
    let (ok, _, err) = ddpm_eval(&["toy", "--samples", path_str(&real), "--set", "gaussian8"]);
    assert!(!ok && err.contains("16-d rows"), "{err}");
}

#[test]
fn command_line_help_states_the_defaults() {
    let (ok, out, _) = ddpm_eval(&["kid", "--help"]);
    assert!(ok && out.contains("[default: 100]") && out.contains("[default: 1000]") && out.contains("[default: 0]"), "{out}");
    let (ok, out, _) = ddpm_eval(&["prdc", "--help"]);
    assert!(ok && out.contains("[default: 3]"), "{out}");
    let (ok, out, _) = ddpm_eval(&["toy", "--help"]);
    assert!(ok && out.contains("gaussian25") && out.contains("1% of its expected count"), "{out}");
}

#[test]
fn lenet_classifier_saves_loads_and_converts_channels() {
    use burn::tensor::{Device, Tensor, TensorData};
    use ddpm_eval::fld::{
        LabelledImages, LeNet5Config, LeNetTrainingConfig, lenet_features, lenet_input, load_lenet,
        save_lenet, train_lenet,
    };
    let device = Device::flex();
    // 40 RGB 32x32 images of two classes: red or blue, with noise.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (n, plane) = (40, 32 * 32);
    let mut values = Vec::with_capacity(n * 3 * plane);
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 2).collect();
    for &label in &labels {
        for c in 0..3 {
            let on = (label == 0 && c == 0) || (label == 1 && c == 2);
            values
                .extend((0..plane).map(|_| if on { 0.8 } else { 0.1 } + rng.random::<f32>() * 0.1));
        }
    }
    let data = LabelledImages {
        values: values.clone(),
        shape: [n, 3, 32, 32],
        labels,
        num_classes: 2,
    };
    let config = LeNet5Config::new().with_channels(3).with_num_classes(2);
    let trained = train_lenet(
        &data,
        &config,
        &LeNetTrainingConfig::new()
            .with_epochs(3)
            .with_batch_size(8)
            .with_holdout(0.25),
        &device,
        false,
    )
    .unwrap();
    assert!(
        trained.accuracy >= 0.9,
        "held-out accuracy {}",
        trained.accuracy
    );

    let path = std::env::temp_dir().join(format!(
        "ddpm-eval-lenet-{}.safetensors",
        std::process::id()
    ));
    save_lenet(&trained, &path).unwrap();
    let loaded = load_lenet(&path, &device).unwrap();
    assert_eq!(loaded.config, config);
    assert_eq!(loaded.accuracy, trained.accuracy);
    let a = lenet_features(&trained, &values, [n, 3, 32, 32], 16, &device).unwrap();
    let b = lenet_features(&loaded, &values, [n, 3, 32, 32], 7, &device).unwrap();
    assert_eq!(a.len(), n * 84);
    assert!(
        a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-6),
        "features after a round trip differ"
    );
    std::fs::remove_file(&path).ok();

    // Grey input: PIL's luma of RGB; one channel repeated for an RGB network; [0, 1] -> [-1, 1].
    let rgb = Tensor::<4>::from_data(
        TensorData::new(vec![1.0f32, 0.0, 0.0], [1, 3, 1, 1]),
        &device,
    );
    let grey = lenet_input(rgb, &LeNet5Config::new().with_image_size(16))
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(grey.len(), 256);
    assert!(
        grey.iter().all(|&v| (v - (0.299 * 2.0 - 1.0)).abs() < 1e-6),
        "{}",
        grey[0]
    );
    let one = Tensor::<4>::from_data(
        TensorData::new(vec![0.5f32; 16 * 16], [1, 1, 16, 16]),
        &device,
    );
    assert_eq!(
        lenet_input(
            one,
            &LeNet5Config::new().with_channels(3).with_image_size(16)
        )
        .dims(),
        [1, 3, 16, 16]
    );

    // Bad settings name the value and the fix.
    let err = LeNet5Config::new()
        .with_channels(2)
        .init(&device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("channels 2"), "{err}");
    let wrong_classes = train_lenet(
        &data,
        &LeNet5Config::new().with_channels(3).with_num_classes(5),
        &LeNetTrainingConfig::new(),
        &device,
        false,
    );
    assert!(wrong_classes.unwrap_err().to_string().contains("2 classes"));
}
