//! The building blocks of denoising-diffusion-pytorch's U-Nets, shared by the 2D and 1D networks.
//!
//! Every convolution is a `Conv2d`: a 1D network runs on `[B, C, 1, N]` with `[1, k]` kernels, which
//! computes exactly what PyTorch's `Conv1d` computes, so the 2D and 1D U-Nets are one code path.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::f64::consts::PI;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::gelu;
use ddpm_kernels::silu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Device, Distribution, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use ddpm_core::tensor::from_f64;
use ddpm_kernels::ConvForward;

/// Whether a network works on images (`[B, C, H, W]`) or on sequences (`[B, C, 1, N]` inside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Spatial {
    /// 2D: `k x k` kernels, pixel-unshuffle downsampling.
    Image,
    /// 1D: `1 x k` kernels, strided-convolution downsampling.
    Sequence,
}

impl Spatial {
    /// The kernel size of a `k`-wide convolution.
    pub fn kernel(self, k: usize) -> [usize; 2] {
        match self {
            Self::Image => [k, k],
            Self::Sequence => [1, k],
        }
    }

    /// Symmetric padding of `p` along the convolved dimensions.
    pub fn padding(self, p: usize) -> PaddingConfig2d {
        match self {
            Self::Image => PaddingConfig2d::Explicit(p, p, p, p),
            Self::Sequence => PaddingConfig2d::Explicit(0, p, 0, p),
        }
    }

    /// A `k`-wide convolution with "same" padding `(k - 1) / 2`.
    pub fn conv(self, d_in: usize, d_out: usize, k: usize, bias: bool, device: &Device) -> Conv2d {
        Conv2dConfig::new([d_in, d_out], self.kernel(k)).with_padding(self.padding((k - 1) / 2)).with_bias(bias).init(device)
    }
}

/// RMSNorm over channels: `x / max(||x||_2, 1e-12) * g * sqrt(C)` (PyTorch's `F.normalize` on dim 1).
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub g: Param<Tensor<4>>,
}

impl RmsNorm {
    pub fn new(dim: usize, device: &Device) -> Self {
        Self { g: Param::from_tensor(Tensor::ones([1, dim, 1, 1], device)) }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        ddpm_kernels::rms_norm(x, self.g.val(), None, false)
    }

    /// `silu(norm(x) (1 + scale) + shift)` (without the FiLM when `scale_shift` is `None`) in one
    /// kernel on Flex.
    pub fn forward_film_silu(&self, x: Tensor<4>, scale_shift: Option<(Tensor<4>, Tensor<4>)>) -> Tensor<4> {
        ddpm_kernels::rms_norm(x, self.g.val(), scale_shift, true)
    }
}

/// Fixed sinusoidal embedding: `[sin(t w_i), cos(t w_i)]`, `w_i = theta^(-i / (half - 1))`.
pub fn sinusoidal_embedding(t: Tensor<1>, dim: usize, theta: f64) -> Tensor<2> {
    let half = dim / 2;
    let step = theta.ln() / (half as f64 - 1.0).max(1.0);
    // The reference computes the frequencies in f32 from an f32 product.
    let freqs: Vec<f32> = (0..half).map(|i| (-(i as f32) * step as f32).exp()).collect();
    if ddpm_kernels::on_flex(&t.device()) && !t.is_tracked() && t.dtype() == DType::F32 {
        return host_sinusoidal_embedding(&t, &freqs);
    }
    let freqs: Tensor<2> = from_f64(freqs.into_iter().map(f64::from).collect(), [1, half], &t);
    let args = t.unsqueeze_dim::<2>(1) * freqs;
    Tensor::cat(vec![args.clone().sin(), args.cos()], 1)
}

