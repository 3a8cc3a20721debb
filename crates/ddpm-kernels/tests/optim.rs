//! `FusedAdam` against burn-optim's `Adam` and `AdamW`: the same weights after several steps.

use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use ddpm_kernels::FusedAdam;

/// Values from a fixed formula, not Burn's global RNG (which tests running side by side share).
fn values<const D: usize>(shape: [usize; D], phase: f32, device: &Device) -> Tensor<D> {
    let n = shape.iter().product::<usize>();
    Tensor::from_data(TensorData::new((0..n).map(|i| (i as f32 * 0.37 + phase).sin()).collect::<Vec<_>>(), shape), device)
}

fn train(mut optim: ModuleOptimizer, steps: usize) -> Vec<f32> {
    let device = Device::flex().autodiff();
    let mut model: Linear = LinearConfig::new(37, 19).init(&device);
    model.weight = Param::from_tensor(values([37, 19], 0.5, &device) * 0.2);
    model.bias = Some(Param::from_tensor(values([19], 1.5, &device) * 0.1));
    let x = values([64, 37], 0.0, &device);
    for step in 0..steps {
        let loss = (model.forward(x.clone()) - 0.3).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        // A changing learning rate, as a warm-up gives.
        model = optim.step(1e-2 * (step + 1) as f64, model, grads);
    }
    model.weight.val().into_data().try_to_vec::<f32>().expect("f32")
}

fn assert_same(ours: Vec<f32>, reference: Vec<f32>, what: &str) {
    let err = ours.iter().zip(&reference).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err < 2e-6, "{what}: max difference {err}");
    assert!(ours.iter().zip(&reference).any(|(a, b)| a != &0.0 && b != &0.0), "{what}: nothing trained");
}

#[test]
fn fused_adam_matches_burns_adam() {
    let reference = train(AdamConfig::new().with_beta_1(0.9).with_beta_2(0.99).with_epsilon(1e-8).init(), 5);
    let ours = train(FusedAdam::new([0.9, 0.99], 1e-8, 0.0).init(), 5);
    assert_same(ours, reference, "Adam");
}

#[test]
fn fused_adamw_matches_burns_adamw() {
    let reference = train(AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.999).with_epsilon(1e-8).with_weight_decay(0.05).init(), 5);
    let ours = train(FusedAdam::new([0.9, 0.999], 1e-8, 0.05).init(), 5);
    assert_same(ours, reference, "AdamW");
}

#[test]
fn ema_lerp_matches_burn_and_leaves_other_handles_alone() {
    let device = Device::flex();
    let values = |n: usize, k: f32| (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * k).collect::<Vec<f32>>();
    for shape in [[1, 1], [3, 7], [300, 129]] {
        let n = shape[0] * shape[1];
        let ema = Tensor::<2>::from_data(TensorData::new(values(n, 0.01), shape), &device);
        let online = Tensor::<2>::from_data(TensorData::new(values(n, -0.03), shape), &device);
        let kept = ema.clone();
        let before: Vec<f32> = kept.to_data().try_to_vec::<f32>().unwrap();
        let ours: Vec<f32> = ddpm_kernels::ema_lerp(ema.clone(), online.clone(), 0.995).into_data().try_to_vec::<f32>().unwrap();
        let reference: Vec<f32> = (ema * 0.995 + online * (1.0 - 0.995)).into_data().try_to_vec::<f32>().unwrap();
        let err = ours.iter().zip(&reference).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= 1e-6, "{shape:?}: max error {err}");
        // The kernel writes in place only into a buffer nothing else holds.
        assert_eq!(kept.into_data().try_to_vec::<f32>().unwrap(), before, "{shape:?}: another handle to the EMA changed");
    }
    // On autodiff devices it is Burn's expression, with the same values.
    let ad = Device::flex().autodiff();
    let (e, o) = (Tensor::<1>::from_floats([1.0, 2.0], &ad), Tensor::<1>::from_floats([3.0, -2.0], &ad));
    let out: Vec<f32> = ddpm_kernels::ema_lerp(e, o, 0.5).into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(out, [2.0, 0.0]);
}

/// The global-norm clip's per-gradient sum of squares against `powi(2).sum()`: one value, a
/// vector shorter than a lane, tensors spanning several parallel chunks, and values of mixed sign
/// and magnitude.
#[test]
fn sum_of_squares_matches_burns_square_and_sum() {
    let device = Device::flex();
    for (n, scale) in [(1usize, 3.0f32), (7, 0.5), (1000, 1.0), (300_001, 0.01), (1 << 20, 2.0)] {
        let t = values([n], 0.25, &device) * scale;
        let ours = ddpm_kernels::sum_of_squares(t.clone()).into_scalar::<f64>();
        let reference: f64 = t.into_data().try_to_vec::<f32>().expect("f32").iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        assert!((ours - reference).abs() <= 1e-6 * reference.max(1e-30), "{n} values: {ours} against {reference}");
    }
    let t = values([64, 128, 3, 3], 0.1, &device);
    let ours = ddpm_kernels::sum_of_squares(t.clone()).into_scalar::<f64>();
    let burn = t.powi_scalar(2).sum().into_scalar::<f64>();
    assert!((ours - burn).abs() <= 1e-5 * burn, "{ours} against Burn's {burn}");
}
