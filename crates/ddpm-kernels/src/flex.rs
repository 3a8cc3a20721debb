//! The kernels as a Burn backend extension: implemented for Flex, and for `Autodiff<Flex>` with a
//! handwritten backward. Other backends never reach this module (see [`crate::on_flex`]).

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::ops::ConvOptions;
use burn::backend::TensorMetadata;
use burn::tensor::{DType, Shape, TensorData};

use crate::cpu::adam::AdamStep;
use crate::cpu::attention::{self, AttentionShape, LinearShape};
use crate::cpu::conv::{ConvGeometry, Wanted, conv2d_backward, conv2d_forward};
use crate::cpu::group_norm::{self, GroupInputs, GroupShape, GroupWanted};
use crate::cpu::linear::{self, DenseShape, LinearWanted};
use crate::cpu::norm::{self, NormInputs, NormShape, NormWanted};
use crate::profile::{OpClass, timed};

#[backend_extension(Flex, Autodiff)]
pub trait KernelOps: Backend {
    /// 2-D convolution, NCHW, without bias.
    fn ddpm_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self>;
    /// 2-D convolution, NCHW, plus a per-channel bias.
    fn ddpm_conv2d_bias(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self>;
    /// `silu?(rms_norm(x) g sqrt(C) (1 + scale) + shift)` over dim 1 of `x[B, C, ..]`; `g` holds
    /// `C` values, `scale` and `shift` `B C` (see `cpu::norm`).
    fn ddpm_rms_norm(x: FloatTensor<Self>, g: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>, silu: bool) -> FloatTensor<Self>;
    /// `silu?(group_norm(x) gamma + beta)` over groups of dim 1 of `x[B, C, ..]`; `gamma` and `beta`
    /// hold `C` values (see `cpu::group_norm`).
    fn ddpm_group_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, groups: usize, eps: f32, silu: bool) -> FloatTensor<Self>;
    /// `x[R, I] w[I, O] + b[O]` (see `cpu::linear`).
    fn ddpm_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x sigmoid(x)`, element-wise.
    fn ddpm_silu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `softmax(scale q k^T) v` over the last two dimensions of `q[B, H, N, D]`, `k[B, H, M, D]`,
    /// `v[B, H, M, E]` (see `cpu::attention`).
    fn ddpm_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f32) -> FloatTensor<Self>;
    /// Linear attention `(softmax_M(k) v^T)^T (scale softmax_D(q))` of `q[B, H, D, N]`,
    /// `k[B, H, D, M]`, `v[B, H, E, M]`, giving `[B, H, E, N]` (see `cpu::attention`).
    fn ddpm_linear_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f32) -> FloatTensor<Self>;
}

/// The Flex forward pass, with or without bias.
fn flex_conv2d(x: FlexTensor, weight: FlexTensor, bias: Option<FlexTensor>, options: ConvOptions<2>) -> FlexTensor {
    let Some(g) = geometry(&x, &weight, &options) else {
        return <Flex as ModuleOps<Flex>>::conv2d(x, weight, bias, options);
    };
    timed(OpClass::Conv, g.flops(), || {
        let (x, weight, bias) = (contiguous(&x), contiguous(&weight), bias.as_ref().map(contiguous));
        let y = conv2d_forward(values(&x), values(&weight), bias.as_ref().map(values), &g);
        tensor(y, [g.batch, g.c_out, g.out[0], g.out[1]])
    })
}

#[backend_extension(Flex)]
pub trait OptimOps: Backend {
    /// The EMA update `ema decay + online (1 - decay)`, written into `ema`'s buffer.
    fn ddpm_lerp(ema: FloatTensor<Self>, online: FloatTensor<Self>, decay: f32) -> FloatTensor<Self>;
    /// One Adam/AdamW update (see `cpu::adam`): the parameter and both moments, updated.
    fn ddpm_adam(param: FloatTensor<Self>, grad: FloatTensor<Self>, m: FloatTensor<Self>, v: FloatTensor<Self>, step: AdamStep) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// `Σ x²` as a one-value tensor (see `cpu::adam::sum_of_squares`).
    fn ddpm_sum_of_squares(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

#[backend_extension(Flex)]
pub trait InferenceOps: Backend {
    /// 3x3 max or mean pooling of `x[N, C, H, W]`, taps on padding left out (see `cpu::pool`).
    fn ddpm_pool3x3(x: FloatTensor<Self>, kind: crate::PoolKind, stride: usize, pad: usize) -> FloatTensor<Self>;
}

impl InferenceOps for Flex {
    fn ddpm_pool3x3(x: FlexTensor, kind: crate::PoolKind, stride: usize, pad: usize) -> FlexTensor {
        let dims = x.shape();
        let shape = crate::cpu::pool::PoolShape { planes: dims[0] * dims[1], height: dims[2], width: dims[3], stride, pad };
        let [oh, ow] = shape.out_size();
        let x = contiguous(&x);
        tensor(crate::cpu::pool::pool3x3(values(&x), &shape, kind), [dims[0], dims[1], oh, ow])
    }
}

/// `t` as a contiguous tensor of its own storage, ready to be written in place: a handle to the
/// same buffer when it already is one (Flex copies on write if another handle shares it).
fn writable(t: FlexTensor) -> FlexTensor {
    let numel = t.shape().num_elements();
    if t.layout().contiguous_offsets() == Some((0, numel)) && t.storage::<f32>().len() == numel {
        t
    } else {
        let shape = t.shape();
        tensor(values(&contiguous(&t)).to_vec(), shape)
    }
}

impl OptimOps for Flex {
    fn ddpm_lerp(ema: FlexTensor, online: FlexTensor, decay: f32) -> FlexTensor {
        let mut ema = writable(ema);
        let online = contiguous(&online);
        timed(OpClass::Optimizer, 0, || crate::cpu::adam::lerp_in_place(ema.storage_mut::<f32>(), values(&online), decay));
        ema
    }

    fn ddpm_adam(param: FlexTensor, grad: FlexTensor, m: FlexTensor, v: FlexTensor, step: AdamStep) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (mut param, mut m, mut v) = (writable(param), writable(m), writable(v));
        let grad = contiguous(&grad);
        timed(OpClass::Optimizer, 0, || crate::cpu::adam::adam_step(param.storage_mut::<f32>(), values(&grad), m.storage_mut::<f32>(), v.storage_mut::<f32>(), step));
        (param, m, v)
    }

    fn ddpm_sum_of_squares(x: FlexTensor) -> FlexTensor {
        let x = contiguous(&x);
        let total = timed(OpClass::Optimizer, 0, || crate::cpu::adam::sum_of_squares(values(&x)));
        tensor(vec![total as f32], [1])
    }
}

/// A contiguous copy where the layout needs one (a clone of the handle otherwise).
fn contiguous(t: &FlexTensor) -> FlexTensor {
    t.to_contiguous()
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("an f32 tensor made contiguous")
}

fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

/// The geometry of a convolution our kernel handles: f32, one group, input and weight 4-D.
fn geometry(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> Option<ConvGeometry> {
    if x.dtype() != DType::F32 || weight.dtype() != DType::F32 || options.groups != 1 {
        return None;
    }
    let (xs, ws) = (x.shape(), weight.shape());
    let [batch, c_in, height, width] = [xs[0], xs[1], xs[2], xs[3]];
    let [c_out, w_in, kh, kw] = [ws[0], ws[1], ws[2], ws[3]];
    if w_in != c_in {
        return None;
    }
    let out = [0, 1].map(|d| {
        let size = [height, width][d] + options.padding[d].0 + options.padding[d].1;
        let span = options.dilation[d] * ([kh, kw][d] - 1) + 1;
        if size < span { 0 } else { (size - span) / options.stride[d] + 1 }
    });
    Some(ConvGeometry {
        batch,
        c_in,
        height,
        width,
        c_out,
        kernel: [kh, kw],
        stride: options.stride,
        pad: options.padding.map(|(begin, _)| begin),
        dilation: options.dilation,
        out,
    })
}

impl KernelOps for Flex {
    fn ddpm_conv2d(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        flex_conv2d(x, weight, None, options)
    }

    fn ddpm_conv2d_bias(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        flex_conv2d(x, weight, Some(bias), options)
    }

    fn ddpm_silu(x: FlexTensor) -> FlexTensor {
        let shape = x.shape();
        timed(OpClass::Activation, 0, || tensor(crate::cpu::activation::silu_forward(values(&contiguous(&x))), shape))
    }

    fn ddpm_attention(q: FlexTensor, k: FlexTensor, v: FlexTensor, scale: f32) -> FlexTensor {
        attention_forward(AttentionKind::Softmax, q, k, v, scale)
    }

    fn ddpm_linear_attention(q: FlexTensor, k: FlexTensor, v: FlexTensor, scale: f32) -> FlexTensor {
        attention_forward(AttentionKind::Linear, q, k, v, scale)
    }

    fn ddpm_rms_norm(x: FlexTensor, g: FlexTensor, scale: FlexTensor, shift: FlexTensor, silu: bool) -> FlexTensor {
        timed(OpClass::Norm, 0, || {
            let shape = x.shape();
            let [x, g, scale, shift] = [&x, &g, &scale, &shift].map(contiguous);
            let y = norm::forward(norm_inputs(&x, &g, &scale, &shift, silu));
            FlexTensor::from_data(TensorData::new(y, shape))
        })
    }

    fn ddpm_linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        timed(OpClass::Linear, 0, || {
            let s = linear_shape(&x, &weight);
            let [x, weight, bias] = [&x, &weight, &bias].map(contiguous);
            tensor(linear::forward(values(&x), values(&weight), Some(values(&bias)), s), [s.rows, s.outputs])
        })
    }

    fn ddpm_group_norm(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, groups: usize, eps: f32, silu: bool) -> FlexTensor {
        timed(OpClass::Norm, 0, || {
            let shape = x.shape();
            let [x, gamma, beta] = [&x, &gamma, &beta].map(contiguous);
            tensor(group_norm::forward(group_inputs(&x, &gamma, &beta, groups, eps, silu)), shape)
        })
    }
}

/// Which attention a kernel call computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttentionKind {
    /// `softmax(scale q k^T) v`, tokens in rows: `q[B, H, N, D]`, `k[B, H, M, D]`, `v[B, H, M, E]`.
    Softmax,
    /// Linear attention, channels in rows: `q[B, H, D, N]`, `k[B, H, D, M]`, `v[B, H, E, M]`.
    Linear,
}

/// The forward pass of either attention, timed, with the output shape `[B, H, N, E]` (softmax) or
/// `[B, H, E, N]` (linear). The caller (`crate::attention`, `crate::linear_attention`) checked
/// that the shapes fit together.
fn attention_forward(kind: AttentionKind, q: FlexTensor, k: FlexTensor, v: FlexTensor, scale: f32) -> FlexTensor {
    timed(OpClass::Attention, 0, || {
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        let [q, k, v] = [&q, &k, &v].map(contiguous);
        let (q, k, v) = (values(&q), values(&k), values(&v));
        let heads = qs[0] * qs[1];
        match kind {
            AttentionKind::Softmax => {
                let s = AttentionShape { heads, n: qs[2], m: ks[2], d: qs[3], e: vs[3] };
                tensor(attention::forward(q, k, v, s, scale), [qs[0], qs[1], s.n, s.e])
            }
            AttentionKind::Linear => {
                let s = LinearShape { heads, d: qs[2], n: qs[3], m: ks[3], e: vs[2] };
                tensor(attention::linear_forward(q, k, v, s, scale), [qs[0], qs[1], s.e, s.n])
            }
        }
    })
}

/// The norm's sizes from `x[B, C, ..]` (the caller, `crate::rms_norm`, checked the other shapes).
fn norm_shape(x: &FlexTensor) -> NormShape {
    let shape = x.shape();
    let (batch, channels) = (shape[0], shape[1]);
    NormShape { batch, channels, pixels: shape.num_elements() / (batch * channels).max(1) }
}

fn norm_inputs<'a>(x: &'a FlexTensor, g: &'a FlexTensor, scale: &'a FlexTensor, shift: &'a FlexTensor, silu: bool) -> NormInputs<'a> {
    NormInputs { x: values(x), g: values(g), scale: Some(values(scale)), shift: Some(values(shift)), silu, shape: norm_shape(x) }
}

/// The sizes of `x[R, I] w[I, O]` (the caller, `crate::linear`, checked that they fit).
fn linear_shape(x: &FlexTensor, weight: &FlexTensor) -> DenseShape {
    let (xs, ws) = (x.shape(), weight.shape());
    DenseShape { rows: xs[0], inputs: xs[1], outputs: ws[1] }
}

fn group_inputs<'a>(x: &'a FlexTensor, gamma: &'a FlexTensor, beta: &'a FlexTensor, groups: usize, eps: f32, silu: bool) -> GroupInputs<'a> {
    let shape = x.shape();
    let (batch, channels) = (shape[0], shape[1]);
    let pixels = shape.num_elements() / (batch * channels).max(1);
    GroupInputs { x: values(x), gamma: values(gamma), beta: values(beta), eps, silu, shape: GroupShape { batch, channels, pixels, groups } }
}

/// What the backward pass keeps: the forward's inputs (handles, not copies) and its options.
#[derive(Debug, Clone)]
struct ConvState {
    x: FlexTensor,
    weight: FlexTensor,
    options: ConvOptions<2>,
}

/// Registers the gradients of one convolution for the parents that want them.
fn conv_backward(state: ConvState, grad: FlexTensor, grads: &mut Gradients, parents: [Option<NodeId>; 3]) {
    let [x_id, w_id, b_id] = parents;
    let ConvState { x, weight, options } = state;
    let wanted = Wanted { input: x_id.is_some(), weight: w_id.is_some(), bias: b_id.is_some() };
    let Some(g) = geometry(&x, &weight, &options) else {
        // Shapes the forward pass left to Flex take Flex's own backward.
        if let Some(id) = x_id {
            grads.register::<Flex>(id, Flex::conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), options.clone()));
        }
        if let Some(id) = w_id {
            grads.register::<Flex>(id, Flex::conv2d_weight_backward(x.clone(), weight.clone(), grad.clone(), options));
        }
        if let Some(id) = b_id {
            let bias_shape = Shape::new([weight.shape()[0]]);
            grads.register::<Flex>(id, Flex::conv2d_bias_backward(x, tensor(vec![0.0; bias_shape[0]], bias_shape), grad));
        }
        return;
    };
    let flops = g.flops() * (wanted.input as u64 + wanted.weight as u64);
    let out = timed(OpClass::Conv, flops, || {
        let (x, weight, grad) = (contiguous(&x), contiguous(&weight), contiguous(&grad));
        conv2d_backward(values(&x), values(&weight), values(&grad), &g, wanted)
    });
    if let (Some(id), Some(dx)) = (x_id, out.input) {
        grads.register::<Flex>(id, tensor(dx, [g.batch, g.c_in, g.height, g.width]));
    }
    if let (Some(id), Some(dw)) = (w_id, out.weight) {
        grads.register::<Flex>(id, tensor(dw, [g.c_out, g.c_in, g.kernel[0], g.kernel[1]]));
    }
    if let (Some(id), Some(db)) = (b_id, out.bias) {
        grads.register::<Flex>(id, tensor(db, [g.c_out]));
    }
}

#[derive(Debug)]
struct Conv2dWithBias;
#[derive(Debug)]
struct Conv2dNoBias;

impl Backward<Flex, 3> for Conv2dWithBias {
    type State = ConvState;

    fn backward(self, ops: Ops<ConvState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let [x, w, b] = ops.parents.map(|p| p.map(|n| n.id));
        conv_backward(ops.state, grad, grads, [x, w, b]);
    }
}

impl Backward<Flex, 2> for Conv2dNoBias {
    type State = ConvState;

    fn backward(self, ops: Ops<ConvState, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let [x, w] = ops.parents.map(|p| p.map(|n| n.id));
        conv_backward(ops.state, grad, grads, [x, w, None]);
    }
}

impl<C: CheckpointStrategy> KernelOps for Autodiff<Flex, C> {
    fn ddpm_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        let state = ConvState { x: x.primitive().clone(), weight: weight.primitive().clone(), options: options.clone() };
        let prep = Conv2dNoBias.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful();
        let y = flex_conv2d(x.into_primitive(), weight.into_primitive(), None, options);
        match prep {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn ddpm_conv2d_bias(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        let state = ConvState { x: x.primitive().clone(), weight: weight.primitive().clone(), options: options.clone() };
        let prep = Conv2dWithBias.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful();
        let y = flex_conv2d(x.into_primitive(), weight.into_primitive(), Some(bias.into_primitive()), options);
        match prep {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn ddpm_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let state = x.primitive().clone();
        let prep = SiluBackward.prepare::<C>([x.node()]).compute_bound().stateful();
        let y = Flex::ddpm_silu(x.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn ddpm_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        tracked_attention::<C>(AttentionKind::Softmax, q, k, v, scale)
    }

    fn ddpm_linear_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        tracked_attention::<C>(AttentionKind::Linear, q, k, v, scale)
    }

    fn ddpm_rms_norm(x: FloatTensor<Self>, g: FloatTensor<Self>, scale: FloatTensor<Self>, shift: FloatTensor<Self>, silu: bool) -> FloatTensor<Self> {
        let state = NormState { x: x.primitive().clone(), g: g.primitive().clone(), scale: scale.primitive().clone(), shift: shift.primitive().clone(), silu };
        let prep = RmsNormBackward.prepare::<C>([x.node(), g.node(), scale.node(), shift.node()]).compute_bound().stateful();
        let y = Flex::ddpm_rms_norm(x.into_primitive(), g.into_primitive(), scale.into_primitive(), shift.into_primitive(), silu);
        match prep {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn ddpm_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let state = LinearState { x: x.primitive().clone(), weight: weight.primitive().clone() };
        let prep = LinearBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful();
        let y = Flex::ddpm_linear(x.into_primitive(), weight.into_primitive(), bias.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn ddpm_group_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, groups: usize, eps: f32, silu: bool) -> FloatTensor<Self> {
        let state = GroupNormState { x: x.primitive().clone(), gamma: gamma.primitive().clone(), beta: beta.primitive().clone(), groups, eps, silu };
        let prep = GroupNormBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful();
        let y = Flex::ddpm_group_norm(x.into_primitive(), gamma.into_primitive(), beta.into_primitive(), groups, eps, silu);
        match prep {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// What the linear layer's backward keeps: its input and weight (handles, not copies).
#[derive(Debug, Clone)]
struct LinearState {
    x: FlexTensor,
    weight: FlexTensor,
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = LinearState;

    fn backward(self, ops: Ops<LinearState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = contiguous(&grads.consume::<Flex>(&ops.node));
        let [x_id, w_id, b_id] = ops.parents.map(|p| p.map(|n| n.id));
        let LinearState { x, weight } = ops.state;
        let s = linear_shape(&x, &weight);
        let wanted = LinearWanted { input: x_id.is_some(), weight: w_id.is_some(), bias: b_id.is_some() };
        let out = timed(OpClass::Linear, 0, || {
            let [x, weight] = [&x, &weight].map(contiguous);
            linear::backward(values(&x), values(&weight), values(&dy), s, wanted)
        });
        let shapes = [Shape::new([s.rows, s.inputs]), Shape::new([s.inputs, s.outputs]), Shape::new([s.outputs])];
        for ((id, grad), shape) in [(x_id, out.input), (w_id, out.weight), (b_id, out.bias)].into_iter().zip(shapes) {
            if let (Some(id), Some(grad)) = (id, grad) {
                grads.register::<Flex>(id, tensor(grad, shape));
            }
        }
    }
}

/// What the group norm's backward keeps: the forward's inputs (handles, not copies).
#[derive(Debug, Clone)]
struct GroupNormState {
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    groups: usize,
    eps: f32,
    silu: bool,
}

#[derive(Debug)]
struct GroupNormBackward;

impl Backward<Flex, 3> for GroupNormBackward {
    type State = GroupNormState;

    fn backward(self, ops: Ops<GroupNormState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = contiguous(&grads.consume::<Flex>(&ops.node));
        let [x_id, gamma_id, beta_id] = ops.parents.map(|p| p.map(|n| n.id));
        let GroupNormState { x, gamma, beta, groups, eps, silu } = ops.state;
        let (x_shape, c) = (x.shape(), gamma.shape().num_elements());
        let [x, gamma, beta] = [&x, &gamma, &beta].map(contiguous);
        let wanted = GroupWanted { x: x_id.is_some(), gamma: gamma_id.is_some(), beta: beta_id.is_some() };
        let out = timed(OpClass::Norm, 0, || group_norm::backward(group_inputs(&x, &gamma, &beta, groups, eps, silu), values(&dy), wanted));
        for (id, grad, shape) in [(x_id, out.x, x_shape), (gamma_id, out.gamma, Shape::new([c])), (beta_id, out.beta, Shape::new([c]))] {
            if let (Some(id), Some(grad)) = (id, grad) {
                grads.register::<Flex>(id, tensor(grad, shape));
            }
        }
    }
}

/// What the norm's backward keeps: the forward's inputs (handles, not copies).
#[derive(Debug, Clone)]
struct NormState {
    x: FlexTensor,
    g: FlexTensor,
    scale: FlexTensor,
    shift: FlexTensor,
    silu: bool,
}

#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Flex, 4> for RmsNormBackward {
    type State = NormState;

    fn backward(self, ops: Ops<NormState, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        timed(OpClass::Norm, 0, || norm_backward(ops, grads))
    }
}

fn norm_backward(ops: Ops<NormState, 4>, grads: &mut Gradients) {
    let dy = contiguous(&grads.consume::<Flex>(&ops.node));
    let [x_id, g_id, scale_id, shift_id] = ops.parents.map(|p| p.map(|n| n.id));
    let NormState { x, g, scale, shift, silu } = ops.state;
    let shapes = [x.shape(), g.shape(), scale.shape(), shift.shape()];
    let [x, g, scale, shift] = [&x, &g, &scale, &shift].map(contiguous);
    let wanted = NormWanted { x: x_id.is_some(), g: g_id.is_some(), scale: scale_id.is_some(), shift: shift_id.is_some() };
    let out = norm::backward(norm_inputs(&x, &g, &scale, &shift, silu), values(&dy), wanted);
    let [x_shape, g_shape, scale_shape, shift_shape] = shapes;
    for (id, grad, shape) in [(x_id, out.x, x_shape), (g_id, out.g, g_shape), (scale_id, out.scale, scale_shape), (shift_id, out.shift, shift_shape)] {
        if let (Some(id), Some(grad)) = (id, grad) {
            grads.register::<Flex>(id, FlexTensor::from_data(TensorData::new(grad, shape)));
        }
    }
}

type AdTensor<C> = FloatTensor<Autodiff<Flex, C>>;

/// Either attention on `Autodiff<Flex>`: the forward pass, and the backward node when tracked.
fn tracked_attention<C: CheckpointStrategy>(kind: AttentionKind, q: AdTensor<C>, k: AdTensor<C>, v: AdTensor<C>, scale: f32) -> AdTensor<C> {
    let state = AttentionState { q: q.primitive().clone(), k: k.primitive().clone(), v: v.primitive().clone(), scale, kind };
    let prep = AttentionBackward.prepare::<C>([q.node(), k.node(), v.node()]).compute_bound().stateful();
    let y = attention_forward(kind, q.into_primitive(), k.into_primitive(), v.into_primitive(), scale);
    match prep {
        OpsKind::Tracked(prep) => prep.finish(state, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// What the attention's backward keeps: its inputs (handles, not copies); the attention map (or
/// the linear attention's softmaxes and context) is recomputed.
#[derive(Debug, Clone)]
struct AttentionState {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    scale: f32,
    kind: AttentionKind,
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 3> for AttentionBackward {
    type State = AttentionState;

    fn backward(self, ops: Ops<AttentionState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let d_out = contiguous(&grads.consume::<Flex>(&ops.node));
        let [q_id, k_id, v_id] = ops.parents.map(|p| p.map(|n| n.id));
        let AttentionState { q, k, v, scale, kind } = ops.state;
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        let heads = qs[0] * qs[1];
        let out = timed(OpClass::Attention, 0, || {
            let [q, k, v] = [&q, &k, &v].map(contiguous);
            let (q, k, v, d_out) = (values(&q), values(&k), values(&v), values(&d_out));
            match kind {
                AttentionKind::Softmax => attention::backward(q, k, v, d_out, AttentionShape { heads, n: qs[2], m: ks[2], d: qs[3], e: vs[3] }, scale),
                AttentionKind::Linear => attention::linear_backward(q, k, v, d_out, LinearShape { heads, d: qs[2], n: qs[3], m: ks[3], e: vs[2] }, scale),
            }
        });
        for (id, grad, shape) in [(q_id, out.q, qs), (k_id, out.k, ks), (v_id, out.v, vs)] {
            if let Some(id) = id {
                grads.register::<Flex>(id, tensor(grad, shape));
            }
        }
    }
}

#[derive(Debug)]
struct SiluBackward;

impl Backward<Flex, 1> for SiluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = contiguous(&grads.consume::<Flex>(&ops.node));
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let x = contiguous(&ops.state);
            let dx = timed(OpClass::Activation, 0, || crate::cpu::activation::silu_backward(values(&x), values(&dy)));
            grads.register::<Flex>(node.id, tensor(dx, x.shape()));
        }
    }
}
