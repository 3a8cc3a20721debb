//! The configured network as one type per data rank.
//!
//! Every job of the CLI (train, sample, export, nll, bench, the dry run, post-hoc EMA) is generic
//! over the network. With one type per network, each job was compiled once per network and again
//! with a learned log-SNR schedule around it: 14 copies of the trainer, the sampler and burn-train's
//! `Learner`, two thirds of the `ddpm-train` crate's build. Here the network of a rank is one enum
//! and the schedule another ([`Network`]), so each job is compiled once per rank (images,
//! sequences, vectors). The variant is chosen at run time: one `match` per forward pass.
//!
//! The enums are transparent modules: they add no name to the parameter paths (`#[derive(Module)]`
//! on an enum would insert the variant's), so checkpoints, safetensors files and EMA state read and
//! write exactly as the inner network's.

use burn::module::{Content, Devices, DisplaySettings, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor};
use burn::tensor::{Device, Tensor};
use ddpm_core::{Conditioning, Denoiser, LearnedLogSnrConfig, LearnedScheduleModel, Process, X0Clip};
use ddpm_models::weights::StateDict;
use ddpm_models::{DdpmUnet, DdpmUnetConfig, KarrasUnet1d, KarrasUnet2d, Unet, Unet1d, Uvit};

use crate::pipeline::ReferenceFormat;
use crate::{Result, TrainModel};

/// Implements [`Module`], `Clone`, the display traits, [`Denoiser`] and [`TrainModel`] for an enum whose
/// variants each hold one network, by handing every call to the variant's network.
/// `module[..]` are the generics of the module impls, `rank[..] D` those of the rank-`D` impls.
macro_rules! transparent_network {
    (module[$($mg:tt)*] rank[$($rg:tt)*] $d:tt, $name:ty { $($variant:ident),+ $(,)? }) => {
        impl<$($mg)*> Module for $name {
            fn collect_devices(&self, devices: Devices) -> Devices {
                match self { $(Self::$variant(m) => m.collect_devices(devices),)+ }
            }
            fn fork(self, device: &Device) -> Self {
                match self { $(Self::$variant(m) => Self::$variant(m.fork(device)),)+ }
            }
            fn to_device(self, device: &Device) -> Self {
                match self { $(Self::$variant(m) => Self::$variant(m.to_device(device)),)+ }
            }
            fn train(self) -> Self {
                match self { $(Self::$variant(m) => Self::$variant(m.train()),)+ }
            }
            fn valid(&self) -> Self {
                match self { $(Self::$variant(m) => Self::$variant(m.valid()),)+ }
            }
            fn materialize(self) -> Self {
                match self { $(Self::$variant(m) => Self::$variant(m.materialize()),)+ }
            }
            fn num_params(&self) -> usize {
                match self { $(Self::$variant(m) => Module::num_params(m),)+ }
            }
            fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
                match self { $(Self::$variant(m) => m.visit(visitor),)+ }
            }
            fn map<Mp: ModuleMapper>(self, mapper: &mut Mp) -> Self {
                match self { $(Self::$variant(m) => Self::$variant(m.map(mapper)),)+ }
            }
        }

        impl<$($mg)*> Clone for $name {
            fn clone(&self) -> Self {
                match self { $(Self::$variant(m) => Self::$variant(m.clone()),)+ }
            }
        }

        impl<$($mg)*> ModuleDisplayDefault for $name {
            fn content(&self, content: Content) -> Option<Content> {
                match self { $(Self::$variant(m) => m.content(content),)+ }
            }
            fn num_params(&self) -> usize {
                Module::num_params(self)
            }
        }

        impl<$($mg)*> ModuleDisplay for $name {
            fn format(&self, settings: DisplaySettings) -> String {
                match self { $(Self::$variant(m) => m.format(settings),)+ }
            }
        }

        impl<$($mg)*> std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.format(DisplaySettings::new()))
            }
        }

        impl<$($rg)*> Denoiser<$d> for $name {
            fn denoise(&self, x_t: Tensor<$d>, t: Tensor<1>, cond: &Conditioning<$d>) -> Tensor<$d> {
                match self { $(Self::$variant(m) => m.denoise(x_t, t, cond),)+ }
            }
            fn unconditional_output(&self) -> Option<Tensor<$d>> {
                match self { $(Self::$variant(m) => m.unconditional_output(),)+ }
            }
            fn learned_log_snr(&self, t: Tensor<1>) -> Option<Tensor<1>> {
                match self { $(Self::$variant(m) => m.learned_log_snr(t),)+ }
            }
        }

        impl<$($rg)*> TrainModel<$d> for $name {
            fn load_reference_weights(self, state: &StateDict, file: &str) -> Result<Self> {
                match self { $(Self::$variant(m) => Ok(Self::$variant(m.load_reference_weights(state, file)?)),)+ }
            }
            fn reference_state_dict(&self, format: ReferenceFormat) -> Result<StateDict> {
                match self { $(Self::$variant(m) => m.reference_state_dict(format),)+ }
            }
            fn write_diffusers_pipeline(&self, out: &std::path::Path, unet: &DdpmUnetConfig, process: &Process, clip: X0Clip) -> Result<()> {
                match self { $(Self::$variant(m) => m.write_diffusers_pipeline(out, unet, process, clip),)+ }
            }
        }
    };
}

/// The networks for images `[C, H, W]`.
#[derive(Debug)]
pub enum ImageNetwork {
    Unet(Unet),
    DdpmUnet(DdpmUnet),
    Uvit(Uvit),
    Karras(KarrasUnet2d),
}
transparent_network!(module[] rank[] 4, ImageNetwork { Unet, DdpmUnet, Uvit, Karras });

/// The networks for sequences `[C, L]`.
#[derive(Debug)]
pub enum SequenceNetwork {
    Unet(Unet1d),
    Karras(KarrasUnet1d),
}
transparent_network!(module[] rank[] 3, SequenceNetwork { Unet, Karras });

/// A network with the process's fixed schedule, or with a learned log-SNR schedule trained beside
/// it (continuous-time diffusion's `learned`); the paths of the latter are `net.*` and `schedule.*`
/// as before.
#[derive(Debug)]
pub enum Network<N> {
    Fixed(N),
    LearnedSchedule(LearnedScheduleModel<N>),
}
transparent_network!(module[N: Module + ModuleDisplay] rank[const D: usize, N: TrainModel<D>] D, Network<N> { Fixed, LearnedSchedule });

/// Wraps `init`'s network with `schedule` when there is one, built on the same device.
pub fn with_schedule<N>(schedule: Option<LearnedLogSnrConfig>, init: impl Fn(&Device) -> Result<N>) -> impl Fn(&Device) -> Result<Network<N>> {
    move |device| {
        let net = init(device)?;
        Ok(match &schedule {
            None => Network::Fixed(net),
            Some(s) => Network::LearnedSchedule(LearnedScheduleModel { net, schedule: s.init(device) }),
        })
    }
}
