//! The training configuration: one TOML file, every field documented with its default, unknown keys
//! and wrong types rejected with the file, line and key path, `--set key=value` overrides.

use std::path::{Path, PathBuf};

use ddpm_core::{BetaSchedule, EdmConfig, GaussianDiffusionConfig, ProcessConfig, Sampler, TimestepSpacing};
use ddpm_models::{DdpmUnetConfig, KarrasUnetConfig, MlpConfig, UnetConfig, UvitConfig};
use serde::{Deserialize, Serialize};

use crate::ema::EmaConfig;
use crate::error::{Result, TrainError};
use crate::overlay::{field_names, overlay};

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default)]
    pub run: RunConfig,
    pub data: DataConfig,
    pub model: ModelConfig,
    #[serde(default)]
    pub diffusion: DiffusionSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub sample: SampleSection,
    /// Evaluation during training (off by default).
    #[serde(default)]
    pub eval: EvalSection,
    /// The noise-aware classifier of classifier guidance (`ddpm-train classifier`).
    #[serde(default)]
    pub classifier: ClassifierSection,
}

/// Where the run goes and how it is seeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Run folder (config, checkpoints, samples, metrics). Default `runs/default`.
    #[serde(default = "default_out_dir")]
    pub out_dir: PathBuf,
    /// Seed of every random draw (data order, timesteps, noise). Default 0.
    #[serde(default)]
    pub seed: u64,
    /// Device name (`flex`, `wgpu`, `vulkan`, `cuda:0`, ...). Default `flex`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Data-parallel training on several devices of this machine (e.g. `["cuda:0", "cuda:1"]`):
    /// each batch is split evenly over them and the gradients are summed on the first, which also
    /// holds the optimiser and the EMA. Replaces `device` when given. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// When standard output is not a terminal (nohup, CI, cluster logs), long commands print a
    /// plain progress line on it at most this often, in seconds (a terminal shows burn-train's
    /// dashboard or a live bar; see `--dashboard`). Default 30.
    #[serde(default = "default_progress_seconds")]
    pub progress_seconds: f64,
}

impl RunConfig {
    /// The training devices: `devices`, or `device` alone.
    pub fn devices(&self) -> Result<Vec<burn::tensor::Device>> {
        if self.devices.is_empty() {
            return Ok(vec![ddpm_io::device::parse_device(&self.device)?]);
        }
        self.devices.iter().map(|d| Ok(ddpm_io::device::parse_device(d)?)).collect()
    }
}

fn default_out_dir() -> PathBuf {
    PathBuf::from("runs/default")
}
fn default_device() -> String {
    "flex".into()
}
fn default_progress_seconds() -> f64 {
    30.0
}

impl Default for RunConfig {
    fn default() -> Self {
        Self { out_dir: default_out_dir(), seed: 0, device: default_device(), devices: Vec::new(), progress_seconds: default_progress_seconds() }
    }
}

/// The data set. Images are kept as bytes and mapped to [-1, 1] when a batch is built; vectors
/// and the toy sets are kept as `f32` in the model's range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataConfig {
    /// The embedded image set generated in code (coloured discs, squares and diamonds, labelled by
    /// shape; no download).
    Shapes {
        /// Side of the square images. Default 16.
        #[serde(default = "default_shapes_size")]
        image_size: usize,
        /// Number of images. Default 2048.
        #[serde(default = "default_shapes_count")]
        count: usize,
    },
    /// A 2-D toy distribution.
    Toy {
        /// `gaussian8`, `gaussian25`, `swissroll`, `spiral` or `moons`.
        name: String,
        /// Number of points. Default 20000.
        #[serde(default = "default_toy_count")]
        count: usize,
    },
    /// A folder of images, unlabelled, searched recursively in sorted path order (extensions jpg,
    /// jpeg, png, tiff, tif, webp, bmp in any case; other files and hidden entries are ignored).
    /// Each image is converted to `channels`, scaled with its aspect ratio kept so that it covers
    /// `image_size` (for a square size: the shorter side matches), then center-cropped.
    ImageFolder {
        /// The folder. Required.
        path: PathBuf,
        /// Side of square images (`64`) or `[height, width]`. Required.
        image_size: ImageSize,
        /// 1 (grayscale), 3 (RGB) or 4 (RGBA). Default 3.
        #[serde(default = "default_channels")]
        channels: usize,
        /// Mirror images horizontally at random during training. Default true (the reference
        /// Trainer's `augment_horizontal_flip`).
        #[serde(default = "default_hflip")]
        hflip: bool,
        /// Skip files that cannot be decoded (their count goes to stderr) instead of stopping.
        /// Default false.
        #[serde(default)]
        skip_corrupt: bool,
    },
    /// Aligned CelebA (`img_align_celeba`, 178x218 images): a square cut of side `crop` from each
    /// image, resized to `image_size`. Read with the image-folder loader (RGB), unlabelled.
    Celeba {
        /// The folder of the aligned images. Required.
        path: PathBuf,
        /// Side of the square images. Default 64.
        #[serde(default = "default_celeba_size")]
        image_size: usize,
        /// Side of the square cut before resizing; 0 cuts nothing (the image-folder treatment).
        /// Default 148.
        #[serde(default = "default_celeba_crop")]
        crop: usize,
        /// Top row of the cut. Default: centered ((218 - 148) / 2 = 35 on aligned CelebA);
        /// tqch/ddpm-torch cuts at 40 (and left 15, which is centered).
        #[serde(default)]
        crop_top: Option<usize>,
        /// Mirror images horizontally at random during training. Default true.
        #[serde(default = "default_hflip")]
        hflip: bool,
        /// Skip files that cannot be decoded instead of stopping. Default false.
        #[serde(default)]
        skip_corrupt: bool,
    },
    /// CIFAR-10 (binary version), 32x32 RGB, labelled with 10 classes.
    Cifar10 {
        /// Folder holding `cifar-10-batches-bin/` or `cifar-10-binary.tar.gz`. Default
        /// `$DDPM_DATA_DIR/cifar10`, else `$XDG_CACHE_HOME/ddpm-rs/datasets/cifar10`, else
        /// `$HOME/.cache/ddpm-rs/datasets/cifar10`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        root: Option<PathBuf>,
        /// Download the archive when it is missing. Default true.
        #[serde(default = "default_download")]
        download: bool,
        /// `train` (50000 images) or `test` (10000). Default `train`.
        #[serde(default)]
        split: Split,
        /// Mirror images horizontally at random during training. Default true.
        #[serde(default = "default_hflip")]
        hflip: bool,
        /// Base URL to fetch `cifar-10-binary.tar.gz` from. Default: `$DDPM_DATA_MIRROR`, else
        /// the official <https://www.cs.toronto.edu/~kriz/>.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mirror: Option<String>,
        /// Expected MD5 (hex) of downloaded files by file name, for a mirror that serves other
        /// bytes than the official files. Default: the official checksums.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        md5: std::collections::BTreeMap<String, String>,
    },
    /// MNIST or Fashion-MNIST (IDX files, raw or gzipped), grayscale `[1, image_size,
    /// image_size]`, labelled with 10 classes. Never flipped (digits and clothes have a handedness).
    Mnist {
        /// `mnist` or `fashion`. Default `mnist`.
        #[serde(default)]
        variant: MnistVariant,
        /// Folder holding the IDX files. Default `$DDPM_DATA_DIR/<mnist|fashion-mnist>`, else
        /// `$XDG_CACHE_HOME/ddpm-rs/datasets/<..>`, else `$HOME/.cache/ddpm-rs/datasets/<..>`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        root: Option<PathBuf>,
        /// Download missing files. Default true.
        #[serde(default = "default_download")]
        download: bool,
        /// `train` (60000 images) or `test` (10000). Default `train`.
        #[serde(default)]
        split: Split,
        /// Side of the images: 28 keeps them, larger sizes pad with black borders (32 is the
        /// usual DDPM choice), smaller ones resize (Catmull-Rom). Default 28.
        #[serde(default = "default_mnist_size")]
        image_size: usize,
        /// Base URL to fetch the `.gz` files from. Default: `$DDPM_DATA_MIRROR`, else the
        /// official mirror (torchvision's for MNIST, Zalando's for Fashion-MNIST).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mirror: Option<String>,
        /// Expected MD5 (hex) of downloaded files by file name (e.g.
        /// `"train-images-idx3-ubyte.gz"`), for a mirror that serves other bytes than the
        /// official files. Default: the official checksums.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        md5: std::collections::BTreeMap<String, String>,
    },
    /// 1-D sequences from a `.npy`, `.safetensors` or `.csv` file: a `[N, C, L]` array gives
    /// items `[C, L]`, a `[N, L]` array (or a CSV, one row per item) items `[1, L]`.
    Sequences {
        /// The file. Required.
        path: PathBuf,
        /// The tensor to read from a `.safetensors` file; may be left out when the file holds
        /// one tensor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// `none` (values already in the model's range), `minmax` (each channel to [-1, 1]) or
        /// `standardize` (each channel to mean 0, std 1). Default `none`.
        #[serde(default)]
        normalize: Normalize,
    },
    /// Embedding vectors from a `.npy`, `.safetensors` or `.csv` file: a `[N, D]` array (CSV: one
    /// row per item) gives items `[D]`.
    Embeddings {
        /// The file. Required.
        path: PathBuf,
        /// The tensor to read from a `.safetensors` file; may be left out when the file holds
        /// one tensor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// `none` (values already in the model's range), `minmax` (each feature to [-1, 1]) or
        /// `standardize` (each feature to mean 0, std 1). Default `none`.
        #[serde(default)]
        normalize: Normalize,
    },
    /// No data, only the shape of an item (e.g. `[3, 32, 32]`): for sampling imported weights
    /// (`ddpm-train import` writes it); set a real data set to train.
    None {
        /// The shape of one item. Required.
        shape: Vec<usize>,
    },
}

