//! EDM (ddpm-core's `Edm`) with a reference Unet against the reference's `ElucidatedDiffusion`:
//! the preconditioned denoiser, the training loss at given noise levels and noise, and a whole
//! stochastic Heun sampling run replayed from the recorded noise
//! (`tests/fixtures/models/make_edm_fixture.py`).

mod common;

use burn::tensor::{Tensor, TensorCreationOptions, TensorData};
use common::*;
use ddpm_core::prelude::*;
use ddpm_core::{EdmConfig, EdmDenoiser};
use ddpm_models::UnetConfig;
use ddpm_models::weights::{load_reference, strip_prefix};

fn network(device: &burn::tensor::Device) -> (ddpm_models::Unet, ddpm_models::weights::StateDict) {
    let file = read_fixture("models", "edm.safetensors");
    let config = UnetConfig::new(8)
        .with_dim_mults(vec![1, 2])
        .with_channels(3)
        .with_learned_sinusoidal_cond(true)
        .with_learned_sinusoidal_dim(16)
        .with_attn_heads(vec![2])
        .with_attn_dim_head(vec![8]);
    let net = load_reference(config.init(device).unwrap(), &strip_prefix(&file, "net."), "edm.safetensors").unwrap_or_else(|e| panic!("{e}"));
    (net, file)
}

fn values(file: &ddpm_models::weights::StateDict, key: &str) -> Vec<f32> {
    file[key].data.iter().map(|&v| v as f32).collect()
}

#[test]
fn edm_matches_the_reference_elucidated_diffusion() {
    let device = device();
    let (net, file) = network(&device);
    let edm = EdmConfig::new().with_num_sample_steps(4).with_s_churn(10.0).init().unwrap();

    // D(x; sigma) = c_skip x + c_out F(c_in x, ln(sigma) / 4), one sigma per sample.
    let x: Tensor<4> = tensor(&file, "precond.x", &device);
    let sigmas: Vec<f64> = file["precond.sigma"].data.iter().map(|&v| v as f64).collect();
    let d = edm.denoise(&net, x, &sigmas, &Conditioning::none(), false);
    let err = rel_err(&d, &values(&file, "precond.d"));
    eprintln!("preconditioned denoiser: relative error {err:e}");
    assert!(err < 1e-4, "preconditioned denoiser: relative error {err}");

    // The weighted loss at given noise levels and noise (images mapped from [0, 1] to [-1, 1]).
    let images: Tensor<4> = tensor(&file, "loss.images01", &device);
    let sigmas: Vec<f64> = file["loss.sigma"].data.iter().map(|&v| v as f64).collect();
    let noise: Tensor<4> = tensor(&file, "loss.noise", &device);
    let loss = edm.loss_at(&net, normalize_to_neg_one_one(images), &sigmas, noise, &Conditioning::none(), false).unwrap();
    let got = loss.loss.into_scalar::<f64>();
    let want = file["loss.value"].data[0] as f64;
    eprintln!("loss {got} vs reference {want}");
    assert!((got - want).abs() / want < 1e-5, "loss {got} vs reference {want}");

    // A whole sampling run (4 Heun steps with churn), from the reference's own random draws.
    let draws = (0..5).map(|k| TensorData::new(values(&file, &format!("sample.draw.{k}")), [2, 3, 8, 8]));
    let mut replay = ReplayNoise::new(draws);
    let out = EdmDenoiser::new(&edm, &net, Conditioning::none(), true, false).sample_heun([2, 3, 8, 8], TensorCreationOptions::new(device.clone()), 4, &mut replay).unwrap();
    assert_eq!(replay.remaining(), 0, "the sampler draws exactly what the reference draws");
    let err = rel_err(&unnormalize_to_zero_one(out), &values(&file, "sample.images01"));
    eprintln!("samples: relative error {err:e}");
    assert!(err < 1e-4, "samples: relative error {err}");
}

#[test]
fn an_edm_network_samples_with_every_sigma_space_solver() {
    let device = device();
    let (net, _) = network(&device);
    let edm = EdmConfig::new().init().unwrap();
    // Every solver of the table, without noise (eta 0) and without clamping, follows the same
    // probability-flow ODE: on 40 Karras levels each lands near Heun's solution on 200 levels.
    let solve = |solver: SigmaSolver, steps: usize| {
        let sigmas = edm.sample_schedule(steps);
        let mut noise = HostNoise::new(0);
        let x: Tensor<4> = noise.normal([2, 3, 8, 8], TensorCreationOptions::new(device.clone())).unwrap().mul_scalar(sigmas[0]);
        let mut d = EdmDenoiser::new(&edm, &net, Conditioning::none(), false, false);
        let out = ddpm_core::karras::sample_sigmas(&mut d, x, SigmaRun { sigmas: &sigmas, solver, eta: 0.0, churn: Churn::default() }, &mut noise, |_, _, _, _| {}).unwrap();
        out.into_data().try_into_vec_as::<f32>().unwrap()
    };
    let exact = solve(SigmaSolver::Heun, 200);
    let scale = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(exact.iter().all(|v| v.is_finite()) && scale > 0.1);
    let mut errors = std::collections::HashMap::new();
    for row in ddpm_core::karras::SOLVERS {
        let got = solve(row.solver, 40);
        assert_eq!(got.len(), 2 * 3 * 8 * 8);
        let err = got.iter().zip(&exact).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale;
        // Measured: Euler (and Euler ancestral at eta 0, the same steps) 0.072, the second-order
        // solvers 0.008, DPM-Solver++(3M) 0.0012.
        let bound = if row.name.starts_with("euler") { 0.1 } else { 0.015 };
        assert!(err < bound, "{}: {err} from the ODE solution (bound {bound})", row.name);
        errors.insert(row.name, err);
    }
    // Without noise the SDE solvers are their ODE counterparts, and the third-order one is closer.
    assert!((errors["euler_ancestral"] - errors["euler"]).abs() < 1e-6);
    assert!((errors["dpmpp_2m_sde"] - errors["dpmpp_2m"]).abs() < 1e-4);
    assert!(errors["dpmpp_3m_sde"] < 0.5 * errors["dpmpp_2m"], "{errors:?}");
}
