//! EDM2's power-function EMA and post-hoc reconstruction: the paper's exponents, the discrete
//! update against the continuous profile, reconstruction of an unseen width from stored snapshots,
//! and the trainer's snapshots, resume and `post-hoc-ema` output end to end.

use std::path::{Path, PathBuf};

use ddpm_train::ema::power::{beta, gamma_to_sigma_rel, max_sigma_rel, post_hoc_weights, sigma_rel_to_gamma};
use ddpm_train::post_hoc::{PostHocJob, reconstruct};
use ddpm_train::sample::Weights;
use ddpm_train::sample_job::{SampleJob, run_job};
use ddpm_train::{RunOptions, TrainConfig, parse_config, run};

#[test]
fn sigma_rel_and_gamma_are_the_papers() {
    // EDM2: sigma_rel 0.05 and 0.10 are gamma 16.97 and 6.94.
    assert!((sigma_rel_to_gamma(0.05).unwrap() - 16.97).abs() < 0.01);
    assert!((sigma_rel_to_gamma(0.10).unwrap() - 6.94).abs() < 0.01);
    for s in [0.01, 0.05, 0.1, 0.2, 0.29] {
        let g = sigma_rel_to_gamma(s).unwrap();
        assert!((gamma_to_sigma_rel(g) - s).abs() < 1e-12, "{s}");
        // ... the largest root of the paper's cubic gamma^3 + 7 gamma^2 + (16 - 1/s^2) gamma + 12 - 1/s^2.
        let t = s.powi(-2);
        let cubic = g.powi(3) + 7.0 * g * g + (16.0 - t) * g + 12.0 - t;
        assert!(cubic.abs() < 1e-6 * t.max(1.0), "{s}: {cubic}");
    }
    for bad in [0.0, -0.1, 0.31] {
        let e = sigma_rel_to_gamma(bad).unwrap_err().to_string();
        assert!(e.contains("sigma_rel") && e.contains(&format!("{:.4}", max_sigma_rel())), "{e}");
    }
}

/// The average `(g + 1) / t^(g + 1) * integral_0^t tau^g theta(tau) dtau` of `theta(tau) = tau` is
/// `(g + 1) / (g + 2) t`; the discrete update reaches it.
#[test]
fn the_discrete_update_follows_the_power_profile() {
    for s in [0.05, 0.1, 0.2] {
        let g = sigma_rel_to_gamma(s).unwrap();
        let mut avg = 0.0;
        for t in 1..=5000usize {
            let b = beta(t, g);
            avg = b * avg + (1.0 - b) * t as f64;
        }
        let want = (g + 1.0) / (g + 2.0) * 5000.0;
        assert!(((avg - want) / want).abs() < 2e-3, "sigma_rel {s}: {avg} vs {want}");
    }
}

/// Snapshots of two averages (0.05, 0.10) every 100 steps of a drifting, oscillating "weight";
/// the reconstruction of 0.08 at the end matches an average of 0.08 kept all along.
#[test]
fn post_hoc_reconstruction_matches_an_average_kept_during_training() {
    let theta = |t: f64| (t / 150.0).sin() + 0.0005 * t;
    let kept: Vec<f64> = [0.05, 0.10].iter().map(|&s| sigma_rel_to_gamma(s).unwrap()).collect();
    let g_target = sigma_rel_to_gamma(0.08).unwrap();
    let (mut avgs, mut target) = (vec![0.0; 2], 0.0);
    let mut stored = Vec::new();
    let mut values = Vec::new();
    for t in 1..=3000usize {
        for (a, &g) in avgs.iter_mut().zip(&kept) {
            let b = beta(t, g);
            *a = b * *a + (1.0 - b) * theta(t as f64);
        }
        let b = beta(t, g_target);
        target = b * target + (1.0 - b) * theta(t as f64);
        if t % 100 == 0 {
            for (a, &g) in avgs.iter().zip(&kept) {
                stored.push((t as f64, g));
                values.push(*a);
            }
        }
    }
    let rec = post_hoc_weights(&stored, (3000.0, g_target)).unwrap();
    let got: f64 = rec.weights.iter().zip(&values).map(|(w, v)| w * v).sum();
    eprintln!("sigma_rel 0.08 at t = 3000: reconstructed {got:.6}, kept {target:.6}, profile error {:.2e}, weight sum {:.6}", rec.relative_error, rec.weights.iter().sum::<f64>());
    assert!(rec.relative_error < 0.05, "the profile fits: {}", rec.relative_error);
    assert!((got - target).abs() < 0.01, "reconstructed {got} vs kept {target}");
    assert!((rec.weights.iter().sum::<f64>() - 1.0).abs() < 0.01, "the weights sum to about 1");
    // A stored profile reconstructs as itself.
    let exact = post_hoc_weights(&stored, (3000.0, kept[1])).unwrap();
    let last = exact.weights.len() - 1;
    assert!((exact.weights[last] - 1.0).abs() < 1e-6 && exact.relative_error < 1e-6, "{:?}", &exact.weights[last - 3..]);
}

