//! `ddpm-train sample` on a denoising-diffusion-pytorch `Trainer` checkpoint: with DDIM, eta 0 and
//! the same initial noise, the images equal the reference's (fixtures made by
//! `tests/fixtures/make_reference_ddim.py` with denoising-diffusion-pytorch 2.3.4).

use std::path::PathBuf;

use ddpm_train::npy::read_npy;
use ddpm_train::sample::{SampleJob, Weights, run_job};
use ddpm_train::parse_config;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

/// The reference run's settings: Unet(dim=8, dim_mults=(1, 2)), GaussianDiffusion(image_size=8,
/// timesteps=100, sampling_timesteps=10) with its defaults (sigmoid schedule, pred_v).
const CONFIG: &str = r#"
[data]
kind = "shapes"
image_size = 8

[model]
kind = "unet"
dim = 8
dim_mults = [1, 2]

[diffusion]
timesteps = 100

[sample]
sampler = "ddim"
steps = 10
eta = 0.0
"#;

#[test]
fn ddim_from_a_reference_trainer_checkpoint_matches_the_reference() {
    let cfg = parse_config(CONFIG, "reference.toml", &[]).unwrap();
    for (weights, name) in [(Weights::Ema, "ema"), (Weights::Model, "model")] {
        let out = std::env::temp_dir().join(format!("ddpm-train-reference-{}-{name}", std::process::id()));
        let npy = out.join("samples.npy");
        let job = SampleJob {
            checkpoint: fixture("reference_model-1.pt"),
            weights,
            seeds: (0..6).collect(),
            batch_size: 4,
            init_noise: Some(fixture("reference_ddim_noise.npy")),
            from: None,
            inpaint: None,
            save_npy: Some(npy.clone()),
            out_dir: out.clone(),
            progress: false,
        };
        run_job(&cfg, &job).unwrap();
        let ours = read_npy(&npy).unwrap();
        let reference = read_npy(&fixture(&format!("reference_ddim_{name}.npy"))).unwrap();
        assert_eq!(ours.shape, reference.shape);
        let err = ours.data.iter().zip(&reference.data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!("{name}: max difference to the reference's images {err:e}");
        assert!(err < 1e-4, "{name}: max difference to the reference's images {err}");
        assert!(out.join("000005.png").is_file() && out.join("grid.png").is_file());
        std::fs::remove_dir_all(&out).ok();
    }
}

#[test]
fn wrong_initial_noise_and_wrong_network_are_explained() {
    let cfg = parse_config(CONFIG, "reference.toml", &[]).unwrap();
    let out = std::env::temp_dir().join(format!("ddpm-train-reference-{}-bad", std::process::id()));
    let mut job = SampleJob {
        checkpoint: fixture("reference_model-1.pt"),
        weights: Weights::Ema,
        seeds: (0..5).collect(),
        batch_size: 4,
        init_noise: Some(fixture("reference_ddim_noise.npy")),
        from: None,
        inpaint: None,
        save_npy: None,
        out_dir: out.clone(),
        progress: false,
    };
    let e = run_job(&cfg, &job).unwrap_err().to_string();
    assert!(e.contains("reference_ddim_noise.npy") && e.contains("[6, 3, 8, 8]") && e.contains("[5, 3, 8, 8]"), "{e}");
    job.init_noise = None;
    let wider = parse_config(CONFIG, "reference.toml", &["model.dim=16".into()]).unwrap();
    let e = run_job(&wider, &job).unwrap_err().to_string();
    assert!(e.contains("reference_model-1.pt") && e.contains("dim"), "{e}");
    std::fs::remove_dir_all(&out).ok();
}
