//! # ddpm
//!
//! The facade of ddpm-rs: one dependency that brings the crates of the workspace.
//!
//! - [`core`] (`ddpm-core`): schedules, forward process, posterior, parameterisations, losses,
//!   variational bound, samplers, noise sources.
//! - [`io`] (`ddpm-io`): reference weights in and out, run-time device selection.
//! - [`models`] (`ddpm-models`), [`train`] (`ddpm-train`), [`eval`] (`ddpm-eval`): the networks,
//!   the trainer and the metrics (see the README's feature table for what each holds today).
//! - [`kernels`] (`ddpm-kernels`): the hand-written Flex kernels the networks and the trainer call.
//!
//! Backends are Cargo features (`flex` by default; `ndarray`, `wgpu`, `vulkan`, `metal`, `cuda`,
//! `rocm`); the device is chosen at run time with [`io::device::parse_device`].

pub use ddpm_core as core;
pub use ddpm_eval as eval;
pub use ddpm_io as io;
pub use ddpm_kernels as kernels;
pub use ddpm_models as models;
pub use ddpm_train as train;
