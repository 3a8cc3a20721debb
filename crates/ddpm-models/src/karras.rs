//! Karras et al. 2024 (EDM2) magnitude-preserving U-Nets, as the reference's `KarrasUnet`,
//! `KarrasUnet1D` and `KarrasUnet3D`: one implementation on `[B, C, T, H, W]`, where an image is
//! `T = 1` and a sequence `T = H = 1`.
//!
//! Every weight is used normalised (`w / max(||w_o||, eps) * sqrt(fan)` per output, then
//! `/ sqrt(fan_in)`); training also keeps the stored weights normalised ("forced weight
//! normalisation"), which here is [`KarrasUnet::force_weight_norm`], to be called after each
//! optimiser step. No biases; MP-SiLU, MP-add, MP-cat, pixel norm, learned gains.

use std::f64::consts::PI;

use burn::config::Config;
use burn::module::{Module, ModuleMapper, Param};
use burn::nn::{Dropout, DropoutConfig};
use ddpm_kernels::silu;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Int, Tensor};
use ddpm_core::{Conditioning, Denoiser};

use crate::error::{ModelError, Result};
use crate::weights::ReferenceKeys;

const EPS: f64 = 1e-4;

/// `silu(x) / 0.596`: unit variance for unit-variance input.
pub fn mp_silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    silu(x) / 0.596
}

/// `((1 - t) a + t b) / sqrt((1 - t)^2 + t^2)`.
pub fn mp_add<const D: usize>(a: Tensor<D>, b: Tensor<D>, t: f64) -> Tensor<D> {
    (a * (1.0 - t) + b * t) / ((1.0 - t).powi(2) + t * t).sqrt()
}

/// Concatenation along channels that keeps magnitude: `C [(1 - t) a / sqrt(Na), t b / sqrt(Nb)]`,
/// `C = sqrt((Na + Nb) / ((1 - t)^2 + t^2))`.
pub fn mp_cat<const D: usize>(a: Tensor<D>, b: Tensor<D>, t: f64) -> Tensor<D> {
    let (na, nb) = (a.dims()[1] as f64, b.dims()[1] as f64);
    let c = ((na + nb) / ((1.0 - t).powi(2) + t * t)).sqrt();
    Tensor::cat(vec![a * ((1.0 - t) / na.sqrt()), b * (t / nb.sqrt())], 1) * c
}

/// `x / max(||x||_dim, eps) * sqrt(N_dim)`.
pub fn pixel_norm<const D: usize>(x: Tensor<D>, dim: usize, eps: f64) -> Tensor<D> {
    let n = x.dims()[dim] as f64;
    let norm = x.clone().powi_scalar(2).sum_dim(dim).sqrt().clamp_min(eps);
    x / norm * n.sqrt()
}

/// Each output's weights scaled to norm `sqrt(fan)`: `w_o / max(||w_o||, eps) * sqrt(numel / out)`.
pub fn normalize_weight<const D: usize>(w: Tensor<D>) -> Tensor<D> {
    let dims = w.dims();
    let fan = w.shape().num_elements() / dims[0];
    let flat = w.reshape([dims[0], fan]);
    let norm = flat.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(EPS);
    (flat / norm * (fan as f64).sqrt()).reshape(dims)
}

/// Magnitude-preserving convolution without bias, "same" padding; optionally a constant-one input
/// channel in front (the input block's stand-in for a bias).
#[derive(Module, Debug)]
pub struct MpConv {
    pub weight: Param<Tensor<5>>,
    pub fan_in: usize,
    pub concat_ones: bool,
}

impl MpConv {
    pub fn new(d_in: usize, d_out: usize, kernel: [usize; 3], concat_ones: bool, device: &Device) -> Self {
        let shape = [d_out, d_in + usize::from(concat_ones), kernel[0], kernel[1], kernel[2]];
        Self {
            weight: Param::from_tensor(Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)),
            fan_in: d_in * kernel.iter().product::<usize>(),
            concat_ones,
        }
    }

    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let w = normalize_weight(self.weight.val()) / (self.fan_in as f64).sqrt();
        let x = if self.concat_ones {
            let [b, _, t, h, ww] = x.dims();
            Tensor::cat(vec![Tensor::ones([b, 1, t, h, ww], (&x.device(), x.dtype())), x], 1)
        } else {
            x
        };
        let k = w.dims();
        let padding = [((k[2] - 1) / 2, k[2] / 2), ((k[3] - 1) / 2, k[3] / 2), ((k[4] - 1) / 2, k[4] / 2)];
        ddpm_kernels::conv3d(x, w, None, ConvOptions { stride: [1, 1, 1], padding, dilation: [1, 1, 1], groups: 1 })
    }
}

