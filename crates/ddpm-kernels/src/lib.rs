//! Hand-written CPU kernels for the ops that dominate diffusion networks.
//!
//! Each op here is a plain function over [`Tensor`]s that every network of ddpm-models calls. On a
//! Flex device (with or without autodiff) it runs our kernel, a Burn backend extension with its own
//! backward; on every other device, or for a case the kernel does not cover (another dtype, grouped
//! convolution), it is exactly Burn's op, so WGPU/CUDA results do not change.
//!
//! - [`conv2d`] (and [`conv3d`] of depth-1 kernels, how the Karras networks run 1-D and 2-D data):
//!   convolution as three batch-folded GEMMs (forward, input and weight gradients) on the `gemm`
//!   crate, instead of one small GEMM per image and Burn's generic backward.
//! - [`rms_norm`]: RMSNorm + FiLM scale-shift + SiLU in one pass each way, with a vectorisable
//!   `exp`, instead of about a dozen element-wise passes.
//! - GroupNorm modules through [`NormForward`], and [`layer_norm`]: the normalisation, its affine
//!   and an optional SiLU in one pass each way.
//! - [`linear`] ([`LinearForward`] for `nn::Linear`): one GEMM forward, two and a column sum
//!   backward, in one autodiff node (Burn: a matmul and a broadcast add, each with its node).
//! - [`silu`]: one multithreaded pass with the same `exp`, instead of libm's on one thread.
//! - [`attention`] and [`linear_attention`]: per head in one call each way (products, softmaxes
//!   and their Jacobians), instead of about eight ops and their autodiff nodes.
//! - [`FusedAdam`] ([`optim`]): Adam/AdamW (burn-optim's, state and all) with each parameter's
//!   update in one multithreaded pass instead of about thirteen single-threaded ones; [`ema_lerp`],
//!   the EMA update in one pass.
//! - [`on_workers`]: runs a command's work on a rayon pool thread, so parallel ops split their work
//!   with the caller instead of waking the pool for every op.
//!
//! [`profile`] counts the time each op class spends in these kernels, for `ddpm-train bench`.
//!
//! Modules: `cpu` holds the kernels over slices (no Burn types), `flex` the extension that wraps
//! them. `DDPM_KERNELS=burn` in the environment turns every op back into Burn's, to compare.

use burn::nn::{GroupNorm, Linear, PaddingConfig2d};
use burn::nn::conv::Conv2d;
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
#[cfg(feature = "flex")]
use burn::tensor::DType;
use burn::tensor::{Device, Tensor};


#[cfg(feature = "flex")]
mod cpu;
#[cfg(feature = "flex")]
mod flex;
pub mod optim;
pub mod profile;

pub use optim::FusedAdam;

#[cfg(feature = "flex")]
pub use cpu::conv::{ConvGeometry, ConvGrads, Wanted, im2col, col2im, conv2d_backward as conv2d_backward_slices, conv2d_forward as conv2d_forward_slices};
#[cfg(feature = "flex")]
pub use cpu::matmul::{MatRef, matmul, product_of};
#[cfg(feature = "flex")]
pub use cpu::pool::{PoolShape, pool3x3 as pool3x3_slices};
#[cfg(feature = "flex")]
pub use cpu::norm::fast_exp;
#[cfg(feature = "flex")]
pub use cpu::winograd::{Tiling as WinogradTiling, tiling as winograd_tiling};
#[cfg(feature = "flex")]
pub use cpu::conv::by_image as conv_by_image_applies;
#[cfg(feature = "flex")]
pub use cpu::direct::applies as direct_conv_applies;

