//! # ddpm-eval
//!
//! How good a diffusion model is, in the papers' numbers: FID with pytorch-fid's Inception-v3,
//! precision/recall and density/coverage, KID, the Frechet LeNet Distance, bits/dim, and metrics
//! for the 2-D toy sets.

pub mod download;
pub mod error;
pub mod features;
pub mod fld;
pub mod frechet;
pub mod inception;
pub mod kid;
pub mod prdc;
pub mod progress;
pub mod stats;
pub mod toy;

pub use error::{EvalError, Result};