fn default_shapes_size() -> usize {
    16
}
fn default_shapes_count() -> usize {
    2048
}
fn default_toy_count() -> usize {
    20_000
}
fn default_channels() -> usize {
    3
}
fn default_hflip() -> bool {
    true
}
fn default_download() -> bool {
    true
}
fn default_celeba_size() -> usize {
    64
}
fn default_celeba_crop() -> usize {
    148
}
fn default_mnist_size() -> usize {
    28
}

/// The network: `kind` ([`ModelKind`]) plus any field of that network's own config in
/// ddpm-models, laid over its defaults (the reference's) by [`crate::overlay`]: the config is the
/// file format, so every option of every network can be set and no default is written twice.
/// The fields the data and the diffusion decide (channels, sizes, output width, learned variance)
/// are the trainer's. `self_condition` also switches self-conditioning on in the diffusion, as the
/// reference's `GaussianDiffusion` reads it from the network. With `num_classes` the network is
/// class-conditional on the data's labels (one more label is the null class of classifier-free
/// guidance).
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// The `[model]` table without `kind`: field names and values of the kind's config.
    pub options: toml::Table,
}

/// Which network, and the ddpm-models config its options are laid over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// denoising-diffusion-pytorch's `Unet` (images): `ddpm_models::UnetConfig`; `dim` required.
    Unet,
    /// Its `Unet1D` (sequences `[C, L]`): `UnetConfig` built with `init_1d`; `dim` required.
    Unet1d,
    /// The DDPM paper's network (Ho et al. 2020; CIFAR-10: 35.7 M parameters): `DdpmUnetConfig`.
    DdpmUnet,
    /// Simple diffusion's U-ViT (images; pair it with `diffusion.kind = "continuous"`): `UvitConfig`;
    /// `dim` required.
    Uvit,
    /// The EDM2 magnitude-preserving U-Net (`KarrasUnetConfig`) for square images or sequences,
    /// chosen by the data; pair it with `diffusion.kind = "edm"`.
    KarrasUnet,
    /// The MLP for vectors and toy data: `MlpConfig`.
    Mlp,
}

/// A network's config with the file's options laid over its defaults. The fields the trainer
/// sets from the data hold placeholders until the model is built.
#[derive(Debug, Clone)]
pub enum NetworkConfig {
    Unet(UnetConfig),
    Unet1d(UnetConfig),
    DdpmUnet(DdpmUnetConfig),
    Uvit(UvitConfig),
    KarrasUnet(KarrasUnetConfig),
    Mlp(MlpConfig),
}

impl ModelKind {
    pub const ALL: [ModelKind; 6] = [Self::Unet, Self::Unet1d, Self::DdpmUnet, Self::Uvit, Self::KarrasUnet, Self::Mlp];

    /// The `kind` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unet => "unet",
            Self::Unet1d => "unet1d",
            Self::DdpmUnet => "ddpm_unet",
            Self::Uvit => "uvit",
            Self::KarrasUnet => "karras_unet",
            Self::Mlp => "mlp",
        }
    }

    /// The fields the trainer sets from the data, the diffusion or the kind of network.
    pub fn from_data(self) -> &'static [&'static str] {
        match self {
            Self::Unet => &["channels", "out_dim", "learned_variance"],
            // The sequence network's stages all use linear attention.
            Self::Unet1d => &["channels", "out_dim", "learned_variance", "full_attn", "flash_attn"],
            Self::Uvit => &["channels", "out_dim"],
            Self::DdpmUnet => &["resolution", "in_channels", "out_channels", "learned_variance"],
            // Frames and the video-only settings: the trainer has no video data.
            Self::KarrasUnet => &["size", "channels", "frames", "downsample_types", "factorize_space_time_attn"],
            Self::Mlp => &["features", "out_features", "learned_variance"],
        }
    }

    /// The fields without a default, which the file must give.
    pub fn required(self) -> &'static [&'static str] {
        match self {
            Self::Unet | Self::Unet1d | Self::Uvit => &["dim"],
            Self::DdpmUnet | Self::KarrasUnet | Self::Mlp => &[],
        }
    }

    /// Every option a file may set for this kind.
    pub fn options(self) -> Vec<&'static str> {
        let names = match self {
            Self::Unet => field_names::<UnetConfig>(),
            Self::Unet1d => field_names::<UnetConfig>(),
            Self::DdpmUnet => field_names::<DdpmUnetConfig>(),
            Self::Uvit => field_names::<UvitConfig>(),
            Self::KarrasUnet => field_names::<KarrasUnetConfig>(),
            Self::Mlp => field_names::<MlpConfig>(),
        };
        names.iter().copied().filter(|n| !self.from_data().contains(n)).collect()
    }
}

