//! Sampling a trained model in one call: [`Pipeline::load`] takes any form the weights come in (a
//! run folder, a checkpoint folder, the run's `ema.safetensors`, a denoising-diffusion-pytorch
//! `Trainer` checkpoint or state dict, a diffusers pipeline or `UNet2DModel` folder), says which it
//! found, and builds the network and the diffusion; [`Pipeline::sample`] and
//! [`Pipeline::sample_with`] return the samples (tensors' values, and images for image models).
//! `ddpm-train sample` and `ddpm-train export` are thin layers over it.
//!
//! ```no_run
//! use ddpm_train::pipeline::{Pipeline, SampleOptions};
//!
//! let pipe = Pipeline::load("runs/quickstart")?; // or a checkpoint, a diffusers folder, ...
//! println!("{}", pipe.describe());
//! let samples = pipe.sample(16)?; // seeds 0..16, the config's sampler
//! for (seed, image) in samples.seeds.iter().zip(samples.images()) {
//!     image.save(format!("{seed:06}.png")).unwrap();
//! }
//! let fast = pipe.sample_with(&SampleOptions { sampler: Some("dpmpp_2m".into()), steps: Some(20), ..SampleOptions::seeds(0..64) })?;
//! let x: burn::tensor::Tensor<4> = fast.tensor(&burn::tensor::Device::default());
//! # Ok::<(), ddpm_train::TrainError>(())
//! ```

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use ddpm_core::prelude::Process;
use ddpm_models::DdpmUnetConfig;
use ddpm_models::weights::StateDict;
use image::DynamicImage;

use crate::config::{SampleSection, TrainConfig};
use crate::error::{Result, TrainError};
use crate::sample::{ClassifierGuide, Draw, Guidance, Start, Weights};
use crate::TrainModel;

/// The forms weights come in, as [`Source::detect`] tells them apart.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A ddpm-train run folder (`config.toml`, `checkpoints/`): its newest complete checkpoint.
    Run { run: PathBuf, checkpoint: PathBuf },
    /// A ddpm-train checkpoint folder (`state.json`, `ema.bpk`, `model.bpk`, `config.toml`).
    Checkpoint(PathBuf),
    /// A checkpoint's `ema.safetensors`: Burn parameter paths, the config beside it.
    RunSafetensors(PathBuf),
    /// A PyTorch file (`.pt`, `.pth`, `.ckpt`, `.bin`): a denoising-diffusion-pytorch `Trainer`
    /// checkpoint (`model-N.pt`) or a plain `state_dict()` of a network.
    PyTorch(PathBuf),
    /// A `.safetensors` state dict with the reference's (or diffusers') key names, or Burn's paths.
    Safetensors(PathBuf),
    /// A diffusers pipeline folder as `save_pretrained` writes it (`model_index.json`, `unet/`,
    /// `scheduler/`).
    DiffusersPipeline(PathBuf),
    /// A diffusers `UNet2DModel` folder (`config.json`, `diffusion_pytorch_model.safetensors` or
    /// `.bin`).
    DiffusersUnet(PathBuf),
}