/// Magnitude-preserving linear layer without bias (weight stored `[out, in]`, as the reference).
#[derive(Module, Debug)]
pub struct MpLinear {
    pub weight: Param<Tensor<2>>,
}

impl MpLinear {
    pub fn new(d_in: usize, d_out: usize, device: &Device) -> Self {
        Self { weight: Param::from_tensor(Tensor::random([d_out, d_in], Distribution::Normal(0.0, 1.0), device)) }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let fan_in = self.weight.dims()[1] as f64;
        x.matmul((normalize_weight(self.weight.val()) / fan_in.sqrt()).transpose())
    }
}

/// Which axes of `[T, H, W]` an attention mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnAxes {
    /// All positions together.
    All,
    /// Within each frame (`H W`).
    Space,
    /// Along time at each pixel (`T`).
    Time,
}

/// Cosine attention: q, k, v pixel-normalised over the head width, learned memory key/values,
/// then MP-add with the input.
#[derive(Module, Debug)]
pub struct MpAttention {
    pub mem_kv: Param<Tensor<4>>,
    pub to_qkv: MpConv,
    pub to_out: MpConv,
    pub heads: usize,
    pub mp_add_t: f64,
    pub flash: bool,
    #[module(skip)]
    pub axes: AttnAxes,
}

impl MpAttention {
    pub fn new(dim: usize, heads: usize, dim_head: usize, mp_add_t: f64, flash: bool, axes: AttnAxes, device: &Device) -> Self {
        let hidden = heads * dim_head;
        Self {
            mem_kv: Param::from_tensor(Tensor::random([2, heads, 4, dim_head], Distribution::Normal(0.0, 1.0), device)),
            to_qkv: MpConv::new(dim, hidden * 3, [1, 1, 1], false, device),
            to_out: MpConv::new(hidden, dim, [1, 1, 1], false, device),
            heads,
            mp_add_t,
            flash,
            axes,
        }
    }

    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let [b, _, t, h, w] = x.dims();
        let qkv = self.to_qkv.forward(x.clone());
        let c3 = qkv.dims()[1];
        // Sequences of positions: [B', 3 heads d, n].
        let seqs: Tensor<3> = match self.axes {
            AttnAxes::All => qkv.reshape([b, c3, t * h * w]),
            AttnAxes::Space => qkv.swap_dims(1, 2).reshape([b * t, c3, h * w]),
            AttnAxes::Time => qkv.permute([0, 3, 4, 1, 2]).reshape([b * h * w, c3, t]),
        };
        let [bb, _, n] = seqs.dims();
        let d = c3 / 3 / self.heads;
        let mut parts = seqs.reshape([bb, 3, self.heads, d, n]).chunk(3, 1).into_iter().map(|p| p.reshape([bb, self.heads, d, n]).swap_dims(2, 3));
        let (q, mut k, mut v) = (parts.next().expect("q"), parts.next().expect("k"), parts.next().expect("v"));
        let mut mem = self.mem_kv.val().chunk(2, 0).into_iter().map(|m| m.expand([bb, self.heads, 4, d]));
        k = Tensor::cat(vec![mem.next().expect("mk"), k], 2);
        v = Tensor::cat(vec![mem.next().expect("mv"), v], 2);
        let (q, k, v) = (pixel_norm(q, 3, EPS), pixel_norm(k, 3, EPS), pixel_norm(v, 3, EPS));
        let scale = (d as f64).powf(-0.5);
        let out = if self.flash {
            burn::tensor::module::attention(
                q,
                k,
                v,
                None,
                None,
                burn::tensor::ops::AttentionModuleOptions { scale: Some(scale), ..Default::default() },
            )
        } else {
            ddpm_kernels::attention(q, k, v, scale)
        };
        let hd = self.heads * d;
        let out = out.swap_dims(2, 3).reshape([bb, hd, n]);
        let out: Tensor<5> = match self.axes {
            AttnAxes::All => out.reshape([b, hd, t, h, w]),
            AttnAxes::Space => out.reshape([b, t, hd, h, w]).swap_dims(1, 2),
            AttnAxes::Time => out.reshape([b, h, w, hd, t]).permute([0, 3, 4, 1, 2]),
        };
        mp_add(self.to_out.forward(out), x, self.mp_add_t)
    }
}