/// Whether `device` runs our kernels: a Flex device, unless `DDPM_KERNELS=burn`.
pub fn on_flex(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        use burn::backend::DispatchDevice;
        use std::sync::OnceLock;
        static ENABLED: OnceLock<bool> = OnceLock::new();
        let enabled = *ENABLED.get_or_init(|| std::env::var("DDPM_KERNELS").map(|v| v != "burn").unwrap_or(true));
        enabled && matches!(device.clone().inner().as_dispatch(), DispatchDevice::Flex(_))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// Runs `f` on a thread of rayon's global pool, the pool our kernels and Burn's Flex ops split their
/// work over. Called from outside the pool, every parallel op hands its work to the pool and puts
/// the caller to sleep until it is done: two context switches per op, which cost a small network
/// a third of its training step (the quickstart U-Net's step went from about 77 to 53 ms, the toy
/// MLP's from 35 to 22 ms). From a pool thread the op splits its work with the caller instead.
/// Runs `f` directly when already on a pool thread, when the pool has one thread (a job blocked
/// waiting for another thread's rayon work could then never be served) or without the `flex`
/// feature.
pub fn on_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "flex")]
    if rayon::current_thread_index().is_none() {
        // Pool threads with a main thread's stack (rayon's default is 2 MiB), since the work
        // moved there is what ran on the main thread. Harmless when the pool already exists.
        let _ = rayon::ThreadPoolBuilder::new().stack_size(8 << 20).build_global();
        if rayon::current_num_threads() > 1 {
            return rayon::scope(|_| f());
        }
    }
    f()
}

/// Has glibc's `malloc` keep freed memory for the next allocation instead of handing it back to
/// the system, and serve buffers up to 32 MiB from its heap instead of a fresh `mmap` each.
/// A training step frees every activation at its end and allocates them again in the next: by
/// default each time glibc returns the freed top of the heap (more than 2x the largest freed
/// block) and maps buffers above 128 KiB anew, so every step pays a page fault and a zeroing per
/// 4 KiB page (the toy MLP's step: 14.7-16.3 ms without, 10.6-12.3 ms with). The price: the
/// process keeps up to 512 MiB it no longer uses until it exits, and the heap fragments more (a
/// 64-channel U-Net's peak RSS: 1047-1091 MiB without, 1064-1287 MiB with). Call it at the start
/// of `main`, before any thread starts; returns whether the allocator took both settings (always
/// `false` off glibc).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters (it takes the arena lock itself); both
        // values are in range (the mmap threshold's maximum is 32 MiB on 64-bit glibc).
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// 2-D convolution `y = w * x + b` (NCHW), the same contract as `burn::tensor::module::conv2d`.
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>, options: ConvOptions<2>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if on_flex(&x.device()) {
        use burn::backend::Dispatch;
        use flex::KernelOps;
        let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
        let y = match bias {
            Some(bias) => <Dispatch as KernelOps>::ddpm_conv2d_bias(x, weight, bias.into_dispatch(), options),
            None => <Dispatch as KernelOps>::ddpm_conv2d(x, weight, options),
        };
        return Tensor::from_dispatch(y);
    }
    burn::tensor::module::conv2d(x, weight, bias, options)
}

/// SiLU, `x sigmoid(x)`: on Flex one multithreaded pass with a vectorisable `exp` (Burn's runs
/// libm's `expf` on one thread), elsewhere Burn's `activation::silu`.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if on_flex(&x.device()) && x.dtype() == DType::F32 {
        use burn::backend::Dispatch;
        use flex::KernelOps;
        return Tensor::from_dispatch(<Dispatch as KernelOps>::ddpm_silu(x.into_dispatch()));
    }
    burn::tensor::activation::silu(x)
}

/// RMSNorm over channels (dim 1 of `x[B, C, ..]`), optionally followed by a FiLM scale-shift and
/// a SiLU, as every block of the reference U-Net does:
///
/// `y = silu?((x / max(||x||_C, 1e-12)) g sqrt(C) (1 + scale) + shift)`
///
/// `g` holds `C` values (any shape, e.g. `[1, C, 1, 1]`), `scale` and `shift` are `[B, C, 1, ..]`.
/// On Flex this is one pass forward and one backward; elsewhere it is Burn's ops.
pub fn rms_norm<const D: usize>(x: Tensor<D>, g: Tensor<D>, film: Option<(Tensor<D>, Tensor<D>)>, silu: bool) -> Tensor<D> {
    let channels = x.dims()[1];
    #[cfg(feature = "flex")]
    {
        let batch = x.dims()[0];
        let film_fits = film.as_ref().is_none_or(|(scale, shift)| {
            [scale, shift].iter().all(|t| t.dims()[..2] == [batch, channels] && t.shape().num_elements() == batch * channels && t.dtype() == DType::F32)
        });
        if on_flex(&x.device()) && x.dtype() == DType::F32 && g.dtype() == DType::F32 && g.shape().num_elements() == channels && film_fits {
            use burn::backend::Dispatch;
            use flex::KernelOps;
            let (scale, shift) = film.unwrap_or_else(|| {
                let mut shape = [1; D];
                shape[..2].copy_from_slice(&[batch, channels]);
                let zeros = Tensor::<D>::zeros(shape, &x.device());
                (zeros.clone(), zeros)
            });
            let y = <Dispatch as KernelOps>::ddpm_rms_norm(x.into_dispatch(), g.into_dispatch(), scale.into_dispatch(), shift.into_dispatch(), silu);
            return Tensor::from_dispatch(y);
        }
    }
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    let mut y = x / norm * g * (channels as f64).sqrt();
    if let Some((scale, shift)) = film {
        y = y * (scale + 1.0) + shift;
    }
    if silu { self::silu(y) } else { y }
}