impl ModelConfig {
    /// A `kind` with no options (every default).
    pub fn new(kind: ModelKind) -> Self {
        Self { kind, options: toml::Table::new() }
    }

    /// This config with `key` set to `value`.
    pub fn with(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.options.insert(key.to_owned(), value.into());
        self
    }

    /// The options laid over the kind's config.
    pub fn network(&self) -> Result<NetworkConfig> {
        self.checked().map_err(|m| TrainError::config("model", m))
    }

    fn laid_over<C: Serialize + serde::de::DeserializeOwned>(&self, defaults: &C) -> std::result::Result<C, String> {
        // Values are checked before presence, so that each key's error is its own.
        let config = overlay(defaults, &self.options, self.kind.from_data())?;
        match self.kind.required().iter().find(|k| !self.options.contains_key(**k)) {
            Some(missing) => Err(format!("missing field `{missing}`")),
            None => Ok(config),
        }
    }

    fn checked(&self) -> std::result::Result<NetworkConfig, String> {
        // Placeholders for the fields the trainer sets; the required ones come from the file.
        Ok(match self.kind {
            ModelKind::Unet => NetworkConfig::Unet(self.laid_over(&UnetConfig::new(0))?),
            ModelKind::Unet1d => NetworkConfig::Unet1d(self.laid_over(&UnetConfig::new(0))?),
            ModelKind::DdpmUnet => NetworkConfig::DdpmUnet(self.laid_over(&DdpmUnetConfig::new())?),
            ModelKind::Uvit => NetworkConfig::Uvit(self.laid_over(&UvitConfig::new(0))?),
            ModelKind::KarrasUnet => NetworkConfig::KarrasUnet(self.laid_over(&KarrasUnetConfig::new(0))?),
            ModelKind::Mlp => NetworkConfig::Mlp(self.laid_over(&MlpConfig::new(0))?),
        })
    }

    /// Whether the network takes the previous x0 estimate.
    pub fn self_condition(&self) -> bool {
        match self.checked() {
            Ok(NetworkConfig::Unet(c)) => c.self_condition,
            Ok(NetworkConfig::Unet1d(c)) => c.self_condition,
            Ok(NetworkConfig::KarrasUnet(c)) => c.self_condition,
            Ok(NetworkConfig::Mlp(c)) => c.self_condition,
            Ok(NetworkConfig::DdpmUnet(_) | NetworkConfig::Uvit(_)) | Err(_) => false,
        }
    }

    /// The number of classes of a class-conditional network (the data's labels).
    pub fn num_classes(&self) -> Option<usize> {
        match self.checked().ok()? {
            NetworkConfig::Unet(c) => c.num_classes,
            NetworkConfig::Unet1d(c) => c.num_classes,
            NetworkConfig::DdpmUnet(c) => c.num_classes,
            NetworkConfig::Uvit(c) => c.num_classes,
            NetworkConfig::KarrasUnet(c) => c.num_classes,
            NetworkConfig::Mlp(c) => c.num_classes,
        }
    }

    /// The `kind` name.
    pub fn kind(&self) -> &'static str {
        self.kind.name()
    }
}

impl NetworkConfig {
    /// Every field of the config as TOML (unset optional fields left out).
    fn fields(&self) -> std::result::Result<toml::Table, toml::ser::Error> {
        match self {
            Self::Unet(c) | Self::Unet1d(c) => toml::Table::try_from(c),
            Self::DdpmUnet(c) => toml::Table::try_from(c),
            Self::Uvit(c) => toml::Table::try_from(c),
            Self::KarrasUnet(c) => toml::Table::try_from(c),
            Self::Mlp(c) => toml::Table::try_from(c),
        }
    }
}

impl ModelConfig {
    /// `kind` and every option with its value, defaults included, without the fields the
    /// trainer sets (the raw options when they do not resolve).
    fn resolved(&self) -> toml::Table {
        let mut table = self.checked().ok().and_then(|n| n.fields().ok()).unwrap_or_else(|| self.options.clone());
        table.retain(|k, _| !self.kind.from_data().contains(&k));
        table.insert("kind".into(), toml::Value::String(self.kind.name().into()));
        table
    }
}

/// Two configs are equal when they give the same network (`attn_heads = 4` is `[4]`).
impl PartialEq for ModelConfig {
    fn eq(&self, other: &Self) -> bool {
        self.resolved() == other.resolved()
    }
}

/// The resolved table, as `ddpm-train config --print` shows it.
impl Serialize for ModelConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.resolved().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut options = toml::Table::deserialize(deserializer)?;
        let kind = options.remove("kind").ok_or_else(|| D::Error::missing_field("kind"))?;
        let kind = ModelKind::deserialize(kind).map_err(|e| D::Error::custom(e.message()))?;
        let config = Self { kind, options };
        config.checked().map_err(D::Error::custom)?;
        Ok(config)
    }
}

/// The diffusion process: `kind`, then the process's own config from ddpm-core laid over its
/// defaults (the reference's) by [`crate::overlay`], so every field can be set: the keys at the
/// top of the table are `GaussianDiffusionConfig`'s (the objective, variance, loss and schedule
/// keys apply to the continuous-time process too), `[diffusion.edm]` is `EdmConfig`'s and
/// `[diffusion.continuous]` the continuous-time settings. `beta_schedule` takes a name
/// (`cosine`) or a table with `kind` and parameters. Self-conditioning follows the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffusionSection {
    /// `gaussian` (discrete-time DDPM and its variants), `edm` (Karras et al. 2022, the
    /// reference's `ElucidatedDiffusion`; samples with the sigma-space solvers, e.g.
    /// `sample.sampler = "heun"`) or `continuous`. Default `gaussian`.
    #[serde(default)]
    pub kind: ProcessKind,
    /// EDM's settings (used with `kind = "edm"`); the grid's `rho` is `sample.rho`.
    #[serde(default = "EdmOptions::defaults", with = "EdmOptions")]
    pub edm: EdmConfig,
    /// Continuous-time settings (used with `kind = "continuous"`).
    #[serde(default)]
    pub continuous: ContinuousSection,
    /// The discrete-time process (and the objective, variance and loss of every kind).
    #[serde(flatten, with = "GaussianOptions")]
    pub gaussian: GaussianDiffusionConfig,
}

/// `[diffusion]`'s own keys laid over `GaussianDiffusionConfig`; `self_condition` is the
/// network's.
struct GaussianOptions;