/// Halves the axes of `[T, H, W]` marked in `axes` (bilinear with `align_corners = False`, which
/// at exactly half size is the mean of each pair).
pub fn downsample2(x: Tensor<5>, axes: [bool; 3]) -> Tensor<5> {
    let mut x = x;
    for (i, &on) in axes.iter().enumerate() {
        if on {
            let dims = x.dims();
            let axis = i + 2;
            let mut split = [0usize; 6];
            split[..=axis].copy_from_slice(&dims[..=axis]);
            split[axis] = dims[axis] / 2;
            split[axis + 1] = 2;
            split[axis + 2..].copy_from_slice(&dims[axis + 1..]);
            let mut out = dims;
            out[axis] /= 2;
            x = x.reshape(split).mean_dim(axis + 1).reshape(out);
        }
    }
    x
}

/// Doubles the axes marked in `axes` (bilinear / trilinear with `align_corners = False`:
/// `out[2i] = 3/4 x[i] + 1/4 x[i-1]`, `out[2i+1] = 3/4 x[i] + 1/4 x[i+1]`, edges clamped).
pub fn upsample2(x: Tensor<5>, axes: [bool; 3]) -> Tensor<5> {
    let mut x = x;
    for (i, &on) in axes.iter().enumerate() {
        if on {
            let axis = i + 2;
            let dims = x.dims();
            let n = dims[axis];
            let (prev, next) = if n == 1 {
                (x.clone(), x.clone())
            } else {
                (
                    Tensor::cat(vec![x.clone().narrow(axis, 0, 1), x.clone().narrow(axis, 0, n - 1)], axis),
                    Tensor::cat(vec![x.clone().narrow(axis, 1, n - 1), x.clone().narrow(axis, n - 1, 1)], axis),
                )
            };
            let even = x.clone() * 0.75 + prev * 0.25;
            let odd = x * 0.75 + next * 0.25;
            let mut out = dims;
            out[axis] *= 2;
            x = Tensor::stack::<6>(vec![even, odd], axis + 1).reshape(out);
        }
    }
    x
}

/// The reference's `Encoder` (`encoder = true`) or `Decoder`.
#[derive(Module, Debug)]
pub struct KarrasBlock {
    pub downsample_conv: Option<MpConv>,
    pub res_conv: Option<MpConv>,
    pub to_emb: Option<MpLinear>,
    pub gain: Option<Param<Tensor<1>>>,
    pub block1: MpConv,
    pub block2: MpConv,
    pub dropout: Dropout,
    pub attn: Vec<MpAttention>,
    pub encoder: bool,
    pub resample: [bool; 3],
    pub mp_add_t: f64,
}

impl KarrasBlock {
    /// Whether this decoder takes a skip connection (every decoder but the upsampling ones).
    pub fn needs_skip(&self) -> bool {
        !self.encoder && !self.resample.iter().any(|&r| r)
    }

    pub fn forward(&self, x: Tensor<5>, emb: Option<Tensor<2>>) -> Tensor<5> {
        let resampling = self.resample.iter().any(|&r| r);
        let (x, res) = if self.encoder {
            let mut x = x;
            if resampling {
                x = downsample2(x, self.resample);
            }
            if let Some(conv) = &self.downsample_conv {
                x = conv.forward(x);
            }
            let x = pixel_norm(x, 1, EPS);
            (x.clone(), x)
        } else {
            let x = if resampling { upsample2(x, self.resample) } else { x };
            let res = match &self.res_conv {
                Some(conv) => conv.forward(x.clone()),
                None => x.clone(),
            };
            (x, res)
        };
        let mut x = self.block1.forward(mp_silu(x));
        if let (Some(to_emb), Some(gain), Some(emb)) = (&self.to_emb, &self.gain, emb) {
            let scale = to_emb.forward(emb) * gain.val().unsqueeze_dim::<2>(0) + 1.0;
            let [b, c] = scale.dims();
            x = x * scale.reshape([b, c, 1, 1, 1]);
        }
        x = self.block2.forward(self.dropout.forward(mp_silu(x)));
        let mut x = mp_add(x, res, self.mp_add_t);
        for attn in &self.attn {
            x = attn.forward(x);
        }
        x
    }
}

