//! # ddpm-train
//!
//! Configuration (TOML), data, the training loop (EMA, atomic checkpoints, exact resume, sample
//! grids, metrics) and sampling for ddpm-rs; the `ddpm-train` command line is a thin layer over
//! [`run`].

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod ema;
pub mod error;
pub mod grid;
pub mod trainer;

use std::path::Path;

use burn::tensor::Device;
use ddpm_core::Denoiser;
use ddpm_models::{DdpmUnetConfig, MlpConfig, UnetConfig};

pub use config::{TrainConfig, load_config, parse_config};
pub use error::{Result, TrainError};
pub use trainer::{RunOptions, TrainSummary};

/// Builds the configured network for data items of `item_shape` and hands it to `f`, which is
/// generic over the data rank.
pub trait WithModel {
    type Output;
    fn images<M: burn::module::Module + Denoiser<4> + Clone>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<Self::Output>;
    fn vectors<M: burn::module::Module + Denoiser<2> + Clone>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<Self::Output>;
}

/// Dispatches on the model kind and the data shape.
pub fn with_model<W: WithModel>(cfg: &TrainConfig, item_shape: &[usize], w: W) -> Result<W::Output> {
    use config::ModelConfig as Mc;
    let learned = cfg.diffusion.variance.is_learned();
    match (&cfg.model, item_shape.len()) {
        (Mc::Unet { dim, dim_mults, attn_heads, attn_dim_head, dropout, flash_attn }, 3) => {
            let c = UnetConfig::new(*dim)
                .with_dim_mults(dim_mults.clone())
                .with_channels(item_shape[0])
                .with_attn_heads(vec![*attn_heads])
                .with_attn_dim_head(vec![*attn_dim_head])
                .with_dropout(*dropout)
                .with_flash_attn(*flash_attn)
                .with_learned_variance(learned);
            let shape = [1, item_shape[0], item_shape[1], item_shape[2]];
            w.images(&move |d: &Device| {
                let m = c.init(d)?;
                m.check_input(shape)?;
                Ok(m)
            })
        }
        (Mc::DdpmUnet { ch, ch_mult, num_res_blocks, attn_resolutions, dropout }, 3) => {
            let c = DdpmUnetConfig::new()
                .with_resolution(item_shape[1])
                .with_in_channels(item_shape[0])
                .with_ch(*ch)
                .with_ch_mult(ch_mult.clone())
                .with_num_res_blocks(*num_res_blocks)
                .with_attn_resolutions(attn_resolutions.clone())
                .with_dropout(*dropout)
                .with_learned_variance(learned);
            w.images(&move |d: &Device| Ok(c.init(d)?))
        }
        (Mc::Mlp { hidden, num_layers }, 1) => {
            let c = MlpConfig::new(item_shape[0]).with_hidden(*hidden).with_num_layers(*num_layers).with_learned_variance(learned);
            w.vectors(&move |d: &Device| Ok(c.init(d)?))
        }
        (m, n) => Err(TrainError::config(
            "model.kind",
            format!("{} does not fit {}-dimensional data items {item_shape:?}; use unet or ddpm_unet for images, mlp for vectors", kind_name(m), n),
        )),
    }
}

fn kind_name(m: &config::ModelConfig) -> &'static str {
    match m {
        config::ModelConfig::Unet { .. } => "unet",
        config::ModelConfig::DdpmUnet { .. } => "ddpm_unet",
        config::ModelConfig::Mlp { .. } => "mlp",
    }
}

/// Loads the data and trains.
pub fn run(cfg: &TrainConfig, opts: &RunOptions) -> Result<TrainSummary> {
    let data = data::load(&cfg.data, cfg.run.seed)?;
    struct Train<'a>(&'a TrainConfig, &'a data::InMemory, &'a RunOptions);
    impl WithModel for Train<'_> {
        type Output = TrainSummary;
        fn images<M: burn::module::Module + Denoiser<4> + Clone>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<TrainSummary> {
            trainer::train::<4, M, _>(self.0, init, self.1, self.2)
        }
        fn vectors<M: burn::module::Module + Denoiser<2> + Clone>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<TrainSummary> {
            trainer::train::<2, M, _>(self.0, init, self.1, self.2)
        }
    }
    with_model(cfg, &data.item_shape.clone(), Train(cfg, &data, opts))
}

/// Draws samples from a checkpoint folder's EMA (or online) weights into a PNG at `out`.
pub fn sample_checkpoint(cfg: &TrainConfig, checkpoint: &Path, ema: bool, out: &Path) -> Result<()> {
    let data = data::load(&cfg.data, cfg.run.seed)?;
    let device = ddpm_core::device::parse_device(&cfg.run.device)?;
    let diffusion = cfg.diffusion.to_core()?.init()?;
    struct Sample<'a>(&'a TrainConfig, &'a data::InMemory, &'a Path, bool, &'a Path, Device, ddpm_core::GaussianDiffusion);
    impl WithModel for Sample<'_> {
        type Output = ();
        fn images<M: burn::module::Module + Denoiser<4> + Clone>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<()> {
            let m = checkpoint::load_weights(self.2, init(&self.5)?, self.3)?;
            trainer::sample_grid::<4, M>(self.0, &self.6, &m, &self.5, self.1, self.4)
        }
        fn vectors<M: burn::module::Module + Denoiser<2> + Clone>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<()> {
            let m = checkpoint::load_weights(self.2, init(&self.5)?, self.3)?;
            trainer::sample_grid::<2, M>(self.0, &self.6, &m, &self.5, self.1, self.4)
        }
    }
    with_model(cfg, &data.item_shape.clone(), Sample(cfg, &data, checkpoint, ema, out, device, diffusion))
}
