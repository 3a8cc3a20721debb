//! Simple diffusion's U-ViT (Hoogeboom et al. 2023, "simple diffusion: End-to-end diffusion for
//! high resolution images"), as the reference's `UViT`: a convolutional U-Net whose middle is a
//! transformer. Every stage halves the resolution (pixel-unshuffle + 1x1 convolution) and is
//! mirrored on the way up (1x1 convolution + SiLU + pixel-shuffle); the transformer's attention
//! normalises queries and keys (L2, learned scales, temperature 8) and its feed-forward layers take
//! the time embedding as a scale and shift. The time input is a real number (simple diffusion's
//! log-SNR) through learned Fourier features.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use ddpm_kernels::silu;
use burn::tensor::{Device, Int, Tensor};
use ddpm_core::{Conditioning, Denoiser};

use crate::error::{ModelError, Result};
use crate::widths::reference_unet_config;
use crate::layers::{ClassEmbedding, DownStage, LinearAttention, down_path, Resample, ResampleKind, ResnetBlock, Spatial, TimeMlp, attention_key, resnet_key, time_mlp_key};
use ddpm_kernels::{ConvForward, LinearForward};

reference_unet_config! {
/// The reference's `UViT`; defaults are its own (patch size 1, downsample factor 2).
pub struct UvitConfig {
    /// Transformer layers in the middle.
    #[config(default = 6)]
    pub vit_depth: usize,
    /// Dropout in the transformer (attention weights and feed-forward).
    #[config(default = 0.2)]
    pub vit_dropout: f64,
    #[config(default = 32)]
    pub attn_dim_head: usize,
    #[config(default = 4)]
    pub attn_heads: usize,
    /// Feed-forward width multiplier.
    #[config(default = 4)]
    pub ff_mult: usize,
    /// Learned Fourier features of the time input (even).
    #[config(default = 16)]
    pub learned_sinusoidal_dim: usize,
    /// Class-conditional on this many classes (label `num_classes` is the null class); not in
    /// the reference.
    #[config(default = "None")]
    pub num_classes: Option<usize>,
}
}

/// `F.normalize` over the last axis times `sqrt(C)`, times a learned gain when present.
#[derive(Module, Debug)]
pub struct LastAxisNorm {
    pub g: Option<Param<Tensor<1>>>,
}

impl LastAxisNorm {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let c = x.dims()[2] as f64;
        let x = l2_normalize(x).mul_scalar(c.sqrt());
        match &self.g {
            Some(g) => x * g.val().unsqueeze_dims::<3>(&[0, 1]),
            None => x,
        }
    }
}

fn l2_normalize<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let norm = x.clone().powi_scalar(2).sum_dim(D - 1).sqrt().clamp_min(1e-12);
    x / norm
}

/// Attention with L2-normalised, learned-scaled queries and keys and a fixed temperature of 8.
#[derive(Module, Debug)]
pub struct VitAttention {
    pub norm: LastAxisNorm,
    pub to_qkv: Linear,
    pub q_scale: Param<Tensor<1>>,
    pub k_scale: Param<Tensor<1>>,
    pub to_out: Linear,
    pub dropout: Dropout,
    pub heads: usize,
}

impl VitAttention {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, _] = x.dims();
        let x = self.norm.forward(x);
        // Each third of the projection its own product (`linear_columns`): slicing one product
        // would cost a zero-filled gradient of all of it per part.
        let hidden = self.to_qkv.weight.dims()[1] / 3;
        let part = |i: usize| -> Tensor<4> { self.to_qkv.linear_columns(x.clone(), i * hidden, hidden).reshape([b, n, self.heads, hidden / self.heads]).swap_dims(1, 2) };
        let (q, k, v) = (part(0), part(1), part(2));
        let q = l2_normalize(q) * self.q_scale.val().unsqueeze_dims::<4>(&[0, 1, 2]);
        let k = l2_normalize(k) * self.k_scale.val().unsqueeze_dims::<4>(&[0, 1, 2]);
        let attn = self.dropout.forward(softmax(q.matmul(k.swap_dims(2, 3)).mul_scalar(8.0), 3));
        let out = attn.matmul(v).swap_dims(1, 2);
        let [_, _, h, d] = out.dims();
        self.to_out.forward(out.reshape([b, n, h * d]))
    }
}

