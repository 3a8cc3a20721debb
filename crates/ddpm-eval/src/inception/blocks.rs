//! The layers of the FID Inception-v3: torchvision's `BasicConv2d` and the five Inception block
//! types, with pytorch-fid's FID patches (average pools that leave the padding out of the count,
//! and a max pool in the last block's pool branch).
//!
//! Parameter paths equal torchvision's state-dict keys (`branch3x3dbl_2.bn.running_var`), so a
//! block loads from the reference's tensors without a key map.
//!
//! Every block takes a `width_divisor`: each channel count of the reference (the block's
//! `in_channels`, its branch widths, `pool_features`, `channels_7x7`) is divided by it. The real
//! network uses 1; tests build the same wiring with a divisor of 16 so that random-weight
//! fixtures stay small.

use burn::module::{Module, Param};
use burn::tensor::activation::relu;
use ddpm_kernels::{PoolKind, conv2d, pool3x3};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};

use ddpm_io::weights::ReferenceKeys;

/// The batch norm epsilon of the TF graph and of torchvision's `BasicConv2d`.
pub const BATCH_NORM_EPS: f64 = 1e-3;

/// A convolution weight `[out, in, kh, kw]` (the convs of `BasicConv2d` have no bias).
#[derive(Module, Debug)]
pub struct ConvWeight {
    pub weight: Param<Tensor<4>>,
}

/// `BatchNorm2d` in inference: `(x - running_mean) / sqrt(running_var + 1e-3) * weight + bias`.
#[derive(Module, Debug)]
pub struct FrozenBatchNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: Param<Tensor<1>>,
    pub running_var: Param<Tensor<1>>,
}

impl FrozenBatchNorm {
    fn new(channels: usize, device: &Device) -> Self {
        let frozen = |t: Tensor<1>| Param::from_tensor(t).set_require_grad(false);
        Self {
            weight: frozen(Tensor::ones([channels], device)),
            bias: frozen(Tensor::zeros([channels], device)),
            running_mean: frozen(Tensor::zeros([channels], device)),
            running_var: frozen(Tensor::ones([channels], device)),
        }
    }

    /// The per-channel `(scale, shift)` with `bn(x) = x * scale + shift`.
    fn scale_shift(&self) -> (Tensor<1>, Tensor<1>) {
        let scale = self.weight.val() / (self.running_var.val() + BATCH_NORM_EPS).sqrt();
        let shift = self.bias.val() - self.running_mean.val() * scale.clone();
        (scale, shift)
    }
}

/// torchvision's `BasicConv2d`: `relu(bn(conv(x)))`, a bias-free convolution followed by an
/// inference batch norm (eps 1e-3). The batch norm is folded into the convolution on every call
/// (`w * scale`, bias `shift`), which costs a pass over the weights instead of two passes over the
/// much larger activations; the parameters stay the reference's so weights load and export as is.
#[derive(Module, Debug)]
pub struct BasicConv2d {
    pub conv: ConvWeight,
    pub bn: FrozenBatchNorm,
    #[module(skip)]
    pub stride: [usize; 2],
    #[module(skip)]
    pub padding: [usize; 2],
}

impl BasicConv2d {
    /// A `kernel` convolution from `in_channels` to `out_channels` (actual counts), with random
    /// weights N(0, 2 / fan_in) and an identity batch norm until weights are loaded.
    pub fn new(in_channels: usize, out_channels: usize, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2], device: &Device) -> Self {
        let fan_in = (in_channels * kernel[0] * kernel[1]) as f64;
        let weight = Tensor::random([out_channels, in_channels, kernel[0], kernel[1]], Distribution::Normal(0.0, (2.0 / fan_in).sqrt()), device);
        Self {
            conv: ConvWeight { weight: Param::from_tensor(weight).set_require_grad(false) },
            bn: FrozenBatchNorm::new(out_channels, device),
            stride,
            padding,
        }
    }

    /// The number of output channels.
    pub fn out_channels(&self) -> usize {
        self.conv.weight.dims()[0]
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let (scale, shift) = self.bn.scale_shift();
        let out_channels = self.out_channels();
        let weight = self.conv.weight.val() * scale.reshape([out_channels, 1, 1, 1]);
        relu(conv2d(x, weight, Some(shift), ConvOptions::new(self.stride, self.padding, [1, 1], 1)))
    }
}