impl Source {
    /// Tells which form `path` is, from its name and the files around it.
    pub fn detect(path: impl AsRef<Path>) -> Result<Source> {
        let path = path.as_ref().to_path_buf();
        let err = |message: String| TrainError::Checkpoint { path: path.clone(), message };
        if !path.exists() {
            return Err(err("does not exist".into()));
        }
        if path.is_dir() {
            if path.join("model_index.json").is_file() {
                return Ok(Source::DiffusersPipeline(path));
            }
            if path.join("config.json").is_file() && (path.join(DIFFUSERS_WEIGHTS[0]).is_file() || path.join(DIFFUSERS_WEIGHTS[1]).is_file()) {
                return Ok(Source::DiffusersUnet(path));
            }
            if path.join("state.json").is_file() || path.join(crate::checkpoint::EMA).is_file() {
                return Ok(Source::Checkpoint(path));
            }
            if path.join("checkpoints").is_dir() || path.join(crate::checkpoint::CONFIG).is_file() {
                // Read-only: the run may be training right now; only complete folders are listed.
                let checkpoint = crate::checkpoint::latest(&path)?;
                return Ok(Source::Run { run: path, checkpoint });
            }
            return Err(err(
                "is not a run folder (config.toml, checkpoints/), a checkpoint folder (state.json, ema.bpk), a diffusers pipeline (model_index.json) or a UNet2DModel folder (config.json, diffusion_pytorch_model.safetensors)".into(),
            ));
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "safetensors" => {
                let beside = path.parent().map(|p| p.join("state.json").is_file() && p.join(crate::checkpoint::CONFIG).is_file()).unwrap_or(false);
                Ok(if beside { Source::RunSafetensors(path) } else { Source::Safetensors(path) })
            }
            "pt" | "pth" | "ckpt" | "bin" => Ok(Source::PyTorch(path)),
            _ => Err(err("is not a weights file ddpm-rs reads: use a run or checkpoint folder, .safetensors, .pt/.pth/.ckpt/.bin, or a diffusers folder".into())),
        }
    }

    /// The path the source was found at.
    pub fn path(&self) -> &Path {
        match self {
            Source::Run { run, .. } => run,
            Source::Checkpoint(p) | Source::RunSafetensors(p) | Source::PyTorch(p) | Source::Safetensors(p) | Source::DiffusersPipeline(p) | Source::DiffusersUnet(p) => p,
        }
    }

    /// What was found, in words.
    pub fn describe(&self) -> String {
        match self {
            Source::Run { run, checkpoint } => format!("ddpm-train run {} (newest checkpoint {})", run.display(), checkpoint.file_name().unwrap_or_default().to_string_lossy()),
            Source::Checkpoint(p) => format!("ddpm-train checkpoint {}", p.display()),
            Source::RunSafetensors(p) => format!("ddpm-train weights {} (Burn parameter paths)", p.display()),
            Source::PyTorch(p) => format!("PyTorch file {}", p.display()),
            Source::Safetensors(p) => format!("safetensors state dict {}", p.display()),
            Source::DiffusersPipeline(p) => format!("diffusers pipeline {}", p.display()),
            Source::DiffusersUnet(p) => format!("diffusers UNet2DModel {}", p.display()),
        }
    }

    /// The ddpm-train config that comes with the weights, if any.
    pub fn config_path(&self) -> Option<PathBuf> {
        match self {
            Source::Run { run, .. } => Some(run.join(crate::checkpoint::CONFIG)).filter(|p| p.is_file()),
            Source::Checkpoint(dir) => crate::sample::run_config_of(dir),
            Source::RunSafetensors(p) => p.parent().map(|d| d.join(crate::checkpoint::CONFIG)).filter(|p| p.is_file()),
            _ => None,
        }
    }

    /// Whether the network and the diffusion come from the source itself (diffusers' JSON files).
    pub fn is_diffusers(&self) -> bool {
        matches!(self, Source::DiffusersPipeline(_) | Source::DiffusersUnet(_))
    }
}

/// Weight file names of a diffusers model folder, in the order they are looked for.
pub const DIFFUSERS_WEIGHTS: [&str; 2] = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"];

/// How [`Pipeline::load_with`] loads.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The config (network, data shape, diffusion, sampling defaults). Default: the one saved with
    /// a ddpm-train run or checkpoint; required for PyTorch and safetensors state dicts; unused for
    /// diffusers folders, whose JSON files describe everything.
    pub config: Option<TrainConfig>,
    /// `ema` (default) or `model` for sources that hold both.
    pub weights: Option<Weights>,
    /// The device (default: the config's `run.device`, or Flex).
    pub device: Option<String>,
}