impl GaussianOptions {
    const FROM_NETWORK: &'static [&'static str] = &["self_condition"];

    fn serialize<S: serde::Serializer>(c: &GaussianDiffusionConfig, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut t = toml::Table::try_from(c).map_err(serde::ser::Error::custom)?;
        t.retain(|k, _| !Self::FROM_NETWORK.contains(&k));
        t.serialize(s)
    }

    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<GaussianDiffusionConfig, D::Error> {
        use serde::de::Error as _;
        let mut options = toml::Table::deserialize(d)?;
        // A schedule by name: its table with the name's parameters.
        if let Some(toml::Value::String(name)) = options.get("beta_schedule") {
            let schedule: BetaSchedule = name.parse().map_err(|e: ddpm_core::Error| D::Error::custom(e.to_string()))?;
            options.insert("beta_schedule".into(), toml::Value::try_from(&schedule).map_err(D::Error::custom)?);
        }
        overlay(&GaussianDiffusionConfig::new(), &options, Self::FROM_NETWORK).map_err(D::Error::custom)
    }
}

/// `[diffusion.edm]` laid over `EdmConfig`; the grid and EDM's own sampler are `[sample]`'s.
struct EdmOptions;

impl EdmOptions {
    const FROM_SAMPLE: &'static [&'static str] = &["rho", "num_sample_steps", "s_churn", "s_tmin", "s_tmax", "s_noise"];

    fn defaults() -> EdmConfig {
        EdmConfig::new()
    }

    fn serialize<S: serde::Serializer>(c: &EdmConfig, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut t = toml::Table::try_from(c).map_err(serde::ser::Error::custom)?;
        t.retain(|k, _| !Self::FROM_SAMPLE.contains(&k));
        t.serialize(s)
    }

    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<EdmConfig, D::Error> {
        let options = toml::Table::deserialize(d)?;
        overlay(&EdmConfig::new(), &options, Self::FROM_SAMPLE).map_err(serde::de::Error::custom)
    }
}

/// Which diffusion process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessKind {
    #[default]
    Gaussian,
    Edm,
    Continuous,
}

/// Continuous-time diffusion's settings (the reference's `ContinuousTimeGaussianDiffusion`; with
/// `diffusion.objective = "pred_v"` its `VParamContinuousTimeGaussianDiffusion`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContinuousSection {
    /// The log-SNR schedule: `linear` (DDPM's betas in continuous form), `cosine`,
    /// `logsnr_cosine` (simple diffusion's, log-SNR 15 to -15), or `learned` (a monotonic network
    /// trained with the model between the linear schedule's end points). Default `linear` (the
    /// reference's).
    #[serde(default = "default_log_snr_schedule")]
    pub schedule: String,
    /// Steps of the ancestral sampler (`sample.sampler = "ddpm"`). Default 500 (the reference's).
    #[serde(default = "default_continuous_steps")]
    pub num_sample_steps: usize,
    /// Simple diffusion's shifted schedule: images of the data's side are noised like images of
    /// side `noise_d` (`l + 2 ln(noise_d / image_size)`; e.g. 64 for 256-pixel images). Default
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_d: Option<f64>,
    /// Simple diffusion's interpolated schedule: shifted to `noise_d_low` at t = 1 and to
    /// `noise_d_high` at t = 0 (both or neither). Default unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_d_low: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_d_high: Option<f64>,
    /// Weigh the loss as simple diffusion does (v: `min(snr, g) / (snr + 1)`, eps:
    /// `min(snr, g) / snr`, with `g = diffusion.min_snr_gamma` or no clipping). Default false (the
    /// reference's continuous-time classes weigh every time 1 unless min-SNR is set).
    #[serde(default)]
    pub snr_weighted: bool,
    /// The learned schedule's hidden width. Default 1024 (the reference's).
    #[serde(default = "default_learned_hidden")]
    pub learned_hidden_dim: usize,
    /// Share of the gradient that trains the learned schedule. Default 1.
    #[serde(default = "default_learned_frac")]
    pub learned_frac_gradient: f64,
}

fn default_learned_hidden() -> usize {
    1024
}
fn default_learned_frac() -> f64 {
    1.0
}

fn default_log_snr_schedule() -> String {
    "linear".into()
}
fn default_continuous_steps() -> usize {
    500
}

impl Default for ContinuousSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl Default for DiffusionSection {
    fn default() -> Self {
        Self { kind: ProcessKind::default(), edm: EdmConfig::new(), continuous: ContinuousSection::default(), gaussian: GaussianDiffusionConfig::new() }
    }
}

impl TrainConfig {
    /// The learned log-SNR schedule, when `diffusion.continuous.schedule = "learned"`.
    pub fn learned_schedule(&self) -> Option<ddpm_core::LearnedLogSnrConfig> {
        let c = &self.diffusion.continuous;
        (self.diffusion.kind == ProcessKind::Continuous && c.schedule == "learned")
            .then(|| ddpm_core::LearnedLogSnrConfig::new().with_hidden_dim(c.learned_hidden_dim).with_frac_gradient(c.learned_frac_gradient))
    }

    /// The diffusion of this run; self-conditioning follows the network, as in the reference.
    pub fn build_diffusion(&self) -> Result<ddpm_core::Process> {
        self.process_config()?.init().map_err(|e| TrainError::config("diffusion", e.to_string()))
    }

    /// The process config of this run: the `[diffusion]` section with what the rest of the
    /// config decides (self-conditioning from the network, EDM's `rho` from `[sample]`, the
    /// shifted schedules' image side from the data), checked against the network.
    pub fn process_config(&self) -> Result<ProcessConfig> {
        let self_condition = self.model.self_condition();
        let d = &self.diffusion;
        let learned_variance = d.gaussian.variance.is_learned();
        Ok(match d.kind {
            ProcessKind::Gaussian => ProcessConfig::Gaussian(d.gaussian.clone().with_self_condition(self_condition)),
            ProcessKind::Edm => {
                if learned_variance {
                    return Err(TrainError::config("diffusion.variance", "EDM has no learned variance; leave diffusion.variance at fixed_small with kind = \"edm\""));
                }
                ProcessConfig::Edm { edm: d.edm.clone().with_rho(self.sample.rho), self_condition }
            }
            ProcessKind::Continuous => {
                if self_condition {
                    return Err(TrainError::config("model.self_condition", "continuous-time diffusion has no self-conditioning (nor has the reference's); switch it off"));
                }
                if learned_variance {
                    return Err(TrainError::config("diffusion.variance", "continuous-time diffusion has no learned variance; leave it at fixed_small"));
                }
                let c = &d.continuous;
                let learned = self.learned_schedule();
                let schedule: ddpm_core::LogSnrSchedule = if learned.is_some() {
                    ddpm_core::LogSnrSchedule::Linear
                } else {
                    c.schedule.parse().map_err(|e: ddpm_core::Error| TrainError::config("diffusion.continuous.schedule", e.to_string()))?
                };
                let image_d = || -> Result<f64> {
                    match self.data.stated_item_shape().transpose()? {
                        Some(shape) if shape.len() == 3 => Ok(shape[1].max(shape[2]) as f64),
                        _ => Err(TrainError::config("diffusion.continuous.noise_d", "the shifted schedules are for images (they shift by the image side)")),
                    }
                };
                use ddpm_core::continuous::LogSnrShift;
                let shift = match (c.noise_d, c.noise_d_low, c.noise_d_high) {
                    (None, None, None) => None,
                    (Some(noise_d), None, None) => Some(LogSnrShift::Shifted { image_d: image_d()?, noise_d }),
                    (None, Some(noise_d_low), Some(noise_d_high)) => Some(LogSnrShift::Interpolated { image_d: image_d()?, noise_d_low, noise_d_high }),
                    _ => {
                        return Err(TrainError::config(
                            "diffusion.continuous.noise_d",
                            "set noise_d (shifted schedule) or both noise_d_low and noise_d_high (interpolated), not a mix",
                        ));
                    }
                };
                ProcessConfig::Continuous(
                    ddpm_core::ContinuousDiffusionConfig::new()
                        .with_schedule(schedule)
                        .with_shift(shift)
                        .with_learned(learned)
                        .with_snr_weighted(c.snr_weighted)
                        .with_objective(d.gaussian.objective)
                        .with_min_snr_gamma(d.gaussian.min_snr_gamma)
                        .with_num_sample_steps(c.num_sample_steps),
                )
            }
        })
    }
}