/// LayerNorm over the last dimension of `x`, with `gamma` and an optional `beta` (`[F]` each),
/// optionally followed by a SiLU: on Flex the group norm kernel over the rows (one group, the
/// features as channels).
/// On Flex one pass each way; elsewhere Burn's `layer_norm` (and [`silu`]).
pub fn layer_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, beta: Option<Tensor<1>>, eps: f64, silu: bool) -> Tensor<D> {
    #[cfg(feature = "flex")]
    {
        let shape = x.dims();
        let features = shape[D - 1];
        let beta = beta.clone().unwrap_or_else(|| gamma.zeros_like());
        if gamma.dims() == [features] && beta.dims() == [features] {
            let rows = x.shape().num_elements() / features.max(1);
            if let Some(y) = flex_group_norm(x.clone().reshape([rows, features]), 1, Some((gamma.clone(), beta)), eps, silu) {
                return y.reshape(shape);
            }
        }
    }
    let y = burn::tensor::module::layer_norm(x, gamma, beta, eps);
    if silu { self::silu(y) } else { y }
}

/// GroupNorm over `x[B, C, ..]` in `groups` groups of channels (dividing `C`), with the
/// per-channel affine `gamma`, `beta` (`[C]` each; `None` is no affine), optionally followed by a
/// SiLU, on our kernel:
///
/// `y = silu?((x - mean_group) / sqrt(var_group + eps) gamma + beta)`
///
/// `None` where the kernel does not take the tensors (another device or dtype); the callers
/// ([`NormForward`], [`layer_norm`]) then run Burn's own op, so the formula lives in one place
/// besides Burn's.
#[cfg(feature = "flex")]
fn flex_group_norm<const D: usize>(x: Tensor<D>, groups: usize, affine: Option<(Tensor<1>, Tensor<1>)>, eps: f64, silu: bool) -> Option<Tensor<D>> {
    let channels = x.dims()[1];
    if !kernel_takes(&[&x]) || groups == 0 || channels % groups != 0 {
        return None;
    }
    let (gamma, beta) = affine.unwrap_or_else(|| (Tensor::ones([channels], &x.device()), Tensor::zeros([channels], &x.device())));
    if !(kernel_takes(&[&gamma, &beta]) && gamma.dims() == [channels] && beta.dims() == [channels]) {
        return None;
    }
    use burn::backend::Dispatch;
    use flex::KernelOps;
    let y = <Dispatch as KernelOps>::ddpm_group_norm(x.into_dispatch(), gamma.into_dispatch(), beta.into_dispatch(), groups, eps as f32, silu);
    Some(Tensor::from_dispatch(y))
}

/// A linear layer `y = x w + b` over the last dimension of `x` (`w[I, O]`, Burn's layout), the same
/// contract as `burn::tensor::module::linear`. On Flex (f32) one GEMM forward, two and a column
/// sum backward, in one autodiff node; elsewhere Burn's `linear`.
pub fn linear<const D: usize>(x: Tensor<D>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    {
        let shape = x.dims();
        let [inputs, outputs] = weight.dims();
        let bias_fits = bias.as_ref().is_none_or(|b| b.dims() == [outputs] && kernel_takes(&[b]));
        if D >= 2 && shape[D - 1] == inputs && bias_fits && kernel_takes(&[&x]) && kernel_takes(&[&weight]) {
            use burn::backend::Dispatch;
            use flex::KernelOps;
            let rows = x.shape().num_elements() / inputs.max(1);
            let bias = bias.unwrap_or_else(|| Tensor::zeros([outputs], &x.device()));
            let y = <Dispatch as KernelOps>::ddpm_linear(x.reshape([rows, inputs]).into_dispatch(), weight.into_dispatch(), bias.into_dispatch());
            let mut out_shape = shape;
            out_shape[D - 1] = outputs;
            return Tensor::<2>::from_dispatch(y).reshape(out_shape);
        }
    }
    burn::tensor::module::linear(x, weight, bias)
}

