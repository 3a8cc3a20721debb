//! ddpm-core against numbers computed by denoising-diffusion-pytorch 2.3.4 (see
//! `tests/fixtures/README.md`). Runs on the device named by `DDPM_DEVICE` (Flex by default); CI runs
//! it again on Vulkan through lavapipe.

mod common;

use burn::tensor::{DType, Tensor};
use common::*;
use ddpm_core::prelude::*;
use ddpm_core::sampler::ddim_timesteps;
use ddpm_core::{NoiseSchedule, noise_assignment};

const TABLES: [&str; 12] = [
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
];

fn table<'a>(s: &'a NoiseSchedule, name: &str) -> &'a [f64] {
    match name {
        "betas" => &s.betas,
        "alphas_cumprod" => &s.alphas_cumprod,
        "alphas_cumprod_prev" => &s.alphas_cumprod_prev,
        "sqrt_alphas_cumprod" => &s.sqrt_alphas_cumprod,
        "sqrt_one_minus_alphas_cumprod" => &s.sqrt_one_minus_alphas_cumprod,
        "log_one_minus_alphas_cumprod" => &s.log_one_minus_alphas_cumprod,
        "sqrt_recip_alphas_cumprod" => &s.sqrt_recip_alphas_cumprod,
        "sqrt_recipm1_alphas_cumprod" => &s.sqrt_recipm1_alphas_cumprod,
        "posterior_variance" => &s.posterior_variance,
        "posterior_log_variance_clipped" => &s.posterior_log_variance_clipped,
        "posterior_mean_coef1" => &s.posterior_mean_coef1,
        "posterior_mean_coef2" => &s.posterior_mean_coef2,
        other => panic!("unknown table {other}"),
    }
}

fn schedule_named(name: &str) -> BetaSchedule {
    name.parse().unwrap()
}

fn check_schedules(file: &str, timesteps: usize) {
    let fx = fixture(file);
    let mut checked = 0;
    for name in ["linear", "cosine", "sigmoid"] {
        let kind = schedule_named(name);
        let ours = NoiseSchedule::new(&kind, timesteps, false).unwrap();
        let betas = Fx::from_value(&fx["entries"][format!("{name}/beta_fn")]["betas"]);
        let err = max_pure_rel_err(&kind.betas(timesteps).unwrap(), &betas.data);
        assert!(err <= 1e-12, "{name} T={timesteps} betas: relative error {err:e}");
        for table_name in TABLES {
            let want64 = Fx::from_value(&fx["entries"][format!("{name}/buffers_float64")][table_name]);
            let got = table(&ours, table_name);
            let err = max_pure_rel_err(got, &want64.data);
            assert!(err <= 1e-12, "{name} T={timesteps} {table_name} (f64): relative error {err:e}");
            let want32 = Fx::from_value(&fx["entries"][format!("{name}/buffers_float32")][table_name]);
            assert_f32_exact(&format!("{name} T={timesteps} {table_name}"), got, &want32.data);
            checked += 1;
        }
    }
    assert_eq!(checked, 36);
}

#[test]
fn schedules_t1000_match_reference() {
    check_schedules("schedules_T1000.json", 1000);
}

#[test]
fn schedules_t10_match_reference_including_nans() {
    check_schedules("schedules_T10.json", 10);
    // The reference's linear T=10 schedule is invalid; we reproduce its tables but refuse to use it.
    let err = GaussianDiffusionConfig::new().with_timesteps(10).with_beta_schedule(BetaSchedule::linear()).init().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("beta_schedule") && msg.contains("beta[") && msg.contains("(0, 1]"), "{msg}");
}

#[test]
fn loss_weights_match_reference() {
    let fx = fixture("loss_weights.json");
    let entries = fx["entries"].as_object().unwrap();
    assert_eq!(entries.len(), 36);
    for (key, entry) in entries {
        let parts: Vec<&str> = key.split('/').collect();
        let timesteps: usize = parts[0][1..].parse().unwrap();
        let objective: Objective = parts[2].parse().unwrap();
        let gamma = if parts[3] == "min_snr_on" { Some(5.0) } else { None };
        let schedule = NoiseSchedule::new(&schedule_named(parts[1]), timesteps, false).unwrap();
        let config = GaussianDiffusionConfig::new().with_objective(objective).with_min_snr_gamma(gamma);
        let d = GaussianDiffusion::from_schedule(config, schedule);
        let want = Fx::from_value(&entry["float64"]);
        let err = max_pure_rel_err(&d.loss_weight, &want.data);
        assert!(err <= 1e-12, "{key} (f64): relative error {err:e}");
        let want32 = Fx::from_value(&entry["float32"]);
        assert_f32_exact(key, &d.loss_weight, &want32.data);
    }
}