/// Optimisation and bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Optimiser steps. Default 100000 (the reference Trainer's `train_num_steps`).
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Batch size. Default 16 (the reference Trainer's).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Adam learning rate. Default 1e-4 (the reference Trainer's `train_lr`).
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Adam betas. Default (0.9, 0.99) (the reference Trainer's).
    #[serde(default = "default_betas")]
    pub adam_betas: [f64; 2],
    /// Decoupled weight decay (AdamW); 0 is plain Adam.
    #[serde(default)]
    pub weight_decay: f64,
    /// Linear learning-rate warm-up steps. Default 0.
    #[serde(default)]
    pub warmup_steps: usize,
    /// Learning rate after the warm-up: `constant` (the reference's), `cosine` (to 0 at the last
    /// step) or `linear` (to 0 at the last step). Default `constant`.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Batches whose gradients are summed (each loss divided by this) before one optimiser step,
    /// the reference's `gradient_accumulate_every`. Default 1.
    #[serde(default = "default_accum")]
    pub grad_accum: usize,
    /// Share of training items whose class label is replaced by the null class, so that one
    /// network also learns the unconditional model for classifier-free guidance (class-conditional
    /// models only). Default 0.1.
    #[serde(default = "default_cond_drop")]
    pub cond_drop_prob: f64,
    /// Global gradient-norm clip (`torch.nn.utils.clip_grad_norm_`); 0 is off. Default 1.0.
    #[serde(default = "default_clip")]
    pub grad_clip: f64,
    /// EMA of the weights.
    #[serde(default)]
    pub ema: EmaConfig,
    /// EDM2's power-function averages for post-hoc EMA (off unless `sigma_rels` is set).
    #[serde(default)]
    pub post_hoc_ema: crate::ema::PostHocEmaConfig,
    /// Save a checkpoint every this many steps. Default 1000.
    #[serde(default = "default_every")]
    pub checkpoint_every: usize,
    /// Checkpoints kept. Default 3.
    #[serde(default = "default_keep")]
    pub keep_last: usize,
    /// Write an EMA sample grid every this many steps (0: only at the end). Default 1000.
    #[serde(default = "default_every")]
    pub sample_every: usize,
    /// Images in a sample grid. Default 25 (the reference Trainer's `num_samples`).
    #[serde(default = "default_num_samples")]
    pub num_samples: usize,
    /// Log a metrics line every this many steps. Default 50.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
}

fn default_cond_drop() -> f64 {
    0.1
}
fn default_accum() -> usize {
    1
}
fn default_steps() -> usize {
    100_000
}
fn default_batch() -> usize {
    16
}
fn default_lr() -> f64 {
    1e-4
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.99]
}
fn default_clip() -> f64 {
    1.0
}
fn default_every() -> usize {
    1000
}
fn default_keep() -> usize {
    3
}
fn default_num_samples() -> usize {
    25
}
fn default_log_every() -> usize {
    50
}

impl Default for TrainSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// The learning rate over the run, after the linear warm-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    #[default]
    Constant,
    Cosine,
    Linear,
}

impl TrainSection {
    /// The learning rate of optimiser step `step` (1-based): `lr * step / warmup` during the warm-up,
    /// then constant, or decaying to 0 at `steps` along a half cosine or a line.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step <= self.warmup_steps && self.warmup_steps > 0 {
            return self.lr * step as f64 / self.warmup_steps as f64;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps.min(step)) as f64 / span).clamp(0.0, 1.0);
        match self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            LrSchedule::Linear => self.lr * (1.0 - progress),
        }
    }
}

/// How samples are drawn (grids during training, and `ddpm-train sample`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSection {
    /// `ddpm` (ancestral, T steps), `ddim`, or a sigma-space solver: `euler`, `euler_ancestral`,
    /// `heun`, `dpmpp_2m`, `dpmpp_2m_sde`, `dpmpp_3m_sde` (these work with eps, x0 and v models; see
    /// `ddpm_core::karras::SOLVERS`). Default `ddim`.
    #[serde(default = "default_sampler")]
    pub sampler: String,
    /// Steps of DDIM and the sigma-space solvers (Heun calls the network 2 * steps - 1 times).
    /// Default 50.
    #[serde(default = "default_sample_steps")]
    pub steps: usize,
    /// Noise scale: DDIM's eta (default 0) or that of `euler_ancestral`, `dpmpp_2m_sde` and `dpmpp_3m_sde`
    /// (default 1).
    #[serde(default)]
    pub eta: Option<f64>,
    /// Timestep spacing of DDIM (`linspace`, the reference's, or `uniform`, `quadratic`, `leading`,
    /// `trailing`). Default `linspace`.
    #[serde(default)]
    pub spacing: TimestepSpacing,
    /// Noise levels of the sigma-space solvers: `karras` (rho below), `exponential` or `discrete`
    /// (the model's own, evenly spaced in t). Default `karras`.
    #[serde(default = "default_sigma_spacing")]
    pub sigma_spacing: String,
    /// Rho of the Karras spacing. Default 7.
    #[serde(default = "default_rho")]
    pub rho: f64,
    /// The sigma-space grid starts at the smaller of this and the model's largest sigma (which is
    /// about 2e4 for the cosine schedule and infinite with zero terminal SNR). Default 80 (EDM's).
    #[serde(default = "default_sigma_max")]
    pub sigma_max: f64,
    /// EDM's churn for `euler` and `heun`: `s_churn` (0 = off), `s_tmin`, `s_tmax`, `s_noise`.
    #[serde(default)]
    pub churn: ddpm_core::Churn,
    /// Samples per network call. Default 64.
    #[serde(default = "default_sample_batch")]
    pub batch_size: usize,
    /// Classifier-free guidance scale for class-conditional models: 1 is the conditional model,
    /// 0 the unconditional one, larger values push samples toward their class. Default 1.
    #[serde(default = "default_cond_scale")]
    pub cond_scale: f64,
    /// Rescaling of the guided output toward the conditional output's spread (0: off). Default 0.
    #[serde(default)]
    pub rescaled_phi: f64,
    /// Adaptive projected guidance (the reference's `remove_parallel_component`): the share of
    /// the guidance update along the conditional output that is kept; 0 removes it, which stops
    /// over-saturation at high scales. Default unset (plain guidance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_parallel: Option<f64>,
    /// Classifier guidance (Dhariwal & Nichol 2021) with the noise-aware classifier trained by
    /// `ddpm-train classifier`: the scale `s` of `grad log p(y | x_t)` (0: off). Works with
    /// unconditional and class-conditional models of a Gaussian diffusion. Default 0.
    #[serde(default)]
    pub classifier_scale: f64,
    /// The classifier's folder. Default: `classifier.dir` of the run (`RUN/classifier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<PathBuf>,
    /// CFG++ (Chung et al. 2024): `cond_scale` becomes lambda in [0, 1] (0.2 to 0.8 are typical)
    /// and the sampler re-noises with the unconditional output; works with `ddim`, `euler` and
    /// `euler_ancestral`. Default false.
    #[serde(default)]
    pub cfg_pp: bool,
    /// The class to sample for class-conditional models; unset, sample `i` (seed order) takes
    /// class `i mod num_classes`. Default unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<usize>,
    /// How x0 predictions are kept in range while sampling: `{ kind = "static" }` (clamp to
    /// [-1, 1]), `{ kind = "none" }` or `{ kind = "dynamic", percentile = 0.995 }` (Imagen's
    /// dynamic thresholding). Default: static for images, none for vectors and sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<ddpm_core::X0Clip>,
    /// Makes `sampler = "ddim"` diffusers' DDIM (`DDIMScheduler` as `DDIMPipeline` runs it): each
    /// timestep steps to `t - T div steps`, eps is not re-derived from the clipped x0, `spacing`
    /// is one of `leading`, `trailing`, `diffusers_linspace`. Keys: `steps_offset` (default 0) and
    /// `set_alpha_to_one` (default true: the last step returns the x0 prediction). Written by
    /// `ddpm-train import` for diffusers pipelines. Default unset (the reference's DDIM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diffusers_ddim: Option<DiffusersDdimSection>,
}