/// [`sinusoidal_embedding`] on the host, each distinct time's row computed once: a sampling
/// batch shares one time and a training batch of discrete timesteps repeats them, and Flex's
/// `sin` and `cos` are one libm call per value (a sixth of a toy MLP's forward pass at batch
/// 1000). The same f32 product and libm functions give the same bits as the tensor ops.
fn host_sinusoidal_embedding(t: &Tensor<1>, freqs: &[f32]) -> Tensor<2> {
    let times: Vec<f32> = t.to_data().try_to_vec().expect("an f32 tensor reads back as f32");
    let (distinct, rows) = first_appearances(&times);
    let (half, width) = (freqs.len(), 2 * freqs.len());
    let mut table = vec![0.0f32; distinct.len() * width];
    for (values, &time) in table.chunks_exact_mut(width).zip(&distinct) {
        let (sines, cosines) = values.split_at_mut(half);
        for ((s, c), &f) in sines.iter_mut().zip(cosines).zip(freqs) {
            let arg = time * f;
            (*s, *c) = (arg.sin(), arg.cos());
        }
    }
    let out: Vec<f32> = rows.iter().flat_map(|&r| table[r * width..][..width].iter().copied()).collect();
    Tensor::from_data(TensorData::new(out, [times.len(), width]), ddpm_core::tensor::options_like(t))
}

/// The distinct values of `times` in order of first appearance, and for each time the index of
/// its value among them (equal bits are the same value).
fn first_appearances(times: &[f32]) -> (Vec<f32>, Vec<usize>) {
    let mut index: HashMap<u32, usize> = HashMap::new();
    let mut distinct = Vec::new();
    let rows = times
        .iter()
        .map(|&time| match index.entry(time.to_bits()) {
            Entry::Occupied(seen) => *seen.get(),
            Entry::Vacant(slot) => {
                distinct.push(time);
                *slot.insert(distinct.len() - 1)
            }
        })
        .collect();
    (distinct, rows)
}

/// A batch's times as their distinct values and, per batch row, which of them it has:
/// `times = values[rows]`. A network whose time path is row by row (a linear layer per row of
/// the embedding) runs it on `values` alone and [`expand`](Self::expand)s the result: a sampling
/// step has one distinct time, and a toy training batch of 1000 rows over 100 timesteps about
/// a hundred.
pub struct DistinctTimes {
    pub values: Tensor<1>,
    pub rows: Tensor<1, Int>,
}

impl DistinctTimes {
    /// Untracked f32 times on Flex, where reading them on the host costs nothing (on a GPU the
    /// read would wait for the device); `None` elsewhere, or when every time is distinct.
    pub fn of(t: &Tensor<1>) -> Option<Self> {
        if !(ddpm_kernels::on_flex(&t.device()) && !t.is_tracked() && t.dtype() == DType::F32) {
            return None;
        }
        let times: Vec<f32> = t.to_data().try_to_vec().expect("an f32 tensor reads back as f32");
        let (distinct, rows) = first_appearances(&times);
        if distinct.len() == times.len() {
            return None;
        }
        let rows: Vec<i64> = rows.into_iter().map(|r| r as i64).collect();
        let count = distinct.len();
        Some(Self {
            values: Tensor::from_data(TensorData::new(distinct, [count]), ddpm_core::tensor::options_like(t)),
            rows: Tensor::from_data(TensorData::new(rows, [times.len()]), &t.device()),
        })
    }

    /// Row `rows[i]` of `x` (one row per distinct time) as row `i`.
    pub fn expand(&self, x: Tensor<2>) -> Tensor<2> {
        x.select(0, self.rows.clone())
    }
}

/// Random or learned Fourier features (Crowson's v-diffusion): `[t, sin(2 pi t w), cos(2 pi t w)]`.
#[derive(Module, Debug)]
pub struct FourierFeatures {
    pub weights: Param<Tensor<1>>,
}

impl FourierFeatures {
    /// `dim` must be even; the output has `dim + 1` features. Random features are not trained.
    pub fn new(dim: usize, learned: bool, device: &Device) -> Self {
        let w = Tensor::<1>::random([dim / 2], Distribution::Normal(0.0, 1.0), device);
        Self { weights: Param::from_tensor(w).set_require_grad(learned) }
    }

