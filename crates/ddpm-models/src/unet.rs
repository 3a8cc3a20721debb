//! denoising-diffusion-pytorch's `Unet` (2D) and `Unet1D`, one implementation.
//!
//! Layout (per stage of `dim_mults`): two ResNet blocks with time FiLM, linear or full attention, then
//! a downsample; a middle of ResNet, full attention, ResNet; the mirror image on the way up with skip
//! connections; a final ResNet block over the concatenation with the stem and a 1x1 output conv.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Int, Tensor};
use ddpm_core::{Conditioning, Denoiser};

use crate::error::{ModelError, Result};
use crate::widths::reference_unet_config;
use crate::layers::{Attention, ClassEmbedding, DownStage, down_path, LinearAttention, Resample, ResampleKind, ResnetBlock, Spatial, StageAttention, TimeMlp};
use ddpm_kernels::ConvForward;

reference_unet_config! {
/// The reference's `Unet` ([`UnetConfig::init`]) and `Unet1D` ([`UnetConfig::init_1d`]), one
/// config for the same code on images and sequences. Defaults are the reference's.
pub struct UnetConfig {
    /// Take the previous x0 estimate as extra input channels (zeros when absent).
    #[config(default = false)]
    pub self_condition: bool,
    /// Output twice the channels (mean and variance interpolation).
    #[config(default = false)]
    pub learned_variance: bool,
    /// Learned Fourier time features instead of fixed sinusoids.
    #[config(default = false)]
    pub learned_sinusoidal_cond: bool,
    /// Random (untrained) Fourier time features instead of fixed sinusoids.
    #[config(default = false)]
    pub random_fourier_features: bool,
    /// Number of Fourier features (even).
    #[config(default = 16)]
    pub learned_sinusoidal_dim: usize,
    /// Base of the sinusoidal time embedding.
    #[config(default = 10000.0)]
    pub sinusoidal_pos_emb_theta: f64,
    /// Dropout in the first block of every ResNet block.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Attention head width: one value for every stage, or one per stage.
    #[config(default = "vec![32]")]
    pub attn_dim_head: Vec<usize>,
    /// Attention heads: one value for every stage, or one per stage.
    #[config(default = "vec![4]")]
    pub attn_heads: Vec<usize>,
    /// Full (softmax) attention per stage; linear attention elsewhere. Default: only the innermost.
    #[config(default = "None")]
    pub full_attn: Option<Vec<bool>>,
    /// Full attention through Burn's fused attention op.
    #[config(default = false)]
    pub flash_attn: bool,
    /// Class-conditional on this many classes (a learned embedding added to the time
    /// embedding; label `num_classes` is the null class of classifier-free guidance). Not in the
    /// reference's `Unet`.
    #[config(default = "None")]
    pub num_classes: Option<usize>,
}
}

/// One resolution of the U-Net.
#[derive(Module, Debug)]
pub struct Stage {
    pub block1: ResnetBlock,
    pub block2: ResnetBlock,
    pub attn: StageAttention,
    pub resample: Resample,
}

impl DownStage for Stage {
    fn blocks(&self) -> (&ResnetBlock, &ResnetBlock) {
        (&self.block1, &self.block2)
    }

    fn attend(&self, x: Tensor<4>) -> Tensor<4> {
        self.attn.forward(x)
    }

    fn resample(&self, x: Tensor<4>) -> Tensor<4> {
        self.resample.forward(x)
    }
}

/// The U-Net (2D, or 1D on `[B, C, 1, N]`).
#[derive(Module, Debug)]
pub struct Unet {
    pub init_conv: Conv2d,
    pub time_mlp: TimeMlp,
    pub downs: Vec<Stage>,
    pub mid_block1: ResnetBlock,
    pub mid_attn: Attention,
    pub mid_block2: ResnetBlock,
    pub ups: Vec<Stage>,
    pub final_res_block: ResnetBlock,
    pub final_conv: Conv2d,
    pub class_emb: Option<ClassEmbedding>,
    pub channels: usize,
    pub self_condition: bool,
    #[module(skip)]
    pub spatial: Spatial,
}

