//! Properties the math must have whatever the reference says: identities of the schedule tables,
//! conversions that invert each other, a posterior consistent with q_sample, a finite and small
//! bits/dim for a perfect model, and clear errors for bad input.

mod common;

use burn::tensor::{DType, Device, Tensor, TensorCreationOptions, TensorData};
use common::*;
use ddpm_core::prelude::*;
use ddpm_core::sampler::ddim_timesteps;
use ddpm_core::{Error, NoiseSchedule};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const ALL_SCHEDULES: [&str; 8] = ["linear", "cosine", "sigmoid", "scaled_linear", "warmup10", "warmup50", "const", "jsd"];

/// Properties of the math, checked in f64 on Flex whatever `DDPM_DEVICE` says (WGPU has no f64);
/// the golden tests cover the other devices.
fn opts(dtype: DType) -> TensorCreationOptions {
    TensorCreationOptions::new(burn::tensor::Device::flex()).with_dtype(dtype)
}

fn randn(shape: [usize; 4], seed: u64, dtype: DType) -> Tensor<4> {
    HostNoise::new(seed).normal(shape, opts(dtype)).unwrap()
}

#[test]
fn schedule_tables_satisfy_the_gaussian_identities() {
    for name in ALL_SCHEDULES {
        for zero_snr in [false, true] {
            let s = NoiseSchedule::new(&name.parse().unwrap(), 200, zero_snr).unwrap();
            s.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            for t in 1..s.num_timesteps() {
                // Mean of q(x_{t-1} | x0) through the posterior: sqrt(abar_{t-1}) = c1 + c2 sqrt(abar_t).
                let mean = s.posterior_mean_coef1[t] + s.posterior_mean_coef2[t] * s.sqrt_alphas_cumprod[t];
                assert!((mean - s.alphas_cumprod_prev[t].sqrt()).abs() < 1e-12, "{name} t={t}: mean identity");
                // Variance: 1 - abar_{t-1} = c2^2 (1 - abar_t) + beta~_t.
                let var = s.posterior_mean_coef2[t].powi(2) * (1.0 - s.alphas_cumprod[t]) + s.posterior_variance[t];
                assert!((var - (1.0 - s.alphas_cumprod_prev[t])).abs() < 1e-12, "{name} t={t}: variance identity");
            }
            assert!(s.alphas_cumprod.windows(2).all(|w| w[1] <= w[0]), "{name}: abar decreases");
            if zero_snr {
                assert!(s.alphas_cumprod[199].abs() < 1e-15, "{name}: zero terminal SNR");
                let plain = NoiseSchedule::new(&name.parse().unwrap(), 200, false).unwrap();
                assert!((s.alphas_cumprod[0] - plain.alphas_cumprod[0]).abs() < 1e-12, "{name}: first abar kept");
            }
        }
    }
}

#[test]
fn named_schedules_have_their_defining_values() {
    let t = 100;
    let b = |n: &str| n.parse::<BetaSchedule>().unwrap().betas(t).unwrap();
    assert!((b("scaled_linear")[0] - 1e-4).abs() < 1e-15 && (b("scaled_linear")[99] - 0.02).abs() < 1e-15);
    assert!(b("const").iter().all(|&v| v == 0.02));
    assert_eq!(b("jsd")[0], 1.0 / 100.0);
    assert_eq!(b("jsd")[99], 1.0);
    let w = b("warmup10");
    assert_eq!(w[0], 1e-4);
    assert!((w[9] - 0.02).abs() < 1e-15 && w[10..].iter().all(|&v| v == 0.02));
    assert!(b("warmup50")[49] == 0.02 && b("warmup50")[48] < 0.02);
    let custom = BetaSchedule::Custom { betas: vec![0.1, 0.2, 0.3] };
    assert_eq!(custom.betas(3).unwrap(), vec![0.1, 0.2, 0.3]);
    let err = custom.betas(4).unwrap_err().to_string();
    assert!(err.contains("timesteps") && err.contains("set timesteps to 3"), "{err}");
    let err = "cosin".parse::<BetaSchedule>().unwrap_err().to_string();
    assert!(err.contains("cosin") && err.contains("cosine"), "{err}");
}