    pub fn forward(&self, t: Tensor<1>) -> Tensor<2> {
        let t = t.unsqueeze_dim::<2>(1);
        let freqs = t.clone() * self.weights.val().unsqueeze_dim::<2>(0) * (2.0 * PI);
        Tensor::cat(vec![t, freqs.clone().sin(), freqs.cos()], 1)
    }
}

/// Class labels as a learned vector added to the time embedding (as in ADM and the reference's
/// classifier-free-guidance U-Net): `num_classes + 1` rows, the last being the "no class" label
/// that classifier-free guidance trains with dropped labels and samples with as the unconditional
/// model.
#[derive(Module, Debug)]
pub struct ClassEmbedding {
    pub embedding: burn::nn::Embedding,
}

impl ClassEmbedding {
    pub fn new(num_classes: usize, width: usize, device: &Device) -> Self {
        Self { embedding: burn::nn::EmbeddingConfig::new(num_classes + 1, width).init(device) }
    }

    /// `temb + E[label]` per batch element; `temb` unchanged without labels.
    pub fn add_to(this: &Option<Self>, temb: Tensor<2>, classes: Option<Tensor<1, Int>>) -> Tensor<2> {
        match (this, classes) {
            (Some(e), Some(c)) => temb + e.embedding.forward(c.unsqueeze_dim::<2>(1)).squeeze_dim(1),
            _ => temb,
        }
    }
}

/// Time embedding: sinusoidal (or Fourier) features, `Linear -> GELU -> Linear`.
#[derive(Module, Debug)]
pub struct TimeMlp {
    pub fourier: Option<FourierFeatures>,
    pub linear1: Linear,
    pub linear2: Linear,
    pub sinusoidal_dim: usize,
    pub theta: f64,
}

impl TimeMlp {
    /// `fourier`: `Some((dim, learned))` for random/learned Fourier features instead of sinusoids.
    pub fn new(dim: usize, time_dim: usize, theta: f64, fourier: Option<(usize, bool)>, device: &Device) -> Self {
        let (features, fourier) = match fourier {
            Some((d, learned)) => (d + 1, Some(FourierFeatures::new(d, learned, device))),
            None => (dim, None),
        };
        Self {
            fourier,
            linear1: LinearConfig::new(features, time_dim).init(device),
            linear2: LinearConfig::new(time_dim, time_dim).init(device),
            sinusoidal_dim: dim,
            theta,
        }
    }

    pub fn forward(&self, t: Tensor<1>) -> Tensor<2> {
        let emb = match &self.fourier {
            Some(f) => f.forward(t),
            None => sinusoidal_embedding(t, self.sinusoidal_dim, self.theta),
        };
        self.linear2.forward(gelu(self.linear1.forward(emb)))
    }
}

/// `conv -> RMSNorm -> (scale + 1, shift) -> SiLU -> dropout`.
#[derive(Module, Debug)]
pub struct Block {
    pub proj: Conv2d,
    pub norm: RmsNorm,
    pub dropout: Dropout,
}

impl Block {
    pub fn new(spatial: Spatial, d_in: usize, d_out: usize, dropout: f64, device: &Device) -> Self {
        Self { proj: spatial.conv(d_in, d_out, 3, true, device), norm: RmsNorm::new(d_out, device), dropout: DropoutConfig::new(dropout).init() }
    }

    pub fn forward(&self, x: Tensor<4>, scale_shift: Option<(Tensor<4>, Tensor<4>)>) -> Tensor<4> {
        self.dropout.forward(self.norm.forward_film_silu(self.proj.conv(x), scale_shift))
    }
}

/// Residual block with a time-conditioned scale and shift (FiLM): `block2(block1(x, t)) + res(x)`.
#[derive(Module, Debug)]
pub struct ResnetBlock {
    pub mlp: Option<Linear>,
    pub block1: Block,
    pub block2: Block,
    pub res_conv: Option<Conv2d>,
}

