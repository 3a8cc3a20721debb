//! A noise-aware image classifier for classifier guidance (after ADM's, Dhariwal & Nichol 2021):
//! the encoder half of a U-Net (time-conditioned ResNet blocks, pixel-unshuffle downsampling),
//! global average pooling and a linear head, giving class logits for noisy images `x_t` at time
//! `t`. For vectors, an [`crate::Mlp`] with `out_features = num_classes` serves the same purpose.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, LinearConfig};
use ddpm_kernels::silu;
use burn::tensor::{Device, Tensor};

use crate::error::{ModelError, Result};
use crate::layers::{Resample, ResampleKind, ResnetBlock, Spatial, TimeMlp};
use ddpm_kernels::ConvForward;

#[derive(Config, Debug, PartialEq)]
pub struct EncoderClassifierConfig {
    pub num_classes: usize,
    #[config(default = 3)]
    pub channels: usize,
    /// Base width; stage `i` has `dim * dim_mults[i]` channels.
    #[config(default = 32)]
    pub dim: usize,
    /// One ResNet block per stage; every stage but the last halves the resolution.
    #[config(default = "vec![1, 2, 4]")]
    pub dim_mults: Vec<usize>,
}

#[derive(Module, Debug)]
pub struct EncoderStage {
    pub block: ResnetBlock,
    pub down: Option<Resample>,
}

/// The classifier on `[B, C, H, W]` at timesteps `[B]`; returns logits `[B, num_classes]`.
#[derive(Module, Debug)]
pub struct EncoderClassifier {
    pub init_conv: Conv2d,
    pub time_mlp: TimeMlp,
    pub stages: Vec<EncoderStage>,
    pub head: Linear,
}

impl EncoderClassifierConfig {
    pub fn init(&self, device: &Device) -> Result<EncoderClassifier> {
        if self.num_classes < 2 || self.dim == 0 || self.dim % 2 != 0 || self.dim_mults.is_empty() {
            return Err(ModelError::config("num_classes", self.num_classes, "need at least 2 classes, an even dim and at least one stage"));
        }
        let sp = Spatial::Image;
        let time_dim = self.dim * 4;
        let dims: Vec<usize> = std::iter::once(self.dim).chain(self.dim_mults.iter().map(|m| self.dim * m)).collect();
        let n = self.dim_mults.len();
        Ok(EncoderClassifier {
            init_conv: sp.conv(self.channels, self.dim, 3, true, device),
            time_mlp: TimeMlp::new(self.dim, time_dim, 10_000.0, None, device),
            stages: dims
                .windows(2)
                .enumerate()
                .map(|(i, w)| EncoderStage {
                    block: ResnetBlock::new(sp, w[0], w[1], Some(time_dim), 0.0, device),
                    down: (i + 1 < n).then(|| Resample::new(ResampleKind::Unshuffle, sp, w[1], w[1], device)),
                })
                .collect(),
            head: LinearConfig::new(dims[n], self.num_classes).init(device),
        })
    }
}

impl EncoderClassifier {
    pub fn forward(&self, x: Tensor<4>, time: Tensor<1>) -> Tensor<2> {
        let t = self.time_mlp.forward(time);
        let mut x = self.init_conv.conv(x);
        for stage in &self.stages {
            x = stage.block.forward(x, Some(t.clone()));
            if let Some(down) = &stage.down {
                x = down.forward(x);
            }
        }
        let [b, c, h, w] = x.dims();
        let pooled = silu(x).reshape([b, c, h * w]).mean_dim(2).reshape([b, c]);
        self.head.forward(pooled)
    }

    /// Spatial sides must be divisible by this.
    pub fn downsample_factor(&self) -> usize {
        1 << self.stages.iter().filter(|s| s.down.is_some()).count()
    }
}