/// diffusers' DDIM settings beyond steps, eta and spacing (see [`SampleSection::diffusers_ddim`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffusersDdimSection {
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default = "default_true")]
    pub set_alpha_to_one: bool,
}

fn default_true() -> bool {
    true
}

fn default_cond_scale() -> f64 {
    1.0
}

fn default_sample_batch() -> usize {
    64
}
fn default_sigma_spacing() -> String {
    "karras".into()
}
fn default_rho() -> f64 {
    7.0
}
fn default_sigma_max() -> f64 {
    80.0
}

fn default_sampler() -> String {
    "ddim".into()
}
fn default_sample_steps() -> usize {
    50
}

impl Default for SampleSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// The sampler names of `sample.sampler`: `ddpm`, `ddim`, then every sigma-space solver of
/// [`ddpm_core::karras::SOLVERS`].
pub fn sampler_names() -> Vec<&'static str> {
    ["ddpm", "ddim"].into_iter().chain(ddpm_core::karras::SOLVERS.iter().map(|r| r.name)).collect()
}

/// One line per sampler, for `--help` and docs.
pub fn sampler_help() -> String {
    let mut lines = vec!["ddpm: ancestral sampling, every timestep".to_string(), "ddim: DDIM (eta 0 by default), sample.steps steps".to_string()];
    lines.extend(ddpm_core::karras::SOLVERS.iter().map(|r| format!("{}: {}", r.name, r.help)));
    lines.join("; ")
}

impl SampleSection {
    pub fn sampler(&self) -> Result<Sampler> {
        use ddpm_core::{SigmaSolver, SigmaSpacing};
        let solver = match self.sampler.as_str() {
            "ddpm" => return Ok(Sampler::Ddpm),
            "ddim" => {
                return Ok(match self.diffusers_ddim {
                    None => Sampler::Ddim { steps: self.steps, eta: self.eta.unwrap_or(0.0), spacing: self.spacing },
                    Some(d) => Sampler::DiffusersDdim {
                        steps: self.steps,
                        eta: self.eta.unwrap_or(0.0),
                        spacing: self.spacing,
                        steps_offset: d.steps_offset,
                        set_alpha_to_one: d.set_alpha_to_one,
                    },
                });
            }
            name => match SigmaSolver::from_name(name) {
                Some(solver) => solver,
                None => return Err(TrainError::config("sample.sampler", format!("`{name}` is not a sampler; use one of {}", sampler_names().join(", ")))),
            },
        };
        let spacing = match self.sigma_spacing.as_str() {
            "karras" => SigmaSpacing::Karras { rho: self.rho },
            "exponential" => SigmaSpacing::Exponential,
            "discrete" => SigmaSpacing::Discrete,
            other => return Err(TrainError::config("sample.sigma_spacing", format!("`{other}`: use karras, exponential or discrete"))),
        };
        Ok(Sampler::Sigma { solver, steps: self.steps, spacing, eta: self.eta.unwrap_or(1.0), churn: self.churn, sigma_max: Some(self.sigma_max) })
    }
}

/// Applies `key.path=value` overrides to a TOML document. The value is parsed as TOML (`3`,
/// `2e-4`, `"cosine"`, `[1, 2]`, `true`); a bare word that is not valid TOML is taken as a string.
pub fn apply_overrides(doc: &mut toml::Table, overrides: &[String]) -> Result<()> {
    for item in overrides {
        let (key, raw) = item
            .split_once('=')
            .ok_or_else(|| TrainError::config("--set", format!("`{item}` is not key=value (for example --set train.lr=1e-4)")))?;
        let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
            Ok(mut t) => t.remove("v").expect("parsed key"),
            Err(_) => toml::Value::String(raw.to_string()),
        };
        let parts: Vec<&str> = key.trim().split('.').collect();
        let mut table = &mut *doc;
        for part in &parts[..parts.len() - 1] {
            let entry = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry
                .as_table_mut()
                .ok_or_else(|| TrainError::config(key, format!("`{part}` is a value, not a section")))?;
        }
        table.insert(parts[parts.len() - 1].to_string(), value);
    }
    Ok(())
}

/// Reads and checks a config file, with overrides. Errors name the file, the line and the key path.
pub fn load_config(path: &Path, overrides: &[String]) -> Result<TrainConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Io { path: path.to_path_buf(), message: e.to_string() })?;
    parse_config(&text, &path.display().to_string(), overrides)
}

