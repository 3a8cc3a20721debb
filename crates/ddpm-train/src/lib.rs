//! # ddpm-train
//!
//! Configuration (TOML), data, the training loop (EMA, atomic checkpoints, exact resume, sample
//! grids, metrics) and sampling for ddpm-rs; the `ddpm-train` command line is a thin layer over
//! [`run`]. Bottom to top:
//!
//! | Module | What it holds |
//! | --- | --- |
//! | [`error`], [`fsio`], [`ema`], [`overlay`], [`config`] | errors; I/O errors and atomic writes; the EMA; a TOML table over a config's defaults; every section of the TOML file (imports only `error`, `ema` and `overlay`) |
//! | [`network`] | the configured network as one type per data rank, so each job is compiled once per rank |
//! | [`data`], [`npy`] | data sets in memory (image folders, MNIST, CIFAR-10, toy sets, vectors, downloads); `.npy` (ddpm-io's) |
//! | [`checkpoint`], [`run_dir`], [`tensorboard`], [`plot`], [`grid`] | checkpoints with the run state; one run per folder; TensorBoard scalars; plots; sample grids |
//! | [`sample`], [`pipeline`], [`sample_job`], [`interop`] | drawing samples; loading any weights to sample; the CLI's sampling jobs; diffusers folders |
//! | [`eval_plan`], [`evaluate`] | in-training evaluation: its settings and log line; the scoring (feature `eval`, on by default) |
//! | [`trainer`], [`learner`], [`dashboard`], [`progress`] | the training loop; the same step for burn-train's `Learner`; what a run shows; progress lines |
//! | [`classifier`], [`nll`], [`post_hoc`], [`bench`], [`dry_run`] | classifier guidance training; bits/dim; post-hoc EMA; the profiler view; `--dry-run` |
//!
//! Features: `eval` (in-training FID/FLD/toy metrics; pulls ddpm-eval), `download` (data sets over
//! HTTP), `dashboard` (burn-train's terminal UI), and a backend (`flex` by default).

pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod dashboard;
pub mod data;
pub mod dry_run;
pub mod ema;
pub mod error;
pub mod fsio;
pub mod eval_plan;
#[cfg(feature = "eval")]
pub mod evaluate;
pub mod grid;
pub mod network;
pub mod nll;
pub mod overlay;
/// NumPy arrays in and out (ddpm-io's).
pub use ddpm_io::npy;
pub mod pipeline;
pub mod plot;
pub mod interop;
pub mod learner;
pub mod post_hoc;
pub use ddpm_io::progress;
pub mod run_dir;
pub mod sample;
pub mod sample_job;
pub mod tensorboard;
pub mod bench;
pub mod trainer;

use burn::tensor::Device;
pub use network::{ImageNetwork, Network, SequenceNetwork};
use network::with_schedule;
use ddpm_core::Denoiser;
use ddpm_models::weights::StateDict;
use ddpm_models::{
    DdpmUnet, DdpmUnetConfig, KarrasUnet1d, KarrasUnet2d, KarrasUnetConfig, Mlp, MlpConfig, Unet, Unet1d, Uvit,
};

pub use config::{TrainConfig, load_config, parse_config};
pub use error::{Result, TrainError};
pub use trainer::{RunOptions, TrainSummary};