#[test]
fn forward_process_matches_reference() {
    let fx = fixture("forward_process.json");
    let device = device();
    let x_start = Fx::from_value(&fx["x_start"]);
    let noise = Fx::from_value(&fx["noise"]);
    let entries = fx["entries"].as_object().unwrap();
    assert_eq!(entries.len(), 24);
    for (key, e) in entries {
        let parts: Vec<&str> = key.split('/').collect();
        let timesteps: usize = parts[0][1..].parse().unwrap();
        let (dtype, tol) = match parts[3] {
            // f32: the same f32 coefficients and the same f32 ops as the reference.
            "float32" => (DType::F32, 2e-6),
            _ if widest_float(&device) == DType::F64 => (DType::F64, 1e-12),
            _ => continue,
        };
        let schedule = NoiseSchedule::new(&schedule_named(parts[1]), timesteps, false).unwrap();
        let d = GaussianDiffusion::from_schedule(GaussianDiffusionConfig::new(), schedule);
        let t = Fx::from_value(&e["t"]).as_usize();
        let x0: Tensor<4> = x_start.tensor(&device, dtype);
        let eps: Tensor<4> = noise.tensor(&device, dtype);
        let x_t = d.q_sample(x0.clone(), &t, eps.clone()).unwrap();
        let v = d.predict_v(x0.clone(), &t, eps.clone());
        let post = d.q_posterior(x0.clone(), x_t.clone(), &t);
        let cases: Vec<(&str, Tensor<4>)> = vec![
            ("q_sample", x_t.clone()),
            ("predict_start_from_noise", d.predict_start_from_noise(x_t.clone(), &t, eps.clone())),
            ("predict_noise_from_start", d.predict_noise_from_start(x_t.clone(), &t, x0.clone())),
            ("predict_v", v.clone()),
            ("predict_start_from_v", d.predict_start_from_v(x_t.clone(), &t, v)),
            ("q_posterior_mean", post.mean),
            ("q_posterior_variance", post.variance),
            ("q_posterior_log_variance_clipped", post.log_variance),
        ];
        for (name, got) in cases {
            let want = Fx::from_value(&e[name]);
            assert_eq!(got.dims().to_vec(), want.shape, "{key} {name} shape");
            assert_close(&format!("{key} {name}"), &values(&got), &want.data, tol);
        }
    }
}

#[test]
fn immiscible_assignment_matches_scipy() {
    let fx = fixture("forward_process.json");
    let im = &fx["immiscible"];
    let device = device();
    let x0: Tensor<4> = Fx::from_value(&im["x_start"]).tensor(&device, DType::F32);
    let eps: Tensor<4> = Fx::from_value(&im["noise"]).tensor(&device, DType::F32);
    let want_assign = Fx::from_value(&im["assign"]).as_usize();
    assert_eq!(noise_assignment(&x0, &eps).unwrap(), want_assign);
    let t = Fx::from_value(&im["t"]).as_usize();
    let d = GaussianDiffusionConfig::new().with_immiscible(true).init().unwrap();
    let assigned = ddpm_core::assign_noise(x0.clone(), eps).unwrap();
    let x_t = d.q_sample(x0, &t, assigned).unwrap();
    assert_close("immiscible q_sample", &values(&x_t), &Fx::from_value(&im["q_sample"]).data, 2e-6);
}

/// The reference's FakeModel: `0.1 x + 0.01 t`.
fn fake_model(x: Tensor<4>, t: Tensor<1>, _: &Conditioning<4>) -> Tensor<4> {
    let b = t.dims()[0];
    x.clone().mul_scalar(0.1) + t.reshape([b, 1, 1, 1]).mul_scalar(0.01)
}

/// The reference ran in f64: on a device with f64 (Flex) every step must agree to 1e-6.
#[test]
fn all_nine_sampling_traces_replay_exactly_f64() {
    let device = device();
    if widest_float(&device) != DType::F64 {
        eprintln!("skipped: {device:?} has no f64; the f32 replay below covers it");
        return;
    }
    replay_sampling_traces(&device, DType::F64, 1e-6);
}

