//! DDIM with diffusers' semantics (`DDIMScheduler.step` as `DDIMPipeline` calls it) on an analytic
//! denoiser, against steps computed by hand in f64; and diffusers' timestep lists.

use burn::tensor::{DType, Device, Tensor, TensorCreationOptions, TensorData};
use ddpm_core::prelude::*;
use ddpm_core::sampler::ddim_timesteps;
use ddpm_core::tensor::to_f64_vec;

fn opts() -> TensorCreationOptions {
    TensorCreationOptions::new(Device::flex()).with_dtype(DType::F64)
}

/// T = 4, betas 0.1..0.4: abar = 0.9, 0.72, 0.504, 0.3024.
fn diffusion(objective: Objective) -> GaussianDiffusion {
    GaussianDiffusionConfig::new()
        .with_timesteps(4)
        .with_beta_schedule(BetaSchedule::Custom { betas: vec![0.1, 0.2, 0.3, 0.4] })
        .with_objective(objective)
        .init()
        .unwrap()
}

const ABAR: [f64; 4] = [0.9, 0.72, 0.504, 0.3024];
const X: [f64; 2] = [3.0, -0.2];

/// The stand-in network: output = 0.5 x_t + 0.01 t.
fn model(x: Tensor<2>, t: Tensor<1>, _: &Conditioning<2>) -> Tensor<2> {
    x.mul_scalar(0.5) + t.unsqueeze_dim::<2>(1).mul_scalar(0.01)
}

fn out(x: f64, t: usize) -> f64 {
    0.5 * x + 0.01 * t as f64
}

fn run(objective: Objective, steps: &[DdimStep], eta: f64, ddim: DdimOptions, noise: &mut impl NoiseSource) -> Vec<f64> {
    let x = Tensor::<2>::from_data(TensorData::new(X.to_vec(), [2, 1]), opts());
    let o = SampleOptions { clip: X0Clip::Static, cond: Conditioning::none() };
    to_f64_vec(&ddim_sample(&diffusion(objective), &model, x, &DdimRun { steps: steps.to_vec(), eta, options: ddim }, &o, noise, no_callback).unwrap())
}

/// One diffusers DDIM step by hand (eta = 0): x0 from the output, clipped; eps kept unclipped
/// (`rederive = false`) or re-derived from the clipped x0 (the reference).
fn hand_step(objective: Objective, x: f64, t: usize, a_prev: f64, rederive: bool) -> f64 {
    let a = ABAR[t];
    let o = out(x, t);
    let (x0, eps) = match objective {
        Objective::PredNoise => ((x - (1.0 - a).sqrt() * o) / a.sqrt(), o),
        Objective::PredX0 => (o, (x - a.sqrt() * o) / (1.0 - a).sqrt()),
        Objective::PredV => (a.sqrt() * x - (1.0 - a).sqrt() * o, a.sqrt() * o + (1.0 - a).sqrt() * x),
        _ => unreachable!(),
    };
    let x0c = x0.clamp(-1.0, 1.0);
    let eps = if rederive { (x - a.sqrt() * x0c) / (1.0 - a).sqrt() } else { eps };
    a_prev.sqrt() * x0c + (1.0 - a_prev).sqrt() * eps
}

#[test]
fn diffusers_ddim_keeps_the_network_eps_and_steps_to_abar0() {
    // t = 3 -> 1 -> past the end, which set_alpha_to_one = False puts at abar_0.
    let steps = [DdimStep { t: 3, prev: Some(1) }, DdimStep { t: 1, prev: None }];
    for objective in [Objective::PredNoise, Objective::PredX0, Objective::PredV] {
        for (ddim, rederive) in [(DdimOptions::diffusers(false), false), (DdimOptions { rederive_noise: true, final_alpha_one: false }, true)] {
            let got = run(objective, &steps, 0.0, ddim, &mut HostNoise::new(0));
            for (g, &x) in got.iter().zip(&X) {
                let mid = hand_step(objective, x, 3, ABAR[1], rederive);
                let want = hand_step(objective, mid, 1, ABAR[0], rederive);
                assert!((g - want).abs() < 1e-12, "{objective} rederive={rederive}: {g} vs {want}");
            }
        }
    }
    // The element at 3.0 is clipped, so the two readings differ there; at -0.2 eps-prediction's x0
    // stays inside [-1, 1] and they agree.
    let keep = run(Objective::PredNoise, &steps, 0.0, DdimOptions::diffusers(false), &mut HostNoise::new(0));
    let rederive = run(Objective::PredNoise, &steps, 0.0, DdimOptions { rederive_noise: true, final_alpha_one: false }, &mut HostNoise::new(0));
    assert!((keep[0] - rederive[0]).abs() > 1e-3);
}

#[test]
fn set_alpha_to_one_returns_the_clipped_x0() {
    let steps = [DdimStep { t: 2, prev: None }];
    let got = run(Objective::PredNoise, &steps, 0.7, DdimOptions::diffusers(true), &mut HostNoise::new(0));
    for (g, &x) in got.iter().zip(&X) {
        let x0 = ((x - (1.0 - ABAR[2]).sqrt() * out(x, 2)) / ABAR[2].sqrt()).clamp(-1.0, 1.0);
        assert!((g - x0).abs() < 1e-12);
    }
}