impl ResnetBlock {
    pub fn new(spatial: Spatial, d_in: usize, d_out: usize, time_dim: Option<usize>, dropout: f64, device: &Device) -> Self {
        Self {
            mlp: time_dim.map(|t| LinearConfig::new(t, d_out * 2).init(device)),
            block1: Block::new(spatial, d_in, d_out, dropout, device),
            block2: Block::new(spatial, d_out, d_out, 0.0, device),
            res_conv: (d_in != d_out).then(|| spatial.conv(d_in, d_out, 1, true, device)),
        }
    }

    pub fn forward(&self, x: Tensor<4>, time: Option<Tensor<2>>) -> Tensor<4> {
        let scale_shift = match (&self.mlp, time) {
            (Some(mlp), Some(t)) => {
                let t = mlp.forward(silu(t));
                let [b, c2] = t.dims();
                let mut halves = t.reshape([b, c2, 1, 1]).chunk(2, 1);
                let shift = halves.pop().expect("two halves");
                Some((halves.pop().expect("two halves"), shift))
            }
            _ => None,
        };
        let h = self.block2.forward(self.block1.forward(x.clone(), scale_shift), None);
        let res = match &self.res_conv {
            Some(conv) => conv.conv(x),
            None => x,
        };
        h + res
    }
}

/// q, k, v of shape `[B, heads, d, H W]`: the three thirds of the `[B, 3 heads d, H, W]`
/// projection `to_qkv(x)`, each its own product ([`ConvForward::conv_channels`]): slicing the
/// whole projection instead cost, in its backward pass, three zero-filled gradients of the whole
/// projection and their sum (50 MB each for a 32x32 batch of 32 with 4 heads of 32).
fn project_heads(to_qkv: &Conv2d, x: Tensor<4>, heads: usize) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let [b, _, h, w] = x.dims();
    let hidden = to_qkv.weight.dims()[0] / 3;
    let part = |i: usize| to_qkv.conv_channels(x.clone(), i * hidden, hidden).reshape([b, heads, hidden / heads, h * w]);
    (part(0), part(1), part(2))
}

/// Memory key/values `[2, heads, a, b]` broadcast to the batch: `([B, heads, a, b], [B, heads, a, b])`.
fn memory_kv(mem: &Param<Tensor<4>>, batch: usize) -> (Tensor<4>, Tensor<4>) {
    let [_, heads, a, b] = mem.dims();
    let mut halves = mem.val().chunk(2, 0).into_iter().map(|m| m.expand([batch, heads, a, b]));
    let k = halves.next().expect("k");
    (k, halves.next().expect("v"))
}

/// Linear attention (Katharopoulos / Shen et al.) with learned memory key/values: softmax over the
/// feature dimension for q and over positions for k, `out = (k v^T)^T q`, O(N) in positions.
#[derive(Module, Debug)]
pub struct LinearAttention {
    pub norm: RmsNorm,
    pub mem_kv: Option<Param<Tensor<4>>>,
    pub to_qkv: Conv2d,
    pub to_out: Conv2d,
    pub out_norm: RmsNorm,
    pub heads: usize,
    pub scale: f64,
}

impl LinearAttention {
    pub fn new(spatial: Spatial, dim: usize, heads: usize, dim_head: usize, num_mem_kv: usize, device: &Device) -> Self {
        let hidden = heads * dim_head;
        Self {
            norm: RmsNorm::new(dim, device),
            mem_kv: (num_mem_kv > 0).then(|| Param::from_tensor(Tensor::random([2, heads, dim_head, num_mem_kv], Distribution::Normal(0.0, 1.0), device))),
            to_qkv: spatial.conv(dim, hidden * 3, 1, false, device),
            to_out: spatial.conv(hidden, dim, 1, true, device),
            out_norm: RmsNorm::new(dim, device),
            heads,
            scale: (dim_head as f64).powf(-0.5),
        }
    }

