//! The training configuration: one TOML file, every field documented with its default, unknown keys
//! and wrong types rejected with the file, line and key path, `--set key=value` overrides.

use std::path::{Path, PathBuf};

use ddpm_core::{BetaSchedule, GaussianDiffusionConfig, LossType, ModelVariance, Objective, Sampler, TimestepSpacing};
use serde::{Deserialize, Serialize};

use crate::ema::EmaConfig;
use crate::error::{Result, TrainError};

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
}

fn default_out_dir() -> PathBuf {
    PathBuf::from("runs/default")
}
fn default_device() -> String {
    "flex".into()
}

impl Default for RunConfig {
    fn default() -> Self {
        Self { out_dir: default_out_dir(), seed: 0, device: default_device() }
    }
}

/// The data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataConfig {
    /// The embedded image set generated in code (coloured shapes; no download).
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

/// The network: `kind` plus the fields of that network's config (see ddpm-models).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelConfig {
    /// denoising-diffusion-pytorch's `Unet`.
    Unet {
        dim: usize,
        #[serde(default = "default_dim_mults")]
        dim_mults: Vec<usize>,
        #[serde(default = "default_heads")]
        attn_heads: usize,
        #[serde(default = "default_dim_head")]
        attn_dim_head: usize,
        #[serde(default)]
        dropout: f64,
        #[serde(default)]
        flash_attn: bool,
    },
    /// The DDPM paper's network.
    DdpmUnet {
        #[serde(default = "default_ddpm_ch")]
        ch: usize,
        #[serde(default = "default_ddpm_mult")]
        ch_mult: Vec<usize>,
        #[serde(default = "default_res_blocks")]
        num_res_blocks: usize,
        #[serde(default = "default_attn_res")]
        attn_resolutions: Vec<usize>,
        #[serde(default = "default_ddpm_dropout")]
        dropout: f64,
    },
    /// The MLP for vectors and toy data.
    Mlp {
        #[serde(default = "default_hidden")]
        hidden: usize,
        #[serde(default = "default_layers")]
        num_layers: usize,
    },
}

fn default_dim_mults() -> Vec<usize> {
    vec![1, 2, 4, 8]
}
fn default_heads() -> usize {
    4
}
fn default_dim_head() -> usize {
    32
}
fn default_ddpm_ch() -> usize {
    128
}
fn default_ddpm_mult() -> Vec<usize> {
    vec![1, 2, 2, 2]
}
fn default_res_blocks() -> usize {
    2
}
fn default_attn_res() -> Vec<usize> {
    vec![16]
}
fn default_ddpm_dropout() -> f64 {
    0.1
}
fn default_hidden() -> usize {
    128
}
fn default_layers() -> usize {
    3
}

/// The diffusion process (ddpm-core's `GaussianDiffusionConfig`); defaults are the reference's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffusionSection {
    #[serde(default = "default_timesteps")]
    pub timesteps: usize,
    /// A schedule name (`linear`, `cosine`, `sigmoid`, ...) or a table with `kind` and parameters.
    #[serde(default = "default_schedule")]
    pub beta_schedule: ScheduleSpec,
    #[serde(default)]
    pub zero_terminal_snr: bool,
    #[serde(default)]
    pub objective: Objective,
    #[serde(default)]
    pub variance: ModelVariance,
    #[serde(default)]
    pub loss_type: LossType,
    #[serde(default)]
    pub min_snr_gamma: Option<f64>,
    #[serde(default)]
    pub offset_noise_strength: f64,
    #[serde(default)]
    pub immiscible: bool,
}

fn default_timesteps() -> usize {
    1000
}
fn default_schedule() -> ScheduleSpec {
    ScheduleSpec::Name("sigmoid".into())
}

/// A beta schedule by name or in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScheduleSpec {
    Name(String),
    Full(BetaSchedule),
}

impl Default for DiffusionSection {
    fn default() -> Self {
        Self {
            timesteps: default_timesteps(),
            beta_schedule: default_schedule(),
            zero_terminal_snr: false,
            objective: Objective::default(),
            variance: ModelVariance::default(),
            loss_type: LossType::default(),
            min_snr_gamma: None,
            offset_noise_strength: 0.0,
            immiscible: false,
        }
    }
}

