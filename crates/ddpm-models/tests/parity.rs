//! The networks against denoising-diffusion-pytorch 2.3.4: the reference's randomised weights are
//! loaded by name and the outputs must agree (see `tests/fixtures/README.md`, `parity/`).

use std::path::PathBuf;

use burn::module::Module;
use ddpm_models::weights::{ReferenceKeys, StateDict, load_reference, read_safetensors, reference_state_dict, strip_prefix};
use ddpm_models::UnetConfig;

mod common;
use common::{device, rel_err, tensor};

fn fixture(name: &str) -> PathBuf {
    common::fixture_path("parity", name)
}

fn load<M: Module + ReferenceKeys>(model: M, file: &StateDict) -> M {
    load_reference(model, &strip_prefix(file, "model."), "fixture").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn unet2d_matches_the_reference() {
    let device = device();
    let file = read_safetensors(fixture("unet2d_tiny.safetensors")).unwrap();
    let config = UnetConfig::new(8).with_dim_mults(vec![1, 2]).with_channels(3).with_attn_heads(vec![2]).with_attn_dim_head(vec![8]);
    let model = load(config.init(&device).unwrap(), &file);
    let out = model.forward(tensor(&file, "input.x", &device), tensor(&file, "input.time", &device), None);
    let err = rel_err(&out, &file["output"].data);
    assert!(err < 1e-4, "Unet 2D: relative error {err:e}");
    // The fused-attention path computes the same.
    let flash = load(config.with_flash_attn(true).init(&device).unwrap(), &file);
    let out = flash.forward(tensor(&file, "input.x", &device), tensor(&file, "input.time", &device), None);
    assert!(rel_err(&out, &file["output"].data) < 1e-4);
}

#[test]
fn unet1d_matches_the_reference() {
    let device = device();
    let file = read_safetensors(fixture("unet1d_tiny.safetensors")).unwrap();
    let config = UnetConfig::new(8).with_dim_mults(vec![1, 2]).with_channels(2).with_attn_heads(vec![2]).with_attn_dim_head(vec![8]);
    let model = load(config.init_1d(&device).unwrap(), &file);
    let out = model.forward(tensor(&file, "input.x", &device), tensor(&file, "input.time", &device), None);
    let err = rel_err(&out, &file["output"].data);
    assert!(err < 1e-4, "Unet1D: relative error {err:e}");
}

#[test]
fn export_gives_back_the_reference_state_dict() {
    let device = device();
    for (name, file) in [("unet2d", "unet2d_tiny.safetensors"), ("unet1d", "unet1d_tiny.safetensors")] {
        let file = read_safetensors(fixture(file)).unwrap();
        let reference = strip_prefix(&file, "model.");
        let exported = if name == "unet2d" {
            let config = UnetConfig::new(8).with_dim_mults(vec![1, 2]).with_channels(3).with_attn_heads(vec![2]).with_attn_dim_head(vec![8]);
            reference_state_dict(&load(config.init(&device).unwrap(), &file))
        } else {
            let config = UnetConfig::new(8).with_dim_mults(vec![1, 2]).with_channels(2).with_attn_heads(vec![2]).with_attn_dim_head(vec![8]);
            reference_state_dict(&load(config.init_1d(&device).unwrap(), &file))
        };
        assert_eq!(exported.keys().collect::<Vec<_>>(), reference.keys().collect::<Vec<_>>(), "{name}: keys");
        for (k, t) in &reference {
            assert_eq!(&exported[k], t, "{name}: {k}");
        }
    }
}

#[test]
fn parameter_counts_equal_the_reference() {
    let device = device();
    // Unet(dim=64, dim_mults=(1,2,4,8)) on 3 channels, as counted by PyTorch.
    let unet = UnetConfig::new(64).init(&device).unwrap();
    assert_eq!(unet.num_params(), 35_711_491);
    let file = read_safetensors(fixture("unet2d_tiny.safetensors")).unwrap();
    let tiny = UnetConfig::new(8).with_dim_mults(vec![1, 2]).with_attn_heads(vec![2]).with_attn_dim_head(vec![8]).init(&device).unwrap();
    let count: usize = strip_prefix(&file, "model.").values().map(|t| t.data.len()).sum();
    assert_eq!(tiny.num_params(), count);
}

#[test]
fn weights_that_do_not_fit_are_reported_key_by_key() {
    let device = device();
    let file = read_safetensors(fixture("unet2d_tiny.safetensors")).unwrap();
    let state = strip_prefix(&file, "model.");
    // Four heads instead of two: every attention's shapes differ.
    let wrong = UnetConfig::new(8).with_dim_mults(vec![1, 2]).with_attn_heads(vec![4]).with_attn_dim_head(vec![8]).init(&device).unwrap();
    let err = load_reference(wrong, &state, "unet2d_tiny.safetensors").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ddpm_io::IoError::Weights { .. }));
    assert!(msg.contains("unet2d_tiny.safetensors") && msg.contains("`mid_attn.to_qkv.weight` has shape [48, 16, 1, 1]"), "{msg}");
    assert!(msg.contains("[96, 16, 1, 1]") && msg.contains("attn_heads"), "{msg}");
    // Self-conditioning doubles the input channels; a third stage finds no weights.
    let wrong = UnetConfig::new(8).with_dim_mults(vec![1, 2, 2]).with_attn_heads(vec![2]).with_attn_dim_head(vec![8]).init(&device).unwrap();
    let msg = load_reference(wrong, &state, "f").unwrap_err().to_string();
    assert!(msg.contains("missing `downs.2.0.block1.proj.weight`") && msg.contains("dim_mults"), "{msg}");
    // Keys the network does not have are not silently dropped.
    let mut extra = state.clone();
    extra.insert("time_mlp.0.weights".into(), ddpm_models::weights::RefTensor { shape: vec![8], data: vec![0.0; 8], integer: false });
    let ok = UnetConfig::new(8).with_dim_mults(vec![1, 2]).with_attn_heads(vec![2]).with_attn_dim_head(vec![8]).init(&device).unwrap();
    let msg = load_reference(ok, &extra, "f").unwrap_err().to_string();
    assert!(msg.contains("`time_mlp.0.weights` in the file is not used") && msg.contains("learned_sinusoidal_cond"), "{msg}");
}