/// The same traces in f32, the dtype training and sampling run in (and the only one on WGPU).
#[test]
fn all_nine_sampling_traces_replay_in_f32() {
    replay_sampling_traces(&device(), DType::F32, 1e-4);
}

fn replay_sampling_traces(device: &burn::tensor::Device, dtype: DType, tol: f64) {
    let fx = fixture("sampling_cosine.json");
    let cases = fx["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 9);
    for (key, c) in cases {
        let objective: Objective = key.split('/').nth(2).unwrap().parse().unwrap();
        let timesteps = c["timesteps"].as_u64().unwrap() as usize;
        let d = GaussianDiffusionConfig::new()
            .with_timesteps(timesteps)
            .with_beta_schedule(BetaSchedule::cosine())
            .with_objective(objective)
            .init()
            .unwrap();
        let draws: Vec<Fx> = c["noise_draws"].as_array().unwrap().iter().map(Fx::from_value).collect();
        let shape: [usize; 4] = draws[0].shape.clone().try_into().unwrap();
        let mut noise = ReplayNoise::new(draws.iter().map(|f| f.data()));
        let sampler = if c["sampler"] == "ddim_sample" {
            let steps = c["sampling_timesteps"].as_u64().unwrap() as usize;
            let pairs: Vec<i64> = c["time_pairs"].as_array().unwrap().iter().map(|p| p[0].as_i64().unwrap()).collect();
            let ours: Vec<i64> = ddim_timesteps(TimestepSpacing::Linspace, timesteps, steps).unwrap().into_iter().map(|v| v as i64).collect();
            assert_eq!(ours, pairs, "{key}: DDIM timesteps");
            Sampler::Ddim { steps, eta: c["ddim_sampling_eta"].as_f64().unwrap(), spacing: TimestepSpacing::Linspace }
        } else {
            Sampler::Ddpm
        };
        let steps = c["steps"].as_array().unwrap();
        let mut seen = 0;
        let x0_key = if sampler == Sampler::Ddpm { "x_start_clamped" } else { "x_start_clipped" };
        let z = noise.normal(shape, burn::tensor::TensorCreationOptions::new(device.clone()).with_dtype(dtype)).unwrap();
        let out = sample(
            &d,
            &fake_model,
            z,
            &sampler,
            &SampleOptions::default(),
            &mut noise,
            |s: &StepInfo<'_, 4>| {
                let want = &steps[s.index];
                assert_eq!(s.t as u64, want["time"].as_u64().unwrap(), "{key} step {}", s.index);
                assert_close(&format!("{key} step {} x_t", s.index), &values(s.x_t), &Fx::from_value(&want["x_t"]).data, tol);
                assert_close(&format!("{key} step {} x0", s.index), &values(s.pred_x0), &Fx::from_value(&want[x0_key]).data, tol);
                assert_close(&format!("{key} step {} next", s.index), &values(s.x_next), &Fx::from_value(&want["img_next"]).data, tol);
                seen += 1;
            },
        )
        .unwrap();
        assert_eq!(seen, steps.len(), "{key}: every step reported");
        assert_close(&format!("{key} final"), &values(&out), &Fx::from_value(&c["final_output_before_unnormalize"]).data, tol);
        let image = unnormalize_to_zero_one(out);
        assert_close(&format!("{key} final [0,1]"), &values(&image), &Fx::from_value(&c["final_output"]).data, tol);
        // eta = 0 draws no per-step noise (the reference draws and discards it).
        let unused = if matches!(sampler, Sampler::Ddim { eta, .. } if eta == 0.0) { draws.len() - 1 } else { 0 };
        assert_eq!(noise.remaining(), unused, "{key}: noise draws used");
    }
}