/// The reference's `KarrasUnet` (square images, [`KarrasUnetConfig::init`]), `KarrasUnet1D`
/// (sequences, [`KarrasUnetConfig::init_1d`]) and `KarrasUnet3D` (video,
/// [`KarrasUnetConfig::init_3d`]): one config, one network ([`KarrasUnet`]) on `[B, C, T, H, W]`.
/// Defaults are the reference's (EDM2 config G).
#[derive(Config, Debug, PartialEq)]
pub struct KarrasUnetConfig {
    /// The data's extent: the side of square images or video frames, or the length of sequences.
    pub size: usize,
    /// Frames of a video (`init_3d`; 1 otherwise).
    #[config(default = 1)]
    pub frames: usize,
    #[config(default = 192)]
    pub dim: usize,
    /// Channels double with every downsample up to this value.
    #[config(default = 768)]
    pub dim_max: usize,
    /// Class-conditional when set.
    #[config(default = "None")]
    pub num_classes: Option<usize>,
    #[config(default = 4)]
    pub channels: usize,
    #[config(default = 3)]
    pub num_downsamples: usize,
    /// One value, one per downsample (the first stage repeats the first), or `num_downsamples + 1`.
    #[config(default = "vec![4]")]
    pub num_blocks_per_stage: Vec<usize>,
    /// How each downsample halves a video (`init_3d`): one type for every downsample, or one per
    /// downsample.
    #[config(default = "vec![DownsampleType::All]")]
    pub downsample_types: Vec<DownsampleType>,
    /// Resolutions with attention.
    #[config(default = "vec![16, 8]")]
    pub attn_res: Vec<usize>,
    #[config(default = 16)]
    pub fourier_dim: usize,
    #[config(default = 64)]
    pub attn_dim_head: usize,
    #[config(default = false)]
    pub attn_flash: bool,
    #[config(default = 0.5)]
    pub mp_cat_t: f64,
    #[config(default = 0.5)]
    pub mp_add_emb_t: f64,
    #[config(default = 0.3)]
    pub attn_res_mp_add_t: f64,
    #[config(default = 0.3)]
    pub resnet_mp_add_t: f64,
    #[config(default = 0.1)]
    pub dropout: f64,
    #[config(default = false)]
    pub self_condition: bool,
    /// Attention within frames, then along time, instead of over all positions (`init_3d`).
    #[config(default = false)]
    pub factorize_space_time_attn: bool,
}

/// How a 3D network downsamples at one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownsampleType {
    /// Frames and pixels.
    All,
    /// Frames only.
    Frame,
    /// Pixels only.
    Image,
}

/// The magnitude-preserving U-Net on `[B, C, T, H, W]`.
#[derive(Module, Debug)]
pub struct KarrasUnet {
    pub input_block: MpConv,
    pub output_conv: MpConv,
    pub output_gain: Param<Tensor<1>>,
    pub time_fourier: Param<Tensor<1>>,
    pub time_linear: MpLinear,
    pub class_linear: Option<MpLinear>,
    pub downs: Vec<KarrasBlock>,
    pub mids: Vec<KarrasBlock>,
    pub ups: Vec<KarrasBlock>,
    pub channels: usize,
    pub num_classes: usize,
    pub self_condition: bool,
    pub mp_cat_t: f64,
    pub mp_add_emb_t: f64,
    /// Expected `[T, H, W]`.
    pub size: [usize; 3],
    /// Which of T, H, W are real axes (false: a unit axis of a 1D or 2D network).
    pub axes: [bool; 3],
}

struct KarrasPlan {
    size: [usize; 3],
    axes: [bool; 3],
    dim: usize,
    dim_max: usize,
    num_classes: Option<usize>,
    channels: usize,
    blocks_per_stage: Vec<usize>,
    /// Per downsample: which of (T, H, W) halve.
    down_axes: Vec<[bool; 3]>,
    attn_res: Vec<usize>,
    fourier_dim: usize,
    attn_dim_head: usize,
    attn_flash: bool,
    mp_cat_t: f64,
    mp_add_emb_t: f64,
    attn_res_mp_add_t: f64,
    resnet_mp_add_t: f64,
    dropout: f64,
    self_condition: bool,
    factorize: bool,
    /// Index of the axis whose resolution decides where attention goes (H, or W for sequences).
    res_axis: usize,
}

