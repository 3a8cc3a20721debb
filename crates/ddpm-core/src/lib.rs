//! # ddpm-core
//!
//! The diffusion math of ddpm-rs for any [Burn](https://burn.dev) network, on any device: noise
//! schedules, the forward process, the posterior, the eps / x0 / v / mean parameterisations, the
//! training loss with its weightings and tricks, the variational bound, and the DDPM and DDIM
//! samplers. It depends on no model: implement [`Denoiser`] for your module and use
//! [`GaussianDiffusion`].
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
//! let images = sample(
//!     &diffusion, &model, [4, 3, 32, 32], TensorCreationOptions::new(device),
//!     &Sampler::Ddim { steps: 50, eta: 0.0, spacing: TimestepSpacing::Linspace },
//!     &SampleOptions::default(), &mut noise, no_callback,
//! ).unwrap();
//! ```

pub mod continuous;
pub mod denoiser;
pub mod device;
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
pub use denoiser::{Conditioning, Denoiser};
pub use diffusion::{GaussianDiffusion, GaussianDiffusionConfig, Posterior, Prediction, ReverseStep, X0Clip};
pub use error::{Error, Result};
pub use likelihood::BitsPerDim;
pub use loss::{LossOutput, assign_noise, noise_assignment};
pub use noise::{DeviceNoise, HostNoise, NoiseSource, PerSampleNoise, PrefixedNoise, ReplayNoise};
pub use objective::{LossType, ModelVariance, Objective};
pub use process::Process;
pub use edm::{Edm, EdmConfig, EdmDenoiser};
pub use guidance::{ClassifierFreeGuidance, ClassifierGradient, ClassifierGuidance};
pub use inpaint::{RePaint, repaint, repaint_walk};
pub use karras::{Churn, SigmaDenoiser, SigmaSolver, SigmaSpacing, VpDenoiser};
pub use sampler::{SampleOptions, Sampler, StepInfo, TimestepSpacing};
pub use sampler::{DdimOptions, DdimStep, ddim_sample_steps, diffusers_ddim_steps};
pub use schedule::{BetaSchedule, NoiseSchedule};

/// Everything a training or sampling loop usually needs.
pub mod prelude {
    pub use crate::denoiser::{Conditioning, Denoiser};
    pub use crate::diffusion::{GaussianDiffusion, GaussianDiffusionConfig, X0Clip};
    pub use crate::noise::{DeviceNoise, HostNoise, NoiseSource, PerSampleNoise, PrefixedNoise, ReplayNoise};
    pub use crate::guidance::ClassifierFreeGuidance;
    pub use crate::karras::{Churn, SigmaSolver, SigmaSpacing};
    pub use crate::objective::{LossType, ModelVariance, Objective};
    pub use crate::process::Process;
    pub use crate::edm::{Edm, EdmConfig};
    pub use crate::sampler::{
        SampleOptions, Sampler, StepInfo, TimestepSpacing, ddim_sample, ddpm_sample, ddpm_sample_from, no_callback, normalize_to_neg_one_one,
        sdedit,
        sample, unnormalize_to_zero_one,
    };
    pub use crate::schedule::{BetaSchedule, NoiseSchedule};
    pub use crate::sampler::{DdimOptions, DdimStep, ddim_sample_steps, diffusers_ddim_steps};
}
