//! Every network runs forward and backward on the test device (Flex by default; `DDPM_DEVICE`
//! picks another, e.g. `vulkan:cpu` in CI), with the shapes, parameter counts and guards it promises.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use ddpm_core::{Conditioning, Denoiser};
use ddpm_models::karras::{DownsampleType, normalize_weight};
use ddpm_models::*;

mod common;
use common::device;

fn randn<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn time(device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(vec![1.0f32, 500.0], [2]), device)
}

fn labels(device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(vec![0i64, 2], [2]), device)
}

/// Runs `net` on `x`, backpropagates `sum(out^2)` and checks the output shape and that the
/// gradient reaches both the input and a parameter, finite.
fn forward_backward<const D: usize, M: Module + Denoiser<D>>(name: &str, net: &M, x: Tensor<D>, cond: &Conditioning<D>, out_channels: usize) {
    let x = x.require_grad();
    let out = net.denoise(x.clone(), time(&x.device()), cond);
    let mut want = x.dims();
    want[1] = out_channels;
    assert_eq!(out.dims(), want, "{name}: output shape");
    let grads = out.powi_scalar(2).sum().backward();
    let gx = x.grad(&grads).unwrap_or_else(|| panic!("{name}: no gradient for the input"));
    let gx: Vec<f32> = gx.into_data().try_into_vec_as::<f32>().unwrap();
    assert!(gx.iter().all(|v| v.is_finite()) && gx.iter().any(|v| *v != 0.0), "{name}: input gradient");
    struct FirstGrad<'a>(&'a burn::tensor::Gradients, Option<bool>);
    impl burn::module::ModuleVisitor for FirstGrad<'_> {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            if self.1.is_none() && p.is_require_grad() {
                self.1 = p.val().grad(self.0).map(|g| g.into_data().try_into_vec_as::<f32>().unwrap().iter().all(|v| v.is_finite()));
            }
        }
    }
    let mut v = FirstGrad(&grads, None);
    net.visit(&mut v);
    assert_eq!(v.1, Some(true), "{name}: parameter gradient");
}

#[test]
fn every_network_runs_forward_and_backward() {
    let device = device().autodiff();
    let unet = UnetConfig::new(8).with_dim_mults(vec![1, 2]).with_self_condition(true).with_learned_variance(true).init(&device).unwrap();
    let sc = Conditioning { self_cond: Some(randn([2, 3, 8, 12], &device)), classes: None };
    forward_backward("Unet", &unet, randn([2, 3, 8, 12], &device), &sc, 6);
    let unet1d = UnetConfig::new(8).with_dim_mults(vec![1, 2]).with_channels(2).init_1d(&device).unwrap();
    forward_backward("Unet1D", &unet1d, randn([2, 2, 16], &device), &Conditioning::none(), 2);
    let k2 = KarrasUnetConfig::new(8).with_dim(8).with_dim_max(16).with_channels(3).with_num_downsamples(1).with_num_blocks_per_stage(vec![1]).with_attn_res(vec![4]).with_attn_dim_head(4).with_num_classes(Some(3)).init(&device).unwrap();
    // EDM2 starts the output gain at zero (the network outputs zero); open it so gradients reach x.
    let open = |g: &mut burn::module::Param<Tensor<1>>| *g = burn::module::Param::from_tensor(Tensor::ones([1], &device));
    let mut k2 = k2;
    open(&mut k2.net.output_gain);
    forward_backward("KarrasUnet", &k2, randn([2, 3, 8, 8], &device), &Conditioning::classes(labels(&device)), 3);
    let k1 = KarrasUnetConfig::new(8).with_dim(8).with_dim_max(16).with_channels(2).with_num_downsamples(1).with_num_blocks_per_stage(vec![1]).with_attn_res(vec![4]).with_attn_dim_head(4).init_1d(&device).unwrap();
    let mut k1 = k1;
    open(&mut k1.net.output_gain);
    forward_backward("KarrasUnet1D", &k1, randn([2, 2, 8], &device), &Conditioning::none(), 2);
    let k3 = KarrasUnetConfig::new(4).with_frames(2)
        .with_dim(8)
        .with_dim_max(16)
        .with_channels(1)
        .with_num_downsamples(1)
        .with_num_blocks_per_stage(vec![1])
        .with_downsample_types(vec![DownsampleType::All])
        .with_attn_res(vec![2])
        .with_attn_dim_head(4)
        .with_factorize_space_time_attn(true)
        .init_3d(&device)
        .unwrap();
    let mut k3 = k3;
    open(&mut k3.net.output_gain);
    forward_backward("KarrasUnet3D", &k3, randn([2, 1, 2, 4, 4], &device), &Conditioning::none(), 1);
    let ddpm = DdpmUnetConfig::new().with_ch(32).with_ch_mult(vec![1, 2]).with_num_res_blocks(1).with_resolution(8).with_attn_resolutions(vec![4]).init(&device).unwrap();
    forward_backward("DdpmUnet", &ddpm, randn([2, 3, 8, 8], &device), &Conditioning::none(), 3);
    let mlp = MlpConfig::new(2).with_num_classes(Some(3)).init(&device).unwrap();
    forward_backward("Mlp", &mlp, randn([2, 2], &device), &Conditioning::classes(labels(&device)), 2);
}