/// Feed-forward with the time embedding as scale and shift of its hidden layer (zero-initialised,
/// so it starts unconditioned).
#[derive(Module, Debug)]
pub struct VitFeedForward {
    pub norm: LastAxisNorm,
    pub to_scale_shift: Linear,
    pub proj_in: Linear,
    pub proj_out: Linear,
    pub dropout: Dropout,
}

impl VitFeedForward {
    fn forward(&self, x: Tensor<3>, t: Tensor<2>) -> Tensor<3> {
        let h = silu(self.proj_in.forward(self.norm.forward(x)));
        let ss = self.to_scale_shift.forward(silu(t)).unsqueeze_dim::<3>(1);
        let mut halves = ss.chunk(2, 2);
        let shift = halves.pop().expect("two halves");
        let scale = halves.pop().expect("two halves");
        self.proj_out.forward(self.dropout.forward(h * (scale + 1.0) + shift))
    }
}

#[derive(Module, Debug)]
pub struct VitLayer {
    pub attn: VitAttention,
    pub ff: VitFeedForward,
}

/// 1x1 convolution to `4 d_out` channels, SiLU, pixel-shuffle to twice the resolution. The
/// convolution starts with each output channel's kernel repeated for its four sub-pixels (ICNR),
/// so the initial upsampling is free of checkerboard patterns.
#[derive(Module, Debug)]
pub struct PixelShuffleUp {
    pub conv: Conv2d,
}

impl PixelShuffleUp {
    fn new(d_in: usize, d_out: usize, device: &Device) -> Self {
        let mut conv = Spatial::Image.conv(d_in, d_out * 4, 1, true, device);
        let small = Spatial::Image.conv(d_in, d_out, 1, false, device).weight.val();
        let repeated = small.unsqueeze_dim::<5>(1).repeat_dim(1, 4).reshape([d_out * 4, d_in, 1, 1]);
        conv.weight = Param::from_tensor(repeated.detach());
        conv.bias = conv.bias.map(|b| Param::from_tensor(b.val().zeros_like().detach()));
        Self { conv }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = silu(self.conv.conv(x));
        let [b, c4, h, w] = y.dims();
        let c = c4 / 4;
        y.reshape([b, c, 2, 2, h, w]).permute([0, 1, 4, 2, 5, 3]).reshape([b, c, h * 2, w * 2])
    }
}

#[derive(Module, Debug)]
pub struct UvitDown {
    pub block1: ResnetBlock,
    pub block2: ResnetBlock,
    pub attn: LinearAttention,
    pub down: Resample,
}

impl DownStage for UvitDown {
    fn blocks(&self) -> (&ResnetBlock, &ResnetBlock) {
        (&self.block1, &self.block2)
    }

    fn attend(&self, x: Tensor<4>) -> Tensor<4> {
        self.attn.forward(x)
    }

    fn resample(&self, x: Tensor<4>) -> Tensor<4> {
        self.down.forward(x)
    }
}

#[derive(Module, Debug)]
pub struct UvitUp {
    pub up: PixelShuffleUp,
    pub block1: ResnetBlock,
    pub block2: ResnetBlock,
    pub attn: LinearAttention,
}

/// The U-ViT on `[B, C, H, W]`.
#[derive(Module, Debug)]
pub struct Uvit {
    pub init_conv: Conv2d,
    pub time_mlp: TimeMlp,
    pub downs: Vec<UvitDown>,
    pub vit: Vec<VitLayer>,
    pub ups: Vec<UvitUp>,
    pub final_res_block: ResnetBlock,
    pub final_conv: Conv2d,
    pub class_emb: Option<ClassEmbedding>,
    pub channels: usize,
}

