//! Every option of the reference networks against the reference itself: fixtures made by
//! `tests/fixtures/models/make_model_fixtures.py` with denoising-diffusion-pytorch 2.3.4 (self-
//! conditioning, learned variance, learned and random Fourier features, per-stage heads and full
//! attention, init_dim, out_dim, non-square inputs, class labels, the 1D and 3D Karras nets,
//! factorised space-time attention and the frame/image downsample types).

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use ddpm_models::karras::DownsampleType;
use ddpm_models::weights::{ReferenceKeys, StateDict, load_reference, reference_state_dict, strip_prefix};
use ddpm_models::*;

mod common;
use common::device;

fn fixture(name: &str) -> StateDict {
    common::read_fixture("models", &format!("{name}.safetensors"))
}

fn input<const D: usize>(file: &StateDict, key: &str, device: &Device) -> Tensor<D> {
    let t = &file[&format!("input.{key}")];
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device)
}

fn labels(file: &StateDict, device: &Device) -> Tensor<1, Int> {
    let t = &file["input.class_labels"];
    let v: Vec<i64> = t.data.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(v, [t.data.len()]), device)
}

/// Loads, runs, compares (1e-4 relative to the output's scale) and checks the export round trip.
fn check<M: Module + ReferenceKeys, const D: usize>(name: &str, model: M, file: &StateDict, run: impl Fn(&M) -> Tensor<D>) {
    let reference = strip_prefix(file, "model.");
    let model = load_reference(model, &reference, name).unwrap_or_else(|e| panic!("{e}"));
    let out = run(&model);
    let want = &file["output"];
    assert_eq!(out.dims().to_vec(), want.shape, "{name}: output shape");
    let got: Vec<f32> = out.into_data().try_into_vec_as::<f32>().unwrap();
    let scale = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got.iter().zip(&want.data).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max) / scale;
    assert!(err < 1e-4, "{name}: relative error {err:e}");
    let exported = reference_state_dict(&model);
    assert_eq!(exported.len(), reference.len(), "{name}: exported key count");
    for (k, t) in &reference {
        assert_eq!(exported.get(k), Some(t), "{name}: export of {k}");
    }
    assert_eq!(model.num_params(), reference.values().map(|t| t.data.len()).sum::<usize>(), "{name}: parameter count");
}

#[test]
fn unet2d_every_option() {
    let device = device();
    let file = fixture("unet2d_options");
    let config = UnetConfig::new(8)
        .with_init_dim(Some(12))
        .with_dim_mults(vec![1, 2])
        .with_channels(3)
        .with_self_condition(true)
        .with_learned_variance(true)
        .with_learned_sinusoidal_cond(true)
        .with_learned_sinusoidal_dim(8)
        .with_sinusoidal_pos_emb_theta(500.0)
        .with_attn_heads(vec![2, 3])
        .with_attn_dim_head(vec![4, 8])
        .with_full_attn(Some(vec![true, false]));
    check("unet2d_options", config.init(&device).unwrap(), &file, |m| {
        m.forward(input(&file, "x", &device), input(&file, "time", &device), Some(input(&file, "x_self_cond", &device)))
    });
}

#[test]
fn unet2d_random_fourier_features_and_out_dim() {
    let device = device();
    let file = fixture("unet2d_fourier");
    let config = UnetConfig::new(8)
        .with_dim_mults(vec![1, 2, 2])
        .with_channels(1)
        .with_out_dim(Some(2))
        .with_random_fourier_features(true)
        .with_learned_sinusoidal_dim(6)
        .with_attn_heads(vec![2])
        .with_attn_dim_head(vec![4])
        .with_full_attn(Some(vec![false, true, true]));
    let model = config.init(&device).unwrap();
    assert!(!model.time_mlp.fourier.as_ref().unwrap().weights.is_require_grad(), "random features are not trained");
    check("unet2d_fourier", model, &file, |m| m.forward(input(&file, "x", &device), input(&file, "time", &device), None));
}

#[test]
fn unet1d_every_option() {
    let device = device();
    let file = fixture("unet1d_options");
    let config = UnetConfig::new(8)
        .with_init_dim(Some(6))
        .with_dim_mults(vec![1, 2, 2])
        .with_channels(2)
        .with_self_condition(true)
        .with_learned_variance(true)
        .with_random_fourier_features(true)
        .with_learned_sinusoidal_dim(8)
        .with_attn_heads(vec![2])
        .with_attn_dim_head(vec![4]);
    check("unet1d_options", config.init_1d(&device).unwrap(), &file, |m| {
        m.forward(input(&file, "x", &device), input(&file, "time", &device), Some(input(&file, "x_self_cond", &device)))
    });
}