#[test]
fn the_ddpm_cifar10_network_has_the_papers_size() {
    let net = DdpmUnetConfig::new().init(&Device::flex()).unwrap();
    let n = net.num_params();
    // Ho et al. 2020: 35.7 M parameters for CIFAR-10.
    assert!((35_650_000..35_750_000).contains(&n), "{n} parameters");
    assert_eq!(n, 35_746_307);
}

#[test]
fn forced_weight_normalisation_gives_every_output_the_norm_of_its_fan() {
    let net = KarrasUnetConfig::new(8).with_dim(8).with_dim_max(16).with_channels(3).with_num_downsamples(1).with_num_blocks_per_stage(vec![1]).with_attn_res(vec![4]).with_attn_dim_head(4).init(&Device::flex()).unwrap();
    let before = net.net.input_block.weight.val();
    let after = net.clone().force_weight_norm();
    let w = after.net.input_block.weight.val();
    let [o, i, a, b, c] = w.dims();
    let fan = i * a * b * c;
    let norms: Vec<f32> = w.clone().reshape([o, fan]).powi_scalar(2).sum_dim(1).sqrt().into_data().try_into_vec_as::<f32>().unwrap();
    assert!(norms.iter().all(|n| (n - (fan as f32).sqrt()).abs() < 1e-3), "{norms:?}");
    // Idempotent, and the forward pass is unchanged by it (it always uses the normalised weight).
    let diff: f32 = (normalize_weight(w.clone()) - w).abs().max().into_scalar::<f32>();
    assert!(diff < 1e-4);
    let x = randn([2, 3, 8, 8], &Device::flex());
    let t = time(&Device::flex());
    let y0: Vec<f32> = net.forward(x.clone(), t.clone(), None, None).into_data().try_into_vec_as().unwrap();
    let y1: Vec<f32> = after.forward(x, t, None, None).into_data().try_into_vec_as().unwrap();
    assert!(y0.iter().zip(&y1).all(|(a, b)| (a - b).abs() < 1e-4));
    assert!((before - after.net.input_block.weight.val()).abs().max().into_scalar::<f32>() > 1e-3, "weights were rescaled");
}