/// Continuous-time diffusion against the reference's `ContinuousTimeGaussianDiffusion` and
/// `VParamContinuousTimeGaussianDiffusion` (`tests/fixtures/golden/make_continuous_golden.py`):
/// the log-SNR schedules, q_sample and the per-sample losses (eps, v, min-SNR), and whole
/// ancestral sampling runs replayed with the reference's noise.
#[test]
fn continuous_time_diffusion_matches_the_reference() {
    use ddpm_core::continuous::{ContinuousDiffusionConfig, LogSnrSchedule};
    let fx = fixture("continuous.json");
    let device = device();
    let dtype = widest_float(&device);
    let tol = if dtype == DType::F64 { 1e-9 } else { 1e-4 };
    let times = Fx::from_value(&fx["times"]).data;
    for (name, schedule) in [("linear", LogSnrSchedule::Linear), ("cosine", LogSnrSchedule::Cosine { s: 0.008 })] {
        let ours: Vec<f64> = times.iter().map(|&t| schedule.log_snr(t)).collect();
        assert_close(&format!("log_snr {name}"), &ours, &Fx::from_value(&fx[format!("log_snr_{name}")]).data, 1e-12);
    }
    let model = |x: Tensor<4>, l: Tensor<1>, _: &Conditioning<4>| {
        let b = x.dims()[0];
        x.clone().mul_scalar(0.3) + l.reshape([b, 1, 1, 1]).mul_scalar(0.01)
    };
    let x0: Tensor<4> = Fx::from_value(&fx["x_start"]).tensor(&device, dtype);
    let eps: Tensor<4> = Fx::from_value(&fx["noise"]).tensor(&device, dtype);
    let loss_times = Fx::from_value(&fx["loss_times"]).data;
    let config = |schedule, objective, gamma| ContinuousDiffusionConfig::new().with_schedule(schedule).with_objective(objective).with_min_snr_gamma(gamma).with_num_sample_steps(8);
    let cosine = LogSnrSchedule::Cosine { s: 0.008 };
    for (name, c) in [
        ("eps_linear", config(LogSnrSchedule::Linear, Objective::PredNoise, None)),
        ("eps_cosine", config(cosine, Objective::PredNoise, None)),
        ("eps_linear_min_snr", config(LogSnrSchedule::Linear, Objective::PredNoise, Some(5.0))),
        ("v_cosine", config(cosine, Objective::PredV, None)),
    ] {
        let d = c.init().unwrap();
        let (x_t, _) = d.q_sample(x0.clone(), &loss_times, eps.clone()).unwrap();
        assert_close(&format!("q_sample {name}"), &values(&x_t), &Fx::from_value(&fx[format!("q_sample_{name}")]).data, tol);
        let per = d.loss_at(&model, x0.clone(), &loss_times, eps.clone(), &Conditioning::none()).unwrap().per_sample;
        assert_close(&format!("losses {name}"), &values(&per), &Fx::from_value(&fx[format!("losses_{name}")]).data, tol);
    }
    for (name, c, clip) in [
        ("eps_linear", config(LogSnrSchedule::Linear, Objective::PredNoise, None), X0Clip::Static),
        ("eps_cosine_unclipped", config(cosine, Objective::PredNoise, None), X0Clip::None),
        ("v_cosine", config(cosine, Objective::PredV, None), X0Clip::Static),
    ] {
        replay_ancestral(&c.init().unwrap(), &model, &fx[format!("sample_{name}")], clip, burn::tensor::TensorCreationOptions::new(device.clone()).with_dtype(dtype), tol, name);
    }
}

