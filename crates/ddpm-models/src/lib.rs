//! # ddpm-models
//!
//! Denoising networks for ddpm-rs, each a Burn module behind a `#[derive(Config)]` with the
//! reference's defaults, and each a [`ddpm_core::Denoiser`]:
//!
//! - [`Unet`] / [`UnetConfig`]: denoising-diffusion-pytorch's 2D `Unet`, every option;
//! - [`Unet1d`] ([`UnetConfig::init_1d`]): its `Unet1D`, the same code on `[B, C, 1, N]`;
//! - [`KarrasUnet2d`], [`KarrasUnet1d`], [`KarrasUnet3d`]: the EDM2 magnitude-preserving U-Nets,
//!   one config ([`KarrasUnetConfig`]: `init`, `init_1d`, `init_3d`) and one implementation
//!   ([`KarrasUnet`]) on `[B, C, T, H, W]`;
//! - [`DdpmUnet`] / [`DdpmUnetConfig`]: the DDPM paper's CIFAR-10 network (35.7 M parameters);
//! - [`Uvit`] / [`UvitConfig`]: simple diffusion's U-ViT (a U-Net with a transformer middle);
//! - [`Mlp`] / [`MlpConfig`]: an MLP for 2-D toy data and embedding vectors;
//! - [`EncoderClassifier`]: a noise-aware image classifier for classifier guidance.
//!
//! Weights move to and from the reference's state dicts (`.safetensors`, key names as in PyTorch)
//! through [`weights`] (ddpm-io's, re-exported; each network implements its
//! [`weights::ReferenceKeys`] here).
//! [`diffusers`] reads and writes Hugging Face diffusers' `UNet2DModel` / `DDPMPipeline` folders for [`DdpmUnet`].
//! [`widths`] declares the width fields the two reference U-Nets share; [`layers`] holds the blocks
//! the networks share (time embeddings, RMSNorm, attention, resnet
//! blocks) and [`error`] the [`ModelError`] that names the setting or the key.

pub mod classifier;
pub mod ddpm_unet;
pub mod diffusers;
pub mod error;
pub mod karras;
pub mod layers;
pub mod mlp;
pub mod unet;
pub mod uvit;
pub mod widths;
/// Reference state dicts in and out (ddpm-io's, where ddpm-eval reads Inception's weights too).
pub use ddpm_io::weights;

pub use classifier::{EncoderClassifier, EncoderClassifierConfig};
pub use ddpm_unet::{DdpmUnet, DdpmUnetConfig};
pub use error::{ModelError, Result};
pub use mlp::{Mlp, MlpConfig};
pub use karras::{DownsampleType, KarrasUnet, KarrasUnet1d, KarrasUnet2d, KarrasUnet3d, KarrasUnetConfig};
pub use unet::{Unet, Unet1d, UnetConfig};
pub use uvit::{Uvit, UvitConfig};