impl KarrasPlan {
    fn build(self, device: &Device) -> Result<KarrasUnet> {
        if self.fourier_dim % 2 != 0 {
            return Err(ModelError::config("fourier_dim", self.fourier_dim, "the Fourier embedding needs an even size"));
        }
        if self.blocks_per_stage.iter().any(|&b| b == 0) {
            return Err(ModelError::config("num_blocks_per_stage", format!("{:?}", self.blocks_per_stage), "every stage needs at least one block"));
        }
        let kernel = |k: usize| [if self.axes[0] { k } else { 1 }, if self.axes[1] { k } else { 1 }, k];
        let emb_dim = self.dim * 4;
        let block = |d_in: usize, d_out: usize, encoder: bool, resample: [bool; 3], has_attn: bool| {
            let heads = d_out.div_ceil(self.attn_dim_head).max(2);
            let resampling = resample.iter().any(|&r| r);
            // As in the reference, only the resampling blocks factorise their attention; the blocks
            // within a stage and the middle attend over all positions.
            let attn_axes: Vec<AttnAxes> = match (has_attn, self.factorize && resampling) {
                (false, _) => vec![],
                (true, false) => vec![AttnAxes::All],
                (true, true) => vec![AttnAxes::Space, AttnAxes::Time],
            };
            let mid = if encoder && resampling { d_out } else { d_in };
            KarrasBlock {
                downsample_conv: (encoder && resampling).then(|| MpConv::new(d_in, d_out, [1, 1, 1], false, device)),
                res_conv: (!encoder && d_in != d_out).then(|| MpConv::new(d_in, d_out, [1, 1, 1], false, device)),
                to_emb: Some(MpLinear::new(emb_dim, d_out, device)),
                gain: Some(Param::from_tensor(Tensor::zeros([1], device))),
                block1: MpConv::new(mid, d_out, kernel(3), false, device),
                block2: MpConv::new(d_out, d_out, kernel(3), false, device),
                dropout: DropoutConfig::new(self.dropout).init(),
                attn: attn_axes
                    .into_iter()
                    .map(|a| MpAttention::new(d_out, heads, self.attn_dim_head, self.attn_res_mp_add_t, self.attn_flash, a, device))
                    .collect(),
                encoder,
                resample,
                mp_add_t: self.resnet_mp_add_t,
            }
        };
        let none = [false; 3];
        let mut downs = Vec::new();
        let mut ups = Vec::new();
        let mut curr = self.dim;
        let mut size = self.size;
        ups.insert(0, block(self.dim * 2, self.dim, false, none, false));
        for _ in 0..self.blocks_per_stage[0] {
            downs.push(block(curr, curr, true, none, false));
            ups.insert(0, block(curr * 2, curr, false, none, false));
        }
        for (stage, axes) in self.down_axes.iter().enumerate() {
            for (i, &on) in axes.iter().enumerate() {
                if on && size[i] % 2 != 0 {
                    return Err(ModelError::config(
                        "num_downsamples",
                        self.down_axes.len(),
                        format!("size {} along axis {i} cannot be halved at downsample {stage}; use fewer downsamples", size[i]),
                    ));
                }
            }
            let d_out = self.dim_max.min(curr * 2);
            let upsample = block(d_out, curr, false, *axes, self.attn_res.contains(&size[self.res_axis]));
            for (i, &on) in axes.iter().enumerate() {
                if on {
                    size[i] /= 2;
                }
            }
            let has_attn = self.attn_res.contains(&size[self.res_axis]);
            downs.push(block(curr, d_out, true, *axes, has_attn));
            ups.insert(0, upsample);
            ups.insert(0, block(d_out * 2, d_out, false, none, has_attn));
            for _ in 0..self.blocks_per_stage[stage + 1] {
                downs.push(block(d_out, d_out, true, none, has_attn));
                ups.insert(0, block(d_out * 2, d_out, false, none, has_attn));
            }
            curr = d_out;
        }
        let mid_attn = self.attn_res.contains(&size[self.res_axis]);
        let mids = vec![block(curr, curr, false, none, mid_attn), block(curr, curr, false, none, mid_attn)];
        let input_channels = self.channels * if self.self_condition { 2 } else { 1 };
        Ok(KarrasUnet {
            input_block: MpConv::new(input_channels, self.dim, kernel(3), true, device),
            output_conv: MpConv::new(self.dim, self.channels, kernel(3), false, device),
            output_gain: Param::from_tensor(Tensor::zeros([1], device)),
            time_fourier: Param::from_tensor(Tensor::random([self.fourier_dim / 2], Distribution::Normal(0.0, 1.0), device)).set_require_grad(false),
            time_linear: MpLinear::new(self.fourier_dim, emb_dim, device),
            class_linear: self.num_classes.map(|n| MpLinear::new(n, emb_dim, device)),
            downs,
            mids,
            ups,
            channels: self.channels,
            num_classes: self.num_classes.unwrap_or(0),
            self_condition: self.self_condition,
            mp_cat_t: self.mp_cat_t,
            mp_add_emb_t: self.mp_add_emb_t,
            size: self.size,
            axes: self.axes,
        })
    }
}

impl KarrasUnetConfig {
    /// The network on square images `[B, C, H, W]` of side `size`.
    pub fn init(&self, device: &Device) -> Result<KarrasUnet2d> {
        self.only_video("square images (init)")?;
        Ok(KarrasUnet2d { net: self.plan([1, self.size, self.size], [false, true, true], vec![[false, true, true]; self.num_downsamples], 1)?.build(device)? })
    }

    /// The network on sequences `[B, C, N]` of length `size`.
    pub fn init_1d(&self, device: &Device) -> Result<KarrasUnet1d> {
        self.only_video("sequences (init_1d)")?;
        Ok(KarrasUnet1d { net: self.plan([1, 1, self.size], [false, false, true], vec![[false, false, true]; self.num_downsamples], 2)?.build(device)? })
    }