/// [`load_config`] on text; `origin` names it in errors.
///
/// Errors name the origin, the line of the offending key in `text` (found through the full key
/// path with the TOML parser's spans, also inside `[model]` and `[data]`, whose tagged tables
/// serde reads as a whole), the key path, and what is wrong; an unknown key lists the valid keys
/// of its table, an unknown value the valid values. A key that an override set is said to come
/// from `--set`.
pub fn parse_config(text: &str, origin: &str, overrides: &[String]) -> Result<TrainConfig> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| located(origin, text, &e))?;
    apply_overrides(&mut doc, overrides)?;
    let config = deserialize_config(&doc).map_err(|(path, message)| {
        let path = pin_down(&doc, path, &message);
        config_error(origin, text, overrides, &path, message)
    })?;
    // Names held as strings (the sampler, schedules) are checked now, so their errors carry the
    // line too, not only when a run reaches them.
    check_names(&config).map_err(|e| match e {
        TrainError::Config { line: None, key, message, .. } => {
            let path: Vec<KeySeg> = key.split('.').map(|k| KeySeg::Key(k.to_owned())).collect();
            config_error(origin, text, overrides, &path, message)
        }
        other => other,
    })?;
    Ok(config)
}

/// The values that are strings in the file but must be one of a set of names.
fn check_names(config: &TrainConfig) -> Result<()> {
    config.sample.sampler()?;
    let schedule = &config.diffusion.continuous.schedule;
    if schedule != "learned" {
        schedule.parse::<ddpm_core::LogSnrSchedule>().map_err(|e| TrainError::config("diffusion.continuous.schedule", format!("{e} (or learned)")))?;
    }
    Ok(())
}

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeySeg {
    Key(String),
    Index(usize),
}

/// `model.dim_mults[1]`.
fn key_path_text(path: &[KeySeg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            KeySeg::Key(k) if out.is_empty() => out.push_str(k),
            KeySeg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            KeySeg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Deserializes the whole config; an error is the key path serde reached and the message.
fn deserialize_config(doc: &toml::Table) -> std::result::Result<TrainConfig, (Vec<KeySeg>, String)> {
    serde_path_to_error::deserialize(toml::Value::Table(doc.clone())).map_err(|e| {
        let path = e
            .path()
            .iter()
            .map_while(|seg| match seg {
                serde_path_to_error::Segment::Map { key } | serde_path_to_error::Segment::Enum { variant: key } => Some(KeySeg::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(KeySeg::Index(*index)),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        (path, e.into_inner().message().to_owned())
    })
}

/// The key behind an error whose path stops at a table. serde reads the internally tagged
/// `[model]` and `[data]` (and untagged values) as a whole, so their errors name only the table;
/// the key is the one whose value alone (with the table's `kind`) gives the same error, and
/// without which the error changes. An unknown key is named by the message itself.
fn pin_down(doc: &toml::Table, path: Vec<KeySeg>, message: &str) -> Vec<KeySeg> {
    if let Some(field) = message.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next()) {
        let mut path = path;
        if path.last() != Some(&KeySeg::Key(field.to_owned())) {
            path.push(KeySeg::Key(field.to_owned()));
        }
        return path;
    }
    if message.starts_with("missing field") {
        return path;
    }
    // A tagged table's unknown `kind`.
    if let Some(toml::Value::Table(table)) = value_at(doc, &path)
        && let Some(kind) = table.get("kind").and_then(toml::Value::as_str)
        && message.starts_with(&format!("unknown variant `{kind}`"))
    {
        let mut path = path;
        path.push(KeySeg::Key("kind".to_owned()));
        return path;
    }
    let gives_same_error = |d: &toml::Table| matches!(deserialize_config(d), Err((p, m)) if p == path && m == message);
    let (mut pinned, mut working) = (path.clone(), doc.clone());
    while let Some(toml::Value::Table(table)) = value_at(&working, &pinned) {
        let mut culprits = Vec::new();
        for key in table.keys().filter(|k| *k != "kind") {
            let alone = with_table(&working, &pinned, |t| t.retain(|k, _| k == "kind" || k == key));
            let without = with_table(&working, &pinned, |t| {
                t.remove(key);
            });
            if gives_same_error(&alone) && !gives_same_error(&without) {
                culprits.push((key.clone(), alone));
            }
        }
        let Some((key, alone)) = culprits.pop().filter(|_| culprits.is_empty()) else { break };
        pinned.push(KeySeg::Key(key));
        working = alone;
    }
    pinned
}

/// The value at `path` in `doc`.
fn value_at<'a>(doc: &'a toml::Table, path: &[KeySeg]) -> Option<&'a toml::Value> {
    let (KeySeg::Key(first), rest) = path.split_first()? else { return None };
    rest.iter().try_fold(doc.get(first)?, |value, seg| match (seg, value) {
        (KeySeg::Key(k), toml::Value::Table(t)) => t.get(k),
        (KeySeg::Index(i), toml::Value::Array(a)) => a.get(*i),
        _ => None,
    })
}

/// A copy of `doc` with `edit` applied to the table at `path` (unchanged when there is none).
fn with_table(doc: &toml::Table, path: &[KeySeg], edit: impl FnOnce(&mut toml::Table)) -> toml::Table {
    let mut copy = doc.clone();
    let mut table = Some(&mut copy);
    for seg in path {
        table = match seg {
            KeySeg::Key(k) => table.and_then(|t| t.get_mut(k)).and_then(toml::Value::as_table_mut),
            KeySeg::Index(_) => None,
        };
    }
    if let Some(t) = table {
        edit(t);
    }
    copy
}

/// The 1-based line in `text` of the key at `path`, through table headers, dotted keys, inline
/// tables and arrays of tables, with the TOML parser's spans; `None` when `text` does not hold
/// the key (it came from an override).
fn key_line(text: &str, path: &[KeySeg]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut value: Option<&DeValue<'_>> = None;
    let mut span = None;
    for seg in path {
        match seg {
            KeySeg::Key(k) => {
                if let Some(v) = value {
                    let DeValue::Table(t) = v else { return None };
                    table = t;
                }
                let (key, v) = table.iter().find(|(key, _)| key.get_ref() == k)?;
                span = Some(key.span());
                value = Some(v.get_ref());
            }
            KeySeg::Index(i) => {
                let Some(DeValue::Array(items)) = value else { return None };
                let item = items.get(*i)?;
                // An array of tables' elements start at their `[[header]]`; inline ones at the value.
                span = Some(item.span());
                value = Some(item.get_ref());
            }
        }
    }
    span.map(|s| line_of(text, s.start))
}

/// The 1-based line of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

fn config_error(origin: &str, text: &str, overrides: &[String], path: &[KeySeg], message: String) -> TrainError {
    let key = key_path_text(path);
    let set_key = |o: &String| o.split_once('=').map_or(o.as_str(), |(k, _)| k).trim().to_owned();
    // A key an override set (or that lies in a table it set) is the override's, not the file's.
    let set = overrides.iter().find(|o| {
        let k = set_key(o);
        !key.is_empty() && (k == key || key.starts_with(&format!("{k}.")))
    });
    let line = if set.is_some() { None } else { key_line(text, path) };
    // Else, when the file does not hold the key, an override inside it may have caused the error.
    let set = set.or_else(|| overrides.iter().find(|o| line.is_none() && !key.is_empty() && set_key(o).starts_with(&format!("{key}."))));
    let message = match set {
        Some(set) => format!("{message} (set by --set {set})"),
        None => message,
    };
    TrainError::Config { origin: origin.to_string(), line, key, message }
}

fn located(origin: &str, text: &str, e: &toml::de::Error) -> TrainError {
    let line = e.span().map(|s| line_of(text, s.start));
    TrainError::Config { origin: origin.to_string(), line, key: String::new(), message: e.message().to_string() }
}

// Sections and value types that other modules act on; they live here so that the config is a
// leaf that imports no feature module.

/// `[eval]`: what is measured during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Evaluate every this many steps (and at the end); 0 is off. Default 0.
    #[serde(default)]
    pub every: usize,
    /// `fid` (images), `fld` (labelled images: the Frechet LeNet Distance, no download) or `toy`
    /// (2-D toy sets: energy distance to the data, mode coverage). Default `toy` for toy data, `fid`
    /// otherwise.
    #[serde(default)]
    pub metric: Option<EvalMetric>,
    /// Samples per evaluation. Default 1000.
    #[serde(default = "default_eval_samples")]
    pub num_samples: usize,
    /// The sampler of the evaluation samples (any `sample.sampler`). Default `dpmpp_2m`.
    #[serde(default = "default_eval_sampler")]
    pub sampler: String,
    /// Its steps. Default 20.
    #[serde(default = "default_eval_steps")]
    pub steps: usize,
    /// Inception weights for FID. Default: `$DDPM_INCEPTION_WEIGHTS`, else the file in PyTorch
    /// hub's cache or ours, else downloaded once into ours (see `download_weights`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
    /// Download pytorch-fid's Inception weights when no file is found. Default true.
    #[serde(default = "default_true")]
    pub download_weights: bool,
    /// Reference statistics for FID (a pytorch-fid `.npz`). Default: computed from the training
    /// data (at most `reference_items` items) and cached in the run folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<PathBuf>,
    /// The FLD classifier (LeNet-5, safetensors): reused when the file exists, else trained on the
    /// training data and saved there. Default `<out_dir>/eval/lenet.safetensors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<PathBuf>,
    /// Epochs of FLD classifier training. Default 5.
    #[serde(default = "default_classifier_epochs")]
    pub classifier_epochs: usize,
    /// Items of the training data for the computed reference. Default 10000.
    #[serde(default = "default_reference_items")]
    pub reference_items: usize,
    /// Keep the checkpoint with the best score in `checkpoints/best`. Default true.
    #[serde(default = "default_true")]
    pub keep_best: bool,
}

fn default_eval_samples() -> usize {
    1000
}
fn default_eval_sampler() -> String {
    "dpmpp_2m".into()
}
fn default_eval_steps() -> usize {
    20
}
fn default_classifier_epochs() -> usize {
    5
}
fn default_reference_items() -> usize {
    10_000
}

impl Default for EvalSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// The score of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalMetric {
    Fid,
    Fld,
    Toy,
}