/// A loaded network with its diffusion, ready to sample.
pub struct Pipeline {
    source: Source,
    /// How the weights were read, in words (e.g. "the EMA of a Trainer checkpoint").
    loaded_as: String,
    process: Process,
    model: Box<dyn LoadedModel>,
    item_shape: Vec<usize>,
    device: Device,
    /// The sampling defaults (`[sample]` of the config, or diffusers' DDIM settings).
    pub defaults: SampleSection,
    config: TrainConfig,
    /// The network's settings when it is the DDPM paper's (for diffusers export).
    ddpm_unet: Option<DdpmUnetConfig>,
}

/// Where sampling starts, with owned data (see [`Start`]).
#[derive(Debug, Clone, Default)]
pub enum StartFrom {
    /// Noise drawn from each sample's seed.
    #[default]
    Noise,
    /// Given initial noise, `[N, ..item]` flattened (N = number of seeds).
    InitialNoise(Vec<f32>),
    /// SDEdit: data in the model's range, one row per seed, noised to `strength` in (0, 1].
    Partial { x0: Vec<f32>, strength: f64 },
    /// RePaint inpainting of data (one row per seed) where `mask` (1 = keep) is 0.
    Inpaint { x0: Vec<f32>, mask: Vec<f32>, repaint: ddpm_core::RePaint },
}

/// What to sample; every `None` takes the pipeline's default ([`Pipeline::defaults`]).
#[derive(Debug, Clone, Default)]
pub struct SampleOptions {
    /// One sample per seed; sample `i` draws all its noise from `seeds[i]`.
    pub seeds: Vec<u64>,
    /// `ddpm`, `ddim` or a sigma-space solver's name ([`crate::config::sampler_names`]).
    pub sampler: Option<String>,
    pub steps: Option<usize>,
    pub eta: Option<f64>,
    /// Samples per network call.
    pub batch_size: Option<usize>,
    pub start: StartFrom,
    /// Class-conditional models: the class of every sample.
    pub class: Option<usize>,
    /// Classifier-free guidance scale (CFG++'s lambda with `cfg_pp`).
    pub cond_scale: Option<f64>,
    pub cfg_pp: Option<bool>,
    /// Classifier guidance scale with a trained noise-aware classifier (0: off).
    pub classifier_scale: Option<f64>,
    /// The classifier folder (default: the run's).
    pub classifier: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
    /// Record the x0 estimate of every step for the first batch ([`Samples::trajectory`]).
    pub trajectory: bool,
}

impl SampleOptions {
    /// Options for these seeds, everything else at the pipeline's defaults.
    pub fn seeds(seeds: impl IntoIterator<Item = u64>) -> Self {
        Self { seeds: seeds.into_iter().collect(), ..Self::default() }
    }
}

/// Samples and the seeds they were drawn from.
#[derive(Debug, Clone)]
pub struct Samples {
    pub seeds: Vec<u64>,
    /// Shape of one sample, e.g. `[3, 32, 32]` or `[2]`.
    pub item_shape: Vec<usize>,
    /// All samples, sample after sample, in the model's range ([-1, 1] for images).
    pub values: Vec<f32>,
    /// With [`SampleOptions::trajectory`]: the x0 estimates of the first batch at every step.
    pub trajectory: Vec<crate::sample::TrajectoryFrame>,
}

impl Samples {
    /// The values of sample `i`.
    pub fn item(&self, i: usize) -> &[f32] {
        let n: usize = self.item_shape.iter().product();
        &self.values[i * n..(i + 1) * n]
    }

    /// Image samples as 8-bit images (empty for vectors and sequences).
    pub fn images(&self) -> Vec<DynamicImage> {
        if self.item_shape.len() != 3 {
            return Vec::new();
        }
        (0..self.seeds.len()).map(|i| crate::sample::to_image(self.item(i), &self.item_shape)).collect()
    }

    /// The samples as a tensor `[N, ..item]` on `device`.
    pub fn tensor<const D: usize>(&self, device: &Device) -> burn::tensor::Tensor<D> {
        let mut shape = vec![self.seeds.len()];
        shape.extend_from_slice(&self.item_shape);
        burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(self.values.clone(), shape), device)
    }
}