/// The weighted objective against the reference's `WeightedObjectiveGaussianDiffusion`
/// (`tests/fixtures/golden/make_weighted_golden.py`): per-sample losses and one reverse step
/// through its `p_mean_variance`. (The reference's own `sample()` raises a TypeError: its
/// `p_mean_variance` does not take the `x_self_cond` that `p_sample` passes. Ours samples with every
/// sampler.)
#[test]
fn weighted_objective_matches_the_reference() {
    let fx = fixture("weighted.json");
    assert!(fx["sample_error"].as_str().unwrap().contains("x_self_cond"), "the fixture records the reference's failure");
    let device = device();
    let dtype = widest_float(&device);
    // The reference keeps its schedule buffers in float32 even when computing in float64.
    let tol = if dtype == DType::F64 { 1e-7 } else { 1e-4 };
    let d = GaussianDiffusionConfig::new().with_timesteps(10).with_beta_schedule(BetaSchedule::cosine()).with_objective(Objective::Weighted).init().unwrap();
    let model = |x: Tensor<4>, t: Tensor<1>, _: &Conditioning<4>| {
        let b = x.dims()[0];
        let t = t.reshape([b, 1, 1, 1]);
        let eps = x.clone().mul_scalar(0.3) + t.clone().mul_scalar(0.01);
        let x0 = x.clone().mul_scalar(-0.2) + t.clone().mul_scalar(0.001);
        let w = Tensor::cat(vec![x.clone().narrow(1, 0, 1).mul_scalar(0.5) + t.mul_scalar(0.02), x.narrow(1, 1, 1).mul_scalar(-0.4)], 1);
        Tensor::cat(vec![eps, x0, w], 1)
    };
    let x0: Tensor<4> = Fx::from_value(&fx["x_start"]).tensor(&device, dtype);
    let eps: Tensor<4> = Fx::from_value(&fx["noise"]).tensor(&device, dtype);
    let t = Fx::from_value(&fx["t"]).as_usize();
    let out = d.loss_at(&model, x0, &t, eps, &Conditioning::none(), false).unwrap();
    assert_close("weighted losses", &values(&out.per_sample), &Fx::from_value(&fx["losses"]).data, tol);
    let step = &fx["step"];
    let x_t: Tensor<4> = Fx::from_value(&step["x_t"]).tensor(&device, dtype);
    let ts = Fx::from_value(&step["t"]).as_usize();
    let output = d.run_model(&model, x_t.clone(), &ts, &Conditioning::none());
    let rev = d.reverse_step(output, x_t, &ts, X0Clip::Static).unwrap();
    assert_close("weighted step mean", &values(&rev.mean), &Fx::from_value(&step["mean"]).data, tol);
    let lv = values(&rev.log_variance);
    let want = Fx::from_value(&step["log_variance"]).data;
    let per = want.len() / 2;
    assert_close("weighted step log-variance", &[lv[0], lv[1]], &[want[0], want[per]], tol);
    // A network with the wrong number of channels is refused with the count it needs.
    let wrong = |x: Tensor<4>, _t: Tensor<1>, _: &Conditioning<4>| x;
    let e = d.loss_at(&wrong, x_t_like(), &[1], x_t_like(), &Conditioning::none(), false).unwrap_err().to_string();
    assert!(e.contains("2 x 2 + 2 = 6"), "{e}");
}

fn x_t_like() -> Tensor<4> {
    Tensor::zeros([1, 2, 4, 4], &device())
}

/// Replays a recorded 8-step run of the reference's continuous-time ancestral sampler: the first
/// draw is the initial noise, the rest the per-step noise; the image is compared in [0, 1] (the
/// reference clamps it even when x0 is not clipped).
fn replay_ancestral<M: Denoiser<4>>(
    d: &ddpm_core::ContinuousDiffusion,
    model: &M,
    case: &serde_json::Value,
    clip: X0Clip,
    options: burn::tensor::TensorCreationOptions,
    tol: f64,
    name: &str,
) {
    let draws: Vec<Fx> = case["noise_draws"].as_array().unwrap().iter().map(Fx::from_value).collect();
    let shape: [usize; 4] = draws[0].shape.clone().try_into().unwrap();
    let mut noise = ReplayNoise::new(draws.iter().map(|f| f.data()));
    let x = noise.normal(shape, options).unwrap();
    let out = d.ancestral(model, x, &ddpm_core::continuous::uniform_times(1.0, 8), &SampleOptions { clip, cond: Conditioning::none() }, &mut noise).unwrap();
    let image = unnormalize_to_zero_one(out.clamp(-1.0, 1.0));
    assert_close(&format!("sample {name}"), &values(&image), &Fx::from_value(&case["output"]).data, tol);
    assert_eq!(noise.remaining(), 0, "{name}: every recorded draw used");
}