#[test]
fn inputs_that_do_not_fit_are_refused_with_the_setting_to_change() {
    let device = Device::flex();
    let unet = UnetConfig::new(8).with_dim_mults(vec![1, 2, 4]).init(&device).unwrap();
    let e = unet.check_input([1, 3, 8, 10]).unwrap_err().to_string();
    assert!(e.contains("divisible by 4") && e.contains("dim_mults"), "{e}");
    let e = unet.check_input([1, 1, 8, 8]).unwrap_err().to_string();
    assert!(e.contains("channels"), "{e}");
    unet.check_input([1, 3, 8, 12]).unwrap();
    let e = UnetConfig::new(8).with_dim_mults(vec![1, 2]).with_attn_heads(vec![1, 2, 3]).init(&device).unwrap_err().to_string();
    assert!(e.contains("attn_heads") && e.contains("one per stage"), "{e}");
    let k = KarrasUnetConfig::new(8).with_dim(8).with_dim_max(8).with_num_downsamples(1).with_num_blocks_per_stage(vec![1]).with_attn_res(vec![]).with_num_classes(Some(2)).init(&device).unwrap();
    let e = k.net.check_input([1, 4, 1, 8, 8], false).unwrap_err().to_string();
    assert!(e.contains("num_classes") && e.contains("label"), "{e}");
    let e = k.net.check_labels(&[0, 2]).unwrap_err().to_string();
    assert!(e.contains("label 2"), "{e}");
    let e = KarrasUnetConfig::new(6).with_num_downsamples(2).init(&device).unwrap_err().to_string();
    assert!(e.contains("num_downsamples"), "{e}");
    // One config for every rank: the video settings are refused for images and sequences.
    let e = KarrasUnetConfig::new(8).with_frames(2).init(&device).unwrap_err().to_string();
    assert!(e.contains("frames") && e.contains("init_3d"), "{e}");
    let e = KarrasUnetConfig::new(8).with_factorize_space_time_attn(true).init_1d(&device).unwrap_err().to_string();
    assert!(e.contains("factorize_space_time_attn") && e.contains("sequences"), "{e}");
    let e = KarrasUnetConfig::new(8).with_num_downsamples(1).with_num_blocks_per_stage(vec![1, 2, 3]).init(&device).unwrap_err().to_string();
    assert!(e.contains("num_blocks_per_stage"), "{e}");
    // The same for the U-Net: the sequence network has one middle attention, no full_attn.
    let e = UnetConfig::new(8).with_attn_heads(vec![2, 4]).init_1d(&device).unwrap_err().to_string();
    assert!(e.contains("attn_heads") && e.contains("one value"), "{e}");
    let e = UnetConfig::new(8).with_full_attn(Some(vec![true; 4])).init_1d(&device).unwrap_err().to_string();
    assert!(e.contains("full_attn"), "{e}");
}

/// The same weights give the same outputs on the test device as on Flex (guards against backend
/// kernels that differ, such as Burn 0.22's fused attention on CubeCL with strided inputs).
#[test]
fn every_network_computes_on_the_test_device_what_it_computes_on_flex() {
    let flex = Device::flex();
    let dev = device();
    fn same<const D: usize>(name: &str, a: Tensor<D>, b: Tensor<D>) {
        let a: Vec<f32> = a.into_data().try_into_vec_as().unwrap();
        let b: Vec<f32> = b.into_data().try_into_vec_as().unwrap();
        let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let err = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale;
        assert!(err < 1e-4, "{name}: device differs from Flex by {err:e} (relative)");
    }
    let x4 = randn([2, 3, 8, 8], &flex);
    let t = time(&flex);
    let on = |x: &Tensor<4>| x.clone().to_device(&dev);
    let unet = UnetConfig::new(8).with_dim_mults(vec![1, 2]).with_full_attn(Some(vec![true, true])).with_flash_attn(true).init(&flex).unwrap();
    same("Unet (fused attention)", unet.forward(x4.clone(), t.clone(), None), unet.clone().to_device(&dev).forward(on(&x4), t.clone().to_device(&dev), None));
    let ddpm = DdpmUnetConfig::new().with_ch(32).with_ch_mult(vec![1, 2]).with_num_res_blocks(1).with_resolution(8).with_attn_resolutions(vec![8, 4]).init(&flex).unwrap();
    same("DdpmUnet", ddpm.forward(x4.clone(), t.clone()), ddpm.clone().to_device(&dev).forward(on(&x4), t.clone().to_device(&dev)));
    let mut k2 = KarrasUnetConfig::new(8).with_dim(8).with_dim_max(16).with_channels(3).with_num_downsamples(1).with_num_blocks_per_stage(vec![1]).with_attn_res(vec![8, 4]).with_attn_dim_head(4).with_attn_flash(true).init(&flex).unwrap();
    k2.net.output_gain = burn::module::Param::from_tensor(Tensor::ones([1], &flex));
    same("KarrasUnet (fused attention)", k2.forward(x4.clone(), t.clone(), None, None), k2.clone().to_device(&dev).forward(on(&x4), t.clone().to_device(&dev), None, None));
    let mlp = MlpConfig::new(3).init(&flex).unwrap();
    let x2 = randn([2, 3], &flex);
    same("Mlp", mlp.forward(x2.clone(), t.clone(), None, None), mlp.clone().to_device(&dev).forward(x2.to_device(&dev), t.to_device(&dev), None, None));
}

