//! # ddpm-core
//!
//! The diffusion math of ddpm-rs for any [Burn](https://burn.dev) network, on any device. It
//! depends on no model: implement [`Denoiser`] for your module (or use a closure) and pick a
//! process.
//!
//! | Module | What it holds |
//! | --- | --- |
//! | [`schedule`] | beta and cumulative-alpha tables (linear, cosine, sigmoid, zero terminal SNR, custom) |
//! | [`diffusion`] | discrete Gaussian diffusion: forward process, posterior, eps / x0 / v / mean parameterisations, the training loss and its weightings |
//! | [`objective`], [`loss`], [`likelihood`] | objectives and loss weights, loss shapes, the variational bound and bits/dim |
//! | [`continuous`] | continuous-time diffusion on a log-SNR schedule (fixed or learned) |
//! | [`edm`] | EDM: preconditioning, its loss and grid, the reference's Heun sampler |
//! | [`process`] | [`Process`]: the three kinds behind one training and sampling interface |
//! | [`sampler`] | [`Sampler`] (the user-facing choice), DDPM, DDIM (reference and diffusers), SDEdit |
//! | [`karras`] | the sigma-space solvers (one table, [`karras::SOLVERS`]), their grids, and [`Preconditioned`], the one adapter that makes every process a sigma-space denoiser |
//! | [`inpaint`] | RePaint |
//! | [`guidance`] | classifier-free guidance (and CFG++), classifier guidance |
//! | [`denoiser`], [`noise`] | the network interface, its conditioning and [`ModelCalls`] (how every sampler calls it: self-conditioning, CFG++); seeded, per-sample and replayed noise |
//! | [`error`], [`tensor`] | errors, small tensor helpers |
//!
//! ddpm-core has no backend feature: the device is whatever your tensors live on (ddpm-io's
//! `device` module turns names such as `cuda:1` into one for the binaries).
//!
//! ```no_run
//! use burn::tensor::{Device, Tensor, TensorCreationOptions};
//! use ddpm_core::prelude::*;
//!
//! let diffusion = GaussianDiffusionConfig::new()
//!     .with_timesteps(1000)
//!     .with_beta_schedule(BetaSchedule::cosine())
//!     .with_objective(Objective::PredNoise)
//!     .init()
//!     .unwrap();
//! // Any `Fn(x_t, t, &Conditioning) -> Tensor` is a denoiser; so is any Burn module you implement it for.
//! let model = |x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning<4>| x.zeros_like();
//! let device = Device::default();
//! let mut noise = HostNoise::new(0);
//! let z = noise.normal([4, 3, 32, 32], TensorCreationOptions::new(device)).unwrap();
//! let images = sample(
//!     &diffusion, &model, z,
//!     &Sampler::Ddim { steps: 50, eta: 0.0, spacing: TimestepSpacing::Linspace },
//!     &SampleOptions::default(), &mut noise, no_callback,
//! ).unwrap();
//! ```

pub mod continuous;
pub mod denoiser;
pub mod diffusion;
pub mod error;
pub mod likelihood;
pub mod loss;
pub mod edm;
pub mod guidance;
pub mod inpaint;
pub mod karras;
pub mod noise;
pub mod objective;
pub mod process;
pub mod sampler;
pub mod schedule;
pub mod tensor;

pub use continuous::{ContinuousDiffusion, ContinuousDiffusionConfig, LearnedLogSnrConfig, LearnedScheduleModel, LogSnrSchedule};
pub use denoiser::{Conditioning, Denoiser, ModelCalls};
pub use diffusion::{GaussianDiffusion, GaussianDiffusionConfig, Posterior, Prediction, ReverseStep, X0Clip};
pub use error::{Error, Result};
pub use likelihood::BitsPerDim;
pub use loss::{LossOutput, NoiseLevels, assign_noise, noise_assignment};
pub use noise::{DeviceNoise, HostNoise, NoiseSource, PerSampleNoise, PrefixedNoise, ReplayNoise};
pub use objective::{LossType, ModelVariance, Objective};
pub use process::{Process, ProcessConfig};
pub use edm::{Edm, EdmConfig, EdmDenoiser};
pub use guidance::{ClassifierFreeGuidance, ClassifierGradient, ClassifierGuidance};
pub use inpaint::{Known, RePaint, repaint, repaint_walk};
pub use karras::{Churn, Preconditioned, Preconditioning, SigmaDenoiser, SigmaRun, SigmaSolver, SigmaSpacing, VpDenoiser};
pub use sampler::{SampleOptions, Sampler, StepInfo, TimestepSpacing};
pub use sampler::{DdimOptions, DdimRun, DdimStep, ddim_sample, diffusers_ddim_steps};
pub use schedule::{BetaSchedule, NoiseSchedule};

/// Everything a training or sampling loop usually needs.
pub mod prelude {
    pub use crate::denoiser::{Conditioning, Denoiser};
    pub use crate::diffusion::{GaussianDiffusion, GaussianDiffusionConfig, X0Clip};
    pub use crate::noise::{DeviceNoise, HostNoise, NoiseSource, PerSampleNoise, PrefixedNoise, ReplayNoise};
    pub use crate::guidance::ClassifierFreeGuidance;
    pub use crate::karras::{Churn, SigmaRun, SigmaSolver, SigmaSpacing};
    pub use crate::objective::{LossType, ModelVariance, Objective};
    pub use crate::process::Process;
    pub use crate::edm::{Edm, EdmConfig};
    pub use crate::sampler::{
        SampleOptions, Sampler, StepInfo, TimestepSpacing, ddim_sample, ddpm_sample, ddpm_sample_from, no_callback, normalize_to_neg_one_one,
        sdedit,
        sample, unnormalize_to_zero_one,
    };
    pub use crate::schedule::{BetaSchedule, NoiseSchedule};
    pub use crate::sampler::{DdimOptions, DdimRun, DdimStep, diffusers_ddim_steps};
}