impl DiffusionSection {
    /// ddpm-core's configuration.
    pub fn to_core(&self) -> Result<GaussianDiffusionConfig> {
        let schedule = match &self.beta_schedule {
            ScheduleSpec::Name(n) => n.parse().map_err(|e: ddpm_core::Error| TrainError::config("diffusion.beta_schedule", e.to_string()))?,
            ScheduleSpec::Full(s) => s.clone(),
        };
        Ok(GaussianDiffusionConfig::new()
            .with_timesteps(self.timesteps)
            .with_beta_schedule(schedule)
            .with_zero_terminal_snr(self.zero_terminal_snr)
            .with_objective(self.objective)
            .with_variance(self.variance)
            .with_loss_type(self.loss_type)
            .with_min_snr_gamma(self.min_snr_gamma)
            .with_offset_noise_strength(self.offset_noise_strength)
            .with_immiscible(self.immiscible))
    }
}

/// Optimisation and bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Optimiser steps. Default 10000.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Batch size. Default 32.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Adam learning rate. Default 8e-5 (the reference Trainer's).
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Adam betas. Default (0.9, 0.99) (the reference Trainer's).
    #[serde(default = "default_betas")]
    pub adam_betas: [f64; 2],
    /// Decoupled weight decay (AdamW); 0 is plain Adam.
    #[serde(default)]
    pub weight_decay: f64,
    /// Linear learning-rate warm-up steps.
    #[serde(default)]
    pub warmup_steps: usize,
    /// Global gradient-norm clip (`torch.nn.utils.clip_grad_norm_`); 0 is off. Default 1.0.
    #[serde(default = "default_clip")]
    pub grad_clip: f64,
    /// EMA of the weights.
    #[serde(default)]
    pub ema: EmaConfig,
    /// Save a checkpoint every this many steps. Default 1000.
    #[serde(default = "default_every")]
    pub checkpoint_every: usize,
    /// Checkpoints kept. Default 3.
    #[serde(default = "default_keep")]
    pub keep_last: usize,
    /// Write an EMA sample grid every this many steps (0: only at the end). Default 1000.
    #[serde(default = "default_every")]
    pub sample_every: usize,
    /// Images in a sample grid. Default 16.
    #[serde(default = "default_num_samples")]
    pub num_samples: usize,
    /// Log a metrics line every this many steps. Default 50.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
}

fn default_steps() -> usize {
    10_000
}
fn default_batch() -> usize {
    32
}
fn default_lr() -> f64 {
    8e-5
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
    16
}
fn default_log_every() -> usize {
    50
}

impl Default for TrainSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// How samples are drawn (grids during training, and `ddpm-train sample`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSection {
    /// `ddpm` or `ddim`. Default `ddim`.
    #[serde(default = "default_sampler")]
    pub sampler: String,
    /// DDIM steps. Default 50.
    #[serde(default = "default_sample_steps")]
    pub steps: usize,
    /// DDIM eta. Default 0.
    #[serde(default)]
    pub eta: f64,
    #[serde(default)]
    pub spacing: TimestepSpacing,
}

fn default_sampler() -> String {
    "ddim".into()
}
fn default_sample_steps() -> usize {
    50
}

impl Default for SampleSection {
    fn default() -> Self {
        Self { sampler: default_sampler(), steps: default_sample_steps(), eta: 0.0, spacing: TimestepSpacing::default() }
    }
}

impl SampleSection {
    pub fn sampler(&self) -> Result<Sampler> {
        match self.sampler.as_str() {
            "ddpm" => Ok(Sampler::Ddpm),
            "ddim" => Ok(Sampler::Ddim { steps: self.steps, eta: self.eta, spacing: self.spacing }),
            other => Err(TrainError::config("sample.sampler", format!("`{other}` is not a sampler; use ddpm or ddim"))),
        }
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
pub fn parse_config(text: &str, origin: &str, overrides: &[String]) -> Result<TrainConfig> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| located(origin, text, &e))?;
    apply_overrides(&mut doc, overrides)?;
    let rendered = toml::to_string(&doc).expect("a parsed table renders");
    let de = toml::Deserializer::parse(&rendered).map_err(|e| located(origin, &rendered, &e))?;
    let config: TrainConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        // Point at the line of the original file that holds the offending key, when it exists.
        let leaf = path.rsplit('.').next().unwrap_or("").to_string();
        let line = text.lines().position(|l| l.trim_start().starts_with(&format!("{leaf} ")) || l.trim_start().starts_with(&format!("{leaf}="))).map(|i| i + 1);
        TrainError::Config {
            origin: origin.to_string(),
            line,
            key: path,
            message: e.into_inner().message().to_string(),
        }
    })?;
    Ok(config)
}

fn located(origin: &str, text: &str, e: &toml::de::Error) -> TrainError {
    let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
    TrainError::Config { origin: origin.to_string(), line, key: String::new(), message: e.message().to_string() }
}