    /// The network on video `[B, C, T, H, W]` of `frames` frames of side `size`.
    pub fn init_3d(&self, device: &Device) -> Result<KarrasUnet3d> {
        let n = self.num_downsamples;
        let types = match self.downsample_types.len() {
            1 => vec![self.downsample_types[0]; n],
            l if l == n => self.downsample_types.clone(),
            l => return Err(ModelError::config("downsample_types", format!("{l} values"), format!("give one type, or one per downsample ({n})"))),
        };
        let down: Vec<[bool; 3]> = types
            .iter()
            .map(|t| {
                let (frame, image) = match t {
                    DownsampleType::All => (true, true),
                    DownsampleType::Frame => (true, false),
                    DownsampleType::Image => (false, true),
                };
                [frame, image, image]
            })
            .collect();
        let mut plan = self.plan([self.frames, self.size, self.size], [true, true, true], down, 1)?;
        plan.factorize = self.factorize_space_time_attn;
        Ok(KarrasUnet3d { net: plan.build(device)? })
    }

    /// An error when a video-only setting is set for another kind of data.
    fn only_video(&self, data: &str) -> Result<()> {
        let default = Self::new(self.size);
        if self.frames != 1 {
            return Err(ModelError::config("frames", self.frames, format!("{data} have no frames; use init_3d for video")));
        }
        if self.downsample_types != default.downsample_types {
            return Err(ModelError::config("downsample_types", format!("{:?}", self.downsample_types), format!("{data} halve every axis; the types are for video (init_3d)")));
        }
        if self.factorize_space_time_attn {
            return Err(ModelError::config("factorize_space_time_attn", true, format!("{data} have no time axis; it is for video (init_3d)")));
        }
        Ok(())
    }

    /// The plan of a network on `[T, H, W]` = `size` (of which `axes` are real), halving `down`
    /// at each downsample; attention resolutions are read on axis `res_axis`.
    fn plan(&self, size: [usize; 3], axes: [bool; 3], down_axes: Vec<[bool; 3]>, res_axis: usize) -> Result<KarrasPlan> {
        let n = self.num_downsamples;
        let blocks_per_stage = match self.num_blocks_per_stage.len() {
            1 => vec![self.num_blocks_per_stage[0]; n + 1],
            l if l == n => std::iter::once(self.num_blocks_per_stage[0]).chain(self.num_blocks_per_stage.iter().copied()).collect(),
            l if l == n + 1 => self.num_blocks_per_stage.clone(),
            l => {
                return Err(ModelError::config(
                    "num_blocks_per_stage",
                    format!("{l} values"),
                    format!("give one value, one per downsample ({n}) or num_downsamples + 1 ({})", n + 1),
                ));
            }
        };
        Ok(KarrasPlan {
            size,
            axes,
            dim: self.dim,
            dim_max: self.dim_max,
            num_classes: self.num_classes,
            channels: self.channels,
            blocks_per_stage,
            down_axes,
            attn_res: self.attn_res.clone(),
            fourier_dim: self.fourier_dim,
            attn_dim_head: self.attn_dim_head,
            attn_flash: self.attn_flash,
            mp_cat_t: self.mp_cat_t,
            mp_add_emb_t: self.mp_add_emb_t,
            attn_res_mp_add_t: self.attn_res_mp_add_t,
            resnet_mp_add_t: self.resnet_mp_add_t,
            dropout: self.dropout,
            self_condition: self.self_condition,
            factorize: false,
            res_axis,
        })
    }
}