/// Class labels reach the output of every network built with `num_classes`: two identical inputs
/// at the same time differ only by label, and the table has a row for the null class.
#[test]
fn every_network_takes_class_labels() {
    let device = device();
    fn differs<const D: usize, M: Denoiser<D>>(name: &str, net: &M, x1: Tensor<D>, classes: [i64; 2]) -> f32 {
        let device = x1.device();
        let x = Tensor::cat(vec![x1.clone(), x1], 0);
        let t = Tensor::from_data(TensorData::new(vec![10.0f32, 10.0], [2]), &device);
        let c = Conditioning::classes(Tensor::from_data(TensorData::new(classes.to_vec(), [2]), &device));
        let out = net.denoise(x, t, &c);
        let scale: f32 = out.clone().abs().max().into_scalar::<f32>();
        let parts = out.chunk(2, 0);
        let gap: f32 = (parts[0].clone() - parts[1].clone()).abs().max().into_scalar::<f32>();
        assert!(gap.is_finite() && scale > 0.0, "{name}");
        gap / scale
    }
    let unet = UnetConfig::new(8).with_dim_mults(vec![1, 2]).with_attn_heads(vec![2]).with_attn_dim_head(vec![8]).with_num_classes(Some(3)).init(&device).unwrap();
    let unet1d = UnetConfig::new(8).with_dim_mults(vec![1, 2]).with_channels(2).with_num_classes(Some(3)).init_1d(&device).unwrap();
    let ddpm = DdpmUnetConfig::new().with_resolution(8).with_ch(32).with_ch_mult(vec![1, 2]).with_num_res_blocks(1).with_attn_resolutions(vec![4]).with_dropout(0.0).with_num_classes(Some(3)).init(&device).unwrap();
    let mlp = MlpConfig::new(2).with_hidden(16).with_num_classes(Some(3)).init(&device).unwrap();
    for (name, rows) in [
        ("unet", unet.class_emb.as_ref().map(|e| e.embedding.weight.dims()[0])),
        ("unet1d", unet1d.unet.class_emb.as_ref().map(|e| e.embedding.weight.dims()[0])),
        ("ddpm_unet", ddpm.class_emb.as_ref().map(|e| e.embedding.weight.dims()[0])),
        ("mlp", mlp.class_emb.as_ref().map(|e| e.embedding.weight.dims()[0])),
    ] {
        assert_eq!(rows, Some(4), "{name}: 3 classes and the null class");
    }
    let image = randn([1, 3, 8, 8], &device);
    let seq = randn([1, 2, 16], &device);
    let vec = randn([1, 2], &device);
    // Gaps relative to the output's largest value. The DDPM network starts every residual branch
    // near zero (the paper's init, gain 1e-5), and the embedding enters inside those branches, so
    // its labels move the untrained output by about 1e-5, far above f32 rounding.
    for (name, same, other, floor) in [
        ("unet", differs("unet", &unet, image.clone(), [1, 1]), differs("unet", &unet, image.clone(), [0, 3]), 1e-3),
        ("unet1d", differs("unet1d", &unet1d, seq.clone(), [1, 1]), differs("unet1d", &unet1d, seq, [0, 3]), 1e-3),
        ("ddpm_unet", differs("ddpm_unet", &ddpm, image.clone(), [1, 1]), differs("ddpm_unet", &ddpm, image, [0, 3]), 1e-6),
        ("mlp", differs("mlp", &mlp, vec.clone(), [1, 1]), differs("mlp", &mlp, vec, [0, 3]), 1e-3),
    ] {
        assert!(same < 1e-7, "{name}: the same label gives the same output ({same})");
        assert!(other > floor, "{name}: another label gives another output ({other})");
    }
}