/// `[classifier]`: the noise-aware classifier of classifier guidance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSection {
    /// Optimiser steps. Default 2000.
    #[serde(default = "default_classifier_steps")]
    pub steps: usize,
    /// Batch size. Default 128.
    #[serde(default = "default_classifier_batch")]
    pub batch_size: usize,
    /// Adam learning rate. Default 1e-3.
    #[serde(default = "default_classifier_lr")]
    pub lr: f64,
    /// Width: the MLP's hidden width for vectors, the encoder's base width for images. Default 64.
    #[serde(default = "default_classifier_width")]
    pub width: usize,
    /// Folder, relative to `run.out_dir` unless absolute. Default `classifier`.
    #[serde(default = "default_classifier_dir")]
    pub dir: PathBuf,
}

fn default_classifier_steps() -> usize {
    2000
}
fn default_classifier_batch() -> usize {
    128
}
fn default_classifier_lr() -> f64 {
    1e-3
}
fn default_classifier_width() -> usize {
    64
}
fn default_classifier_dir() -> PathBuf {
    PathBuf::from("classifier")
}

impl Default for ClassifierSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl ClassifierSection {
    /// The classifier folder of a run.
    pub fn folder(&self, cfg: &TrainConfig) -> PathBuf {
        if self.dir.is_absolute() { self.dir.clone() } else { cfg.run.out_dir.join(&self.dir) }
    }
}

/// An image size in a config: a side (`64`) or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ImageSize {
    Square(usize),
    HeightWidth([usize; 2]),
}

impl ImageSize {
    pub fn height(&self) -> usize {
        match *self {
            ImageSize::Square(s) => s,
            ImageSize::HeightWidth([h, _]) => h,
        }
    }

    pub fn width(&self) -> usize {
        match *self {
            ImageSize::Square(s) => s,
            ImageSize::HeightWidth([_, w]) => w,
        }
    }
}

// By hand rather than `#[serde(untagged)]`, whose error ("did not match any variant") does not say
// what is expected.
impl<'de> Deserialize<'de> for ImageSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ImageSize;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an image side (e.g. 64) or [height, width] (e.g. [64, 96])")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<ImageSize, E> {
                Ok(ImageSize::Square(v as usize))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<ImageSize, E> {
                usize::try_from(v).map(ImageSize::Square).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<ImageSize, A::Error> {
                let h: usize = seq.next_element()?.ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
                let w: usize = seq.next_element()?.ok_or_else(|| serde::de::Error::invalid_length(1, &self))?;
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(3, &self));
                }
                Ok(ImageSize::HeightWidth([h, w]))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Which part of a data set with an official split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    #[default]
    Train,
    Test,
}

/// MNIST's handwritten digits or Zalando's Fashion-MNIST (same format and sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MnistVariant {
    #[default]
    Mnist,
    Fashion,
}

/// How vector data is brought into the model's range. The statistics are computed over the whole
/// set at load time and not stored: samples come out in the normalised units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// The values are used as they are.
    #[default]
    None,
    /// Each feature (embeddings) or channel (sequences) scaled to [-1, 1]; a constant one becomes 0.
    Minmax,
    /// Each feature or channel shifted and scaled to mean 0 and (population) standard deviation 1;
    /// a constant one becomes 0.
    Standardize,
}

impl DataConfig {
    /// The item shape the config states (`[C, H, W]`, `[2]`, ...), or `None` for data whose shape
    /// is known once loaded (sequences, embeddings; see `data::item_shape`).
    pub fn stated_item_shape(&self) -> Option<Result<Vec<usize>>> {
        Some(Ok(match self {
            DataConfig::Shapes { image_size, .. } => vec![3, *image_size, *image_size],
            DataConfig::Toy { .. } => vec![2],
            DataConfig::ImageFolder { image_size, channels, .. } => vec![*channels, image_size.height(), image_size.width()],
            DataConfig::Celeba { image_size, .. } => vec![3, *image_size, *image_size],
            DataConfig::Cifar10 { .. } => vec![3, 32, 32],
            DataConfig::Mnist { image_size, .. } => vec![1, *image_size, *image_size],
            DataConfig::None { shape } => {
                if shape.is_empty() || shape.contains(&0) {
                    return Some(Err(TrainError::config("data.shape", format!("{shape:?} is not an item shape; write e.g. [3, 32, 32] for RGB images"))));
                }
                shape.clone()
            }
            DataConfig::Sequences { .. } | DataConfig::Embeddings { .. } => return None,
        }))
    }
}
