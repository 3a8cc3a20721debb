//! The widths every reference U-Net ([`crate::unet::UnetConfig`], [`crate::uvit::UvitConfig`])
//! is declared with, written once: `dim`, `init_dim`, `out_dim`, `dim_mults`, `channels`.

use crate::error::{ModelError, Result};

/// Declares a reference network's `Config`: the five width fields (with the reference's defaults)
/// first, then the network's own fields. Keeping them one flat struct keeps them top-level keys of
/// `[model]` in a TOML file (Burn's `Config` derive has no `#[serde(flatten)]`).
macro_rules! reference_unet_config {
    ($(#[$meta:meta])* pub struct $name:ident { $($own:tt)* }) => {
        $(#[$meta])*
        #[derive(burn::config::Config, Debug, PartialEq)]
        pub struct $name {
            /// Base width; stage `i` has `dim * dim_mults[i]` channels, the time embedding `4 * dim`.
            pub dim: usize,
            /// Width of the stem convolution (default: `dim`).
            #[config(default = "None")]
            pub init_dim: Option<usize>,
            /// Output channels (default: `channels`, doubled where the network learns the variance).
            #[config(default = "None")]
            pub out_dim: Option<usize>,
            /// Width multiplier per stage.
            #[config(default = "vec![1, 2, 4, 8]")]
            pub dim_mults: Vec<usize>,
            /// Data channels.
            #[config(default = 3)]
            pub channels: usize,
            $($own)*
        }

        impl $name {
            /// The widths `[init_dim, dim * dim_mults[0], ..]`: the stem's, then each stage's.
            pub fn stage_widths(&self) -> $crate::error::Result<Vec<usize>> {
                $crate::widths::stage_widths(self.dim, self.init_dim, &self.dim_mults, self.channels)
            }
        }
    };
}

pub(crate) use reference_unet_config;

/// `[init_dim (default dim), dim * m for m in dim_mults]`, after checking that the widths are
/// positive and there is at least one stage.
pub fn stage_widths(dim: usize, init_dim: Option<usize>, dim_mults: &[usize], channels: usize) -> Result<Vec<usize>> {
    if dim_mults.is_empty() || dim == 0 || channels == 0 || dim_mults.contains(&0) || init_dim == Some(0) {
        return Err(ModelError::config("dim_mults", format!("{dim_mults:?}"), "dim, init_dim, channels and every multiplier must be positive, with at least one stage"));
    }
    Ok(std::iter::once(init_dim.unwrap_or(dim)).chain(dim_mults.iter().map(|m| dim * m)).collect())
}