/// The export formats of [`Pipeline::export`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// denoising-diffusion-pytorch's key names and layouts, as `.safetensors`
    /// (`unet.load_state_dict(safetensors.torch.load_file(path))`).
    Lucidrains,
    /// A diffusers `DDPMPipeline` folder (`DDPMPipeline.from_pretrained(dir)`); DDPM-paper networks.
    Diffusers,
    /// Burn's parameter paths as `.safetensors` (what a checkpoint's `ema.safetensors` holds).
    Safetensors,
}

impl std::str::FromStr for ExportFormat {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "lucidrains" => Ok(Self::Lucidrains),
            "diffusers" => Ok(Self::Diffusers),
            "safetensors" => Ok(Self::Safetensors),
            other => Err(TrainError::config("--to", format!("`{other}` is not an export format; use lucidrains, diffusers or safetensors"))),
        }
    }
}

/// A network of any rank behind one interface, so a pipeline can hold whichever the config names.
trait LoadedModel {
    fn draw(&self, what: &Draw<'_>, on_batch: &mut dyn FnMut(&[u64], Vec<f32>) -> Result<()>) -> Result<()>;
    fn export(&self, format: ExportFormat, out: &Path, process: &Process, unet: Option<&DdpmUnetConfig>, clip: ddpm_core::X0Clip) -> Result<()>;
    fn write_checkpoint(&self, dir: &Path, state: &crate::checkpoint::RunState, config: &str) -> Result<()>;
}

struct Loaded<const D: usize, M>(M);

impl<const D: usize, M: TrainModel<D>> LoadedModel for Loaded<D, M> {
    fn write_checkpoint(&self, dir: &Path, state: &crate::checkpoint::RunState, config: &str) -> Result<()> {
        crate::checkpoint::save_imported(dir, &self.0, state, config)
    }

    fn draw(&self, what: &Draw<'_>, on_batch: &mut dyn FnMut(&[u64], Vec<f32>) -> Result<()>) -> Result<()> {
        crate::sample::draw::<D, M>(what, &self.0, on_batch)
    }

    fn export(&self, format: ExportFormat, out: &Path, process: &Process, unet: Option<&DdpmUnetConfig>, clip: ddpm_core::X0Clip) -> Result<()> {
        match format {
            ExportFormat::Safetensors => {
                let mut store = burn::store::SafetensorsStore::from_file(out);
                burn::store::ModuleSnapshot::save_into(&self.0, &mut store)
                    .map_err(|e| TrainError::Io { path: out.to_path_buf(), message: format!("cannot write safetensors: {e}") })
            }
            ExportFormat::Lucidrains => {
                let state = self.0.reference_state_dict(ReferenceFormat::Lucidrains)?;
                Ok(ddpm_models::weights::write_safetensors(out, &state)?)
            }
            ExportFormat::Diffusers => {
                let unet = unet.ok_or_else(|| TrainError::config("model.kind", "only the DDPM paper's network (ddpm_unet) has a diffusers counterpart; export it with --to lucidrains or --to safetensors"))?;
                self.0.write_diffusers_pipeline(out, unet, process, clip)
            }
        }
    }
}

/// The key naming of an exported state dict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceFormat {
    /// denoising-diffusion-pytorch.
    Lucidrains,
    /// Hugging Face diffusers.
    Diffusers,
}

