//! The DDPM paper's network (Ho et al. 2020, Appendix B; the `diffusion_tf` code): a Wide-ResNet
//! U-Net with GroupNorm(32), two residual blocks per resolution, self-attention at 16x16, sinusoidal
//! time embedding through a two-layer MLP, dropout. The CIFAR-10 configuration (the defaults:
//! 128 channels, multipliers 1, 2, 2, 2) has about 35.7 M parameters.
//!
//! It is also diffusers' `UNet2DModel` with the DDPM block types (`DownBlock2D` /
//! `AttnDownBlock2D`, `UNetMidBlock2D`, one attention head, `downsample_padding = 0`), e.g.
//! `google/ddpm-cifar10-32`; [`crate::diffusers`] converts the configurations and weights.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, GroupNorm, GroupNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use ddpm_kernels::silu;
use burn::tensor::{Device, Int, Tensor};
use ddpm_core::{Conditioning, Denoiser};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::layers::{ClassEmbedding, Spatial, sinusoidal_embedding, upsample_nearest};
use ddpm_kernels::{ConvForward, NormForward};

/// Settings of [`DdpmUnet`]; the defaults are the paper's CIFAR-10 model.
#[derive(Config, Debug, PartialEq)]
pub struct DdpmUnetConfig {
    /// Spatial size of the (square) training images; decides where attention goes.
    #[config(default = 32)]
    pub resolution: usize,
    #[config(default = 3)]
    pub in_channels: usize,
    /// Output channels (default: `in_channels`, doubled for a learned variance).
    #[config(default = "None")]
    pub out_channels: Option<usize>,
    /// Base channel count.
    #[config(default = 128)]
    pub ch: usize,
    #[config(default = "vec![1, 2, 2, 2]")]
    pub ch_mult: Vec<usize>,
    #[config(default = 2)]
    pub num_res_blocks: usize,
    /// Resolutions with self-attention.
    #[config(default = "vec![16]")]
    pub attn_resolutions: Vec<usize>,
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Output twice the channels (a learned variance).
    #[config(default = false)]
    pub learned_variance: bool,
    /// Class-conditional on this many classes (a learned embedding added to the time embedding;
    /// label `num_classes` is the null class of classifier-free guidance).
    #[config(default = "None")]
    pub num_classes: Option<usize>,
    /// Groups of every GroupNorm. `None` (the default) is the DDPM code's `min(32, channels)` per
    /// layer; diffusers' `norm_num_groups` uses one count everywhere. Every normalised width must
    /// be a multiple of it.
    #[config(default = "None")]
    pub norm_num_groups: Option<usize>,
    /// Epsilon of every GroupNorm (the DDPM code and google/ddpm-cifar10-32 use 1e-6).
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// How the f32 frequencies of the sinusoidal time embedding are rounded.
    #[config(default = "TimeFrequencies::Tensorflow")]
    pub time_frequencies: TimeFrequencies,
}

/// The sinusoidal time embedding is `[sin(t w_i), cos(t w_i)]` with `w_i = exp(-ln(10000) i / (h - 1))`,
/// `i = 0..h`, `h = ch / 2`, in f32. The DDPM code and diffusers (`flip_sin_to_cos = False`,
/// `freq_shift = 1`) compute the same formula with different f32 roundings; the frequencies differ
/// by up to ~1e-6 relative, i.e. ~1e-3 in the argument at t = 999 for the highest ones. Pick the
/// rounding of the weights' origin to reproduce their network to f32 precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFrequencies {
    /// The DDPM code's (TensorFlow) and the reference's: `exp(f32(i) * f32(-ln(10000) / (h - 1)))`.
    #[default]
    Tensorflow,
    /// diffusers' `get_timestep_embedding(downscale_freq_shift = 1)`:
    /// `exp(f32(f32(-ln 10000) * f32(i)) / f32(h - 1))`.
    Diffusers,
}

impl TimeFrequencies {
    /// The `dim / 2` frequencies, in f32 as the origin computes them.
    pub fn frequencies(self, dim: usize) -> Vec<f32> {
        let half = dim / 2;
        match self {
            Self::Tensorflow => {
                let step = (10000f64.ln() / (half as f64 - 1.0).max(1.0)) as f32;
                (0..half).map(|i| (-(i as f32) * step).exp()).collect()
            }
            Self::Diffusers => {
                let neg_ln = -(10000f64.ln()) as f32;
                let div = (half as f32 - 1.0).max(1.0);
                (0..half).map(|i| ((neg_ln * i as f32) / div).exp()).collect()
            }
        }
    }
}

