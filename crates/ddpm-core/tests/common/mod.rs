//! Reading the reference fixtures (`tests/fixtures/golden` at the workspace root) and comparing.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{DType, Device, Tensor, TensorCreationOptions, TensorData};
use serde_json::Value;

/// A tensor from a fixture: dtype name, shape, values (NaN for `null`).
#[derive(Debug, Clone)]
pub struct Fx {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Fx {
    pub fn from_value(v: &Value) -> Fx {
        let dtype = v["dtype"].as_str().expect("fixture tensor has a dtype").to_string();
        let shape = v["shape"].as_array().expect("shape").iter().map(|s| s.as_u64().unwrap() as usize).collect();
        let data = v["data"].as_array().expect("data").iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect();
        Fx { dtype, shape, data }
    }

    pub fn data(&self) -> TensorData {
        TensorData::new(self.data.clone(), self.shape.clone())
    }

    pub fn tensor<const D: usize>(&self, device: &Device, dtype: DType) -> Tensor<D> {
        Tensor::from_data(self.data(), TensorCreationOptions::new(device.clone()).with_dtype(dtype))
    }

    pub fn as_usize(&self) -> Vec<usize> {
        self.data.iter().map(|&v| v as usize).collect()
    }
}

pub fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The device the tests run on: `DDPM_DEVICE` (e.g. `vulkan:cpu` in CI) or Flex.
pub fn device() -> Device {
    match std::env::var("DDPM_DEVICE") {
        // The named backend must be compiled in: `cargo test -p ddpm-core --features ddpm-io/vulkan`.
        Ok(name) if !name.is_empty() => ddpm_io::device::parse_device(&name).unwrap_or_else(|e| panic!("{e}")),
        // The dev-dependency on burn always brings Flex.
        _ => Device::flex(),
    }
}

/// f64 on Flex, f32 elsewhere. WGPU/Vulkan report f64 support, but SPIR-V's GLSL.std.450
/// transcendentals (exp, log) are defined for 16- and 32-bit floats only: on lavapipe an f64 `exp`
/// came out wrong (the DDPM trace's first step, which exponentiates the log-variance, was off by
/// 1.16), so only the f32 path is checked there.
pub fn widest_float(device: &Device) -> DType {
    if *device == Device::flex() { DType::F64 } else { DType::F32 }
}

pub fn values<const D: usize>(t: &Tensor<D>) -> Vec<f64> {
    ddpm_core::tensor::to_f64_vec(t)
}

/// Max |a - b| / max(1, |b|) over the elements (NaN must meet NaN, infinity the same infinity).
pub fn max_rel_err(got: &[f64], want: &[f64]) -> f64 {
    max_err(got, want, 1.0)
}

/// Max |a - b| / |b| (purely relative, for schedule tables).
pub fn max_pure_rel_err(got: &[f64], want: &[f64]) -> f64 {
    max_err(got, want, 0.0)
}

fn max_err(got: &[f64], want: &[f64], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            if g == w || (g.is_nan() && w.is_nan()) {
                0.0
            } else if !g.is_finite() || !w.is_finite() {
                f64::INFINITY
            } else {
                (g - w).abs() / w.abs().max(floor)
            }
        })
        .fold(0.0, f64::max)
}

pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let err = max_rel_err(got, want);
    assert!(err <= tol, "{what}: max error {err:e} > {tol:e}\n got  {:?}\n want {:?}", &got[..got.len().min(6)], &want[..want.len().min(6)]);
}

/// Our f64 values cast to f32 equal the reference's f32 buffer bit for bit (NaN meets NaN).
pub fn assert_f32_exact(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g as f32, w as f32);
        assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "{what}[{i}] (f32): {g} != {w}");
    }
}