impl Pipeline {
    /// Loads any form of weights that carries its own settings (a run or checkpoint folder, a
    /// checkpoint's `ema.safetensors`, a diffusers folder), with the EMA weights where there are two.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// [`Pipeline::load`] with a config (required for state dicts), a choice of weights and a device.
    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let source = Source::detect(path)?;
        let cfg = match (&opts.config, source.config_path()) {
            (Some(c), _) => c.clone(),
            (None, Some(p)) => crate::config::load_config(&p, &[])?,
            (None, None) if source.is_diffusers() => crate::interop::diffusers_config(source.path())?,
            (None, None) => {
                return Err(TrainError::config(
                    "--config",
                    format!("{} carries no network settings: give the config of the network it holds (--config FILE, or LoadOptions::config)", source.describe()),
                ));
            }
        };
        let mut cfg = cfg;
        if let Some(d) = &opts.device {
            cfg.run.device = d.clone();
        }
        Self::from_config(&cfg, source, opts.weights.unwrap_or(Weights::Ema))
    }

    /// Builds the network and diffusion of `cfg` and loads the weights of `source` into it.
    pub fn from_config(cfg: &TrainConfig, source: Source, weights: Weights) -> Result<Self> {
        let item_shape = crate::data::item_shape(&cfg.data)?;
        let device = ddpm_io::device::parse_device(&cfg.run.device)?;
        struct Build<'a> {
            source: &'a Source,
            weights: Weights,
            device: &'a Device,
        }
        impl crate::AnyRank for Build<'_> {
            type Output = (Box<dyn LoadedModel>, String);
            fn run<const D: usize, M: TrainModel<D>>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<(Box<dyn LoadedModel>, String)> {
                let (model, how) = load_weights(self.source, init(self.device)?, self.weights)?;
                Ok((Box::new(Loaded::<D, M>(model)), how))
            }
        }
        let (model, loaded_as) = crate::with_model(cfg, &item_shape, Build { source: &source, weights, device: &device })?;
        let ddpm_unet = crate::ddpm_unet_config(cfg, &item_shape);
        Ok(Self { source, loaded_as, process: cfg.build_diffusion()?, model, item_shape, device, defaults: cfg.sample.clone(), config: cfg.clone(), ddpm_unet })
    }

    /// Where the weights came from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// What was found and how it was read, in words.
    pub fn describe(&self) -> String {
        format!("{}, loaded as {}", self.source.describe(), self.loaded_as)
    }

    /// The diffusion process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The shape of one sample.
    pub fn item_shape(&self) -> &[usize] {
        &self.item_shape
    }

    /// The config the pipeline was built from (for a diffusers folder, the one its JSON files
    /// translate to).
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// `n` samples from seeds `0..n` with the default sampler.
    pub fn sample(&self, n: usize) -> Result<Samples> {
        self.sample_with(&SampleOptions::seeds(0..n as u64))
    }

    /// Samples as `opts` asks; every option left `None` takes the pipeline's default.
    pub fn sample_with(&self, opts: &SampleOptions) -> Result<Samples> {
        if opts.seeds.is_empty() {
            return Err(TrainError::config("seeds", "no seeds: ask for at least one sample"));
        }
        let mut s = self.defaults.clone();
        if let Some(v) = &opts.sampler {
            s.sampler = v.clone();
        }
        if let Some(v) = opts.steps {
            s.steps = v;
        }
        if opts.eta.is_some() {
            s.eta = opts.eta;
        }
        if let Some(v) = opts.batch_size {
            s.batch_size = v;
        }
        if opts.class.is_some() {
            s.class = opts.class;
        }
        if let Some(v) = opts.cond_scale {
            s.cond_scale = v;
        }
        if let Some(v) = opts.cfg_pp {
            s.cfg_pp = v;
        }
        if let Some(v) = opts.classifier_scale {
            s.classifier_scale = v;
        }
        if opts.classifier.is_some() {
            s.classifier = opts.classifier.clone();
        }
        let sampler = s.sampler()?;
        let item: usize = self.item_shape.iter().product();
        let rows = |what: &str, values: &[f32]| -> Result<()> {
            if values.len() != opts.seeds.len() * item {
                return Err(TrainError::config(
                    what,
                    format!("holds {} values; {} samples of {:?} need {}", values.len(), opts.seeds.len(), self.item_shape, opts.seeds.len() * item),
                ));
            }
            Ok(())
        };
        let start = match &opts.start {
            StartFrom::Noise => Start::Noise,
            StartFrom::InitialNoise(v) => {
                rows("initial noise", v)?;
                Start::InitialNoise(v)
            }
            StartFrom::Partial { x0, strength } => {
                rows("SDEdit input", x0)?;
                Start::Partial { x0, strength: *strength }
            }
            StartFrom::Inpaint { x0, mask, repaint } => {
                rows("inpainting input", x0)?;
                rows("inpainting mask", mask)?;
                Start::Inpaint { x0, mask, repaint: *repaint }
            }
        };
        let mut cfg = self.config.clone();
        cfg.sample = s.clone();
        let (guidance, classifier) = (Guidance::from_config(&cfg)?, ClassifierGuide::from_config(&cfg, &self.item_shape, &self.device)?);
        let mut values = Vec::with_capacity(opts.seeds.len() * item);
        if opts.trajectory && !matches!(start, Start::Noise) {
            return Err(TrainError::config("--trajectory", "a trajectory is drawn from noise; leave out --init-noise, --from and --inpaint"));
        }
        let frames = std::cell::RefCell::new(Vec::new());
        let ctx = Draw {
            trajectory: opts.trajectory.then_some(&frames),
            start,
            guidance,
            classifier: classifier.as_ref(),
            clip: s.clip,
            progress: crate::progress::ProgressMode::new(!opts.progress, self.config.run.progress_seconds),
            ..Draw::new(&self.process, &self.item_shape, &self.device, &sampler, &opts.seeds, s.batch_size)
        };
        self.model.draw(&ctx, &mut |_, v| {
            values.extend(v);
            Ok(())
        })?;
        Ok(Samples { seeds: opts.seeds.clone(), item_shape: self.item_shape.clone(), values, trajectory: frames.into_inner() })
    }

    /// Writes the weights as a ddpm-train checkpoint folder `out` (`ddpm-train import`), with the
    /// config they were loaded with; sampling, evaluating and exporting it work like for any
    /// checkpoint, and `--resume` from it trains on with a fresh optimiser.
    pub fn import_to(&self, out: impl AsRef<Path>) -> Result<()> {
        refuse_existing(out.as_ref())?;
        let cfg = &self.config;
        let state = crate::checkpoint::RunState {
            step: 0,
            rng_word_pos: 0,
            noise_word_pos: 0,
            epoch: 0,
            offset: 0,
            loss: f64::NAN,
            best_eval: None,
            run_id: Some(crate::run_dir::new_run_id()),
            imported_from: Some(self.describe()),
        };
        self.model.write_checkpoint(out.as_ref(), &state, &toml::to_string(cfg).expect("a parsed config renders"))
    }

    /// Writes the network's weights in another format: `lucidrains` and `safetensors` to the file
    /// `out`, `diffusers` to the pipeline folder `out`.
    pub fn export(&self, format: ExportFormat, out: impl AsRef<Path>) -> Result<()> {
        refuse_existing(out.as_ref())?;
        let clip = self.defaults.clip.unwrap_or(if self.item_shape.len() == 3 { ddpm_core::X0Clip::Static } else { ddpm_core::X0Clip::None });
        self.model.export(format, out.as_ref(), &self.process, self.ddpm_unet.as_ref(), clip)
    }
}

