//! Every sigma-space solver against k-diffusion's function of the same name, on the same network,
//! sigma grid and noise draws (fixtures from `tests/fixtures/kdiffusion/make_kdiffusion_fixtures.py`:
//! k-diffusion 0.1.1.post1's `sample_euler`, `sample_euler_ancestral`, `sample_heun`,
//! `sample_dpmpp_2m`, `sample_dpmpp_2m_sde`, `sample_dpmpp_3m_sde` over its `DiscreteEpsDDPMDenoiser`
//! and `DiscreteVDDPMDenoiser` wrappers, `quantize=False`, around a reference `Unet`).

use burn::tensor::TensorData;
use ddpm_core::VpDenoiser;
use ddpm_core::karras::{SOLVERS, sample_sigmas, sigma_grid};
use ddpm_core::prelude::*;
use ddpm_core::schedule::BetaSchedule;
use ddpm_models::UnetConfig;
use ddpm_models::weights::{load_reference, strip_prefix};

mod common;
use common::{device, read_fixture, rel_err, tensor};

#[test]
fn every_sigma_solver_equals_k_diffusions_function_of_the_same_name() {
    let device = device();
    let file = read_fixture("kdiffusion", "samplers.safetensors");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(common::fixture_path("kdiffusion", "samplers.json")).unwrap()).unwrap();
    let config = UnetConfig::new(8).with_dim_mults(vec![1, 2]).with_channels(3).with_attn_heads(vec![2]).with_attn_dim_head(vec![8]);
    let unet = load_reference(config.init(&device).unwrap(), &strip_prefix(&file, "model."), "samplers.safetensors").unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut worst = 0.0f64;
    for case in meta["cases"].as_array().unwrap() {
        let name = case["case"].as_str().unwrap();
        let objective = match case["objective"].as_str().unwrap() {
            "eps" => Objective::PredNoise,
            "v" => Objective::PredV,
            other => panic!("{other}"),
        };
        let diffusion = GaussianDiffusionConfig::new().with_timesteps(100).with_beta_schedule(BetaSchedule::linear()).with_objective(objective).init().unwrap();
        // The same noise levels: k-diffusion's alphas_cumprod (float32) are the reference's.
        let theirs = &file["alphas_cumprod"].data;
        let ours = &diffusion.schedule.alphas_cumprod;
        assert!(ours.iter().zip(theirs).all(|(a, b)| (a - *b as f64).abs() <= 1e-6 * a.max(1e-3)), "alphas_cumprod");
        // The same grid: `get_sigmas(10)` is our discrete spacing, `get_sigmas_karras` our Karras
        // spacing with sigma_max 80.
        let sigmas: Vec<f64> = file[&format!("{name}.sigmas")].data.iter().map(|&s| s as f64).collect();
        let grid = match case["grid"].as_str().unwrap() {
            "discrete" => sigma_grid(&diffusion, 10, SigmaSpacing::Discrete, None).unwrap(),
            "karras" => sigma_grid(&diffusion, 10, SigmaSpacing::karras(), Some(80.0)).unwrap(),
            other => panic!("{other}"),
        };
        let grid_err = grid.iter().zip(&sigmas).map(|(a, b)| (a - b).abs() / b.max(1e-12)).fold(0.0, f64::max);
        // k-diffusion derives its sigmas from float32 alphas_cumprod (1 - abar_0 = 1e-3 keeps about
        // four digits in float32), ours from f64: the smallest sigma differs by 7e-6.
        assert!(grid_err < 1e-5, "{name}: our grid {grid:?} vs k-diffusion's {sigmas:?}");
        // The solvers then run on k-diffusion's own sigmas.
        let solver = SigmaSolver::from_name(case["sampler"].as_str().unwrap()).unwrap();
        seen.insert(solver.row().name);
        let noise = &file[&format!("{name}.noise")];
        let draws: Vec<TensorData> = noise.data.chunks(2 * 3 * 8 * 8).filter(|c| c.len() == 2 * 3 * 8 * 8).map(|c| TensorData::new(c.to_vec(), [2, 3, 8, 8])).collect();
        assert_eq!(draws.len(), case["draws"].as_u64().unwrap() as usize);
        let mut replay = ReplayNoise::new(draws);
        let mut denoiser = VpDenoiser::new(&diffusion, &unet, X0Clip::None, Conditioning::none()).unwrap();
        let x = tensor::<4>(&file, &format!("{name}.x"), &device);
        let eta = if solver.row().stochastic { 1.0 } else { 0.0 };
        let out = sample_sigmas(&mut denoiser, x, SigmaRun { sigmas: &sigmas, solver, eta, churn: Churn::default() }, &mut replay, |_, _, _, _| {}).unwrap();
        let err = rel_err(&out, &file[&format!("{name}.out")].data);
        worst = worst.max(err);
        assert!(err < 1e-5, "{name}: relative error {err:e} against k-diffusion");
    }
    let all: std::collections::BTreeSet<&str> = SOLVERS.iter().map(|r| r.name).collect();
    assert_eq!(seen, all, "every solver of the table is compared with k-diffusion");
    println!("worst relative error against k-diffusion over {} cases: {worst:e}", meta["cases"].as_array().unwrap().len());
}