/// Everything that differs between the 2D and 1D networks.
struct Plan {
    spatial: Spatial,
    dim: usize,
    /// The stem's width, then each stage's.
    widths: Vec<usize>,
    out_dim: usize,
    channels: usize,
    self_condition: bool,
    fourier: Option<(usize, bool)>,
    theta: f64,
    dropout: f64,
    /// Per stage: (full attention, heads, head width) of the stage attention.
    stage_attn: Vec<(bool, usize, usize)>,
    mid_heads: usize,
    mid_dim_head: usize,
    num_mem_kv: usize,
    flash: bool,
    num_classes: Option<usize>,
}

fn per_stage<T: Copy>(name: &str, values: &[T], stages: usize) -> Result<Vec<T>> {
    match values.len() {
        1 => Ok(vec![values[0]; stages]),
        n if n == stages => Ok(values.to_vec()),
        n => Err(ModelError::config(name, format!("{n} values"), format!("give one value, or one per stage ({stages}, as dim_mults)"))),
    }
}

fn fourier(learned: bool, random: bool, dim: usize) -> Result<Option<(usize, bool)>> {
    if (learned || random) && dim % 2 != 0 {
        return Err(ModelError::config("learned_sinusoidal_dim", dim, "the Fourier feature count must be even"));
    }
    Ok((learned || random).then_some((dim, learned && !random)))
}

impl UnetConfig {
    /// Builds the reference's `Unet` on images `[B, C, H, W]` on `device`.
    pub fn init(&self, device: &Device) -> Result<Unet> {
        let stages = self.dim_mults.len();
        let full = match &self.full_attn {
            Some(f) => per_stage("full_attn", f, stages)?,
            None => (0..stages).map(|i| i + 1 == stages).collect(),
        };
        let heads = per_stage("attn_heads", &self.attn_heads, stages.max(1))?;
        let dim_head = per_stage("attn_dim_head", &self.attn_dim_head, stages.max(1))?;
        if self.dim % 2 != 0 && !(self.learned_sinusoidal_cond || self.random_fourier_features) {
            return Err(ModelError::config("dim", self.dim, "the sinusoidal time embedding needs an even dim"));
        }
        let stage_attn = (0..stages).map(|i| (full[i], heads[i], dim_head[i])).collect();
        let last = stages.saturating_sub(1);
        self.plan(Spatial::Image, stage_attn, (heads[last], dim_head[last]), 4)?.build(device)
    }

    /// Builds the reference's `Unet1D` on sequences `[B, C, N]`: linear attention (4 heads of
    /// 32) at every stage, full attention in the middle with `attn_heads` heads of
    /// `attn_dim_head` (one value each); `full_attn` and `flash_attn` are the image network's.
    pub fn init_1d(&self, device: &Device) -> Result<Unet1d> {
        let one = |key: &str, v: &[usize]| match v {
            [x] => Ok(*x),
            _ => Err(ModelError::config(key, format!("{v:?}"), "the 1-D U-Net has one full attention, in the middle: give one value")),
        };
        if self.full_attn.is_some() || self.flash_attn {
            return Err(ModelError::config("full_attn", format!("{:?}", self.full_attn), "the 1-D U-Net's stages use linear attention and its middle full attention; leave full_attn and flash_attn unset"));
        }
        let mid = (one("attn_heads", &self.attn_heads)?, one("attn_dim_head", &self.attn_dim_head)?);
        let unet = self.plan(Spatial::Sequence, vec![(false, 4, 32); self.dim_mults.len()], mid, 0)?.build(device)?;
        Ok(Unet1d { unet })
    }