impl KarrasUnet {
    /// `x`: `[B, C, T, H, W]`; `classes`: one label per sample for a class-conditional network.
    pub fn forward(&self, x: Tensor<5>, time: Tensor<1>, self_cond: Option<Tensor<5>>, classes: Option<Tensor<1, Int>>) -> Tensor<5> {
        let x = if self.self_condition {
            let sc = self_cond.unwrap_or_else(|| x.zeros_like());
            Tensor::cat(vec![sc, x], 1)
        } else {
            x
        };
        let t = time.unsqueeze_dim::<2>(1);
        let freqs = t * self.time_fourier.val().unsqueeze_dim::<2>(0) * (2.0 * PI);
        let fourier = Tensor::cat(vec![freqs.clone().sin(), freqs.cos()], 1) * 2f64.sqrt();
        let mut time_emb = self.time_linear.forward(fourier);
        if let (Some(linear), Some(classes)) = (&self.class_linear, classes) {
            let b = classes.dims()[0];
            let labels: Vec<i64> = classes.into_data().try_into_vec_as::<i64>().expect("class labels are integers");
            let n = self.num_classes;
            let mut one_hot = vec![0f64; b * n];
            for (i, &l) in labels.iter().enumerate() {
                // Labels are checked where they enter (data loading, `check_labels`); one out of
                // range here is a bug, not bad input.
                assert!((0..n as i64).contains(&l), "class label {l} outside 0..{n}");
                one_hot[i * n + l as usize] = (n as f64).sqrt();
            }
            let one_hot = ddpm_core::tensor::from_f64(one_hot, [b, n], &time_emb);
            time_emb = mp_add(time_emb, linear.forward(one_hot), self.mp_add_emb_t);
        }
        let emb = mp_silu(time_emb);
        let mut x = self.input_block.forward(x);
        let mut skips = vec![x.clone()];
        for enc in &self.downs {
            x = enc.forward(x, Some(emb.clone()));
            skips.push(x.clone());
        }
        for dec in &self.mids {
            x = dec.forward(x, Some(emb.clone()));
        }
        for dec in &self.ups {
            if dec.needs_skip() {
                x = mp_cat(x, skips.pop().expect("one skip per encoder"), self.mp_cat_t);
            }
            x = dec.forward(x, Some(emb.clone()));
        }
        self.output_conv.forward(x) * self.output_gain.val().reshape([1, 1, 1, 1, 1])
    }

    /// Checks channels, size and labels before a forward pass.
    pub fn check_input(&self, dims: [usize; 5], has_classes: bool) -> Result<()> {
        if dims[1] != self.channels {
            return Err(ModelError::config("channels", self.channels, format!("the input has {} channels", dims[1])));
        }
        if dims[2..] != self.size {
            return Err(ModelError::config("size", format!("{:?}", self.size), format!("the input is {:?}; build the network for that size", &dims[2..])));
        }
        if has_classes != (self.num_classes > 0) {
            return Err(ModelError::config(
                "num_classes",
                self.num_classes,
                if has_classes { "the network takes no labels; set num_classes" } else { "the network needs a class label per sample" },
            ));
        }
        Ok(())
    }

    /// Checks class labels against `num_classes`.
    pub fn check_labels(&self, labels: &[i64]) -> Result<()> {
        match labels.iter().find(|&&l| l < 0 || l >= self.num_classes as i64) {
            Some(&l) => Err(ModelError::config("num_classes", self.num_classes, format!("label {l} is out of range; labels run from 0 to num_classes - 1"))),
            None => Ok(()),
        }
    }

    /// Forced weight normalisation: stores every MP weight normalised (`w_o -> w_o / ||w_o|| *
    /// sqrt(fan)`), as EDM2 does at each training step. Call after each optimiser step.
    pub fn force_weight_norm(self) -> Self {
        struct Normalizer {
            containers: Vec<String>,
        }
        impl ModuleMapper for Normalizer {
            fn enter_module(&mut self, _name: &str, container_type: &str) {
                self.containers.push(container_type.to_string());
            }
            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.containers.pop();
            }
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                match self.containers.last().map(String::as_str) {
                    Some("Struct:MpConv") | Some("Struct:MpLinear") => param.map(|w| {
                        let rg = w.is_require_grad();
                        let n = normalize_weight(w.detach());
                        if rg { n.require_grad() } else { n }
                    }),
                    _ => param,
                }
            }
        }
        self.map(&mut Normalizer { containers: Vec::new() })
    }
}

/// `KarrasUnet` on images `[B, C, H, W]`.
#[derive(Module, Debug)]
pub struct KarrasUnet2d {
    pub net: KarrasUnet,
}

/// `KarrasUnet1D` on sequences `[B, C, N]`.
#[derive(Module, Debug)]
pub struct KarrasUnet1d {
    pub net: KarrasUnet,
}

/// `KarrasUnet3D` on video `[B, C, T, H, W]`.
#[derive(Module, Debug)]
pub struct KarrasUnet3d {
    pub net: KarrasUnet,
}

impl KarrasUnet2d {
    pub fn forward(&self, x: Tensor<4>, time: Tensor<1>, self_cond: Option<Tensor<4>>, classes: Option<Tensor<1, Int>>) -> Tensor<4> {
        self.net.forward(x.unsqueeze_dim(2), time, self_cond.map(|s| s.unsqueeze_dim(2)), classes).squeeze_dim(2)
    }
}