/// A [`Linear`] module's forward pass through our [`linear`].
pub trait LinearForward {
    /// `x w + b`, as the module's `forward`.
    fn linear<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>;

    /// Outputs `[first, first + count)` of [`linear`](Self::linear) alone, by that slice of the
    /// weight and bias (see [`ConvForward::conv_channels`]: the same reason, for a split of the
    /// last dimension).
    fn linear_columns<const D: usize>(&self, x: Tensor<D>, first: usize, count: usize) -> Tensor<D>;
}

impl LinearForward for Linear {
    fn linear<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self::linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }

    fn linear_columns<const D: usize>(&self, x: Tensor<D>, first: usize, count: usize) -> Tensor<D> {
        self::linear(x, self.weight.val().narrow(1, first, count), self.bias.as_ref().map(|b| b.val().narrow(0, first, count)))
    }
}

/// A normalisation module's forward pass through our kernels, optionally followed by a SiLU.
pub trait NormForward {
    /// `silu?(self.forward(x))`: on Flex one kernel each way, elsewhere the module's own forward
    /// and [`silu`].
    fn norm<const D: usize>(&self, x: Tensor<D>, silu: bool) -> Tensor<D>;
}

impl NormForward for GroupNorm {
    fn norm<const D: usize>(&self, x: Tensor<D>, silu: bool) -> Tensor<D> {
        #[cfg(feature = "flex")]
        if x.dims()[1] == self.num_channels {
            let affine = self.gamma.as_ref().zip(self.beta.as_ref()).map(|(g, b)| (g.val(), b.val()));
            if let Some(y) = flex_group_norm(x.clone(), self.num_groups, affine, self.epsilon, silu) {
                return y;
            }
        }
        let y = self.forward(x);
        if silu { self::silu(y) } else { y }
    }
}

/// Softmax attention `softmax(scale q k^T) v` over the last two dimensions: `q[B, H, N, D]`,
/// `k[B, H, M, D]`, `v[B, H, M, E]` give `[B, H, N, E]`. On Flex one kernel forward and one
/// backward (the attention map is recomputed there, not kept); elsewhere Burn's
/// `softmax(q.matmul(k^T) * scale).matmul(v)`.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: f64) -> Tensor<4> {
    #[cfg(feature = "flex")]
    {
        let ([b, h, n, d], [kb, kh, m, kd], [vb, vh, vm, e]) = (q.dims(), k.dims(), v.dims());
        if heads_fit([b, h, n, d], [kb, kh, m, kd], [vb, vh, vm, e]) && scale.is_finite() && kernel_takes(&[&q, &k, &v]) {
            use burn::backend::Dispatch;
            use flex::KernelOps;
            let y = <Dispatch as KernelOps>::ddpm_attention(q.into_dispatch(), k.into_dispatch(), v.into_dispatch(), scale as f32);
            return Tensor::from_dispatch(y);
        }
    }
    burn::tensor::activation::softmax(q.matmul(k.swap_dims(2, 3)) * scale, 3).matmul(v)
}

/// Whether queries `[b, h, n, d]`, keys `[b, h, m, d]` and values `[b, h, m, e]` (sizes named
/// whatever their layout) belong together and none is empty: the attention kernels' case.
#[cfg(feature = "flex")]
fn heads_fit([b, h, n, d]: [usize; 4], [kb, kh, m, kd]: [usize; 4], [vb, vh, vm, e]: [usize; 4]) -> bool {
    [kb, vb] == [b, b] && [kh, vh] == [h, h] && kd == d && vm == m && [b, h, n, m, d, e].iter().all(|&s| s > 0)
}