/// Outputs never replace anything: an existing file or a non-empty folder is refused.
fn refuse_existing(out: &Path) -> Result<()> {
    let taken = if out.is_dir() { std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) } else { out.exists() };
    if taken {
        return Err(TrainError::Io { path: out.to_path_buf(), message: "exists and is not empty; choose another output (nothing is overwritten)".into() });
    }
    Ok(())
}

/// Loads the weights of `source` into `model` (built from the matching config).
pub fn load_into<const D: usize, M: TrainModel<D>>(source: &Source, model: M, weights: Weights) -> Result<M> {
    Ok(load_weights(source, model, weights)?.0)
}

/// Loads the weights of `source` into `model`; returns it and how the weights were read.
fn load_weights<const D: usize, M: TrainModel<D>>(source: &Source, model: M, weights: Weights) -> Result<(M, String)> {
    let which = match weights {
        Weights::Ema => "EMA",
        Weights::Model => "online network",
    };
    match source {
        Source::Run { checkpoint, .. } | Source::Checkpoint(checkpoint) => {
            Ok((crate::checkpoint::load_weights(checkpoint, model, weights == Weights::Ema)?, format!("the {which} weights of the checkpoint")))
        }
        Source::RunSafetensors(path) => Ok((load_burn_safetensors(model, path)?, "Burn parameter paths".into())),
        Source::PyTorch(path) => {
            let file = path.display().to_string();
            let all = ddpm_models::weights::read_pytorch(path)?;
            let trainer = all.keys().any(|k| k.starts_with("ema.ema_model.model.") || k.starts_with("model.model."));
            if trainer {
                let which_ref = match weights {
                    Weights::Ema => ddpm_models::weights::TrainerWeights::Ema,
                    Weights::Model => ddpm_models::weights::TrainerWeights::Model,
                };
                let state = ddpm_models::weights::trainer_checkpoint_weights(&all, which_ref, &file)?;
                Ok((model.load_reference_weights(&state, &file)?, format!("the {which} of a denoising-diffusion-pytorch Trainer checkpoint")))
            } else {
                Ok((model.load_reference_weights(&plain_state_dict(all), &file)?, "a state dict".into()))
            }
        }
        Source::Safetensors(path) => {
            let file = path.display().to_string();
            let state = plain_state_dict(ddpm_models::weights::read_safetensors(path)?);
            match model.clone().load_reference_weights(&state, &file) {
                Ok(m) => Ok((m, "a state dict".into())),
                // A file of Burn parameter paths (e.g. a copied ema.safetensors) loads as such.
                Err(reference) => match load_burn_safetensors(model, path) {
                    Ok(m) => Ok((m, "Burn parameter paths".into())),
                    Err(_) => Err(reference),
                },
            }
        }
        Source::DiffusersPipeline(dir) | Source::DiffusersUnet(dir) => {
            let (state, file) = crate::interop::read_diffusers_unet(dir)?;
            Ok((model.load_reference_weights(&state, &file.display().to_string())?, "a diffusers UNet2DModel".into()))
        }
    }
}

