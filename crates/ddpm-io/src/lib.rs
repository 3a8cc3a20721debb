//! # ddpm-io
//!
//! What ddpm-rs reads from and writes to the world, kept out of the math and the networks:
//!
//! | Module | What it holds |
//! | --- | --- |
//! | [`weights`] | state dicts with the reference's (PyTorch) key names: `.safetensors` and PyTorch `.pt`/`.bin` in and out, headers checked against file sizes; loading any Burn module through its [`weights::ReferenceKeys`] |
//! | [`npy`] | NumPy `.npy` arrays in and out, the header's claim checked against the file before anything is allocated |
//! | [`download`] | files fetched once into a cache folder with a checksum (the HTTP client behind the `download` feature) |
//! | [`progress`] | progress of long work: a bar on a terminal, plain lines in logs |
//! | [`memory`] | the process's peak resident memory, for the benches |
//! | [`device`] | a Burn `Device` from a name at run time (`flex`, `wgpu`, `vulkan`, `cuda:1`, ...), for the backends compiled in |
//! | [`error`] | [`IoError`]: every message names the file, the key or the device, and the fix |
//!
//! The backend features (`flex`, `wgpu`, `vulkan`, `metal`, `cuda`, `rocm`, `ndarray`) only decide
//! which names [`device::parse_device`] accepts.

pub mod device;
pub mod download;
pub mod error;
pub mod memory;
pub mod npy;
pub mod progress;
pub mod weights;

pub use error::{IoError, Result};