/// Linear attention (Shen et al.), channels first: with `q[B, H, D, N]`, `k[B, H, D, M]`,
/// `v[B, H, E, M]`,
///
/// `out = (softmax_M(k) v^T)^T (scale softmax_D(q))`, shaped `[B, H, E, N]`:
///
/// each query softmaxed over its `D` features, each key feature over the `M` positions, and the
/// `D x E` context in between, so the cost is linear in positions. On Flex one kernel each way;
/// elsewhere Burn's ops in that order.
pub fn linear_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: f64) -> Tensor<4> {
    #[cfg(feature = "flex")]
    {
        let ([b, h, d, n], [kb, kh, kd, m], [vb, vh, e, vm]) = (q.dims(), k.dims(), v.dims());
        if heads_fit([b, h, n, d], [kb, kh, m, kd], [vb, vh, vm, e]) && scale.is_finite() && kernel_takes(&[&q, &k, &v]) {
            use burn::backend::Dispatch;
            use flex::KernelOps;
            let y = <Dispatch as KernelOps>::ddpm_linear_attention(q.into_dispatch(), k.into_dispatch(), v.into_dispatch(), scale as f32);
            return Tensor::from_dispatch(y);
        }
    }
    let q = burn::tensor::activation::softmax(q, 2) * scale;
    let k = burn::tensor::activation::softmax(k, 3);
    k.matmul(v.swap_dims(2, 3)).swap_dims(2, 3).matmul(q)
}

/// Whether our kernels take these tensors: f32 on a Flex device.
#[cfg(feature = "flex")]
fn kernel_takes<const D: usize>(tensors: &[&Tensor<D>]) -> bool {
    on_flex(&tensors[0].device()) && tensors.iter().all(|t| t.dtype() == DType::F32)
}

/// `Σ t²` as a one-value tensor: a gradient's part of the global gradient norm. On Flex (without
/// autodiff, f32) one multithreaded pass with f64 partial sums and no temporary; elsewhere
/// `t.powi_scalar(2).sum()`.
pub fn sum_of_squares<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    #[cfg(feature = "flex")]
    if !t.device().is_autodiff() && kernel_takes(&[&t]) {
        use burn::backend::Dispatch;
        use flex::OptimOps;
        return Tensor::from_dispatch(<Dispatch as OptimOps>::ddpm_sum_of_squares(t.into_dispatch()));
    }
    t.powi_scalar(2).sum()
}

/// The EMA update `ema decay + online (1 - decay)`. On Flex (without autodiff, f32) one
/// multithreaded pass that writes into `ema`'s buffer when nothing else holds it; elsewhere Burn's
/// `ema * decay + online * (1 - decay)`.
pub fn ema_lerp<const D: usize>(ema: Tensor<D>, online: Tensor<D>, decay: f64) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if !ema.device().is_autodiff() && ema.dims() == online.dims() && ema.device() == online.device() && kernel_takes(&[&ema, &online]) {
        use burn::backend::Dispatch;
        use flex::OptimOps;
        return Tensor::from_dispatch(<Dispatch as OptimOps>::ddpm_lerp(ema.into_dispatch(), online.into_dispatch(), decay as f32));
    }
    ema * decay + online * (1.0 - decay)
}

/// What a [`pool3x3`] window gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// The largest tap inside the image (PyTorch pads a max pool with -inf).
    Max,
    /// The mean of the taps inside the image (`count_include_pad = false`).
    Mean,
}

/// 3x3 pooling of `x[N, C, H, W]` with a stride and a padding (below 3) on both sides; taps on
/// the padding never count. On Flex (f32, without autodiff) one vectorised pass per output row,
/// PyTorch's sums in PyTorch's order (`cpu::pool`; Burn's pools walk every window tap by tap, and
/// took 12-23% of the FID Inception's time); elsewhere Burn's `max_pool2d` or
/// `avg_pool2d(count_include_pad = false)`.
pub fn pool3x3(x: Tensor<4>, kind: PoolKind, stride: usize, padding: usize) -> Tensor<4> {
    #[cfg(feature = "flex")]
    {
        let [n, c, height, width] = x.dims();
        let shape = cpu::pool::PoolShape { planes: n * c, height, width, stride, pad: padding };
        if !x.device().is_autodiff() && kernel_takes(&[&x]) && shape.is_valid() {
            use burn::backend::Dispatch;
            use flex::InferenceOps;
            return Tensor::from_dispatch(<Dispatch as InferenceOps>::ddpm_pool3x3(x.into_dispatch(), kind, stride, padding));
        }
    }
    match kind {
        PoolKind::Max => burn::tensor::module::max_pool2d(x, MaxPoolOptions::new([3, 3]).with_stride([stride, stride]).with_padding([padding, padding])),
        PoolKind::Mean => burn::tensor::module::avg_pool2d(
            x,
            AvgPoolOptions::new([3, 3]).with_stride([stride, stride]).with_padding([padding, padding]).with_count_include_pad(false),
        ),
    }
}

