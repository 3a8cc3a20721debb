//! `ddpm-train sample` on a denoising-diffusion-pytorch `Trainer` checkpoint: with DDIM, eta 0 and
//! the same initial noise, the images equal the reference's (fixtures made by
//! `tests/fixtures/make_reference_ddim.py` with denoising-diffusion-pytorch 2.3.4).

use std::path::PathBuf;

use ddpm_train::npy::read_npy;
use ddpm_train::sample::Weights;
use ddpm_train::sample_job::{SampleJob, run_job};
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

/// The DDIM images of `pipe` from the reference's initial noise, in [0, 1].
fn reference_ddim(pipe: &ddpm_train::pipeline::Pipeline) -> Vec<f32> {
    use ddpm_train::pipeline::{SampleOptions, StartFrom};
    let noise = read_npy(&fixture("reference_ddim_noise.npy")).unwrap();
    let opts = SampleOptions { start: StartFrom::InitialNoise(noise.data), ..SampleOptions::seeds(0..6) };
    pipe.sample_with(&opts).unwrap().values.iter().map(|v| (v + 1.0) * 0.5).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

/// A plain `torch.save(unet.state_dict())` (made by `tests/fixtures/make_state_dict.py` from the
/// Trainer checkpoint's EMA) samples the reference's images; exported with the reference's key
/// names it gives back the same state dict, and exported with Burn's paths it samples the same.
#[test]
fn a_plain_state_dict_samples_like_the_reference_and_round_trips_through_export() {
    use ddpm_train::pipeline::{ExportFormat, LoadOptions, Pipeline};
    let cfg = parse_config(CONFIG, "reference.toml", &[]).unwrap();
    let reference = read_npy(&fixture("reference_ddim_ema.npy")).unwrap();
    let pt = fixture("reference_unet_ema_state_dict.pt");
    let load = |path: &std::path::Path| Pipeline::load_with(path, &LoadOptions { config: Some(cfg.clone()), ..Default::default() }).unwrap();
    let pipe = load(&pt);
    assert!(pipe.describe().contains("PyTorch file") && pipe.describe().contains("a state dict"), "{}", pipe.describe());
    let err = max_diff(&reference_ddim(&pipe), &reference.data);
    assert!(err < 1e-4, "the state dict's DDIM images differ from the reference's by {err}");
    // Without a config a state dict cannot be used, and the error says so.
    let e = Pipeline::load(&pt).err().expect("a state dict needs a config").to_string();
    assert!(e.contains("--config") && e.contains("reference_unet_ema_state_dict.pt"), "{e}");

    let out = std::env::temp_dir().join(format!("ddpm-train-export-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let lucidrains = out.join("unet.safetensors");
    pipe.export(ExportFormat::Lucidrains, &lucidrains).unwrap();
    let written = ddpm_models::weights::read_safetensors(&lucidrains).unwrap();
    let original = ddpm_models::weights::read_pytorch(&pt).unwrap();
    let floats: Vec<&String> = original.iter().filter(|(_, t)| !t.integer).map(|(k, _)| k).collect();
    assert_eq!(written.keys().collect::<Vec<_>>(), floats, "the exported keys are the reference's");
    for (k, t) in &written {
        assert_eq!((&t.shape, &t.data), (&original[k].shape, &original[k].data), "{k} changed on the way through");
    }
    // The lucidrains file loads back as a state dict, the Burn-path file as Burn's paths.
    let err = max_diff(&reference_ddim(&load(&lucidrains)), &reference.data);
    assert!(err < 1e-4, "{err}");
    let burn_paths = out.join("burn.safetensors");
    pipe.export(ExportFormat::Safetensors, &burn_paths).unwrap();
    let again = load(&burn_paths);
    assert!(again.describe().contains("Burn parameter paths"), "{}", again.describe());
    assert_eq!(reference_ddim(&again), reference_ddim(&pipe));
    // The DDPM paper's network has no diffusers counterpart for this network: a clear error.
    let e = pipe.export(ExportFormat::Diffusers, out.join("pipe")).unwrap_err().to_string();
    assert!(e.contains("diffusers") && e.contains("lucidrains"), "{e}");
    std::fs::remove_dir_all(&out).ok();
}