fn conv(d_in: usize, d_out: usize, k: usize, stride: usize, pad: usize, gain: f64, device: &Device) -> Conv2d {
    Conv2dConfig::new([d_in, d_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_initializer(Initializer::XavierUniform { gain })
        .init(device)
}

/// The GroupNorm settings shared by every layer.
#[derive(Debug, Clone, Copy)]
struct Norms {
    groups: Option<usize>,
    eps: f64,
}

impl Norms {
    /// `GroupNorm(groups, c)`; an error (rather than Burn's panic) when `c` is not a multiple.
    fn make(self, c: usize, device: &Device) -> Result<GroupNorm> {
        let groups = self.groups.unwrap_or(32.min(c));
        if groups == 0 || c % groups != 0 {
            return Err(ModelError::config(
                "norm_num_groups",
                groups,
                format!("a GroupNorm over {c} channels needs a group count dividing {c}; pick one that divides every channel width"),
            ));
        }
        Ok(GroupNormConfig::new(groups, c).with_epsilon(self.eps).init(device))
    }
}

// The paper initialises the last layer of each residual branch and of the network near zero
// (variance scale 1e-10), so every block starts as the identity.
const ZERO_GAIN: f64 = 1e-5;

/// `GN -> swish -> conv -> + dense(swish(temb)) -> GN -> swish -> dropout -> conv`, plus the input
/// (through a 1x1 "NIN" projection when the width changes).
#[derive(Module, Debug)]
pub struct DdpmResBlock {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub temb_proj: Linear,
    pub norm2: GroupNorm,
    pub dropout: Dropout,
    pub conv2: Conv2d,
    pub nin_shortcut: Option<Conv2d>,
}

impl DdpmResBlock {
    fn new(d_in: usize, d_out: usize, temb: usize, dropout: f64, norms: Norms, device: &Device) -> Result<Self> {
        Ok(Self {
            norm1: norms.make(d_in, device)?,
            conv1: conv(d_in, d_out, 3, 1, 1, 1.0, device),
            temb_proj: LinearConfig::new(temb, d_out).with_initializer(Initializer::XavierUniform { gain: 1.0 }).init(device),
            norm2: norms.make(d_out, device)?,
            dropout: DropoutConfig::new(dropout).init(),
            conv2: conv(d_out, d_out, 3, 1, 1, ZERO_GAIN, device),
            nin_shortcut: (d_in != d_out).then(|| conv(d_in, d_out, 1, 1, 0, 1.0, device)),
        })
    }

    fn forward(&self, x: Tensor<4>, temb: Tensor<2>) -> Tensor<4> {
        let mut h = self.conv1.conv(self.norm1.norm(x.clone(), true));
        let [b, c] = [h.dims()[0], h.dims()[1]];
        h = h + self.temb_proj.forward(silu(temb)).reshape([b, c, 1, 1]);
        h = self.conv2.conv(self.dropout.forward(self.norm2.norm(h, true)));
        let skip = match &self.nin_shortcut {
            Some(nin) => nin.conv(x),
            None => x,
        };
        skip + h
    }
}

/// Single-head self-attention over pixels with GroupNorm, residual.
#[derive(Module, Debug)]
pub struct DdpmAttnBlock {
    pub norm: GroupNorm,
    pub q: Conv2d,
    pub k: Conv2d,
    pub v: Conv2d,
    pub proj_out: Conv2d,
}

impl DdpmAttnBlock {
    fn new(c: usize, norms: Norms, device: &Device) -> Result<Self> {
        Ok(Self {
            norm: norms.make(c, device)?,
            q: conv(c, c, 1, 1, 0, 1.0, device),
            k: conv(c, c, 1, 1, 0, 1.0, device),
            v: conv(c, c, 1, 1, 0, 1.0, device),
            proj_out: conv(c, c, 1, 1, 0, ZERO_GAIN, device),
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let n = self.norm.norm(x.clone(), false);
        // One head over the pixels: [b, 1, hw, c] each.
        let heads = |t: Tensor<4>| t.reshape([b, 1, c, h * w]).swap_dims(2, 3);
        let (q, k, v) = (heads(self.q.conv(n.clone())), heads(self.k.conv(n.clone())), heads(self.v.conv(n)));
        let out = ddpm_kernels::attention(q, k, v, (c as f64).powf(-0.5)); // [b, 1, hw, c]
        let out = out.swap_dims(2, 3).reshape([b, c, h, w]);
        x + self.proj_out.conv(out)
    }
}

/// One resolution level: residual blocks, optional attention after each, optional resampling.
#[derive(Module, Debug)]
pub struct DdpmLevel {
    pub blocks: Vec<DdpmResBlock>,
    pub attns: Vec<DdpmAttnBlock>,
    pub resample: Option<Conv2d>,
}

/// The DDPM U-Net.
#[derive(Module, Debug)]
pub struct DdpmUnet {
    pub temb_dense0: Linear,
    pub temb_dense1: Linear,
    pub conv_in: Conv2d,
    pub down: Vec<DdpmLevel>,
    pub mid_block1: DdpmResBlock,
    pub mid_attn: DdpmAttnBlock,
    pub mid_block2: DdpmResBlock,
    pub up: Vec<DdpmLevel>,
    pub norm_out: GroupNorm,
    pub conv_out: Conv2d,
    pub class_emb: Option<ClassEmbedding>,
    pub ch: usize,
    pub in_channels: usize,
    #[module(skip)]
    pub time_frequencies: TimeFrequencies,
}

impl DdpmUnetConfig {
    pub fn init(&self, device: &Device) -> Result<DdpmUnet> {
        let levels = self.ch_mult.len();
        if levels == 0 || self.ch == 0 || self.num_res_blocks == 0 {
            return Err(ModelError::config("ch_mult", format!("{:?}", self.ch_mult), "ch, num_res_blocks and at least one level must be positive"));
        }
        if self.ch % 2 != 0 {
            return Err(ModelError::config("ch", self.ch, "the sinusoidal time embedding needs an even ch"));
        }
        if self.resolution % (1 << (levels - 1)) != 0 {
            return Err(ModelError::config("resolution", self.resolution, format!("must be divisible by {} for {levels} levels", 1 << (levels - 1))));
        }
        if !(self.norm_eps > 0.0) {
            return Err(ModelError::config("norm_eps", self.norm_eps, "GroupNorm's epsilon must be positive (1e-6 in DDPM, 1e-5 in PyTorch)"));
        }
        let norms = Norms { groups: self.norm_num_groups, eps: self.norm_eps };
        let temb = self.ch * 4;
        let lin = |a, b| LinearConfig::new(a, b).with_initializer(Initializer::XavierUniform { gain: 1.0 }).init(device);
        let mut skip_channels = vec![self.ch];
        let mut res = self.resolution;
        let mut block_in = self.ch;
        let mut down = Vec::new();
        for (i, &mult) in self.ch_mult.iter().enumerate() {
            let block_out = self.ch * mult;
            let mut blocks = Vec::new();
            let mut attns = Vec::new();
            for _ in 0..self.num_res_blocks {
                blocks.push(DdpmResBlock::new(block_in, block_out, temb, self.dropout, norms, device)?);
                block_in = block_out;
                if self.attn_resolutions.contains(&res) {
                    attns.push(DdpmAttnBlock::new(block_in, norms, device)?);
                }
                skip_channels.push(block_in);
            }
            let resample = (i + 1 < levels).then(|| {
                skip_channels.push(block_in);
                res /= 2;
                conv(block_in, block_in, 3, 2, 0, 1.0, device)
            });
            down.push(DdpmLevel { blocks, attns, resample });
        }
        let mid_block1 = DdpmResBlock::new(block_in, block_in, temb, self.dropout, norms, device)?;
        let mid_attn = DdpmAttnBlock::new(block_in, norms, device)?;
        let mid_block2 = DdpmResBlock::new(block_in, block_in, temb, self.dropout, norms, device)?;
        let mut up = Vec::new();
        for (i, &mult) in self.ch_mult.iter().enumerate().rev() {
            let block_out = self.ch * mult;
            let mut blocks = Vec::new();
            let mut attns = Vec::new();
            for _ in 0..=self.num_res_blocks {
                let skip = skip_channels.pop().expect("one skip per down block");
                blocks.push(DdpmResBlock::new(block_in + skip, block_out, temb, self.dropout, norms, device)?);
                block_in = block_out;
                if self.attn_resolutions.contains(&res) {
                    attns.push(DdpmAttnBlock::new(block_in, norms, device)?);
                }
            }
            let resample = (i > 0).then(|| {
                res *= 2;
                conv(block_in, block_in, 3, 1, 1, 1.0, device)
            });
            up.push(DdpmLevel { blocks, attns, resample });
        }
        let out = self.out_channels.unwrap_or(self.in_channels * if self.learned_variance { 2 } else { 1 });
        Ok(DdpmUnet {
            temb_dense0: lin(self.ch, temb),
            temb_dense1: lin(temb, temb),
            conv_in: conv(self.in_channels, self.ch, 3, 1, 1, 1.0, device),
            down,
            mid_block1,
            mid_attn,
            mid_block2,
            up,
            norm_out: norms.make(block_in, device)?,
            conv_out: conv(block_in, out, 3, 1, 1, ZERO_GAIN, device),
            class_emb: self.num_classes.map(|n| ClassEmbedding::new(n, temb, device)),
            ch: self.ch,
            in_channels: self.in_channels,
            time_frequencies: self.time_frequencies,
        })
    }
}

impl DdpmUnet {
    /// `x`: `[B, C, H, W]`, `time`: `[B]` (timesteps as floats).
    pub fn forward(&self, x: Tensor<4>, time: Tensor<1>) -> Tensor<4> {
        self.forward_classes(x, time, None)
    }

    /// [`DdpmUnet::forward`] with class labels `[B]` (for a network built with `num_classes`).
    pub fn forward_classes(&self, x: Tensor<4>, time: Tensor<1>, classes: Option<Tensor<1, Int>>) -> Tensor<4> {
        let emb = match self.time_frequencies {
            TimeFrequencies::Tensorflow => sinusoidal_embedding(time, self.ch, 10000.0),
            TimeFrequencies::Diffusers => {
                let freqs: Vec<f64> = self.time_frequencies.frequencies(self.ch).into_iter().map(f64::from).collect();
                let n = freqs.len();
                let freqs: Tensor<2> = ddpm_core::tensor::from_f64(freqs, [1, n], &time);
                let args = time.unsqueeze_dim::<2>(1) * freqs;
                Tensor::cat(vec![args.clone().sin(), args.cos()], 1)
            }
        };
        let temb = self.temb_dense1.forward(silu(self.temb_dense0.forward(emb)));
        let temb = ClassEmbedding::add_to(&self.class_emb, temb, classes);
        let mut hs = vec![self.conv_in.conv(x)];
        for level in &self.down {
            for (i, block) in level.blocks.iter().enumerate() {
                let mut h = block.forward(hs.last().expect("stem").clone(), temb.clone());
                if let Some(attn) = level.attns.get(i) {
                    h = attn.forward(h);
                }
                hs.push(h);
            }
            if let Some(conv) = &level.resample {
                // TensorFlow's "SAME" padding for a stride-2 3x3 convolution: one row and column
                // at the bottom and right.
                let h = hs.last().expect("block output").clone().pad((0, 1, 0, 1), burn::tensor::ops::PadMode::Constant(0.0));
                hs.push(conv.conv(h));
            }
        }
        let mut h = hs.last().expect("down path").clone();
        h = self.mid_block2.forward(self.mid_attn.forward(self.mid_block1.forward(h, temb.clone())), temb.clone());
        for level in &self.up {
            for (i, block) in level.blocks.iter().enumerate() {
                h = block.forward(Tensor::cat(vec![h, hs.pop().expect("skip")], 1), temb.clone());
                if let Some(attn) = level.attns.get(i) {
                    h = attn.forward(h);
                }
            }
            if let Some(conv) = &level.resample {
                h = conv.conv(upsample_nearest(h, Spatial::Image));
            }
        }
        self.conv_out.conv(self.norm_out.norm(h, true))
    }
}

impl Denoiser<4> for DdpmUnet {
    fn denoise(&self, x_t: Tensor<4>, t: Tensor<1>, cond: &Conditioning<4>) -> Tensor<4> {
        self.forward_classes(x_t, t, cond.classes.clone())
    }
}