/// A network the trainer can train and sample: a Burn module that denoises rank-`D` batches, and
/// that may load and export the weights of its PyTorch counterpart (denoising-diffusion-pytorch's,
/// or diffusers' for the DDPM paper's network).
pub trait TrainModel<const D: usize>: burn::module::Module + burn::module::ModuleDisplay + Denoiser<D> + Clone + 'static {
    /// Loads a PyTorch state dict with the counterpart's key names (e.g. from a `Trainer`
    /// checkpoint, a `torch.save(unet.state_dict())` file or a diffusers folder).
    fn load_reference_weights(self, state: &StateDict, file: &str) -> Result<Self>;

    /// The weights with the key names and layouts of `format`'s library.
    fn reference_state_dict(&self, format: pipeline::ReferenceFormat) -> Result<StateDict>;

    /// Writes the network (built from `unet`) with the scheduler of `process` as a diffusers
    /// `DDPMPipeline` folder; only the DDPM paper's network has a diffusers counterpart.
    fn write_diffusers_pipeline(&self, _out: &std::path::Path, _unet: &DdpmUnetConfig, _process: &ddpm_core::Process, _clip: ddpm_core::X0Clip) -> Result<()> {
        Err(TrainError::config(
            "model.kind",
            "only the DDPM paper's network (model.kind = \"ddpm_unet\") has a diffusers counterpart (UNet2DModel); export this one with --to lucidrains or --to safetensors",
        ))
    }
}

/// The error for a network that has no counterpart in `format`'s library.
fn no_counterpart(name: &str, format: pipeline::ReferenceFormat) -> TrainError {
    let (lib, use_instead) = match format {
        pipeline::ReferenceFormat::Lucidrains => ("denoising-diffusion-pytorch", "export it with --to safetensors, or --to diffusers for ddpm_unet"),
        pipeline::ReferenceFormat::Diffusers => ("diffusers (UNet2DModel)", "export it with --to lucidrains or --to safetensors"),
    };
    TrainError::config("model.kind", format!("{name} has no counterpart in {lib}; {use_instead}"))
}

macro_rules! reference_network {
    ($t:ty, $d:literal) => {
        impl TrainModel<$d> for $t {
            fn load_reference_weights(self, state: &StateDict, file: &str) -> Result<Self> {
                Ok(ddpm_models::weights::load_reference(self, state, file)?)
            }
            fn reference_state_dict(&self, format: pipeline::ReferenceFormat) -> Result<StateDict> {
                match format {
                    pipeline::ReferenceFormat::Lucidrains => Ok(ddpm_models::weights::reference_state_dict(self)),
                    other => Err(no_counterpart(stringify!($t), other)),
                }
            }
        }
    };
}
reference_network!(Unet, 4);
reference_network!(Unet1d, 3);
reference_network!(Uvit, 4);
reference_network!(KarrasUnet2d, 4);
reference_network!(KarrasUnet1d, 3);

impl TrainModel<4> for DdpmUnet {
    fn load_reference_weights(self, state: &StateDict, file: &str) -> Result<Self> {
        interop::load_ddpm_unet(self, state, file)
    }
    fn reference_state_dict(&self, format: pipeline::ReferenceFormat) -> Result<StateDict> {
        match format {
            pipeline::ReferenceFormat::Diffusers => Ok(interop::ddpm_unet_state_dict(self)),
            other => Err(no_counterpart("ddpm_unet", other)),
        }
    }
    fn write_diffusers_pipeline(&self, out: &std::path::Path, unet: &DdpmUnetConfig, process: &ddpm_core::Process, clip: ddpm_core::X0Clip) -> Result<()> {
        interop::write_diffusers_pipeline(out, self, unet, process, clip)
    }
}

impl TrainModel<2> for Mlp {
    fn load_reference_weights(self, _state: &StateDict, file: &str) -> Result<Self> {
        Err(TrainError::config(
            "model.kind",
            format!("{file}: mlp has no counterpart in denoising-diffusion-pytorch or diffusers; load PyTorch weights with model.kind = \"unet\", \"unet1d\" or \"ddpm_unet\""),
        ))
    }
    fn reference_state_dict(&self, format: pipeline::ReferenceFormat) -> Result<StateDict> {
        Err(no_counterpart("mlp", format))
    }
}

/// Builds the configured network for data items of `item_shape` and hands it to `self`, which is
/// generic over the data rank: images `[C, H, W]`, sequences `[C, L]`, vectors `[F]`.
pub trait WithModel {
    type Output;
    fn images<M: TrainModel<4>>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<Self::Output>;
    fn sequences<M: TrainModel<3>>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<Self::Output>;
    fn vectors<M: TrainModel<2>>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<Self::Output>;
}

