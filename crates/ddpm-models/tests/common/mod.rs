//! Shared by the model tests: the test device, fixtures, comparisons.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use ddpm_models::weights::{StateDict, read_safetensors};

/// `DDPM_DEVICE` (e.g. `wgpu:cpu` in CI) or Flex.
pub fn device() -> Device {
    match std::env::var("DDPM_DEVICE") {
        Ok(name) if !name.is_empty() => ddpm_io::device::parse_device(&name).unwrap_or_else(|e| panic!("{e}")),
        _ => Device::flex(),
    }
}

/// `tests/fixtures/<folder>/<name>` at the workspace root.
pub fn fixture_path(folder: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(folder).join(name)
}

pub fn read_fixture(folder: &str, name: &str) -> StateDict {
    read_safetensors(fixture_path(folder, name)).unwrap()
}

/// The tensor under `key` of a fixture file.
pub fn tensor<const D: usize>(state: &StateDict, key: &str, device: &Device) -> Tensor<D> {
    let t = &state[key];
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device)
}

/// max |got - want| / max |want|.
pub fn rel_err<const D: usize>(got: &Tensor<D>, want: &[f32]) -> f64 {
    let got: Vec<f32> = got.to_data().try_into_vec_as::<f32>().unwrap();
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    got.iter().zip(want).map(|(g, w)| (g - w).abs() as f64).fold(0.0, f64::max) / scale
}
