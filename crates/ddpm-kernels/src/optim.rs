//! Adam and AdamW with a fused update on Flex.
//!
//! [`FusedAdam`] is a `burn::optim::Optimizer` that computes exactly what burn-optim's `AdamW`
//! (and, with no weight decay, `Adam`) computes, with the same state type, so records and
//! checkpoints are interchangeable. On Flex each parameter's update is one multithreaded pass
//! (`cpu::adam`); on every other device it is burn-optim's `AdamW` itself.

use burn::optim::{AdamW, AdamWConfig, AdamWState, LearningRate, ModuleOptimizer, Optimizer};
use burn::tensor::{Device, Tensor};

/// Adam (`weight_decay` 0) or AdamW (decoupled weight decay), fused on Flex.
#[derive(Clone)]
// Without `flex` only the fallback reads the settings.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub struct FusedAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
    fallback: AdamW,
}

impl FusedAdam {
    /// `betas`, `epsilon` and the decoupled `weight_decay` as PyTorch's `AdamW` takes them (0: Adam).
    pub fn new(betas: [f32; 2], epsilon: f32, weight_decay: f32) -> Self {
        let fallback = AdamWConfig::new().with_beta_1(betas[0]).with_beta_2(betas[1]).with_epsilon(epsilon).with_weight_decay(weight_decay).build();
        Self { beta_1: betas[0], beta_2: betas[1], epsilon, weight_decay, fallback }
    }

    /// The whole-module optimizer (what `AdamConfig::init` returns for burn's Adam).
    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(&self, lr: LearningRate, tensor: Tensor<D>, grad: Tensor<D>, state: Option<AdamWState<D>>) -> (Tensor<D>, Option<AdamWState<D>>) {
        #[cfg(feature = "flex")]
        if crate::on_flex(&tensor.device()) && !tensor.device().is_autodiff() && tensor.dtype() == burn::tensor::DType::F32 && grad.dtype() == tensor.dtype() {
            use crate::flex::OptimOps;
            use burn::backend::Dispatch;
            use burn::optim::AdaptiveMomentumState;
            let (time, m, v) = match state {
                Some(s) => (s.momentum.time + 1, s.momentum.moment_1, s.momentum.moment_2),
                None => (1, tensor.zeros_like(), tensor.zeros_like()),
            };
            let s = crate::cpu::adam::AdamStep::new(lr, self.beta_1, self.beta_2, self.epsilon, self.weight_decay, time);
            let (p, m, v) = <Dispatch as OptimOps>::ddpm_adam(tensor.into_dispatch(), grad.into_dispatch(), m.into_dispatch(), v.into_dispatch(), s);
            let momentum = AdaptiveMomentumState::new(time, Tensor::from_dispatch(m), Tensor::from_dispatch(v));
            return (Tensor::from_dispatch(p), Some(AdamWState::new(momentum)));
        }
        self.fallback.step(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: AdamWState<D>, device: &Device) -> AdamWState<D> {
        AdamW::to_device(state, device)
    }
}