#[test]
fn karras_unet2d_matches_the_reference() {
    let device = device();
    let file = read_safetensors(fixture("karras_unet2d_tiny.safetensors")).unwrap();
    let config = ddpm_models::KarrasUnetConfig::new(16)
        .with_dim(8)
        .with_dim_max(16)
        .with_channels(3)
        .with_num_downsamples(2)
        .with_num_blocks_per_stage(vec![1])
        .with_attn_res(vec![8])
        .with_attn_dim_head(8)
        .with_dropout(0.0);
    let model = load(config.init(&device).unwrap(), &file);
    let out = model.forward(tensor(&file, "input.x", &device), tensor(&file, "input.time", &device), None, None);
    let err = rel_err(&out, &file["output"].data);
    assert!(err < 1e-4, "KarrasUnet: relative error {err:e}");
    let exported = reference_state_dict(&model);
    let reference = strip_prefix(&file, "model.");
    assert_eq!(exported.keys().collect::<Vec<_>>(), reference.keys().collect::<Vec<_>>());
    for (k, t) in &reference {
        assert_eq!(&exported[k], t, "{k}");
    }
}

#[test]
fn a_reference_trainer_checkpoint_loads_without_pickle() {
    use ddpm_models::weights::{TrainerWeights, read_pytorch, trainer_checkpoint_weights};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models");
    let pt = read_pytorch(dir.join("trainer_model-1.pt")).unwrap();
    // The EMA's own counter is an integer tensor, kept apart from the weights.
    assert!(pt["ema.step"].integer, "ema.step is an integer buffer");
    let device = device();
    let config = UnetConfig::new(8).with_dim_mults(vec![1, 2]).with_channels(3);
    for which in [TrainerWeights::Ema, TrainerWeights::Model] {
        let weights = trainer_checkpoint_weights(&pt, which, "trainer_model-1.pt").unwrap();
        load_reference(config.init(&device).unwrap(), &weights, "trainer_model-1.pt").unwrap_or_else(|e| panic!("{which:?}: {e}"));
    }
    // The EMA weights read from the .pt are the ones PyTorch saved.
    let ema = trainer_checkpoint_weights(&pt, TrainerWeights::Ema, "pt").unwrap();
    let st = strip_prefix(&read_safetensors(dir.join("trainer_model-1.ema.safetensors")).unwrap(), "ema_model.model.");
    assert_eq!(ema.len(), st.len());
    for (k, t) in &st {
        assert_eq!(ema[k].data, t.data, "{k}");
    }
    // A state dict that is not a Trainer checkpoint says so.
    let e = trainer_checkpoint_weights(&st, TrainerWeights::Ema, "x.safetensors").unwrap_err().to_string();
    assert!(e.contains("x.safetensors") && e.contains("not a denoising-diffusion-pytorch Trainer checkpoint"), "{e}");
}