impl KarrasUnet1d {
    pub fn forward(&self, x: Tensor<3>, time: Tensor<1>, self_cond: Option<Tensor<3>>, classes: Option<Tensor<1, Int>>) -> Tensor<3> {
        let lift = |t: Tensor<3>| -> Tensor<5> { t.unsqueeze_dim::<4>(2).unsqueeze_dim(2) };
        let out = self.net.forward(lift(x), time, self_cond.map(lift), classes);
        out.squeeze_dim::<4>(2).squeeze_dim(2)
    }
}

impl KarrasUnet3d {
    pub fn forward(&self, x: Tensor<5>, time: Tensor<1>, self_cond: Option<Tensor<5>>, classes: Option<Tensor<1, Int>>) -> Tensor<5> {
        self.net.forward(x, time, self_cond, classes)
    }
}

impl Denoiser<4> for KarrasUnet2d {
    fn denoise(&self, x_t: Tensor<4>, t: Tensor<1>, cond: &Conditioning<4>) -> Tensor<4> {
        self.forward(x_t, t, cond.self_cond.clone(), cond.classes.clone())
    }
}

impl Denoiser<3> for KarrasUnet1d {
    fn denoise(&self, x_t: Tensor<3>, t: Tensor<1>, cond: &Conditioning<3>) -> Tensor<3> {
        self.forward(x_t, t, cond.self_cond.clone(), cond.classes.clone())
    }
}

impl Denoiser<5> for KarrasUnet3d {
    fn denoise(&self, x_t: Tensor<5>, t: Tensor<1>, cond: &Conditioning<5>) -> Tensor<5> {
        self.forward(x_t, t, cond.self_cond.clone(), cond.classes.clone())
    }
}

impl KarrasUnet {
    fn key(&self, path: &str) -> String {
        let segs: Vec<&str> = path.split('.').collect();
        match segs[0] {
            "output_conv" => format!("output_block.0.{}", segs[1..].join(".")),
            "output_gain" => "output_block.1.gain".into(),
            "time_fourier" => "to_time_emb.0.weights".into(),
            "time_linear" => format!("to_time_emb.1.{}", segs[1..].join(".")),
            "class_linear" => format!("to_class_emb.{}", segs[1..].join(".")),
            "downs" | "mids" | "ups" => {
                let list = match segs[0] {
                    "downs" => &self.downs,
                    "mids" => &self.mids,
                    _ => &self.ups,
                };
                let i: usize = segs[1].parse().unwrap_or(0);
                let prefix = format!("{}.{}", segs[0], segs[1]);
                let rest = segs[3..].join(".");
                match segs[2] {
                    "to_emb" => format!("{prefix}.to_emb.0.{rest}"),
                    "gain" => format!("{prefix}.to_emb.1.gain"),
                    "block1" => format!("{prefix}.block1.1.{rest}"),
                    "block2" => format!("{prefix}.block2.2.{rest}"),
                    "attn" if list.get(i).is_some_and(|b| b.attn.len() == 1) => format!("{prefix}.attn.{}", segs[4..].join(".")),
                    _ => path.to_string(),
                }
            }
            _ => path.to_string(),
        }
    }

    fn shape(&self, path: &str, shape: &[usize]) -> Vec<usize> {
        if path.ends_with("gain") {
            return vec![];
        }
        if shape.len() != 5 {
            return shape.to_vec();
        }
        // Drop the unit axes a 1D or 2D network adds.
        shape[..2].iter().copied().chain(shape[2..].iter().zip(self.axes).filter(|(_, real)| *real).map(|(&d, _)| d)).collect()
    }

    fn hint(key: &str) -> &'static str {
        if key.starts_with("input_block") {
            "channels, self_condition and dim"
        } else if key.contains("class") {
            "num_classes"
        } else if key.contains("time_emb") {
            "fourier_dim and dim"
        } else if key.contains("attn") {
            "attn_res, attn_dim_head and factorize_space_time_attn"
        } else {
            "dim, dim_max, num_downsamples and num_blocks_per_stage"
        }
    }
}

macro_rules! karras_keys {
    ($t:ty) => {
        impl $t {
            /// See [`KarrasUnet::force_weight_norm`].
            pub fn force_weight_norm(self) -> Self {
                Self { net: self.net.force_weight_norm() }
            }
        }

        impl ReferenceKeys for $t {
            fn reference_key(&self, path: &str) -> String {
                self.net.key(path.strip_prefix("net.").unwrap_or(path))
            }
            fn reference_shape(&self, path: &str, shape: &[usize]) -> Vec<usize> {
                self.net.shape(path, shape)
            }
            fn config_hint(&self, key: &str) -> &'static str {
                KarrasUnet::hint(key)
            }
        }
    };
}

karras_keys!(KarrasUnet2d);
karras_keys!(KarrasUnet1d);
karras_keys!(KarrasUnet3d);