/// Simple diffusion (the reference's `simple_diffusion.GaussianDiffusion`): its cosine log-SNR,
/// the shifted and interpolated schedules, its SNR-weighted losses and whole sampling runs.
#[test]
fn simple_diffusion_schedules_losses_and_sampling_match_the_reference() {
    use ddpm_core::continuous::{ContinuousDiffusionConfig, LogSnrSchedule, LogSnrShift};
    let fx = fixture("continuous.json");
    let device = device();
    let dtype = widest_float(&device);
    let tol = if dtype == DType::F64 { 1e-9 } else { 1e-4 };
    let times = Fx::from_value(&fx["times"]).data;
    let cosine = LogSnrSchedule::LogsnrCosine { logsnr_min: -15.0, logsnr_max: 15.0 };
    let shifted = LogSnrShift::Shifted { image_d: 4.0, noise_d: 2.0 };
    let interpolated = LogSnrShift::Interpolated { image_d: 4.0, noise_d_low: 2.0, noise_d_high: 8.0 };
    for (name, shift) in [("simple_cosine", None), ("simple_shifted", Some(shifted)), ("simple_interpolated", Some(interpolated))] {
        let d = ContinuousDiffusionConfig::new().with_schedule(cosine).with_shift(shift).init().unwrap();
        let ours: Vec<f64> = times.iter().map(|&t| d.log_snr(t)).collect();
        assert_close(&format!("log_snr {name}"), &ours, &Fx::from_value(&fx[format!("log_snr_{name}")]).data, 1e-12);
    }
    let model = |x: Tensor<4>, l: Tensor<1>, _: &Conditioning<4>| {
        let b = x.dims()[0];
        x.clone().mul_scalar(0.3) + l.reshape([b, 1, 1, 1]).mul_scalar(0.01)
    };
    let x0: Tensor<4> = Fx::from_value(&fx["x_start"]).tensor(&device, dtype);
    let eps: Tensor<4> = Fx::from_value(&fx["noise"]).tensor(&device, dtype);
    let loss_times = Fx::from_value(&fx["loss_times"]).data;
    for (name, objective, shift, gamma) in [
        ("simple_v_shifted", Objective::PredV, Some(shifted), Some(5.0)),
        ("simple_eps_interpolated_no_min_snr", Objective::PredNoise, Some(interpolated), None),
        ("simple_v_no_min_snr", Objective::PredV, None, None),
    ] {
        let d = ContinuousDiffusionConfig::new()
            .with_schedule(cosine)
            .with_shift(shift)
            .with_objective(objective)
            .with_min_snr_gamma(gamma)
            .with_snr_weighted(true)
            .with_num_sample_steps(8)
            .init()
            .unwrap();
        let per = d.loss_at(&model, x0.clone(), &loss_times, eps.clone(), &Conditioning::none()).unwrap().per_sample;
        assert_close(&format!("losses {name}"), &values(&per), &Fx::from_value(&fx[format!("losses_{name}")]).data, tol);
        replay_ancestral(&d, &model, &fx[format!("sample_{name}")], X0Clip::Static, burn::tensor::TensorCreationOptions::new(device.clone()).with_dtype(dtype), tol, name);
    }
}

/// The learned log-SNR schedule against the reference's `learned_noise_schedule` with the same
/// weights (of both signs: the monotonic layers use their absolute values).
#[test]
fn learned_log_snr_schedule_matches_the_reference() {
    use ddpm_core::continuous::LearnedLogSnrConfig;
    let fx = fixture("continuous.json");
    let l = &fx["learned_schedule"];
    let device = burn::tensor::Device::flex();
    let opts = burn::tensor::TensorCreationOptions::new(device.clone()).with_dtype(DType::F64);
    let mut schedule = LearnedLogSnrConfig::new().with_hidden_dim(8).init(&device);
    // PyTorch stores linear weights [out, in]; ours are [in, out].
    let weight = |key: &str| {
        let f = Fx::from_value(&l[key]);
        let (o, i) = (f.shape[0], f.shape[1]);
        let t: Vec<f64> = (0..i * o).map(|k| f.data[(k % o) * i + k / o]).collect();
        burn::module::Param::from_tensor(Tensor::<2>::from_data(burn::tensor::TensorData::new(t, [i, o]), opts.clone()))
    };
    let bias = |key: &str| burn::module::Param::from_tensor(Tensor::<1>::from_data(Fx::from_value(&l[key]).data(), opts.clone()));
    schedule.l1.weight = weight("l1_weight");
    schedule.l1.bias = bias("l1_bias");
    schedule.l2.weight = weight("l2_weight");
    schedule.l2.bias = bias("l2_bias");
    schedule.l3.weight = weight("l3_weight");
    schedule.l3.bias = bias("l3_bias");
    let times = Fx::from_value(&fx["times"]);
    let got = values(&schedule.forward(times.tensor(&device, DType::F64)));
    assert_close("learned log-SNR", &got, &Fx::from_value(&l["log_snr"]).data, 1e-9);
}
