//! # ddpm-eval
//!
//! How good a diffusion model is, in the papers' numbers: FID with pytorch-fid's Inception-v3,
//! precision/recall and density/coverage, KID, the Frechet LeNet Distance, bits/dim, and metrics
//! for the 2-D toy sets.
//!
//! | Module | What it holds |
//! | --- | --- |
//! | [`inception`] | pytorch-fid's Inception-v3 (weights looked up or downloaded, features of image folders) |
//! | [`frechet`], [`features`], [`stats`] | Gaussian statistics and the Frechet distance; feature matrices; `.npy`/`.npz` files as pytorch-fid writes them |
//! | [`prdc`], [`kid`], [`fld`], [`toy`] | precision/recall and density/coverage; KID; the Frechet LeNet Distance; toy-set metrics |
//! | [`download`], [`progress`] | checked downloads and progress lines (ddpm-io's, re-exported) |
//! | [`error`] | [`EvalError`] |

/// Checked downloads into a cache folder (ddpm-io's, with its HTTP client on).
pub use ddpm_io::download;
pub mod error;
pub mod features;
pub mod fld;
pub mod frechet;
pub mod inception;
pub mod kid;
pub mod prdc;
/// Progress bars and lines (ddpm-io's).
pub use ddpm_io::progress;
pub mod stats;
pub mod toy;

pub use error::{EvalError, Result};