    /// What the 2D and 1D networks share; `stage_attn` is (full, heads, head width) per stage,
    /// `mid` the middle attention's heads and head width.
    fn plan(&self, spatial: Spatial, stage_attn: Vec<(bool, usize, usize)>, mid: (usize, usize), num_mem_kv: usize) -> Result<Plan> {
        Ok(Plan {
            spatial,
            dim: self.dim,
            widths: self.stage_widths()?,
            out_dim: self.out_dim.unwrap_or(self.channels * if self.learned_variance { 2 } else { 1 }),
            channels: self.channels,
            self_condition: self.self_condition,
            fourier: fourier(self.learned_sinusoidal_cond, self.random_fourier_features, self.learned_sinusoidal_dim)?,
            theta: self.sinusoidal_pos_emb_theta,
            dropout: self.dropout,
            stage_attn,
            mid_heads: mid.0,
            mid_dim_head: mid.1,
            num_mem_kv,
            flash: self.flash_attn,
            num_classes: self.num_classes,
        })
    }
}

impl Plan {
    fn build(self, device: &Device) -> Result<Unet> {
        let sp = self.spatial;
        let dims = &self.widths;
        let init_dim = dims[0];
        let in_out: Vec<(usize, usize)> = dims.windows(2).map(|w| (w[0], w[1])).collect();
        let time_dim = self.dim * 4;
        let n = in_out.len();
        let res = |a, b| ResnetBlock::new(sp, a, b, Some(time_dim), self.dropout, device);
        let attn = |d, (full, heads, dim_head): (bool, usize, usize)| {
            if full {
                StageAttention::Full(Attention::new(sp, d, heads, dim_head, self.num_mem_kv, self.flash, device))
            } else {
                StageAttention::Linear(LinearAttention::new(sp, d, heads, dim_head, self.num_mem_kv, device))
            }
        };
        let down_kind = match sp {
            Spatial::Image => ResampleKind::Unshuffle,
            Spatial::Sequence => ResampleKind::Strided,
        };
        let downs = in_out
            .iter()
            .enumerate()
            .map(|(i, &(d_in, d_out))| Stage {
                block1: res(d_in, d_in),
                block2: res(d_in, d_in),
                attn: attn(d_in, self.stage_attn[i]),
                resample: Resample::new(if i + 1 < n { down_kind } else { ResampleKind::Same }, sp, d_in, d_out, device),
            })
            .collect();
        let mid = dims[n];
        let ups = in_out
            .iter()
            .enumerate()
            .rev()
            .map(|(i, &(d_in, d_out))| Stage {
                block1: res(d_out + d_in, d_out),
                block2: res(d_out + d_in, d_out),
                attn: attn(d_out, self.stage_attn[i]),
                resample: Resample::new(if i > 0 { ResampleKind::Up } else { ResampleKind::Same }, sp, d_out, d_in, device),
            })
            .collect();
        let input_channels = self.channels * if self.self_condition { 2 } else { 1 };
        Ok(Unet {
            init_conv: sp.conv(input_channels, init_dim, 7, true, device),
            time_mlp: TimeMlp::new(self.dim, time_dim, self.theta, self.fourier, device),
            downs,
            mid_block1: res(mid, mid),
            mid_attn: Attention::new(sp, mid, self.mid_heads, self.mid_dim_head, self.num_mem_kv, self.flash, device),
            mid_block2: res(mid, mid),
            ups,
            final_res_block: res(init_dim * 2, init_dim),
            final_conv: sp.conv(init_dim, self.out_dim, 1, true, device),
            class_emb: self.num_classes.map(|n| ClassEmbedding::new(n, time_dim, device)),
            channels: self.channels,
            self_condition: self.self_condition,
            spatial: sp,
        })
    }
}

impl Unet {
    /// Spatial sizes must be divisible by this (2 to the number of downsamples).
    pub fn downsample_factor(&self) -> usize {
        1 << (self.downs.len() - 1)
    }