#[test]
fn schedules_round_trip_through_serde() {
    let toml_like = r#"{"kind":"sigmoid","start":-3.0,"end":3.0,"tau":0.9}"#;
    let s: BetaSchedule = serde_json::from_str(toml_like).unwrap();
    assert_eq!(s, BetaSchedule::Sigmoid { start: -3.0, end: 3.0, tau: 0.9 });
    let c: BetaSchedule = serde_json::from_str(r#"{"kind":"cosine"}"#).unwrap();
    assert_eq!(c, BetaSchedule::cosine());
    assert!(serde_json::from_str::<BetaSchedule>(r#"{"kind":"cosine","z":1}"#).is_err(), "unknown keys are rejected");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// eps <-> x0 <-> v conversions invert each other, and the posterior built from the true x0 is
    /// read back to x0 by the mean parameterisation.
    #[test]
    fn conversions_invert_each_other(schedule in 0usize..3, t0 in 0usize..1000, t1 in 0usize..1000, seed in 0u64..1000) {
        let name = ["linear", "cosine", "sigmoid"][schedule];
        let d = GaussianDiffusionConfig::new().with_beta_schedule(name.parse().unwrap()).init().unwrap();
        let t = [t0, t1];
        let x0 = randn([2, 3, 4, 4], seed, DType::F64).clamp(-1.0, 1.0);
        let eps = randn([2, 3, 4, 4], seed + 1, DType::F64);
        let x_t = d.q_sample(x0.clone(), &t, eps.clone()).unwrap();
        let close = |a: &Tensor<4>, b: &Tensor<4>, tol: f64| max_rel_err(&values(a), &values(b)) < tol;
        // At t near T, x0 from eps divides by sqrt(abar) ~ 1e-5: allow the conditioning it implies.
        let cond = d.schedule.sqrt_recip_alphas_cumprod[t0.max(t1)];
        prop_assert!(close(&d.predict_start_from_noise(x_t.clone(), &t, eps.clone()), &x0, 1e-12 * cond));
        prop_assert!(close(&d.predict_noise_from_start(x_t.clone(), &t, x0.clone()), &eps, 1e-9 * cond));
        let v = d.predict_v(x0.clone(), &t, eps.clone());
        prop_assert!(close(&d.predict_start_from_v(x_t.clone(), &t, v.clone()), &x0, 1e-12));
        prop_assert!(close(&d.predict_noise_from_v(x_t.clone(), &t, v), &eps, 1e-12));
        if t0 > 0 && t1 > 0 {
            let post = d.q_posterior(x0.clone(), x_t.clone(), &t);
            prop_assert!(close(&d.predict_start_from_mean(x_t.clone(), &t, post.mean), &x0, 1e-9 * cond));
        }
    }
}

#[test]
fn posterior_of_q_sample_is_consistent_by_monte_carlo() {
    // Draw x_{t-1} ~ q(x_{t-1} | x0), then x_t ~ q(x_t | x_{t-1}); the posterior mean/variance
    // predicted from (x0, x_t) must match the empirical regression of x_{t-1} on x_t.
    let s = NoiseSchedule::new(&BetaSchedule::cosine(), 50, false).unwrap();
    let t = 20;
    let x0 = 0.3;
    let mut noise = HostNoise::new(7);
    let n = 200_000;
    let (z1, z2) = (noise.draw(n), noise.draw(n));
    let prev: Vec<f64> = z1.iter().map(|z| s.alphas_cumprod_prev[t].sqrt() * x0 + (1.0 - s.alphas_cumprod_prev[t]).sqrt() * z).collect();
    let xt: Vec<f64> = prev.iter().zip(&z2).map(|(p, z)| s.alphas[t].sqrt() * p + s.betas[t].sqrt() * z).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (mp, mt) = (mean(&prev), mean(&xt));
    let cov: f64 = prev.iter().zip(&xt).map(|(p, x)| (p - mp) * (x - mt)).sum::<f64>() / n as f64;
    let var_t: f64 = xt.iter().map(|x| (x - mt).powi(2)).sum::<f64>() / n as f64;
    let slope = cov / var_t;
    assert!((slope - s.posterior_mean_coef2[t]).abs() < 0.01, "slope {slope} vs coef2 {}", s.posterior_mean_coef2[t]);
    let resid: f64 = prev.iter().zip(&xt).map(|(p, x)| (p - mp - slope * (x - mt)).powi(2)).sum::<f64>() / n as f64;
    assert!((resid / s.posterior_variance[t] - 1.0).abs() < 0.02, "residual variance {resid} vs {}", s.posterior_variance[t]);
}

/// Data on the 256-level grid in [-1, 1].
fn quantised_batch(seed: u64) -> Tensor<4> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vals: Vec<f64> = (0..2 * 3 * 4 * 4).map(|_| rand::RngExt::random_range(&mut rng, 0..256) as f64 / 127.5 - 1.0).collect();
    Tensor::from_data(TensorData::new(vals, [2, 3, 4, 4]), opts(DType::F64))
}

#[test]
fn bits_per_dim_of_a_perfect_model_is_finite_and_small() {
    let d = GaussianDiffusionConfig::new()
        .with_timesteps(50)
        .with_beta_schedule(BetaSchedule::cosine())
        .with_objective(Objective::PredX0)
        .init()
        .unwrap();
    let x0 = quantised_batch(3);
    let truth = x0.clone();
    let perfect = move |_x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning<4>| truth.clone();
    let bpd = d.bits_per_dim(&perfect, x0.clone(), &Conditioning::none(), &mut HostNoise::new(1), X0Clip::None).unwrap();
    let total = values(&bpd.total);
    assert!(total.iter().all(|v| v.is_finite() && *v >= 0.0 && *v < 0.05), "perfect model: {total:?}");
    assert_eq!(bpd.terms.len(), 50);
    // A model that always says "zero" must pay for it.
    let blind = |x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning<4>| x.zeros_like();
    let bad = d.bits_per_dim(&blind, x0, &Conditioning::none(), &mut HostNoise::new(1), X0Clip::None).unwrap();
    let bad = values(&bad.total);
    assert!(bad.iter().zip(&total).all(|(b, p)| b.is_finite() && *b > p + 1.0), "blind model {bad:?} vs perfect {total:?}");
}

#[test]
fn ddim_spacings_pick_the_documented_timesteps() {
    assert_eq!(ddim_timesteps(TimestepSpacing::Leading, 1000, 10).unwrap(), (0..10).rev().map(|i| i * 100).collect::<Vec<_>>());
    assert_eq!(ddim_timesteps(TimestepSpacing::Trailing, 1000, 10).unwrap(), (0..10).rev().map(|i| i * 100 + 99).collect::<Vec<_>>());
    assert_eq!(ddim_timesteps(TimestepSpacing::Uniform, 1000, 10).unwrap(), (0..10).rev().map(|i| i * 100).collect::<Vec<_>>());
    assert_eq!(ddim_timesteps(TimestepSpacing::Linspace, 1000, 4).unwrap(), vec![999, 749, 499, 249]);
    let quad = ddim_timesteps(TimestepSpacing::Quadratic, 1000, 100).unwrap();
    assert!(quad.windows(2).all(|w| w[0] > w[1]) && quad[0] == 800 && *quad.last().unwrap() == 0, "{quad:?}");
    for spacing in [TimestepSpacing::Linspace, TimestepSpacing::Uniform, TimestepSpacing::Quadratic, TimestepSpacing::Leading, TimestepSpacing::Trailing] {
        for (t, s) in [(1000, 1), (1000, 50), (10, 10), (7, 3)] {
            let ts = ddim_timesteps(spacing, t, s).unwrap();
            assert!(!ts.is_empty() && ts.len() <= t && ts.iter().all(|&v| v < t), "{spacing} {t}/{s}: {ts:?}");
        }
        let err = ddim_timesteps(spacing, 10, 11).unwrap_err().to_string();
        assert!(err.contains("steps") && err.contains("11"), "{err}");
    }
}

#[test]
fn dynamic_thresholding_scales_only_samples_beyond_the_quantile() {
    let vals: Vec<f64> = (0..16).map(|i| i as f64 / 5.0 - 1.5).chain((0..16).map(|i| i as f64 / 20.0 - 0.4)).collect();
    let x = Tensor::<4>::from_data(TensorData::new(vals.clone(), [2, 1, 4, 4]), opts(DType::F64));
    let out = values(&ddpm_core::diffusion::apply_clip(x, X0Clip::Dynamic { percentile: 0.9 }).unwrap());
    // Sample 0 reaches |x| = 1.5: s > 1, values divided by s and within [-1, 1].
    let mut abs0: Vec<f64> = vals[..16].iter().map(|v| v.abs()).collect();
    abs0.sort_by(f64::total_cmp);
    let pos = 0.9 * 15.0;
    let s = abs0[13] * (1.0 - (pos - 13.0)) + abs0[14] * (pos - 13.0);
    for i in 0..16 {
        assert!((out[i] - (vals[i] / s).clamp(-1.0, 1.0)).abs() < 1e-12);
    }
    // Sample 1 lies within [-0.4, 0.35]: s = 1, unchanged.
    assert_eq!(&out[16..], &vals[16..]);
}

fn eps_model_for(d: &GaussianDiffusion, x0: Tensor<4>) -> impl Fn(Tensor<4>, Tensor<1>, &Conditioning<4>) -> Tensor<4> + '_ {
    // Knows x0, so it can read the true noise off x_t: a perfect eps-predictor.
    move |x_t: Tensor<4>, t: Tensor<1>, _c: &Conditioning<4>| {
        let t: Vec<usize> = values(&t).iter().map(|&v| v as usize).collect();
        d.predict_noise_from_start(x_t, &t, x0.clone())
    }
}

#[test]
fn training_loss_is_zero_for_a_perfect_model_and_positive_otherwise() {
    for immiscible in [false, true] {
        let d = GaussianDiffusionConfig::new().with_objective(Objective::PredNoise).with_immiscible(immiscible).init().unwrap();
        let x0 = quantised_batch(5);
        let model = eps_model_for(&d, x0.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let out = d.training_loss(&model, x0.clone(), &Conditioning::none(), &mut rng, &mut HostNoise::new(2)).unwrap();
        let loss = values(&out.loss)[0];
        assert!(loss < 1e-12, "immiscible={immiscible}: perfect eps model loss {loss}");
        let blind = |x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning<4>| x.zeros_like();
        let out = d.training_loss(&blind, x0, &Conditioning::none(), &mut rng, &mut HostNoise::new(2)).unwrap();
        let loss = values(&out.loss)[0];
        assert!(loss > 0.5 && loss < 1.5, "predicting 0 for N(0,1) noise costs about 1, got {loss}");
    }
}

#[test]
fn every_objective_and_loss_type_trains_on_its_own_target() {
    let x0 = quantised_batch(9);
    let t = [10usize, 600];
    let eps = randn([2, 3, 4, 4], 4, DType::F64);
    for objective in [Objective::PredNoise, Objective::PredX0, Objective::PredV, Objective::Mean] {
        for loss_type in [LossType::L1, LossType::L2, LossType::Kl] {
            let d = GaussianDiffusionConfig::new().with_objective(objective).with_loss_type(loss_type).with_min_snr_gamma(Some(5.0)).init().unwrap();
            let x_t = d.q_sample(x0.clone(), &t, eps.clone()).unwrap();
            let target = d.target(x0.clone(), x_t, &t, eps.clone());
            let oracle = move |_x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning<4>| target.clone();
            let out = d.loss_at(&oracle, x0.clone(), &t, eps.clone(), &Conditioning::none(), false).unwrap();
            let per = values(&out.per_sample);
            assert!(per.iter().all(|v| v.abs() < 1e-6), "{objective}/{loss_type}: oracle loss {per:?}");
        }
    }
}

#[test]
fn self_conditioning_feeds_a_detached_x0_estimate() {
    use std::cell::RefCell;
    let d = GaussianDiffusionConfig::new().with_objective(Objective::PredX0).with_self_condition(true).init().unwrap();
    let seen = RefCell::new(Vec::new());
    let model = |x: Tensor<4>, _t: Tensor<1>, c: &Conditioning<4>| {
        seen.borrow_mut().push(c.self_cond.as_ref().map(values));
        x.mul_scalar(0.5)
    };
    let x0 = quantised_batch(1);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut with = 0;
    for _ in 0..40 {
        seen.borrow_mut().clear();
        d.training_loss(&model, x0.clone(), &Conditioning::none(), &mut rng, &mut HostNoise::new(3)).unwrap();
        let calls = seen.borrow();
        match calls.len() {
            1 => assert!(calls[0].is_none()),
            2 => {
                with += 1;
                assert!(calls[0].is_none(), "the estimate comes from a call without self-conditioning");
                assert!(calls[1].is_some(), "and is fed to the second call");
            }
            n => panic!("{n} network calls"),
        }
    }
    assert!((10..=30).contains(&with), "self-conditioning about half the time, got {with}/40");
}

#[test]
fn offset_noise_adds_a_per_channel_constant() {
    let d = GaussianDiffusionConfig::new().with_objective(Objective::PredNoise).with_offset_noise_strength(0.5).init().unwrap();
    let captured = std::cell::RefCell::new(None);
    let x0 = quantised_batch(2).zeros_like();
    // With x0 = 0 the network sees sqrt(1-abar) * noise; the objective target is the noise itself.
    let model = |x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning<4>| {
        *captured.borrow_mut() = Some(x.clone());
        x
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let plain = GaussianDiffusionConfig::new().with_objective(Objective::PredNoise).init().unwrap();
    plain.training_loss(&model, x0.clone(), &Conditioning::none(), &mut rng.clone(), &mut HostNoise::new(8)).unwrap();
    let a = values(captured.borrow().as_ref().unwrap());
    d.training_loss(&model, x0, &Conditioning::none(), &mut rng, &mut HostNoise::new(8)).unwrap();
    let b = values(captured.borrow().as_ref().unwrap());
    // Per (sample, channel) the difference is constant over the 16 pixels and not zero.
    for sc in 0..6 {
        let diffs: Vec<f64> = (0..16).map(|k| b[sc * 16 + k] - a[sc * 16 + k]).collect();
        assert!(diffs.iter().all(|v| (v - diffs[0]).abs() < 1e-9) && diffs[0].abs() > 1e-6, "{diffs:?}");
    }
}

#[test]
fn learned_variance_uses_twice_the_channels_and_the_hybrid_loss() {
    let d = GaussianDiffusionConfig::new().with_objective(Objective::PredNoise).with_variance(ModelVariance::LearnedRange).init().unwrap();
    let x0 = quantised_batch(4);
    let t = [0usize, 500];
    let eps = randn([2, 3, 4, 4], 6, DType::F64);
    let wrong = |x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning<4>| x.narrow(1, 0, 1);
    let err = d.loss_at(&wrong, x0.clone(), &t, eps.clone(), &Conditioning::none(), false).unwrap_err().to_string();
    assert!(err.contains("learned_range") && err.contains("twice"), "{err}");
    // v = +1 selects ln beta_t, v = -1 selects ln beta~_t.
    let eps2 = eps.clone();
    for (v, want) in [(1.0, d.schedule.betas[500].ln()), (-1.0, d.schedule.posterior_log_variance_clipped[500])] {
        let e = eps2.clone();
        let model = move |_x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning<4>| Tensor::cat(vec![e.clone(), e.zeros_like().add_scalar(v)], 1);
        let x_t = d.q_sample(x0.clone(), &t, eps.clone()).unwrap();
        let out = d.run_model(&model, x_t.clone(), &t, &Conditioning::none());
        let (_, var) = d.split_output(out).unwrap();
        let logvar = values(&d.model_log_variance(&x_t, &t, var).unwrap());
        assert!((logvar[48] - want).abs() < 1e-12, "v={v}: {} vs {want}", logvar[48]);
        let loss = d.loss_at(&model, x0.clone(), &t, eps.clone(), &Conditioning::none(), false).unwrap();
        assert!(values(&loss.per_sample).iter().all(|l| l.is_finite() && *l >= 0.0));
    }
    let err = GaussianDiffusionConfig::new().with_variance(ModelVariance::LearnedRange).with_loss_type(LossType::Kl).init().unwrap_err();
    assert!(err.to_string().contains("hybrid"));
}

#[test]
fn fixed_large_variance_starts_at_the_posterior_variance() {
    let d = GaussianDiffusionConfig::new().with_variance(ModelVariance::FixedLarge).with_timesteps(100).init().unwrap();
    let x = randn([3, 1, 2, 2], 1, DType::F64);
    let lv = values(&d.model_log_variance(&x, &[0, 1, 50], None).unwrap());
    assert!((lv[0] - d.schedule.posterior_variance[1].ln()).abs() < 1e-12);
    assert!((lv[1] - d.schedule.betas[1].ln()).abs() < 1e-12);
    assert!((lv[2] - d.schedule.betas[50].ln()).abs() < 1e-12);
}

#[test]
fn samplers_are_reproducible_from_a_seed_and_report_every_step() {
    let d = GaussianDiffusionConfig::new().with_timesteps(20).with_beta_schedule(BetaSchedule::cosine()).init().unwrap();
    let model = |x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning<4>| x.mul_scalar(0.3);
    for sampler in [Sampler::Ddpm, Sampler::Ddim { steps: 5, eta: 0.5, spacing: TimestepSpacing::Trailing }] {
        let run = |seed| {
            let mut steps = 0;
            let mut noise = HostNoise::new(seed);
            let x = sample(&d, &model, noise.normal([2, 1, 4, 4], opts(DType::F32)).unwrap(), &sampler, &SampleOptions::default(), &mut noise, |s: &StepInfo<'_, 4>| {
                assert_eq!(s.index, steps);
                steps += 1;
            })
            .unwrap();
            (values(&x), steps)
        };
        let (a, n) = run(1);
        let (b, _) = run(1);
        let (c, _) = run(2);
        assert_eq!(a, b, "{sampler:?}: same seed, same samples");
        assert_ne!(a, c, "{sampler:?}: another seed, other samples");
        assert_eq!(n, if sampler == Sampler::Ddpm { 20 } else { 5 });
        assert!(a.iter().all(|v| v.abs() <= 1.0 + 1e-6), "clipped x0 keeps samples in range");
    }
}

#[test]
fn host_noise_resumes_mid_stream() {
    let mut a = HostNoise::new(42);
    a.draw(37);
    let pos = a.word_pos();
    let next = a.draw(5);
    assert_eq!(HostNoise::resume(42, pos).draw(5), next);
}

#[test]
fn per_sample_noise_depends_only_on_each_rows_seed() {
    let rows = |seeds: &[u64]| -> Vec<Vec<f64>> {
        let mut n = PerSampleNoise::new(seeds);
        let mut out = Vec::new();
        for _ in 0..2 {
            let t: Tensor<3> = n.normal([seeds.len(), 2, 3], opts(DType::F64)).unwrap();
            let v = t.into_data().try_to_vec_as::<f64>().unwrap();
            out.extend(v.chunks(6).map(|c| c.to_vec()));
        }
        out
    };
    // Seed 7 as row 0 of a batch of one and as row 1 of a batch of three: the same draws, step by step.
    let alone = rows(&[7]);
    let shared = rows(&[3, 7, 9]);
    assert_eq!(alone[0], shared[1]);
    assert_eq!(alone[1], shared[4]);
    assert_ne!(shared[0], shared[1]);
    let e = PerSampleNoise::new(&[1, 2]).normal([3, 2], opts(DType::F32)).unwrap_err().to_string();
    assert!(e.contains("2 per-sample seeds"), "{e}");
    let first = TensorData::new(vec![0.5f32; 4], [2, 2]);
    let mut p = PrefixedNoise::new([first.clone()], HostNoise::new(1));
    let a: Tensor<2> = p.normal([2, 2], opts(DType::F32)).unwrap();
    assert_eq!(a.into_data().try_to_vec_as::<f32>().unwrap(), vec![0.5; 4]);
    let b: Tensor<2> = p.normal([2, 2], opts(DType::F32)).unwrap();
    let c: Tensor<2> = HostNoise::new(1).normal([2, 2], opts(DType::F32)).unwrap();
    assert_eq!(b.into_data(), c.into_data());
}

#[test]
fn bad_input_gives_errors_that_name_the_problem() {
    let d = GaussianDiffusionConfig::new().with_timesteps(10).with_beta_schedule(BetaSchedule::cosine()).init().unwrap();
    let x = randn([2, 1, 2, 2], 0, DType::F32);
    let e = d.q_sample(x.clone(), &[3, 10], x.clone()).unwrap_err().to_string();
    assert!(e.contains("`t` = 10") && e.contains("0 to 9"), "{e}");
    let e = d.q_sample(x.clone(), &[3], x.clone()).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = d.q_sample(x.clone(), &[1, 2], randn([2, 1, 2, 3], 0, DType::F32)).unwrap_err().to_string();
    assert!(e.contains("noise") && e.contains("[2, 1, 2, 3]"), "{e}");
    let mut replay = ReplayNoise::new([TensorData::new(vec![0.0f32; 8], [2, 1, 2, 2])]);
    replay.normal([2, 1, 2, 2], opts(DType::F32)).unwrap();
    let e = replay.normal([2, 1, 2, 2], opts(DType::F32)).unwrap_err().to_string();
    assert!(e.contains("draw #2") && e.contains("only 1"), "{e}");
    let e = GaussianDiffusionConfig::new().with_min_snr_gamma(Some(0.0)).init().unwrap_err().to_string();
    assert!(e.contains("min_snr_gamma"), "{e}");
    let e = GaussianDiffusionConfig::new().with_timesteps(0).init().unwrap_err().to_string();
    assert!(e.contains("timesteps"), "{e}");
    let model = |x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning<4>| x;
    let e = ddpm_core::sampler::ddim_sample(&d, &model, x.clone(), &ddpm_core::DdimRun::reference(&[3, 5], 0.0), &SampleOptions::default(), &mut HostNoise::new(0), no_callback)
        .unwrap_err()
        .to_string();
    assert!(e.contains("descending"), "{e}");
}

/// A learned-variance model samples with every sampler (the reference's DDIM raises a NameError
/// here): DDIM and the sigma-space solvers use the mean half only, so they equal the same network
/// with its variance channels dropped under a fixed variance; DDPM uses the learned variance.
#[test]
fn learned_variance_models_sample_with_ddim_and_every_solver() {
    let learned = GaussianDiffusionConfig::new().with_timesteps(50).with_beta_schedule(BetaSchedule::cosine()).with_objective(Objective::PredNoise).with_variance(ModelVariance::LearnedRange).init().unwrap();
    let fixed = GaussianDiffusionConfig::new().with_timesteps(50).with_beta_schedule(BetaSchedule::cosine()).with_objective(Objective::PredNoise).init().unwrap();
    let mean_half = |x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning<4>| x.mul_scalar(0.3);
    let with_variance = |x: Tensor<4>, t: Tensor<1>, c: &Conditioning<4>| Tensor::cat(vec![mean_half(x.clone(), t, c), x.zeros_like().add_scalar(0.2)], 1);
    let options = TensorCreationOptions::new(Device::flex()).with_dtype(DType::F64);
    // DDIM both ways and every sigma-space solver of the table.
    let samplers: Vec<Sampler> = [
        Sampler::Ddim { steps: 10, eta: 0.0, spacing: TimestepSpacing::Linspace },
        Sampler::Ddim { steps: 10, eta: 1.0, spacing: TimestepSpacing::Linspace },
    ]
    .into_iter()
    .chain(ddpm_core::karras::SOLVERS.iter().map(|r| Sampler::Sigma { solver: r.solver, steps: 8, spacing: SigmaSpacing::karras(), eta: 1.0, churn: Churn::default(), sigma_max: Some(80.0) }))
    .collect();
    assert_eq!(samplers.len(), 2 + ddpm_core::karras::SOLVERS.len());
    for sampler in &samplers {
        let run = |d: &GaussianDiffusion, m: &dyn Fn(Tensor<4>, Tensor<1>, &Conditioning<4>) -> Tensor<4>| {
            let mut noise = HostNoise::new(4);
            let z = noise.normal([2, 3, 4, 4], options.clone()).unwrap();
            values(&sample(d, &m, z, sampler, &SampleOptions::default(), &mut noise, no_callback).unwrap())
        };
        let (a, b) = (run(&learned, &with_variance), run(&fixed, &mean_half));
        let gap = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        assert!(gap < 1e-12, "{sampler:?}: {gap}");
    }
    let mut noise = HostNoise::new(4);
    let z = noise.normal([2, 3, 4, 4], options).unwrap();
    let ddpm = values(&sample(&learned, &with_variance, z, &Sampler::Ddpm, &SampleOptions::default(), &mut noise, no_callback).unwrap());
    assert!(ddpm.iter().all(|v| v.is_finite()));
}

#[test]
fn every_process_returns_the_same_loss_shape() {
    use ddpm_core::{ContinuousDiffusionConfig, EdmConfig, LossOutput, NoiseLevels};
    let processes: Vec<Process> = vec![
        GaussianDiffusionConfig::new().with_timesteps(20).init().unwrap().into(),
        Process::Edm { edm: EdmConfig::new().init().unwrap(), self_condition: false },
        Process::Continuous(ContinuousDiffusionConfig::new().init().unwrap()),
    ];
    let model = |x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning<4>| x.mul_scalar(0.5);
    for process in &processes {
        let x0 = HostNoise::new(3).normal([4, 1, 2, 2], opts(DType::F32)).unwrap();
        let (mut rng, mut noise) = (ChaCha8Rng::seed_from_u64(1), HostNoise::new(2));
        let LossOutput { loss, per_sample, levels } = process.training_loss(&model, x0, &Conditioning::none(), &mut rng, &mut noise).unwrap();
        let per: Vec<f64> = per_sample.into_data().try_into_vec_as::<f64>().unwrap();
        let mean = per.iter().sum::<f64>() / per.len() as f64;
        assert_eq!(per.len(), 4, "{}", process.kind());
        assert!((loss.into_scalar::<f64>() - mean).abs() < 1e-6 * mean.abs().max(1.0), "{}: the loss is the mean of the per-sample losses", process.kind());
        let ok = match (process.kind(), &levels) {
            ("gaussian", NoiseLevels::Timesteps(t)) => t.len() == 4 && t.iter().all(|&t| t < 20),
            ("edm", NoiseLevels::Sigmas(s)) => s.len() == 4 && s.iter().all(|&s| s > 0.0),
            ("continuous", NoiseLevels::Times(t)) => t.len() == 4 && t.iter().all(|&t| (0.0..1.0).contains(&t)),
            _ => false,
        };
        assert!(ok, "{}: {levels:?}", process.kind());
    }
}

#[test]
fn every_sampler_self_conditions_each_call_on_the_previous_estimate() {
    use ddpm_core::karras::{SigmaSolver, SigmaSpacing};
    use ddpm_core::sampler::{SampleOptions, Sampler, no_callback, sample};
    use std::cell::RefCell;
    // x0-prediction without clipping: each call's x0 estimate is its output.
    let d = GaussianDiffusionConfig::new().with_timesteps(10).with_objective(Objective::PredX0).with_self_condition(true).init().unwrap();
    let seen: RefCell<Vec<(Option<Vec<f64>>, Vec<f64>)>> = RefCell::new(Vec::new());
    let model = |x: Tensor<4>, t: Tensor<1>, c: &Conditioning<4>| {
        let out = x.mul_scalar(0.5) + t.reshape([-1, 1, 1, 1]).mul_scalar(0.01);
        seen.borrow_mut().push((c.self_cond.as_ref().map(values), values(&out)));
        out
    };
    let sigma = |solver| Sampler::Sigma { solver, steps: 4, spacing: SigmaSpacing::karras(), eta: 1.0, churn: Default::default(), sigma_max: None };
    let samplers = [
        Sampler::Ddpm,
        Sampler::Ddim { steps: 4, eta: 0.5, spacing: Default::default() },
        Sampler::DiffusersDdim { steps: 4, eta: 0.0, spacing: TimestepSpacing::Leading, steps_offset: 0, set_alpha_to_one: true },
        sigma(SigmaSolver::Euler),
        sigma(SigmaSolver::Heun),
        sigma(SigmaSolver::DpmSolver2mSde),
    ];
    let opts = SampleOptions { clip: X0Clip::None, cond: Conditioning::none() };
    for sampler in &samplers {
        seen.borrow_mut().clear();
        let z = randn([2, 1, 2, 2], 5, DType::F32);
        sample(&d, &model, z, sampler, &opts, &mut HostNoise::new(6), no_callback).unwrap();
        let calls = seen.borrow();
        assert_eq!(calls.len(), sampler.network_calls(10), "{sampler:?}: network calls");
        assert!(calls[0].0.is_none(), "{sampler:?}: the first call has no estimate to condition on");
        for k in 1..calls.len() {
            assert_eq!(calls[k].0.as_ref(), Some(&calls[k - 1].1), "{sampler:?}: call {k} is conditioned on call {}'s estimate", k - 1);
        }
    }
}