/// 3-D convolution (NCDHW). On Flex a kernel of depth 1 over a depth-1 input (how the Karras
/// networks run 1-D and 2-D data) is a 2-D convolution and takes [`conv2d`]; anything else, and
/// every other device, is Burn's `conv3d`.
pub fn conv3d(x: Tensor<5>, weight: Tensor<5>, bias: Option<Tensor<1>>, options: ConvOptions<3>) -> Tensor<5> {
    let [b, c, depth, h, w] = x.dims();
    let [c_out, c_in, kd, kh, kw] = weight.dims();
    // Only where our kernel takes it: on other devices the call stays Burn's conv3d, whose results
    // the WGPU tests compare against (CubeCL's conv2d on the folded tensors did not match them).
    if on_flex(&x.device()) && depth == 1 && kd == 1 && options.padding[0] == (0, 0) && options.stride[0] == 1 {
        let options2 = ConvOptions::new_with_padding(
            [options.stride[1], options.stride[2]],
            [options.padding[1], options.padding[2]],
            [options.dilation[1], options.dilation[2]],
            options.groups,
        );
        let y = conv2d(x.reshape([b, c, h, w]), weight.reshape([c_out, c_in, kh, kw]), bias, options2);
        let [_, _, oh, ow] = y.dims();
        return y.reshape([b, c_out, 1, oh, ow]);
    }
    burn::tensor::module::conv3d(x, weight, bias, options)
}

/// A [`Conv2d`] module's forward pass through our [`conv2d`].
pub trait ConvForward {
    /// The module's forward pass, with the padding resolved as the module does. `Same` padding,
    /// which our networks do not use, stays with the module's own forward.
    fn conv(&self, x: Tensor<4>) -> Tensor<4>;

    /// Output channels `[first, first + count)` of [`conv`](Self::conv) alone: the convolution by
    /// that slice of the weight (and bias). A layer that splits its output (attention's q, k, v)
    /// takes its parts this way rather than by slicing the whole output: Burn's slice backward
    /// fills a zero gradient of the whole output per part and adds them up, while the gradient of
    /// a weight slice is the size of the weight. Needs explicit padding.
    fn conv_channels(&self, x: Tensor<4>, first: usize, count: usize) -> Tensor<4>;
}

/// A [`Conv2d`]'s options with its padding resolved; `None` for `Same` padding.
fn conv2d_options(conv: &Conv2d) -> Option<ConvOptions<2>> {
    let (vertical, horizontal) = match conv.padding {
        PaddingConfig2d::Valid => ((0, 0), (0, 0)),
        PaddingConfig2d::Explicit(top, left, bottom, right) => ((top, bottom), (left, right)),
        PaddingConfig2d::Same => return None,
    };
    Some(ConvOptions::new_with_padding(conv.stride, [vertical, horizontal], conv.dilation, conv.groups))
}

impl ConvForward for Conv2d {
    fn conv_channels(&self, x: Tensor<4>, first: usize, count: usize) -> Tensor<4> {
        assert!(self.groups == 1, "conv_channels: a grouped convolution ({} groups) cannot be split by output channel", self.groups);
        let options = conv2d_options(self).expect("conv_channels: `Same` padding is not supported; give the padding explicitly");
        conv2d(x, self.weight.val().narrow(0, first, count), self.bias.as_ref().map(|b| b.val().narrow(0, first, count)), options)
    }

    fn conv(&self, x: Tensor<4>) -> Tensor<4> {
        let Some(options) = conv2d_options(self) else {
            return self.forward(x);
        };
        conv2d(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()), options)
    }
}