/// A state dict with a wrapper's prefix removed: `module.` (DataParallel / DDP) or `model.` when
/// every key carries it.
fn plain_state_dict(state: StateDict) -> StateDict {
    for prefix in ["module.", "_orig_mod."] {
        if !state.is_empty() && state.keys().all(|k| k.starts_with(prefix)) {
            return ddpm_models::weights::strip_prefix(&state, prefix);
        }
    }
    state
}

/// Loads a `.safetensors` file of Burn parameter paths (a checkpoint's `ema.safetensors`); every
/// parameter must be present and every tensor used.
pub fn load_burn_safetensors<M: burn::module::Module>(mut model: M, path: &Path) -> Result<M> {
    let err = |message: String| TrainError::Checkpoint { path: path.to_path_buf(), message };
    let mut store = burn::store::SafetensorsStore::from_file(path);
    let result = burn::store::ModuleSnapshot::load_from(&mut model, &mut store).map_err(|e| err(format!("cannot load: {e}")))?;
    if !result.missing.is_empty() || !result.unused.is_empty() || !result.errors.is_empty() {
        let missing: Vec<&str> = result.missing.iter().map(|(p, _)| p.as_str()).take(5).collect();
        let unused: Vec<&str> = result.unused.iter().map(String::as_str).take(5).collect();
        return Err(err(format!(
            "does not fit the configured network: {} missing ({}), {} unused ({}), {} errors; check the config's [model] against the run that wrote it",
            result.missing.len(),
            missing.join(", "),
            result.unused.len(),
            unused.join(", "),
            result.errors.len()
        )));
    }
    Ok(model)
}