#[test]
fn the_time_embedding_on_the_host_has_the_bits_of_the_tensor_ops() {
    let flex = Device::flex();
    if !ddpm_kernels::on_flex(&flex) {
        eprintln!("skipped: the host time embedding runs on Flex with ddpm-kernels' `flex` feature (cargo test --features flex)");
        return;
    }
    // Repeated times (the host path computes each distinct one once), fractional, negative and
    // large ones. A time that carries a gradient takes the tensor ops: that is the reference.
    let times = vec![0.0f32, 999.0, 17.0, 0.25, 17.0, -3.5, 999.0, 1e4, 0.25, 42.0];
    let t = Tensor::<1>::from_data(TensorData::new(times.clone(), [times.len()]), &flex);
    for (dim, theta) in [(128, 10000.0), (32, 10000.0), (10, 100.0)] {
        let by_ops = layers::sinusoidal_embedding(t.clone().autodiff().require_grad(), dim, theta);
        assert!(by_ops.is_tracked(), "a time with a gradient goes through the tensor ops");
        let by_ops: Vec<f32> = by_ops.into_data().try_to_vec().unwrap();
        for t in [t.clone(), t.clone().autodiff()] {
            let host = layers::sinusoidal_embedding(t, dim, theta);
            assert!(!host.is_tracked());
            let host: Vec<f32> = host.into_data().try_to_vec().unwrap();
            assert_eq!(host.len(), by_ops.len());
            for (i, (a, b)) in host.iter().zip(&by_ops).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "dim {dim}, row {}, column {}: {a} against {b}", i / dim, i % dim);
            }
        }
    }
}

#[test]
fn the_mlp_runs_its_time_path_once_per_distinct_time_with_the_same_values_and_gradients() {
    let device = Device::flex().autodiff();
    if !ddpm_kernels::on_flex(&device) {
        eprintln!("skipped: distinct times are read on the host on Flex with ddpm-kernels' `flex` feature (cargo test --features flex)");
        return;
    }
    let times = vec![3.0f32, 7.0, 3.0, 3.0, 50.0, 7.0];
    let t = Tensor::<1>::from_data(TensorData::new(times.clone(), [times.len()]), &device);
    let distinct = layers::DistinctTimes::of(&t).expect("repeated times on Flex");
    assert_eq!(distinct.values.into_data().try_to_vec::<f32>().unwrap(), vec![3.0, 7.0, 50.0]);
    assert_eq!(distinct.rows.into_data().try_into_vec_as::<i64>().unwrap(), vec![0, 1, 0, 0, 2, 1]);
    assert!(layers::DistinctTimes::of(&t.clone().require_grad()).is_none(), "a time with a gradient is not read back");

    let mlp = MlpConfig::new(2).with_hidden(16).init(&device).unwrap();
    let x = randn([times.len(), 2], &device);
    let weights = randn([times.len(), 2], &device);
    let time_weight = |grads: &burn::tensor::Gradients| -> Vec<f32> { mlp.layers[1].time.weight.val().grad(grads).expect("a gradient").into_data().try_to_vec().unwrap() };
    // The whole batch (the time path on 3 distinct times) against each row alone (one time).
    let out = mlp.forward(x.clone(), t.clone(), None, None);
    let batch_grad = time_weight(&(out.clone() * weights.clone()).sum().backward());
    let out: Vec<f32> = out.into_data().try_to_vec().unwrap();
    let mut summed = vec![0.0f32; batch_grad.len()];
    for row in 0..times.len() {
        let one = |v: &Tensor<2>| v.clone().slice([row..row + 1]);
        let alone = mlp.forward(one(&x), t.clone().slice([row..row + 1]), None, None);
        let grad = time_weight(&(alone.clone() * one(&weights)).sum().backward());
        summed.iter_mut().zip(&grad).for_each(|(s, g)| *s += g);
        let alone: Vec<f32> = alone.into_data().try_to_vec().unwrap();
        for (c, (a, b)) in out[row * 2..][..2].iter().zip(&alone).enumerate() {
            assert!((a - b).abs() < 1e-5, "row {row}, output {c}: {a} in the batch against {b} alone");
        }
    }
    for (i, (a, b)) in batch_grad.iter().zip(&summed).enumerate() {
        assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "time weight gradient {i}: {a} for the batch against {b} summed over its rows");
    }
}