    /// The attention branch only (the U-Net adds the residual).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, _, h, w] = x.dims();
        let (q, mut k, mut v) = project_heads(&self.to_qkv, self.norm.forward(x), self.heads);
        if let Some(mem) = &self.mem_kv {
            let (mk, mv) = memory_kv(mem, b);
            k = Tensor::cat(vec![mk, k], 3);
            v = Tensor::cat(vec![mv, v], 3);
        }
        let out = ddpm_kernels::linear_attention(q, k, v, self.scale); // [b, heads, e, n]
        let [_, heads, e, _] = out.dims();
        self.out_norm.forward(self.to_out.conv(out.reshape([b, heads * e, h, w])))
    }
}

/// Full softmax attention with learned memory key/values, scale `1/sqrt(d)`.
#[derive(Module, Debug)]
pub struct Attention {
    pub norm: RmsNorm,
    pub mem_kv: Option<Param<Tensor<4>>>,
    pub to_qkv: Conv2d,
    pub to_out: Conv2d,
    pub heads: usize,
    pub flash: bool,
}

impl Attention {
    pub fn new(spatial: Spatial, dim: usize, heads: usize, dim_head: usize, num_mem_kv: usize, flash: bool, device: &Device) -> Self {
        let hidden = heads * dim_head;
        Self {
            norm: RmsNorm::new(dim, device),
            mem_kv: (num_mem_kv > 0).then(|| Param::from_tensor(Tensor::random([2, heads, num_mem_kv, dim_head], Distribution::Normal(0.0, 1.0), device))),
            to_qkv: spatial.conv(dim, hidden * 3, 1, false, device),
            to_out: spatial.conv(hidden, dim, 1, true, device),
            heads,
            flash,
        }
    }

    /// The attention branch only (the U-Net adds the residual).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, _, h, w] = x.dims();
        let (q, k, v) = project_heads(&self.to_qkv, self.norm.forward(x), self.heads);
        let (q, mut k, mut v) = (q.swap_dims(2, 3), k.swap_dims(2, 3), v.swap_dims(2, 3)); // [b, heads, n, d]
        if let Some(mem) = &self.mem_kv {
            let (mk, mv) = memory_kv(mem, b);
            k = Tensor::cat(vec![mk, k], 2);
            v = Tensor::cat(vec![mv, v], 2);
        }
        let d = q.dims()[3];
        let scale = (d as f64).powf(-0.5);
        let out = if self.flash {
            // An explicit scale also keeps CubeCL backends off their fused kernel, which returns
            // wrong values for non-contiguous q/k/v in Burn 0.22 (the inputs here are transposed).
            attention(q, k, v, None, None, AttentionModuleOptions { scale: Some(scale), ..Default::default() })
        } else {
            ddpm_kernels::attention(q, k, v, scale)
        };
        let [_, heads, n, d] = out.dims();
        debug_assert_eq!(n, h * w);
        self.to_out.conv(out.swap_dims(2, 3).reshape([b, heads * d, h, w]))
    }
}

/// Per-stage attention: linear on the outer stages, full where asked.
#[derive(Module, Debug)]
pub enum StageAttention {
    Linear(LinearAttention),
    Full(Attention),
}

impl StageAttention {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::Linear(a) => a.forward(x),
            Self::Full(a) => a.forward(x),
        }
    }
}

/// How a stage changes resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResampleKind {
    /// 2x2 pixel-unshuffle then a 1x1 convolution (2D down).
    Unshuffle,
    /// A width-4, stride-2 convolution (1D down).
    Strided,
    /// Nearest 2x upsampling then a 3-wide convolution.
    Up,
    /// A 3-wide convolution at the same resolution (the innermost stage).
    Same,
}

/// A stage on the way down of a reference U-Net (`Unet`, `Unet1D`, `UViT`): two ResNet blocks,
/// a residual attention and a resample.
pub trait DownStage {
    fn blocks(&self) -> (&ResnetBlock, &ResnetBlock);
    fn attend(&self, x: Tensor<4>) -> Tensor<4>;
    fn resample(&self, x: Tensor<4>) -> Tensor<4>;
}