#[test]
fn karras_unet2d_with_classes_and_self_conditioning() {
    let device = device();
    let file = fixture("karras_unet2d_classes");
    let config = KarrasUnetConfig::new(8)
        .with_dim(8)
        .with_dim_max(16)
        .with_channels(2)
        .with_num_downsamples(2)
        .with_num_blocks_per_stage(vec![2])
        .with_attn_res(vec![8, 2])
        .with_attn_dim_head(4)
        .with_num_classes(Some(5))
        .with_self_condition(true)
        .with_dropout(0.0);
    check("karras_unet2d_classes", config.init(&device).unwrap(), &file, |m| {
        m.forward(input(&file, "x", &device), input(&file, "time", &device), Some(input(&file, "self_cond", &device)), Some(labels(&file, &device)))
    });
}

#[test]
fn karras_unet1d() {
    let device = device();
    let file = fixture("karras_unet1d");
    let config = KarrasUnetConfig::new(16)
        .with_dim(8)
        .with_dim_max(16)
        .with_channels(3)
        .with_num_downsamples(2)
        .with_num_blocks_per_stage(vec![1])
        .with_attn_res(vec![8])
        .with_attn_dim_head(4)
        .with_num_classes(Some(3))
        .with_dropout(0.0);
    check("karras_unet1d", config.init_1d(&device).unwrap(), &file, |m| {
        m.forward(input(&file, "x", &device), input(&file, "time", &device), None, Some(labels(&file, &device)))
    });
}

#[test]
fn karras_unet3d_factorised_attention_and_downsample_types() {
    let device = device();
    let file = fixture("karras_unet3d_factorized");
    let config = KarrasUnetConfig::new(8).with_frames(4)
        .with_dim(8)
        .with_dim_max(16)
        .with_channels(2)
        .with_num_downsamples(2)
        .with_num_blocks_per_stage(vec![1, 2])
        .with_downsample_types(vec![DownsampleType::Image, DownsampleType::All])
        .with_attn_res(vec![4, 2])
        .with_attn_dim_head(8)
        .with_factorize_space_time_attn(true)
        .with_dropout(0.0);
    check("karras_unet3d_factorized", config.init_3d(&device).unwrap(), &file, |m| {
        m.forward(input(&file, "x", &device), input(&file, "time", &device), None, None)
    });
}

#[test]
fn karras_unet3d_joint_attention_frame_downsampling_and_classes() {
    let device = device();
    let file = fixture("karras_unet3d_joint");
    let config = KarrasUnetConfig::new(4).with_frames(4)
        .with_dim(8)
        .with_dim_max(8)
        .with_channels(1)
        .with_num_downsamples(1)
        .with_num_blocks_per_stage(vec![1])
        .with_downsample_types(vec![DownsampleType::Frame])
        .with_attn_res(vec![4])
        .with_attn_dim_head(4)
        .with_num_classes(Some(2))
        .with_dropout(0.0);
    check("karras_unet3d_joint", config.init_3d(&device).unwrap(), &file, |m| {
        m.forward(input(&file, "x", &device), input(&file, "time", &device), None, Some(labels(&file, &device)))
    });
}

#[test]
fn uvit_matches_simple_diffusions_network() {
    let device = device();
    let file = fixture("uvit_tiny");
    let model = UvitConfig::new(8)
        .with_init_dim(Some(12))
        .with_dim_mults(vec![1, 2])
        .with_channels(2)
        .with_vit_depth(2)
        .with_attn_dim_head(8)
        .with_attn_heads(2)
        .with_ff_mult(2)
        .with_learned_sinusoidal_dim(6)
        .init(&device)
        .unwrap();
    model.check_input([2, 2, 8, 8]).unwrap();
    assert!(model.check_input([2, 2, 6, 8]).unwrap_err().to_string().contains("divisible by 4"));
    check("uvit_tiny", model, &file, |m: &Uvit| m.forward(input(&file, "x", &device), input(&file, "time", &device), None));
}