/// Channel counts of the reference divided by the width divisor.
#[derive(Debug, Clone, Copy)]
struct Widths(usize);

impl Widths {
    fn of(self, reference_channels: usize) -> usize {
        reference_channels / self.0
    }

    /// A square `k x k` `BasicConv2d` between reference widths `c_in` and `c_out`.
    fn conv(self, c_in: usize, c_out: usize, k: usize, stride: usize, padding: usize, device: &Device) -> BasicConv2d {
        BasicConv2d::new(self.of(c_in), self.of(c_out), [k, k], [stride, stride], [padding, padding], device)
    }

    /// A `1 x k` (`horizontal`) or `k x 1` convolution with "same" padding, stride 1.
    fn line(self, c_in: usize, c_out: usize, k: usize, horizontal: bool, device: &Device) -> BasicConv2d {
        let (kernel, padding) = if horizontal { ([1, k], [0, k / 2]) } else { ([k, 1], [k / 2, 0]) };
        BasicConv2d::new(self.of(c_in), self.of(c_out), kernel, [1, 1], padding, device)
    }
}

/// The pool branch input of the FID blocks: a 3x3, stride 1, padding 1 average over the valid
/// pixels only (`count_include_pad=False`), as TensorFlow's average pool computes it.
pub fn avg_pool_3x3_valid(x: Tensor<4>) -> Tensor<4> {
    pool3x3(x, PoolKind::Mean, 1, 1)
}

/// A 3x3 max pool with the given stride and padding (padding never wins: PyTorch pads with -inf).
pub fn max_pool_3x3(x: Tensor<4>, stride: usize, padding: usize) -> Tensor<4> {
    pool3x3(x, PoolKind::Max, stride, padding)
}

/// Mixed_5b/5c/5d (`FIDInceptionA`): 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | valid-count average
/// pool -> 1x1, concatenated: `64 + 64 + 96 + pool_features` channels.
#[derive(Module, Debug)]
pub struct InceptionA {
    pub branch1x1: BasicConv2d,
    pub branch5x5_1: BasicConv2d,
    pub branch5x5_2: BasicConv2d,
    pub branch3x3dbl_1: BasicConv2d,
    pub branch3x3dbl_2: BasicConv2d,
    pub branch3x3dbl_3: BasicConv2d,
    pub branch_pool: BasicConv2d,
}