/// The way down of a reference U-Net: per stage `x = block1(x, t)`, `x = block2(x, t)`,
/// `x = x + attn(x)`, keeping the output of each block as a skip connection, then the resample.
/// Returns the innermost features and the skips (two per stage, outermost first).
pub fn down_path<S: DownStage>(stages: &[S], mut x: Tensor<4>, t: &Tensor<2>) -> (Tensor<4>, Vec<Tensor<4>>) {
    let mut skips = Vec::with_capacity(2 * stages.len());
    for stage in stages {
        let (block1, block2) = stage.blocks();
        x = block1.forward(x, Some(t.clone()));
        skips.push(x.clone());
        x = block2.forward(x, Some(t.clone()));
        x = stage.attend(x.clone()) + x;
        skips.push(x.clone());
        x = stage.resample(x);
    }
    (x, skips)
}

/// A resolution change with its convolution.
#[derive(Module, Debug)]
pub struct Resample {
    pub conv: Conv2d,
    #[module(skip)]
    pub kind: ResampleKind,
    #[module(skip)]
    pub spatial: Spatial,
}

impl Resample {
    pub fn new(kind: ResampleKind, spatial: Spatial, d_in: usize, d_out: usize, device: &Device) -> Self {
        let conv = match kind {
            ResampleKind::Unshuffle => spatial.conv(d_in * 4, d_out, 1, true, device),
            ResampleKind::Strided => Conv2dConfig::new([d_in, d_out], spatial.kernel(4))
                .with_stride(match spatial {
                    Spatial::Image => [2, 2],
                    Spatial::Sequence => [1, 2],
                })
                .with_padding(spatial.padding(1))
                .init(device),
            ResampleKind::Up | ResampleKind::Same => spatial.conv(d_in, d_out, 3, true, device),
        };
        Self { conv, kind, spatial }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = match self.kind {
            ResampleKind::Unshuffle => pixel_unshuffle(x),
            ResampleKind::Up => upsample_nearest(x, self.spatial),
            ResampleKind::Strided | ResampleKind::Same => x,
        };
        self.conv.conv(x)
    }
}

/// `b c (h 2) (w 2) -> b (c 2 2) h w`.
pub fn pixel_unshuffle(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h / 2, 2, w / 2, 2]).permute([0, 1, 3, 5, 2, 4]).reshape([b, c * 4, h / 2, w / 2])
}

/// Nearest-neighbour 2x upsampling (width only for sequences).
pub fn upsample_nearest(x: Tensor<4>, spatial: Spatial) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    match spatial {
        Spatial::Image => x.reshape([b, c, h, 1, w, 1]).expand([b, c, h, 2, w, 2]).reshape([b, c, h * 2, w * 2]),
        Spatial::Sequence => x.reshape([b, c, h, w, 1]).expand([b, c, h, w, 2]).reshape([b, c, h, w * 2]),
    }
}

/// Reference key of a [`TimeMlp`] parameter (`segs` = `[time_mlp, field, ..]`): the reference's
/// time MLP is `Sequential(pos_emb, Linear, GELU, Linear)`.
pub(crate) fn time_mlp_key(segs: &[&str]) -> String {
    let idx = match segs[1] {
        "fourier" => "0",
        "linear1" => "1",
        _ => "3",
    };
    format!("time_mlp.{idx}.{}", segs[2..].join("."))
}

/// Reference key of a [`ResnetBlock`] parameter below the block: its `mlp` is
/// `Sequential(SiLU, Linear)`.
pub(crate) fn resnet_key(rest: &[&str]) -> String {
    match rest[0] {
        "mlp" => format!("mlp.1.{}", rest[1..].join(".")),
        _ => rest.join("."),
    }
}

/// Reference key of an [`Attention`] / [`LinearAttention`] parameter below the module: linear
/// attention's output is `Sequential(Conv, RMSNorm)` (`to_out.0`, `to_out.1`).
pub(crate) fn attention_key(rest: &[&str], linear: bool) -> String {
    let (first, tail) = (rest[0], rest[1..].join("."));
    let head = match first {
        "to_out" if linear => "to_out.0",
        "out_norm" => "to_out.1",
        other => other,
    };
    if tail.is_empty() { head.to_string() } else { format!("{head}.{tail}") }
}
