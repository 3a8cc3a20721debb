//! Where the time of a step goes, by op class: every kernel of this crate adds its wall time (and
//! the convolutions their multiply-adds) to process-wide counters while profiling is on.
//!
//! Off by default; then each kernel call pays one relaxed atomic load. `ddpm-train bench` turns it
//! on, runs a phase, and [`take`]s the counters. Only our kernels are counted: what Burn's own ops
//! do (other element-wise ops, reshapes, the autodiff graph) is the phase's time minus these.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// The op classes our kernels time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpClass {
    /// Convolutions, forward and both gradients.
    Conv,
    /// RMSNorm (+ FiLM + SiLU), forward and backward.
    Norm,
    /// Softmax and linear attention, forward and backward.
    Attention,
    /// Stand-alone activations (SiLU).
    Activation,
    /// The fused Adam/AdamW update and the EMA update.
    Optimizer,
    /// Linear layers, forward and backward.
    Linear,
}

const CLASSES: usize = 6;

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; CLASSES] = [const { AtomicU64::new(0) }; CLASSES];
static CONV_FLOPS: AtomicU64 = AtomicU64::new(0);

/// The counters since the last [`take`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OpTimes {
    pub conv_s: f64,
    pub norm_s: f64,
    pub attention_s: f64,
    pub activation_s: f64,
    pub optimizer_s: f64,
    pub linear_s: f64,
    /// Floating-point operations of the convolutions (2 per multiply-add).
    pub conv_flops: u64,
}

impl OpTimes {
    /// Seconds in all of our kernels.
    pub fn kernels_s(&self) -> f64 {
        self.conv_s + self.norm_s + self.attention_s + self.activation_s + self.optimizer_s + self.linear_s
    }
}

/// Turns the counters on or off (they keep their values; [`take`] resets them).
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// The counters since the last call, and zeroes them.
pub fn take() -> OpTimes {
    let s = |c: OpClass| NANOS[c as usize].swap(0, Ordering::Relaxed) as f64 * 1e-9;
    OpTimes {
        conv_s: s(OpClass::Conv),
        norm_s: s(OpClass::Norm),
        attention_s: s(OpClass::Attention),
        activation_s: s(OpClass::Activation),
        optimizer_s: s(OpClass::Optimizer),
        linear_s: s(OpClass::Linear),
        conv_flops: CONV_FLOPS.swap(0, Ordering::Relaxed),
    }
}

/// Runs `f`, adding its wall time to `class` (and `flops` to the convolutions' count) when
/// profiling is on. Kernels run one at a time on the calling thread (their parallelism is inside),
/// so wall times add up without double counting.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) fn timed<R>(class: OpClass, flops: u64, f: impl FnOnce() -> R) -> R {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let start = Instant::now();
    let out = f();
    NANOS[class as usize].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    if flops > 0 {
        CONV_FLOPS.fetch_add(flops, Ordering::Relaxed);
    }
    out
}

/// The f32 FLOP/s our GEMM sustains on this machine (a 1024³ product with every thread, best of
/// six): the practical peak a convolution's rate is compared against. `None` without the CPU
/// kernels (the `flex` feature).
pub fn gemm_peak_flops() -> Option<f64> {
    #[cfg(feature = "flex")]
    {
        use crate::cpu::matmul::{MatRef, matmul};
        const N: usize = 1024;
        let a: Vec<f32> = (0..N * N).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect();
        let b: Vec<f32> = (0..N * N).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
        let mut c = vec![0.0f32; N * N];
        let mut best = f64::INFINITY;
        for _ in 0..6 {
            let start = Instant::now();
            matmul(&mut c, MatRef::row_major(&a, N, N), MatRef::row_major(&b, N, N), false);
            best = best.min(start.elapsed().as_secs_f64());
        }
        Some(2.0 * (N * N * N) as f64 / best)
    }
    #[cfg(not(feature = "flex"))]
    None
}