fn tiny(out: &Path, steps: usize) -> TrainConfig {
    let text = format!(
        r#"
[run]
out_dir = "{}"
seed = 5

[data]
kind = "toy"
name = "gaussian8"
count = 256

[model]
kind = "mlp"
hidden = 16
num_layers = 1

[diffusion]
timesteps = 50
beta_schedule = "cosine"

[train]
steps = {steps}
batch_size = 16
lr = 1e-3
checkpoint_every = 3
keep_last = 5
sample_every = 0
num_samples = 4
log_every = 1

[train.post_hoc_ema]
sigma_rels = [0.05, 0.10]
snapshot_every = 2

[sample]
sampler = "ddim"
steps = 5
"#,
        out.display()
    );
    parse_config(&text, "post-hoc.toml", &[]).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ddpm-post-hoc-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn mlp_values(file: &Path) -> Vec<f32> {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct Values(Vec<f32>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.extend(p.val().into_data().try_into_vec_as::<f32>().unwrap());
        }
    }
    let net = ddpm_models::MlpConfig::new(2).with_hidden(16).with_num_layers(1).init(&burn::tensor::Device::flex()).unwrap();
    let net = net.try_load_file(file).unwrap();
    let mut v = Values(Vec::new());
    net.visit(&mut v);
    v.0
}

#[test]
fn the_trainer_stores_snapshots_resumes_them_and_reconstructs_any_width() {
    // One test: both runs initialise from Flex's process-global generator.
    let out = tmp("run");
    let cfg = tiny(&out, 6);
    run(&cfg, &RunOptions::default()).unwrap();
    let snaps = ddpm_train::checkpoint::list_snapshots(&out).unwrap();
    assert_eq!(snaps.iter().map(|(_, s)| s.step).collect::<Vec<_>>(), [2, 4, 6]);
    assert!((snaps[0].1.gammas[0] - 16.97).abs() < 0.01);

    // Killed after 4 steps (last checkpoint at 3), resumed: the same averages at step 6.
    let resumed = tmp("resumed");
    let cfg_r = tiny(&resumed, 6);
    run(&cfg_r, &RunOptions { stop_after: Some(4), ..Default::default() }).unwrap();
    let latest = ddpm_train::checkpoint::latest(&resumed).unwrap();
    assert!(latest.ends_with("step-0000003") && latest.join("power-ema-1.bpk").is_file());
    run(&cfg_r, &RunOptions { resume: Some(latest), ..Default::default() }).unwrap();
    for k in 0..2 {
        let file = format!("post-hoc/step-0000006/ema-{k}.bpk");
        assert_eq!(mlp_values(&out.join(&file)), mlp_values(&resumed.join(&file)), "power EMA {k} after resume");
    }

    // sigma_rel 0.10 at step 6 is the stored average itself; 0.07 at step 4 lies between.
    let report = reconstruct(&PostHocJob { run_dir: out.clone(), sigma_rel: 0.10, step: None, out_dir: None }).unwrap();
    assert_eq!(report.step, 6);
    let got = mlp_values(&report.out_dir.join("ema.bpk"));
    let want = mlp_values(&out.join("post-hoc/step-0000006/ema-1.bpk"));
    let gap = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(gap < 1e-4, "{gap}");
    let between = reconstruct(&PostHocJob { run_dir: out.clone(), sigma_rel: 0.07, step: Some(4), out_dir: Some(out.join("ema-0.07")) }).unwrap();
    assert_eq!(between.shares.len(), 4, "the snapshots at steps 2 and 4");
    assert!(out.join("ema-0.07/post-hoc.json").is_file());
    // The output folder samples like a checkpoint.
    let job = SampleJob {
        checkpoint: out.join("ema-0.07"),
        weights: Weights::Ema,
        seeds: vec![0, 1, 2],
        batch_size: 3,
        init_noise: None,
        from: None,
        inpaint: None,
        save_npy: Some(out.join("s.npy")),
        out_dir: out.join("samples"),
        progress: false,
    };
    assert_eq!(run_job(&cfg, &job).unwrap().count, 3);
    // Errors name the fix.
    let e = reconstruct(&PostHocJob { run_dir: out.clone(), sigma_rel: 0.07, step: Some(5), out_dir: None }).unwrap_err().to_string();
    assert!(e.contains("--step") && e.contains("2, 4, 6"), "{e}");
    let e = reconstruct(&PostHocJob { run_dir: out.clone(), sigma_rel: 0.5, step: None, out_dir: None }).unwrap_err().to_string();
    assert!(e.contains("--sigma-rel"), "{e}");
    let mut bad = cfg.clone();
    bad.train.post_hoc_ema.sigma_rels = vec![0.4];
    let e = run(&bad, &RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("train.post_hoc_ema.sigma_rels"), "{e}");
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&resumed).ok();
}
