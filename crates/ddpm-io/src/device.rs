//! Picking a device at run time from a string (`--device flex`, `--device wgpu`, `cuda:1`, ...).
//!
//! Which names work depends on the backend features this build was compiled with; a name whose
//! backend is missing is an error that says which feature to turn on.

use burn::tensor::Device;

use crate::error::{IoError, Result};

/// The device names [`parse_device`] knows, and the Cargo feature each needs.
pub const DEVICE_NAMES: &[(&str, &str)] = &[
    ("flex", "flex"),
    ("cpu", "flex"),
    ("ndarray", "ndarray"),
    ("wgpu", "wgpu"),
    ("vulkan", "vulkan"),
    ("metal", "metal"),
    ("cuda[:N]", "cuda"),
    ("rocm[:N]", "rocm"),
];

/// Backend features compiled into this build.
pub fn compiled_backends() -> Vec<&'static str> {
    [
        ("flex", cfg!(feature = "flex")),
        ("ndarray", cfg!(feature = "ndarray")),
        ("wgpu", cfg!(feature = "wgpu")),
        ("vulkan", cfg!(feature = "vulkan")),
        ("metal", cfg!(feature = "metal")),
        ("cuda", cfg!(feature = "cuda")),
        ("rocm", cfg!(feature = "rocm")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect()
}

/// Parses a device name: `flex` or `cpu` (pure-Rust CPU), `ndarray`, `wgpu` (the best adapter, any
/// API), `wgpu:cpu` / `vulkan:cpu` (a software adapter such as lavapipe), `vulkan`, `metal`,
/// `cuda` / `cuda:N`, `rocm` / `rocm:N`.
pub fn parse_device(name: &str) -> Result<Device> {
    let lower = name.trim().to_ascii_lowercase();
    let (kind, arg) = match lower.split_once(':') {
        Some((k, a)) => (k, Some(a)),
        None => (lower.as_str(), None),
    };
    let index = |arg: Option<&str>| -> Result<usize> {
        match arg {
            None => Ok(0),
            Some(a) => a.parse().map_err(|_| IoError::Device { name: name.into(), fix: format!("`{a}` is not a device index; write e.g. `cuda:0`") }),
        }
    };
    let missing = |feature: &str| IoError::Device {
        name: name.into(),
        fix: format!(
            "this build has no `{feature}` backend (compiled in: {}); rebuild with `--features {feature}`",
            compiled_backends().join(", ")
        ),
    };
    #[allow(unused_variables)]
    let wgpu_kind = |arg: Option<&str>| -> Result<burn::tensor::DeviceKind> {
        Ok(match arg {
            None | Some("default") => burn::tensor::DeviceKind::DefaultDevice,
            Some("cpu") => burn::tensor::DeviceKind::Cpu,
            Some(a) => burn::tensor::DeviceKind::DiscreteGpu(
                a.parse().map_err(|_| IoError::Device { name: name.into(), fix: "use `:cpu`, `:default` or an adapter index".into() })?,
            ),
        })
    };
    match kind {
        "flex" | "cpu" => {
            #[cfg(feature = "flex")]
            return Ok(Device::flex());
            #[cfg(not(feature = "flex"))]
            return Err(missing("flex"));
        }
        "ndarray" => {
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            return Ok(Device::ndarray());
            #[cfg(not(feature = "ndarray"))]
            return Err(missing("ndarray"));
        }
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            return Ok(Device::wgpu(wgpu_kind(arg)?));
            #[cfg(not(feature = "wgpu"))]
            return Err(missing("wgpu"));
        }
        "vulkan" => {
            #[cfg(feature = "vulkan")]
            return Ok(Device::vulkan(wgpu_kind(arg)?));
            #[cfg(not(feature = "vulkan"))]
            return Err(missing("vulkan"));
        }
        "metal" => {
            #[cfg(feature = "metal")]
            return Ok(Device::metal(wgpu_kind(arg)?));
            #[cfg(not(feature = "metal"))]
            return Err(missing("metal"));
        }
        "cuda" => {
            let i = index(arg)?;
            #[cfg(feature = "cuda")]
            return Ok(Device::cuda(i));
            #[cfg(not(feature = "cuda"))]
            return Err({
                let _ = i;
                missing("cuda")
            });
        }
        "rocm" => {
            let i = index(arg)?;
            #[cfg(feature = "rocm")]
            return Ok(Device::rocm(i));
            #[cfg(not(feature = "rocm"))]
            return Err({
                let _ = i;
                missing("rocm")
            });
        }
        _ => Err(IoError::Device {
            name: name.into(),
            fix: format!(
                "unknown device; use one of {}",
                DEVICE_NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

/// The device named by the `DDPM_DEVICE` environment variable, or Flex when it is unset.
pub fn device_from_env() -> Result<Device> {
    match std::env::var("DDPM_DEVICE") {
        Ok(name) if !name.is_empty() => parse_device(&name),
        _ => parse_device("flex"),
    }
}