/// A [`WithModel`] whose work reads the same for every data rank: written once, as `run`, and
/// dispatched to images, sequences and vectors by the blanket implementation below.
pub trait AnyRank {
    type Output;
    fn run<const D: usize, M: TrainModel<D>>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<Self::Output>;
}

impl<T: AnyRank> WithModel for T {
    type Output = T::Output;
    fn images<M: TrainModel<4>>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<T::Output> {
        self.run::<4, M>(init)
    }
    fn sequences<M: TrainModel<3>>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<T::Output> {
        self.run::<3, M>(init)
    }
    fn vectors<M: TrainModel<2>>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<T::Output> {
        self.run::<2, M>(init)
    }
}

impl<const D: usize, M: TrainModel<D>> TrainModel<D> for ddpm_core::LearnedScheduleModel<M> {
    fn load_reference_weights(self, _state: &StateDict, file: &str) -> Result<Self> {
        Err(TrainError::config("diffusion.continuous.schedule", format!("{file}: a network with a learned schedule has no reference state dict here; load reference weights with a fixed schedule")))
    }
    fn reference_state_dict(&self, _format: pipeline::ReferenceFormat) -> Result<StateDict> {
        Err(TrainError::config("diffusion.continuous.schedule", "a network with a learned log-SNR schedule has no PyTorch counterpart here; export it with --to safetensors"))
    }
}

/// The network settings of a config whose model is `ddpm_unet`, for images of `item_shape`
/// (`None` for other models or data).
pub fn ddpm_unet_config(cfg: &TrainConfig, item_shape: &[usize]) -> Option<DdpmUnetConfig> {
    let Ok(config::NetworkConfig::DdpmUnet(c)) = cfg.model.network() else { return None };
    if item_shape.len() != 3 {
        return None;
    }
    let weighted = cfg.diffusion.gaussian.objective == ddpm_core::Objective::Weighted;
    Some(
        c.with_out_channels(weighted.then(|| ddpm_core::Objective::Weighted.output_channels(item_shape[0])))
            .with_resolution(item_shape[1])
            .with_in_channels(item_shape[0])
            .with_learned_variance(cfg.diffusion.gaussian.variance.is_learned()),
    )
}