#[test]
fn eta_adds_sigma_times_the_drawn_noise() {
    let steps = [DdimStep { t: 3, prev: Some(2) }];
    let z = [0.3, -1.1];
    let mut replay = ReplayNoise::new([TensorData::new(z.to_vec(), [2, 1])]);
    let eta = 0.8;
    let got = run(Objective::PredNoise, &steps, eta, DdimOptions::diffusers(true), &mut replay);
    assert_eq!(replay.remaining(), 0);
    let (a, ap) = (ABAR[3], ABAR[2]);
    // diffusers: variance = (1 - a') / (1 - a) (1 - a / a'), std = eta sqrt(variance).
    let std = eta * ((1.0 - ap) / (1.0 - a) * (1.0 - a / ap)).sqrt();
    for ((g, &x), zi) in got.iter().zip(&X).zip(z) {
        let o = out(x, 3);
        let x0 = ((x - (1.0 - a).sqrt() * o) / a.sqrt()).clamp(-1.0, 1.0);
        let want = ap.sqrt() * x0 + (1.0 - ap - std * std).sqrt() * o + std * zi;
        assert!((g - want).abs() < 1e-12, "{g} vs {want}");
    }
}

#[test]
fn the_default_options_are_the_reference_ddim() {
    // The reference's DDIM (DdimRun::reference) and DDIM over the chained steps with the default
    // options are the same computation.
    let d = diffusion(Objective::PredNoise);
    let x = Tensor::<2>::from_data(TensorData::new(X.to_vec(), [2, 1]), opts());
    let o = SampleOptions { clip: X0Clip::Static, cond: Conditioning::none() };
    let ts = [3, 1, 0];
    let a = ddim_sample(&d, &model, x.clone(), &DdimRun::reference(&ts, 0.5), &o, &mut HostNoise::new(7), no_callback).unwrap();
    let b = ddim_sample(&d, &model, x, &DdimRun { steps: DdimStep::chain(&ts), eta: 0.5, options: DdimOptions::default() }, &o, &mut HostNoise::new(7), no_callback).unwrap();
    assert_eq!(to_f64_vec(&a), to_f64_vec(&b));
    assert_eq!(DdimStep::chain(&ts), vec![DdimStep { t: 3, prev: Some(1) }, DdimStep { t: 1, prev: Some(0) }, DdimStep { t: 0, prev: None }]);
}

#[test]
fn bad_steps_are_refused() {
    let d = diffusion(Objective::PredNoise);
    let x = Tensor::<2>::from_data(TensorData::new(X.to_vec(), [2, 1]), opts());
    let o = SampleOptions { clip: X0Clip::Static, cond: Conditioning::none() };
    for steps in [
        vec![DdimStep { t: 4, prev: None }],
        vec![DdimStep { t: 2, prev: Some(2) }],
        vec![DdimStep { t: 1, prev: None }, DdimStep { t: 2, prev: None }],
    ] {
        let e = ddim_sample(&d, &model, x.clone(), &DdimRun { steps, eta: 0.0, options: DdimOptions::default() }, &o, &mut HostNoise::new(0), no_callback).unwrap_err();
        assert!(e.to_string().contains("timesteps"), "{e}");
    }
}

#[test]
fn diffusers_timestep_lists() {
    let ts = |s: Vec<DdimStep>| s.iter().map(|s| (s.t, s.prev)).collect::<Vec<_>>();
    // leading with steps_offset 1: 901, 801, .. 1, each stepping down by T div S = 100.
    let leading = diffusers_ddim_steps(TimestepSpacing::Leading, 1000, 10, 1).unwrap();
    assert_eq!(ts(leading)[..2], [(901, Some(801)), (801, Some(701))]);
    let leading = diffusers_ddim_steps(TimestepSpacing::Leading, 1000, 10, 1).unwrap();
    assert_eq!(leading.last().map(|s| (s.t, s.prev)), Some((1, None)));
    // trailing: 999, 899, .. 99; linspace: round(linspace(0, 999, 10)) = 999, 888, .., 0, stepping by 100.
    let trailing = diffusers_ddim_steps(TimestepSpacing::Trailing, 1000, 10, 5).unwrap();
    assert_eq!(trailing.iter().map(|s| s.t).collect::<Vec<_>>(), (0..10).rev().map(|i| i * 100 + 99).collect::<Vec<_>>());
    let lin = diffusers_ddim_steps(TimestepSpacing::DiffusersLinspace, 1000, 10, 0).unwrap();
    assert_eq!(lin.iter().map(|s| s.t).collect::<Vec<_>>(), vec![999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
    assert_eq!(lin.iter().map(|s| s.prev).collect::<Vec<_>>()[..3], [Some(899), Some(788), Some(677)]);
    assert_eq!(ddim_timesteps(TimestepSpacing::DiffusersLinspace, 1000, 10).unwrap(), vec![999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
    assert_eq!("diffusers_linspace".parse::<TimestepSpacing>().unwrap(), TimestepSpacing::DiffusersLinspace);
    // numpy's arange gives diffusers' trailing spacing S + 1 timesteps, the last -1, for S = 61.
    let e = diffusers_ddim_steps(TimestepSpacing::Trailing, 1000, 61, 0).unwrap_err().to_string();
    assert!(e.contains("-1") && e.contains("trailing"), "{e}");
    let e = diffusers_ddim_steps(TimestepSpacing::Linspace, 1000, 10, 0).unwrap_err().to_string();
    assert!(e.contains("leading, trailing or linspace"), "{e}");
    assert!(diffusers_ddim_steps(TimestepSpacing::Leading, 1000, 0, 0).is_err());
}

#[test]
fn ddim_options_deserialise_with_defaults() {
    let o: DdimOptions = serde_json::from_str("{}").unwrap();
    assert_eq!(o, DdimOptions::default());
    let o: DdimOptions = serde_json::from_str(r#"{"rederive_noise": false}"#).unwrap();
    assert_eq!(o, DdimOptions { rederive_noise: false, final_alpha_one: true });
    assert!(serde_json::from_str::<DdimOptions>(r#"{"rederive": false}"#).is_err());
}