impl InceptionA {
    pub fn new(in_channels: usize, pool_features: usize, width_divisor: usize, device: &Device) -> Self {
        let w = Widths(width_divisor);
        Self {
            branch1x1: w.conv(in_channels, 64, 1, 1, 0, device),
            branch5x5_1: w.conv(in_channels, 48, 1, 1, 0, device),
            branch5x5_2: w.conv(48, 64, 5, 1, 2, device),
            branch3x3dbl_1: w.conv(in_channels, 64, 1, 1, 0, device),
            branch3x3dbl_2: w.conv(64, 96, 3, 1, 1, device),
            branch3x3dbl_3: w.conv(96, 96, 3, 1, 1, device),
            branch_pool: w.conv(in_channels, pool_features, 1, 1, 0, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b5 = self.branch5x5_2.forward(self.branch5x5_1.forward(x.clone()));
        let b3 = self.branch3x3dbl_3.forward(self.branch3x3dbl_2.forward(self.branch3x3dbl_1.forward(x.clone())));
        let pool = self.branch_pool.forward(avg_pool_3x3_valid(x));
        Tensor::cat(vec![b1, b5, b3, pool], 1)
    }
}

/// Mixed_6a (torchvision's `InceptionB`, a grid reduction): 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | 3x3/2
/// max pool, concatenated: `384 + 96 + in_channels` channels at `(H - 3) / 2 + 1`.
#[derive(Module, Debug)]
pub struct InceptionB {
    pub branch3x3: BasicConv2d,
    pub branch3x3dbl_1: BasicConv2d,
    pub branch3x3dbl_2: BasicConv2d,
    pub branch3x3dbl_3: BasicConv2d,
}

impl InceptionB {
    pub fn new(in_channels: usize, width_divisor: usize, device: &Device) -> Self {
        let w = Widths(width_divisor);
        Self {
            branch3x3: w.conv(in_channels, 384, 3, 2, 0, device),
            branch3x3dbl_1: w.conv(in_channels, 64, 1, 1, 0, device),
            branch3x3dbl_2: w.conv(64, 96, 3, 1, 1, device),
            branch3x3dbl_3: w.conv(96, 96, 3, 2, 0, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self.branch3x3.forward(x.clone());
        let b3dbl = self.branch3x3dbl_3.forward(self.branch3x3dbl_2.forward(self.branch3x3dbl_1.forward(x.clone())));
        Tensor::cat(vec![b3, b3dbl, max_pool_3x3(x, 2, 0)], 1)
    }
}

/// Mixed_6b..6e (`FIDInceptionC`, factorised 7x7): 1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> 7x1 -> 1x7 ->
/// 7x1 -> 1x7 | valid-count average pool -> 1x1, concatenated: `4 x 192` channels.
#[derive(Module, Debug)]
pub struct InceptionC {
    pub branch1x1: BasicConv2d,
    pub branch7x7_1: BasicConv2d,
    pub branch7x7_2: BasicConv2d,
    pub branch7x7_3: BasicConv2d,
    pub branch7x7dbl_1: BasicConv2d,
    pub branch7x7dbl_2: BasicConv2d,
    pub branch7x7dbl_3: BasicConv2d,
    pub branch7x7dbl_4: BasicConv2d,
    pub branch7x7dbl_5: BasicConv2d,
    pub branch_pool: BasicConv2d,
}

impl InceptionC {
    pub fn new(in_channels: usize, channels_7x7: usize, width_divisor: usize, device: &Device) -> Self {
        let w = Widths(width_divisor);
        let c7 = channels_7x7;
        Self {
            branch1x1: w.conv(in_channels, 192, 1, 1, 0, device),
            branch7x7_1: w.conv(in_channels, c7, 1, 1, 0, device),
            branch7x7_2: w.line(c7, c7, 7, true, device),
            branch7x7_3: w.line(c7, 192, 7, false, device),
            branch7x7dbl_1: w.conv(in_channels, c7, 1, 1, 0, device),
            branch7x7dbl_2: w.line(c7, c7, 7, false, device),
            branch7x7dbl_3: w.line(c7, c7, 7, true, device),
            branch7x7dbl_4: w.line(c7, c7, 7, false, device),
            branch7x7dbl_5: w.line(c7, 192, 7, true, device),
            branch_pool: w.conv(in_channels, 192, 1, 1, 0, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b7 = [&self.branch7x7_1, &self.branch7x7_2, &self.branch7x7_3].iter().fold(x.clone(), |h, conv| conv.forward(h));
        let b7dbl = [&self.branch7x7dbl_1, &self.branch7x7dbl_2, &self.branch7x7dbl_3, &self.branch7x7dbl_4, &self.branch7x7dbl_5]
            .iter()
            .fold(x.clone(), |h, conv| conv.forward(h));
        let pool = self.branch_pool.forward(avg_pool_3x3_valid(x));
        Tensor::cat(vec![b1, b7, b7dbl, pool], 1)
    }
}

/// Mixed_7a (torchvision's `InceptionD`, a grid reduction): 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 ->
/// 3x3/2 | 3x3/2 max pool, concatenated: `320 + 192 + in_channels` channels.
#[derive(Module, Debug)]
pub struct InceptionD {
    pub branch3x3_1: BasicConv2d,
    pub branch3x3_2: BasicConv2d,
    pub branch7x7x3_1: BasicConv2d,
    pub branch7x7x3_2: BasicConv2d,
    pub branch7x7x3_3: BasicConv2d,
    pub branch7x7x3_4: BasicConv2d,
}

impl InceptionD {
    pub fn new(in_channels: usize, width_divisor: usize, device: &Device) -> Self {
        let w = Widths(width_divisor);
        Self {
            branch3x3_1: w.conv(in_channels, 192, 1, 1, 0, device),
            branch3x3_2: w.conv(192, 320, 3, 2, 0, device),
            branch7x7x3_1: w.conv(in_channels, 192, 1, 1, 0, device),
            branch7x7x3_2: w.line(192, 192, 7, true, device),
            branch7x7x3_3: w.line(192, 192, 7, false, device),
            branch7x7x3_4: w.conv(192, 192, 3, 2, 0, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self.branch3x3_2.forward(self.branch3x3_1.forward(x.clone()));
        let b7 = [&self.branch7x7x3_1, &self.branch7x7x3_2, &self.branch7x7x3_3, &self.branch7x7x3_4].iter().fold(x.clone(), |h, conv| conv.forward(h));
        Tensor::cat(vec![b3, b7, max_pool_3x3(x, 2, 0)], 1)
    }
}

/// What the pool branch of an E block pools with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EPool {
    /// Mixed_7b (`FIDInceptionE_1`): 3x3 average over the valid pixels.
    Average,
    /// Mixed_7c (`FIDInceptionE_2`): 3x3 max pool, stride 1, padding 1 (the TF graph's quirk).
    Max,
}

/// Mixed_7b/7c (`FIDInceptionE_1` / `_2`, expanded filter bank): 1x1 | 1x1 -> (1x3, 3x1) | 1x1 ->
/// 3x3 -> (1x3, 3x1) | pool -> 1x1, concatenated: `320 + 768 + 768 + 192 = 2048` channels.
#[derive(Module, Debug)]
pub struct InceptionE {
    pub branch1x1: BasicConv2d,
    pub branch3x3_1: BasicConv2d,
    pub branch3x3_2a: BasicConv2d,
    pub branch3x3_2b: BasicConv2d,
    pub branch3x3dbl_1: BasicConv2d,
    pub branch3x3dbl_2: BasicConv2d,
    pub branch3x3dbl_3a: BasicConv2d,
    pub branch3x3dbl_3b: BasicConv2d,
    pub branch_pool: BasicConv2d,
    #[module(skip)]
    pub pool: EPool,
}

impl InceptionE {
    pub fn new(in_channels: usize, pool: EPool, width_divisor: usize, device: &Device) -> Self {
        let w = Widths(width_divisor);
        Self {
            branch1x1: w.conv(in_channels, 320, 1, 1, 0, device),
            branch3x3_1: w.conv(in_channels, 384, 1, 1, 0, device),
            branch3x3_2a: w.line(384, 384, 3, true, device),
            branch3x3_2b: w.line(384, 384, 3, false, device),
            branch3x3dbl_1: w.conv(in_channels, 448, 1, 1, 0, device),
            branch3x3dbl_2: w.conv(448, 384, 3, 1, 1, device),
            branch3x3dbl_3a: w.line(384, 384, 3, true, device),
            branch3x3dbl_3b: w.line(384, 384, 3, false, device),
            branch_pool: w.conv(in_channels, 192, 1, 1, 0, device),
            pool,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let h = self.branch3x3_1.forward(x.clone());
        let b3 = Tensor::cat(vec![self.branch3x3_2a.forward(h.clone()), self.branch3x3_2b.forward(h)], 1);
        let h = self.branch3x3dbl_2.forward(self.branch3x3dbl_1.forward(x.clone()));
        let b3dbl = Tensor::cat(vec![self.branch3x3dbl_3a.forward(h.clone()), self.branch3x3dbl_3b.forward(h)], 1);
        let pooled = match self.pool {
            EPool::Average => avg_pool_3x3_valid(x),
            EPool::Max => max_pool_3x3(x, 1, 1),
        };
        Tensor::cat(vec![b1, b3, b3dbl, self.branch_pool.forward(pooled)], 1)
    }
}

/// The blocks' parameter paths are torchvision's keys already.
macro_rules! block_keys {
    ($($t:ty),*) => {$(
        impl ReferenceKeys for $t {
            fn reference_key(&self, path: &str) -> String {
                path.to_string()
            }
            fn config_hint(&self, _key: &str) -> &'static str {
                "the block's in_channels, pool_features / channels_7x7 and width divisor"
            }
        }
    )*};
}

block_keys!(BasicConv2d, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE);