impl UvitConfig {
    pub fn init(&self, device: &Device) -> Result<Uvit> {
        let dims = self.stage_widths()?;
        let stages = self.dim_mults.len();
        if self.attn_heads == 0 {
            return Err(ModelError::config("attn_heads", self.attn_heads, "the transformer needs at least one attention head"));
        }
        if self.learned_sinusoidal_dim == 0 || self.learned_sinusoidal_dim % 2 != 0 {
            return Err(ModelError::config("learned_sinusoidal_dim", self.learned_sinusoidal_dim, "the Fourier feature count must be even and positive"));
        }
        let init_dim = dims[0];
        let in_out: Vec<(usize, usize)> = dims.windows(2).map(|w| (w[0], w[1])).collect();
        let time_dim = self.dim * 4;
        let sp = Spatial::Image;
        let res = |a, b| ResnetBlock::new(sp, a, b, Some(time_dim), 0.0, device);
        let lin_attn = |d| LinearAttention::new(sp, d, 4, 32, 0, device);
        let mid = dims[stages];
        let hidden = self.attn_heads * self.attn_dim_head;
        let ff_hidden = mid * self.ff_mult;
        let linear = |a, b, bias| LinearConfig::new(a, b).with_bias(bias).init(device);
        Ok(Uvit {
            init_conv: sp.conv(self.channels, init_dim, 7, true, device),
            time_mlp: TimeMlp::new(self.dim, time_dim, 10_000.0, Some((self.learned_sinusoidal_dim, true)), device),
            downs: in_out
                .iter()
                .map(|&(d_in, d_out)| UvitDown { block1: res(d_in, d_in), block2: res(d_in, d_in), attn: lin_attn(d_in), down: Resample::new(ResampleKind::Unshuffle, sp, d_in, d_out, device) })
                .collect(),
            vit: (0..self.vit_depth)
                .map(|_| VitLayer {
                    attn: VitAttention {
                        norm: LastAxisNorm { g: Some(Param::from_tensor(Tensor::ones([mid], device))) },
                        to_qkv: linear(mid, hidden * 3, false),
                        q_scale: Param::from_tensor(Tensor::ones([self.attn_dim_head], device)),
                        k_scale: Param::from_tensor(Tensor::ones([self.attn_dim_head], device)),
                        to_out: linear(hidden, mid, false),
                        dropout: DropoutConfig::new(self.vit_dropout).init(),
                        heads: self.attn_heads,
                    },
                    ff: VitFeedForward {
                        norm: LastAxisNorm { g: None },
                        to_scale_shift: LinearConfig::new(time_dim, ff_hidden * 2).with_initializer(Initializer::Zeros).init(device),
                        proj_in: linear(mid, ff_hidden, false),
                        proj_out: linear(ff_hidden, mid, false),
                        dropout: DropoutConfig::new(self.vit_dropout).init(),
                    },
                })
                .collect(),
            ups: in_out
                .iter()
                .rev()
                .map(|&(d_in, d_out)| UvitUp { up: PixelShuffleUp::new(d_out, d_in, device), block1: res(d_in * 2, d_in), block2: res(d_in * 2, d_in), attn: lin_attn(d_in) })
                .collect(),
            final_res_block: res(init_dim * 2, init_dim),
            final_conv: sp.conv(init_dim, self.out_dim.unwrap_or(self.channels), 1, true, device),
            class_emb: self.num_classes.map(|n| ClassEmbedding::new(n, time_dim, device)),
            channels: self.channels,
        })
    }
}

impl Uvit {
    /// Checks that `[B, C, H, W]` fits: the channels, and sides divisible by 2 per stage.
    pub fn check_input(&self, dims: [usize; 4]) -> Result<()> {
        if dims[1] != self.channels {
            return Err(ModelError::config("channels", self.channels, format!("the input has {} channels; set channels = {}", dims[1], dims[1])));
        }
        let f = 1usize << self.downs.len();
        if dims[2] % f != 0 || dims[3] % f != 0 {
            return Err(ModelError::config("dim_mults", format!("{} stages", self.downs.len()), format!("every stage halves the image: its sides must be divisible by {f}")));
        }
        Ok(())
    }