    /// Checks that `[B, C, H, W]` fits: the channels and divisibility of the spatial sizes.
    pub fn check_input(&self, dims: [usize; 4]) -> Result<()> {
        if dims[1] != self.channels {
            return Err(ModelError::config("channels", self.channels, format!("the input has {} channels; set channels = {}", dims[1], dims[1])));
        }
        let f = self.downsample_factor();
        let sizes: &[usize] = match self.spatial {
            Spatial::Image => &dims[2..],
            Spatial::Sequence => &dims[3..],
        };
        if sizes.iter().any(|s| s % f != 0) {
            return Err(ModelError::config(
                "dim_mults",
                format!("{} stages", self.downs.len()),
                format!("input size {:?} must be divisible by {f}; resize the data or use fewer stages", sizes),
            ));
        }
        Ok(())
    }

    /// `x`: `[B, C, H, W]`, `time`: `[B]`, `self_cond`: the previous x0 estimate (zeros when `None`).
    pub fn forward(&self, x: Tensor<4>, time: Tensor<1>, self_cond: Option<Tensor<4>>) -> Tensor<4> {
        self.forward_classes(x, time, self_cond, None)
    }

    /// [`Unet::forward`] with class labels `[B]` (for a network built with `num_classes`).
    pub fn forward_classes(&self, x: Tensor<4>, time: Tensor<1>, self_cond: Option<Tensor<4>>, classes: Option<Tensor<1, Int>>) -> Tensor<4> {
        let x = if self.self_condition {
            let sc = self_cond.unwrap_or_else(|| x.zeros_like());
            Tensor::cat(vec![sc, x], 1)
        } else {
            x
        };
        let x = self.init_conv.conv(x);
        let r = x.clone();
        let t = ClassEmbedding::add_to(&self.class_emb, self.time_mlp.forward(time), classes);
        let (mut x, mut skips) = down_path(&self.downs, x, &t);
        x = self.mid_block1.forward(x, Some(t.clone()));
        x = self.mid_attn.forward(x.clone()) + x;
        x = self.mid_block2.forward(x, Some(t.clone()));
        for stage in &self.ups {
            x = stage.block1.forward(Tensor::cat(vec![x, skips.pop().expect("skip")], 1), Some(t.clone()));
            x = stage.block2.forward(Tensor::cat(vec![x, skips.pop().expect("skip")], 1), Some(t.clone()));
            x = stage.attn.forward(x.clone()) + x;
            x = stage.resample.forward(x);
        }
        x = self.final_res_block.forward(Tensor::cat(vec![x, r], 1), Some(t));
        self.final_conv.conv(x)
    }
}

impl Denoiser<4> for Unet {
    fn denoise(&self, x_t: Tensor<4>, t: Tensor<1>, cond: &Conditioning<4>) -> Tensor<4> {
        self.forward_classes(x_t, t, cond.self_cond.clone(), cond.classes.clone())
    }
}

/// The 1D U-Net: `[B, C, N]` sequences.
#[derive(Module, Debug)]
pub struct Unet1d {
    pub unet: Unet,
}

impl Unet1d {
    /// Checks that `[B, C, N]` fits.
    pub fn check_input(&self, dims: [usize; 3]) -> Result<()> {
        self.unet.check_input([dims[0], dims[1], 1, dims[2]])
    }

    /// `x`: `[B, C, N]`, `time`: `[B]`.
    pub fn forward(&self, x: Tensor<3>, time: Tensor<1>, self_cond: Option<Tensor<3>>) -> Tensor<3> {
        let out = self.unet.forward(x.unsqueeze_dim(2), time, self_cond.map(|s| s.unsqueeze_dim(2)));
        out.squeeze_dim(2)
    }
}

impl Denoiser<3> for Unet1d {
    fn denoise(&self, x_t: Tensor<3>, t: Tensor<1>, cond: &Conditioning<3>) -> Tensor<3> {
        let out = self.unet.forward_classes(x_t.unsqueeze_dim(2), t, cond.self_cond.clone().map(|s| s.unsqueeze_dim(2)), cond.classes.clone());
        out.squeeze_dim(2)
    }
}