/// Dispatches on the model kind and the data shape (wrapping the network with its learned
/// log-SNR schedule when the config asks for one). `w` gets one network type per data rank
/// ([`network`]): [`Network`]`<`[`ImageNetwork`]`>`, [`Network`]`<`[`SequenceNetwork`]`>` or
/// [`Network`]`<`[`Mlp`]`>`.
pub fn with_model<W: WithModel>(cfg: &TrainConfig, item_shape: &[usize], w: W) -> Result<W::Output> {
    use config::NetworkConfig as Net;
    let schedule = cfg.learned_schedule();
    let learned = cfg.diffusion.gaussian.variance.is_learned();
    // The weighted objective's networks output eps, x0 and two weight logits.
    let weighted_out = |c: usize| (cfg.diffusion.gaussian.objective == ddpm_core::Objective::Weighted).then(|| ddpm_core::Objective::Weighted.output_channels(c));
    match (cfg.model.network()?, item_shape.len()) {
        (Net::Unet(c), 3) => {
            let c = c.with_out_dim(weighted_out(item_shape[0])).with_channels(item_shape[0]).with_learned_variance(learned);
            let shape = [1, item_shape[0], item_shape[1], item_shape[2]];
            w.images(&with_schedule(schedule, move |d: &Device| {
                let m = c.init(d)?;
                m.check_input(shape)?;
                Ok(ImageNetwork::Unet(m))
            }))
        }
        (Net::Unet1d(c), 2) => {
            let c = c.with_out_dim(weighted_out(item_shape[0])).with_channels(item_shape[0]).with_learned_variance(learned);
            let stages = c.dim_mults.len();
            let factor = 1usize << stages.saturating_sub(1);
            let length = item_shape[1];
            if !length.is_multiple_of(factor) {
                return Err(TrainError::config(
                    "model.dim_mults",
                    format!("sequences of length {length} cannot be halved {} times; use a length divisible by {factor} or fewer dim_mults", stages - 1),
                ));
            }
            w.sequences(&with_schedule(schedule, move |d: &Device| Ok(SequenceNetwork::Unet(c.init_1d(d)?))))
        }
        (Net::DdpmUnet(_), 3) => {
            let c = ddpm_unet_config(cfg, item_shape).expect("a ddpm_unet model for images");
            w.images(&with_schedule(schedule, move |d: &Device| Ok(ImageNetwork::DdpmUnet(c.init(d)?))))
        }
        (Net::Uvit(c), 3) => {
            if learned {
                return Err(TrainError::config("diffusion.variance", "the U-ViT has no learned-variance head; use fixed_small"));
            }
            let c = c.with_out_dim(weighted_out(item_shape[0])).with_channels(item_shape[0]);
            let shape = [1, item_shape[0], item_shape[1], item_shape[2]];
            w.images(&with_schedule(schedule, move |d: &Device| {
                let m = c.init(d)?;
                m.check_input(shape)?;
                Ok(ImageNetwork::Uvit(m))
            }))
        }
        (Net::KarrasUnet(c), rank @ (2 | 3)) => {
            if learned || weighted_out(1).is_some() {
                return Err(TrainError::config("model.kind", "the Karras U-Net outputs the data's channels only: no learned variance, no weighted objective"));
            }
            // One more label slot: the null class that dropped labels train (for guidance).
            let classes = c.num_classes.map(|n| n + 1);
            if rank == 3 && item_shape[1] != item_shape[2] {
                return Err(TrainError::config("model.kind", format!("the Karras U-Net takes square images, not {}x{}; resize the data", item_shape[1], item_shape[2])));
            }
            let c = KarrasUnetConfig { size: item_shape[1], ..c }.with_channels(item_shape[0]).with_num_classes(classes);
            if rank == 3 {
                w.images(&with_schedule(schedule, move |d: &Device| Ok(ImageNetwork::Karras(c.init(d)?))))
            } else {
                w.sequences(&with_schedule(schedule, move |d: &Device| Ok(SequenceNetwork::Karras(c.init_1d(d)?))))
            }
        }
        (Net::Mlp(c), 1) => {
            let c = MlpConfig { features: item_shape[0], ..c }.with_out_features(weighted_out(item_shape[0])).with_learned_variance(learned);
            w.vectors(&with_schedule(schedule, move |d: &Device| Ok(c.init(d)?)))
        }
        (_, n) => Err(TrainError::config(
            "model.kind",
            format!(
                "`{}` does not fit {n}-dimensional data items {item_shape:?}; use unet, ddpm_unet, uvit or karras_unet for images [C, H, W], unet1d or karras_unet for sequences [C, L], mlp for vectors [F]",
                cfg.model.kind()
            ),
        )),
    }
}

/// Loads the data and trains.
pub fn run(cfg: &TrainConfig, opts: &RunOptions) -> Result<TrainSummary> {
    let data = data::load(&cfg.data, cfg.run.seed)?;
    struct Train<'a>(&'a TrainConfig, &'a data::InMemory, &'a RunOptions);
    impl AnyRank for Train<'_> {
        type Output = TrainSummary;
        fn run<const D: usize, M: TrainModel<D>>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<TrainSummary> {
            trainer::train::<D, M, _>(self.0, init, self.1, self.2)
        }
    }
    with_model(cfg, &data.item_shape.clone(), Train(cfg, &data, opts))
}