    /// `x`: `[B, C, H, W]`, `time`: `[B]` (simple diffusion's log-SNR), optional class labels.
    pub fn forward(&self, x: Tensor<4>, time: Tensor<1>, classes: Option<Tensor<1, Int>>) -> Tensor<4> {
        let x = self.init_conv.conv(x);
        let r = x.clone();
        let t = ClassEmbedding::add_to(&self.class_emb, self.time_mlp.forward(time), classes);
        let (x, mut skips) = down_path(&self.downs, x, &t);
        let [b, c, h, w] = x.dims();
        let mut tokens: Tensor<3> = x.permute([0, 2, 3, 1]).reshape([b, h * w, c]);
        for layer in &self.vit {
            tokens = layer.attn.forward(tokens.clone()) + tokens;
            tokens = layer.ff.forward(tokens.clone(), t.clone()) + tokens;
        }
        let mut x = tokens.reshape([b, h, w, c]).permute([0, 3, 1, 2]);
        for stage in &self.ups {
            x = stage.up.forward(x);
            x = stage.block1.forward(Tensor::cat(vec![x, skips.pop().expect("skip")], 1), Some(t.clone()));
            x = stage.block2.forward(Tensor::cat(vec![x, skips.pop().expect("skip")], 1), Some(t.clone()));
            x = stage.attn.forward(x.clone()) + x;
        }
        x = self.final_res_block.forward(Tensor::cat(vec![x, r], 1), Some(t));
        self.final_conv.conv(x)
    }
}

impl Denoiser<4> for Uvit {
    fn denoise(&self, x_t: Tensor<4>, t: Tensor<1>, cond: &Conditioning<4>) -> Tensor<4> {
        self.forward(x_t, t, cond.classes.clone())
    }
}

impl crate::weights::ReferenceKeys for Uvit {
    /// Burn paths to the reference's keys: stages are `ModuleList`s (down: `block1, block2, attn,
    /// downsample` -> `0..3`, the downsample convolution at index 1 of its `Sequential`; up:
    /// `upsample, block1, block2, attn`, the upsample convolution at `net.0`), transformer layers
    /// are `vit.layers.i.{0: attention, 1: feed-forward}` with `Sequential`s around the
    /// feed-forward's linears, and the time MLP is `Sequential(pos_emb, Linear, GELU, Linear)`.
    fn reference_key(&self, path: &str) -> String {
        let s: Vec<&str> = path.split('.').collect();
        match s[0] {
            "time_mlp" => time_mlp_key(&s),
            "downs" | "ups" => {
                let p = format!("{}.{}", s[0], s[1]);
                match (s[0], s[2]) {
                    ("downs", "block1") => format!("{p}.0.{}", resnet_key(&s[3..])),
                    ("downs", "block2") => format!("{p}.1.{}", resnet_key(&s[3..])),
                    ("downs", "attn") => format!("{p}.2.{}", attention_key(&s[3..], true)),
                    ("downs", _) => format!("{p}.3.1.{}", s[4..].join(".")),
                    ("ups", "up") => format!("{p}.0.net.0.{}", s[4..].join(".")),
                    ("ups", "block1") => format!("{p}.1.{}", resnet_key(&s[3..])),
                    ("ups", "block2") => format!("{p}.2.{}", resnet_key(&s[3..])),
                    _ => format!("{p}.3.{}", attention_key(&s[3..], true)),
                }
            }
            "vit" => {
                let p = format!("vit.layers.{}", s[1]);
                let rest = s[3..].join(".");
                match (s[2], s[3]) {
                    ("attn", _) => format!("{p}.0.{rest}"),
                    ("ff", "to_scale_shift") => format!("{p}.1.to_scale_shift.1.{}", s[4..].join(".")),
                    ("ff", "proj_in") => format!("{p}.1.proj_in.0.{}", s[4..].join(".")),
                    ("ff", "proj_out") => format!("{p}.1.proj_out.1.{}", s[4..].join(".")),
                    _ => format!("{p}.1.{rest}"),
                }
            }
            "final_res_block" => format!("final_res_block.{}", resnet_key(&s[1..])),
            _ => path.to_string(),
        }
    }

    /// The convolutional RMSNorm gains are `[C]` in the U-ViT (`[1, C, 1, 1]` here).
    fn reference_shape(&self, path: &str, shape: &[usize]) -> Vec<usize> {
        if path.ends_with(".g") && shape.len() == 4 { vec![shape[1]] } else { shape.to_vec() }
    }

    fn config_hint(&self, key: &str) -> &'static str {
        if key.starts_with("vit") {
            "vit_depth, attn_heads, attn_dim_head and ff_mult"
        } else if key.starts_with("time_mlp") {
            "dim and learned_sinusoidal_dim"
        } else if key.starts_with("init_conv") || key.starts_with("final_conv") {
            "channels, init_dim and out_dim"
        } else {
            "dim, dim_mults and init_dim"
        }
    }
}