impl Unet {
    fn attention_key(&self, rest: &[&str], linear: bool) -> String {
        let key = crate::layers::attention_key(rest, linear);
        // Unet1D wraps its attentions as Residual(PreNorm(norm, fn)).
        match (self.spatial == Spatial::Sequence, rest[0]) {
            (false, _) => key,
            (true, "norm") => format!("fn.{key}"),
            (true, _) => format!("fn.fn.{key}"),
        }
    }
}

impl crate::weights::ReferenceKeys for Unet {
    /// Burn paths to the reference's `state_dict` keys: stages are `ModuleList`s (`block1, block2,
    /// attn, resample` -> `0..3`), a ResNet block's `mlp` is `Sequential(SiLU, Linear)` (`mlp.1`),
    /// linear attention's output is `Sequential(Conv, RMSNorm)` (`to_out.0`, `to_out.1`), the
    /// pixel-unshuffle and upsample convolutions sit at index 1 of their `Sequential`, and the time
    /// MLP is `Sequential(pos_emb, Linear, GELU, Linear)`.
    fn reference_key(&self, path: &str) -> String {
        let segs: Vec<&str> = path.split('.').collect();
        match segs[0] {
            "time_mlp" => crate::layers::time_mlp_key(&segs),
            "downs" | "ups" => {
                let stage: usize = segs[1].parse().unwrap_or(0);
                let stages = if segs[0] == "downs" { &self.downs } else { &self.ups };
                let prefix = format!("{}.{}", segs[0], segs[1]);
                match segs[2] {
                    "block1" => format!("{prefix}.0.{}", crate::layers::resnet_key(&segs[3..])),
                    "block2" => format!("{prefix}.1.{}", crate::layers::resnet_key(&segs[3..])),
                    "attn" => format!("{prefix}.2.{}", self.attention_key(&segs[4..], segs[3] == "Linear")),
                    _ => {
                        let nested = stages
                            .get(stage)
                            .is_some_and(|s| matches!(s.resample.kind, ResampleKind::Unshuffle | ResampleKind::Up));
                        let conv = segs[4..].join(".");
                        if nested { format!("{prefix}.3.1.{conv}") } else { format!("{prefix}.3.{conv}") }
                    }
                }
            }
            "mid_block1" | "mid_block2" | "final_res_block" => format!("{}.{}", segs[0], crate::layers::resnet_key(&segs[1..])),
            "mid_attn" => format!("mid_attn.{}", self.attention_key(&segs[1..], false)),
            _ => path.to_string(),
        }
    }

    fn reference_shape(&self, _path: &str, shape: &[usize]) -> Vec<usize> {
        match (self.spatial, shape.len()) {
            // [out, in, 1, k] -> [out, in, k]; [1, C, 1, 1] -> [1, C, 1].
            (Spatial::Sequence, 4) => vec![shape[0], shape[1], shape[3]],
            _ => shape.to_vec(),
        }
    }

    fn config_hint(&self, key: &str) -> &'static str {
        if key.starts_with("init_conv") {
            "channels, self_condition and init_dim"
        } else if key.starts_with("final_conv") {
            "channels, out_dim and learned_variance"
        } else if key.starts_with("time_mlp") {
            "dim, learned_sinusoidal_cond, random_fourier_features and learned_sinusoidal_dim"
        } else if key.contains("mem_kv") || key.contains("to_qkv") || key.contains("to_out") || key.contains("attn") {
            "attn_heads, attn_dim_head and full_attn"
        } else {
            "dim, dim_mults and init_dim"
        }
    }
}

impl crate::weights::ReferenceKeys for Unet1d {
    fn reference_key(&self, path: &str) -> String {
        self.unet.reference_key(path.strip_prefix("unet.").unwrap_or(path))
    }

    fn reference_shape(&self, path: &str, shape: &[usize]) -> Vec<usize> {
        self.unet.reference_shape(path, shape)
    }

    fn config_hint(&self, key: &str) -> &'static str {
        self.unet.config_hint(key)
    }
}
