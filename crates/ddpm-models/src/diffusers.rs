//! Weights and settings to and from Hugging Face diffusers for the DDPM paper's network.
//!
//! diffusers' `UNet2DModel` with the DDPM block types (`DownBlock2D` / `AttnDownBlock2D`,
//! `UNetMidBlock2D` with attention, `UpBlock2D` / `AttnUpBlock2D`, one attention head, positional
//! time embedding with `flip_sin_to_cos = False` and `freq_shift = 1`, `downsample_padding = 0`,
//! e.g. `google/ddpm-cifar10-32`) is the same network as [`DdpmUnet`]:
//!
//! - [`UNet2DModelConfig`] reads `unet/config.json` and maps it onto a [`DdpmUnetConfig`]
//!   ([`UNet2DModelConfig::to_ddpm_unet`]) and back ([`UNet2DModelConfig::from_ddpm_unet`]); every
//!   setting the network cannot reproduce exactly is an error naming the file, the key, the value
//!   and what is supported.
//! - [`DiffusersKeys`] maps Burn parameter paths to diffusers' state-dict keys and back
//!   ([`diffusers_key`], [`burn_path`]); [`load_unet`] and [`unet_state_dict`] move the weights
//!   through [`crate::weights`]' loader and exporter. Legacy attention names (`query`, `key`,
//!   `value`, `proj_attn`, as in google/ddpm-cifar10-32's `.bin`) are accepted when loading.
//! - [`SchedulerConfig`] reads `scheduler/scheduler_config.json` (`DDPMScheduler` /
//!   `DDIMScheduler`) and gives ddpm-core's process with diffusers' exact float32 betas
//!   ([`SchedulerConfig::diffusion`]), the clipping, and diffusers' DDIM steps and semantics
//!   ([`SchedulerConfig::ddim_steps`], [`SchedulerConfig::ddim_options`], for
//!   [`ddpm_core::ddim_sample`]); [`SchedulerConfig::from_diffusion`] writes ours.
//! - [`read_unet_folder`], [`read_pipeline`], [`write_unet_folder`], [`write_pipeline`]: whole
//!   folders as `UNet2DModel.from_pretrained` / `DDPMPipeline.from_pretrained` read them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use ddpm_core::{
    BetaSchedule, DdimOptions, DdimStep, GaussianDiffusion, GaussianDiffusionConfig, ModelVariance, Objective, TimestepSpacing, X0Clip,
    diffusers_ddim_steps,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use ddpm_core::schedule::{torch_cumprod_f32, torch_linspace_f32};
use ddpm_core::schedule::{betas_for_alpha_bar_f32, rescale_zero_terminal_snr_f32};

use crate::ddpm_unet::{DdpmUnet, DdpmUnetConfig, TimeFrequencies};
use crate::error::{ModelError, Result};
use crate::weights::{ReferenceKeys, StateDict, load_with_keys, read_pytorch, read_safetensors, state_dict_with_keys, write_safetensors};

/// The diffusers version this interchange was checked against (written as `_diffusers_version`).
pub const DIFFUSERS_VERSION: &str = "0.42.1";

/// The file names of a diffusers folder.
pub const UNET_CONFIG: &str = "config.json";
pub const UNET_WEIGHTS: &str = "diffusion_pytorch_model.safetensors";
pub const UNET_WEIGHTS_BIN: &str = "diffusion_pytorch_model.bin";
pub const UNET_WEIGHTS_INDEX: &str = "diffusion_pytorch_model.safetensors.index.json";
pub const SCHEDULER_CONFIG: &str = "scheduler_config.json";
pub const MODEL_INDEX: &str = "model_index.json";

/// An error about `key` = `value` in `file`, with the fix.
fn bad(file: &str, key: &str, value: impl Display, fix: impl Display) -> ModelError {
    ModelError::File { file: file.to_string(), message: format!("`{key}` = {value}: {fix}") }
}

fn file_err(file: &Path, message: impl Display) -> ModelError {
    ModelError::File { file: file.display().to_string(), message: message.to_string() }
}

/// Writes a whole number as a JSON integer (diffusers writes `freq_shift: 1`, not `1.0`).
fn int_if_whole<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 9.0e15 { s.serialize_i64(*v as i64) } else { s.serialize_f64(*v) }
}

// ------------------------------------------------------------------------------------------------
// UNet2DModel configuration
// ------------------------------------------------------------------------------------------------

/// `sample_size`: an int, or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(usize),
    HeightWidth([usize; 2]),
}

/// diffusers' `UNet2DModel` configuration (`unet/config.json`). Every `__init__` argument of
/// diffusers 0.42 is a field with diffusers' own default (what `from_pretrained` uses when the key
/// is missing); keys diffusers adds for itself (`_use_default_values`, ...) and any others are kept
/// in `extra` and written back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNet2DModelConfig {
    #[serde(rename = "_class_name", default = "unet_class")]
    pub class_name: String,
    #[serde(rename = "_diffusers_version", default, skip_serializing_if = "Option::is_none")]
    pub diffusers_version: Option<String>,
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default, serialize_with = "int_if_whole")]
    pub freq_shift: f64,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default = "default_down_blocks")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_mid_block")]
    pub mid_block_type: Option<String>,
    #[serde(default = "default_up_blocks")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "two")]
    pub layers_per_block: usize,
    #[serde(default = "one_f64", serialize_with = "int_if_whole")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "one_usize")]
    pub downsample_padding: usize,
    #[serde(default = "conv_str")]
    pub downsample_type: String,
    #[serde(default = "conv_str")]
    pub upsample_type: String,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "silu_str")]
    pub act_fn: String,
    #[serde(default = "default_head_dim")]
    pub attention_head_dim: Option<usize>,
    #[serde(default = "default_groups")]
    pub norm_num_groups: Option<usize>,
    #[serde(default)]
    pub attn_norm_num_groups: Option<usize>,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_str")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "yes")]
    pub add_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub num_train_timesteps: Option<usize>,
    /// Keys this struct does not name, kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
    /// Where the configuration was read from (named in errors; `unet/config.json` when unset).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

fn unet_class() -> String {
    "UNet2DModel".into()
}
fn three() -> usize {
    3
}
fn two() -> usize {
    2
}
fn one_usize() -> usize {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn positional() -> String {
    "positional".into()
}
fn conv_str() -> String {
    "conv".into()
}
fn silu_str() -> String {
    "silu".into()
}
fn default_str() -> String {
    "default".into()
}
fn default_down_blocks() -> Vec<String> {
    ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"].map(String::from).to_vec()
}
fn default_up_blocks() -> Vec<String> {
    ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"].map(String::from).to_vec()
}
fn default_mid_block() -> Option<String> {
    Some("UNetMidBlock2D".into())
}
fn default_block_out_channels() -> Vec<usize> {
    vec![224, 448, 672, 896]
}
fn default_head_dim() -> Option<usize> {
    Some(8)
}
fn default_groups() -> Option<usize> {
    Some(32)
}
fn default_norm_eps() -> f64 {
    1e-5
}

/// Parses a configuration object; a value of the wrong type is reported with its key (serde only
/// names the expected type, so the culprit is found by parsing one entry at a time).
fn parse_config<T: serde::de::DeserializeOwned>(text: &str, file: &Path, what: &str) -> Result<T> {
    let value: Value = serde_json::from_str(text).map_err(|e| file_err(file, format!("not valid JSON: {e}")))?;
    let Value::Object(map) = &value else {
        return Err(file_err(file, format!("not a {what}: expected a JSON object")));
    };
    serde_json::from_value(value.clone()).map_err(|e| {
        let alone = |k: &String, v: &Value| serde_json::from_value::<T>(Value::Object(std::iter::once((k.clone(), v.clone())).collect()));
        match map.iter().find(|(k, v)| alone(k, v).is_err()) {
            Some((k, v)) => bad(&file.display().to_string(), k, v, format!("not a valid {what} value ({e})")),
            None => file_err(file, format!("not a {what}: {e}")),
        }
    })
}

fn json_list<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "?".into())
}

/// A diffusers JSON configuration file (a model's `config.json`, a `scheduler_config.json`):
/// parsed with every error naming the file and key, read, and written back as diffusers reads it.
pub trait JsonConfig: Serialize + serde::de::DeserializeOwned {
    /// What the file is, for messages ("diffusers UNet2DModel config").
    const WHAT: &'static str;
    /// Where the file sits in a pipeline folder, for messages about a config not read from a file.
    const DEFAULT_PATH: &'static str;
    /// The file the config was read from.
    fn source(&self) -> Option<&Path>;
    fn set_source(&mut self, file: PathBuf);

    /// Parses the JSON text; `file` names it in errors.
    fn from_json(text: &str, file: impl AsRef<Path>) -> Result<Self> {
        let file = file.as_ref();
        let mut config: Self = parse_config(text, file, Self::WHAT)?;
        config.set_source(file.to_path_buf());
        Ok(config)
    }

    /// Reads and parses a file.
    fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
        Self::from_json(&text, path)
    }

    /// The JSON diffusers reads (pretty-printed).
    fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| ModelError::config(Self::WHAT, "?", format!("cannot encode as JSON: {e}")))
    }

    /// The file's name for messages.
    fn file(&self) -> String {
        self.source().map_or_else(|| Self::DEFAULT_PATH.to_string(), |p| p.display().to_string())
    }
}

impl JsonConfig for UNet2DModelConfig {
    const WHAT: &'static str = "diffusers UNet2DModel config";
    const DEFAULT_PATH: &'static str = "unet/config.json";
    fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }
    fn set_source(&mut self, file: PathBuf) {
        self.source = Some(file);
    }
}

impl UNet2DModelConfig {
    /// The [`DdpmUnetConfig`] of the same network: `ch = block_out_channels[0]`,
    /// `ch_mult[i] = block_out_channels[i] / ch`, `num_res_blocks = layers_per_block`,
    /// `attn_resolutions = sample_size / 2^i` for each `AttnDownBlock2D` at level `i`,
    /// `resolution = sample_size`, the channels, `norm_num_groups`, `norm_eps`, `dropout` and
    /// diffusers' rounding of the time-embedding frequencies. Every other key must hold the
    /// DDPM value; anything else is an error naming the key, its value and what is supported.
    pub fn to_ddpm_unet(&self) -> Result<DdpmUnetConfig> {
        let file = self.file();
        let err = |key: &str, value: &dyn Display, fix: &str| bad(&file, key, value, fix);
        if self.class_name != "UNet2DModel" {
            return Err(err("_class_name", &format!("{:?}", self.class_name), "ddpm-rs reads diffusers' UNet2DModel (the DDPM pipelines' network)"));
        }
        let boc = &self.block_out_channels;
        let levels = boc.len();
        if levels == 0 || boc.contains(&0) {
            return Err(err("block_out_channels", &json_list(boc), "give one positive width per level, e.g. [128, 256, 256, 256]"));
        }
        if self.down_block_types.len() != levels || self.up_block_types.len() != levels {
            return Err(err(
                "down_block_types",
                &json_list(&self.down_block_types),
                &format!(
                    "block_out_channels has {levels} levels, down_block_types {} and up_block_types {}: give one block type per level in each",
                    self.down_block_types.len(),
                    self.up_block_types.len()
                ),
            ));
        }
        let ch = boc[0];
        if let Some(&c) = boc.iter().find(|&&c| c % ch != 0) {
            return Err(err("block_out_channels", &json_list(boc), &format!("DdpmUnet's widths are multiples of the first ({ch}), but {c} is not")));
        }
        let ch_mult: Vec<usize> = boc.iter().map(|c| c / ch).collect();
        // Attention per level, from the down blocks; the up blocks must mirror them.
        let mut attn_levels = Vec::with_capacity(levels);
        for (i, kind) in self.down_block_types.iter().enumerate() {
            attn_levels.push(match kind.as_str() {
                "DownBlock2D" => false,
                "AttnDownBlock2D" => true,
                other => {
                    return Err(err(
                        &format!("down_block_types[{i}]"),
                        &format!("{other:?}"),
                        "DdpmUnet has the DDPM blocks only: DownBlock2D and AttnDownBlock2D",
                    ));
                }
            });
        }
        for (j, kind) in self.up_block_types.iter().enumerate() {
            let attn = match kind.as_str() {
                "UpBlock2D" => false,
                "AttnUpBlock2D" => true,
                other => {
                    return Err(err(
                        &format!("up_block_types[{j}]"),
                        &format!("{other:?}"),
                        "DdpmUnet has the DDPM blocks only: UpBlock2D and AttnUpBlock2D",
                    ));
                }
            };
            let level = levels - 1 - j;
            if attn != attn_levels[level] {
                return Err(err(
                    &format!("up_block_types[{j}]"),
                    &format!("{kind:?}"),
                    &format!(
                        "DdpmUnet attends at the same resolutions on the way down and up: up block {j} mirrors down block {level} ({:?}), so use {}",
                        self.down_block_types[level],
                        if attn_levels[level] { "AttnUpBlock2D" } else { "UpBlock2D" }
                    ),
                ));
            }
        }
        match self.mid_block_type.as_deref() {
            Some("UNetMidBlock2D") => {}
            other => {
                return Err(err(
                    "mid_block_type",
                    &format!("{other:?}"),
                    "DdpmUnet has the DDPM middle block: UNetMidBlock2D (ResNet, attention, ResNet)",
                ));
            }
        }
        if !self.add_attention {
            return Err(err("add_attention", &false, "DdpmUnet's middle block always has attention: use true"));
        }
        if self.time_embedding_type != "positional" {
            return Err(err(
                "time_embedding_type",
                &format!("{:?}", self.time_embedding_type),
                "DdpmUnet has the sinusoidal (\"positional\") time embedding only",
            ));
        }
        if self.flip_sin_to_cos {
            return Err(err("flip_sin_to_cos", &true, "DdpmUnet's time embedding is [sin, cos] (the DDPM order): use false"));
        }
        if self.freq_shift != 1.0 {
            return Err(err("freq_shift", &self.freq_shift, "DdpmUnet's frequencies are exp(-ln(10000) i / (ch/2 - 1)), diffusers' freq_shift = 1"));
        }
        if let Some(d) = self.time_embedding_dim.filter(|&d| d != 4 * ch) {
            return Err(err(
                "time_embedding_dim",
                &d,
                &format!("DdpmUnet's time embedding is 4 x block_out_channels[0] = {} wide: use null", 4 * ch),
            ));
        }
        if self.act_fn != "silu" {
            return Err(err("act_fn", &format!("{:?}", self.act_fn), "DdpmUnet uses SiLU (swish): use \"silu\""));
        }
        if self.center_input_sample {
            return Err(err("center_input_sample", &true, "DdpmUnet takes inputs in [-1, 1] as they are: use false (or map 2x - 1 yourself)"));
        }
        if self.resnet_time_scale_shift != "default" {
            return Err(err(
                "resnet_time_scale_shift",
                &format!("{:?}", self.resnet_time_scale_shift),
                "DdpmUnet adds the time embedding to the ResNet features: use \"default\"",
            ));
        }
        if self.downsample_padding != 0 {
            return Err(err(
                "downsample_padding",
                &self.downsample_padding,
                "DdpmUnet downsamples as the DDPM code (pad right and bottom by one, stride-2 3x3 conv): use 0",
            ));
        }
        if self.downsample_type != "conv" {
            return Err(err("downsample_type", &format!("{:?}", self.downsample_type), "DdpmUnet downsamples with a convolution: use \"conv\""));
        }
        if self.upsample_type != "conv" {
            return Err(err("upsample_type", &format!("{:?}", self.upsample_type), "DdpmUnet upsamples (nearest, then a convolution) as \"conv\""));
        }
        if self.mid_block_scale_factor != 1.0 {
            return Err(err("mid_block_scale_factor", &self.mid_block_scale_factor, "DdpmUnet's middle block does not rescale its output: use 1"));
        }
        if let Some(kind) = &self.class_embed_type {
            return Err(err("class_embed_type", &format!("{kind:?}"), "ddpm-rs converts unconditional UNet2DModels only: use null"));
        }
        if let Some(n) = self.num_class_embeds {
            return Err(err(
                "num_class_embeds",
                &n,
                "ddpm-rs converts unconditional UNet2DModels only (DdpmUnet's class embedding has a null class diffusers lacks): use null",
            ));
        }
        // One head wherever there is attention: the middle block and the Attn* levels.
        if let Some(d) = self.attention_head_dim {
            let mut widths: Vec<usize> = (0..levels).filter(|&i| attn_levels[i]).map(|i| boc[i]).collect();
            widths.push(boc[levels - 1]);
            if let Some(&c) = widths.iter().find(|&&c| c != d) {
                return Err(err(
                    "attention_head_dim",
                    &d,
                    &format!(
                        "gives {c} / {d} heads over {c} channels, but DdpmUnet's attention has one head: use null (one head as wide as the block)"
                    ),
                ));
            }
        }
        let groups = self.norm_num_groups.ok_or_else(|| err("norm_num_groups", &"null", "give the GroupNorm group count (32 in DDPM)"))?;
        if groups == 0 {
            return Err(err("norm_num_groups", &0, "give a positive GroupNorm group count (32 in DDPM)"));
        }
        if let Some(g) = self.attn_norm_num_groups.filter(|&g| g != groups) {
            return Err(err(
                "attn_norm_num_groups",
                &g,
                &format!("DdpmUnet normalises its attention like the rest, with norm_num_groups = {groups} groups: use null"),
            ));
        }
        if let Some(&c) = boc.iter().find(|&&c| c % groups != 0) {
            return Err(err(
                "norm_num_groups",
                &groups,
                &format!("every width must be a multiple of the group count, but block_out_channels has {c}"),
            ));
        }
        if !(self.norm_eps > 0.0) {
            return Err(err("norm_eps", &self.norm_eps, "GroupNorm's epsilon must be positive (1e-6 in DDPM)"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(err("dropout", &self.dropout, "use a probability in [0, 1)"));
        }
        let resolution = match self.sample_size {
            Some(SampleSize::Square(s)) => s,
            Some(SampleSize::HeightWidth([h, w])) if h == w => h,
            Some(SampleSize::HeightWidth([h, w])) => {
                return Err(err("sample_size", &format!("[{h}, {w}]"), "DdpmUnet places attention by one square resolution: use a square size"));
            }
            None => return Err(err("sample_size", &"null", "give the image size; DdpmUnet places attention by resolution")),
        };
        let scale = 1usize << (levels - 1);
        if resolution == 0 || resolution % scale != 0 {
            return Err(err("sample_size", &resolution, &format!("must be a positive multiple of 2^(levels - 1) = {scale}")));
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(err(
                "in_channels",
                &format!("{} (out_channels {})", self.in_channels, self.out_channels),
                "use at least one channel in and out",
            ));
        }
        if self.layers_per_block == 0 {
            return Err(err("layers_per_block", &0, "use at least one ResNet block per level"));
        }
        if !ch.is_multiple_of(2) {
            return Err(err("block_out_channels", &json_list(boc), "the sinusoidal time embedding needs an even block_out_channels[0]"));
        }
        Ok(DdpmUnetConfig::new()
            .with_resolution(resolution)
            .with_in_channels(self.in_channels)
            .with_out_channels(Some(self.out_channels))
            .with_ch(ch)
            .with_ch_mult(ch_mult)
            .with_num_res_blocks(self.layers_per_block)
            .with_attn_resolutions((0..levels).filter(|&i| attn_levels[i]).map(|i| resolution >> i).collect())
            .with_dropout(self.dropout)
            .with_norm_num_groups(Some(groups))
            .with_norm_eps(self.norm_eps)
            .with_time_frequencies(TimeFrequencies::Diffusers))
    }

    /// The `UNet2DModel` configuration of a [`DdpmUnet`] (for export). The network must be one
    /// diffusers can express: no class labels, one GroupNorm group count for every layer (set
    /// `norm_num_groups`, or keep `ch >= 32` with the default `min(32, c)`). A network built with
    /// the TensorFlow rounding of the time frequencies ([`TimeFrequencies::Tensorflow`]) is
    /// written too; diffusers then computes its frequencies with its own rounding (about 1e-6
    /// relative apart).
    pub fn from_ddpm_unet(config: &DdpmUnetConfig) -> Result<Self> {
        let levels = config.ch_mult.len();
        if levels == 0 || config.ch == 0 {
            return Err(ModelError::config("ch_mult", format!("{:?}", config.ch_mult), "a DdpmUnet has at least one level and a positive ch"));
        }
        if let Some(n) = config.num_classes {
            return Err(ModelError::config(
                "num_classes",
                n,
                "diffusers' UNet2DModel has no null class for guidance; export unconditional networks only",
            ));
        }
        let widths: Vec<usize> = config.ch_mult.iter().map(|m| m * config.ch).collect();
        let groups = match config.norm_num_groups {
            Some(g) => g,
            None if config.ch >= 32 => 32,
            None => {
                return Err(ModelError::config(
                    "norm_num_groups",
                    "None",
                    format!(
                        "min(32, c) groups per layer differ between layers when ch = {} < 32, which diffusers cannot express: set norm_num_groups",
                        config.ch
                    ),
                ));
            }
        };
        let attn: Vec<bool> = (0..levels).map(|i| config.attn_resolutions.contains(&(config.resolution >> i))).collect();
        let down_block_types = attn.iter().map(|&a| if a { "AttnDownBlock2D" } else { "DownBlock2D" }.to_string()).collect();
        let up_block_types = attn.iter().rev().map(|&a| if a { "AttnUpBlock2D" } else { "UpBlock2D" }.to_string()).collect();
        let out_channels = config.out_channels.unwrap_or(config.in_channels * if config.learned_variance { 2 } else { 1 });
        Ok(Self {
            class_name: unet_class(),
            diffusers_version: Some(DIFFUSERS_VERSION.into()),
            sample_size: Some(SampleSize::Square(config.resolution)),
            in_channels: config.in_channels,
            out_channels,
            center_input_sample: false,
            time_embedding_type: positional(),
            time_embedding_dim: None,
            freq_shift: 1.0,
            flip_sin_to_cos: false,
            down_block_types,
            mid_block_type: default_mid_block(),
            up_block_types,
            block_out_channels: widths,
            layers_per_block: config.num_res_blocks,
            mid_block_scale_factor: 1.0,
            downsample_padding: 0,
            downsample_type: conv_str(),
            upsample_type: conv_str(),
            dropout: config.dropout,
            act_fn: silu_str(),
            attention_head_dim: None,
            norm_num_groups: Some(groups),
            attn_norm_num_groups: None,
            norm_eps: config.norm_eps,
            resnet_time_scale_shift: default_str(),
            add_attention: true,
            class_embed_type: None,
            num_class_embeds: None,
            num_train_timesteps: None,
            extra: BTreeMap::new(),
            source: None,
        })
    }
}

// ------------------------------------------------------------------------------------------------
// Key mapping
// ------------------------------------------------------------------------------------------------

/// diffusers' names for [`DdpmUnet`]'s parameters (a [`ReferenceKeys`] map for
/// [`load_with_keys`] / [`state_dict_with_keys`]):
///
/// | Burn path | diffusers key |
/// | --- | --- |
/// | `temb_dense0.*`, `temb_dense1.*` | `time_embedding.linear_1.*`, `time_embedding.linear_2.*` |
/// | `conv_in.*`, `conv_out.*` | same |
/// | `norm_out.gamma` / `.beta` | `conv_norm_out.weight` / `.bias` |
/// | `down.i.blocks.j.*` / `up.i.blocks.j.*` | `down_blocks.i.resnets.j.*` / `up_blocks.i.resnets.j.*` |
/// | `down.i.attns.j.*` / `up.i.attns.j.*` | `down_blocks.i.attentions.j.*` / `up_blocks.i.attentions.j.*` |
/// | `down.i.resample.*` / `up.i.resample.*` | `down_blocks.i.downsamplers.0.conv.*` / `up_blocks.i.upsamplers.0.conv.*` |
/// | `mid_block1` / `mid_attn` / `mid_block2` | `mid_block.resnets.0` / `mid_block.attentions.0` / `mid_block.resnets.1` |
/// | ResNet `norm1, conv1, temb_proj, norm2, conv2, nin_shortcut` | `norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut` |
/// | attention `norm, q, k, v, proj_out` | `group_norm, to_q, to_k, to_v, to_out.0` |
/// | GroupNorm `gamma` / `beta` | `weight` / `bias` |
///
/// Both number their up levels from the deepest. diffusers' attention projections are
/// `nn.Linear` (`[out, in]`) where ours are 1x1 convolutions (`[out, in, 1, 1]`): same numbers,
/// unit dimensions dropped on export. Burn's `Linear` weights are transposed by the loader.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiffusersKeys;

fn norm_param(p: &str) -> &str {
    match p {
        "gamma" => "weight",
        "beta" => "bias",
        other => other,
    }
}

fn norm_param_back(p: &str) -> &str {
    match p {
        "weight" => "gamma",
        "bias" => "beta",
        other => other,
    }
}

fn resnet_key(rest: &[&str]) -> Option<String> {
    let (layer, param) = (*rest.first()?, rest.get(1..)?.join("."));
    let layer = match layer {
        "norm1" | "norm2" => return (rest.len() == 2).then(|| format!("{layer}.{}", norm_param(rest[1]))),
        "conv1" | "conv2" => layer,
        "temb_proj" => "time_emb_proj",
        "nin_shortcut" => "conv_shortcut",
        _ => return None,
    };
    (!param.is_empty()).then(|| format!("{layer}.{param}"))
}

fn resnet_path(rest: &[&str]) -> Option<String> {
    let (layer, param) = (*rest.first()?, rest.get(1..)?.join("."));
    let layer = match layer {
        "norm1" | "norm2" => return (rest.len() == 2).then(|| format!("{layer}.{}", norm_param_back(rest[1]))),
        "conv1" | "conv2" => layer,
        "time_emb_proj" => "temb_proj",
        "conv_shortcut" => "nin_shortcut",
        _ => return None,
    };
    (!param.is_empty()).then(|| format!("{layer}.{param}"))
}

fn attn_key(rest: &[&str]) -> Option<String> {
    match rest {
        ["norm", p] => Some(format!("group_norm.{}", norm_param(p))),
        ["q", p] => Some(format!("to_q.{p}")),
        ["k", p] => Some(format!("to_k.{p}")),
        ["v", p] => Some(format!("to_v.{p}")),
        ["proj_out", p] => Some(format!("to_out.0.{p}")),
        _ => None,
    }
}

fn attn_path(rest: &[&str]) -> Option<String> {
    match rest {
        ["group_norm", p] => Some(format!("norm.{}", norm_param_back(p))),
        ["to_q", p] => Some(format!("q.{p}")),
        ["to_k", p] => Some(format!("k.{p}")),
        ["to_v", p] => Some(format!("v.{p}")),
        ["to_out", "0", p] => Some(format!("proj_out.{p}")),
        _ => None,
    }
}

/// The diffusers key of the [`DdpmUnet`] parameter at Burn path `path`, or `None` for a path
/// diffusers has no name for (e.g. the class embedding).
pub fn diffusers_key(path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split('.').collect();
    match segs.as_slice() {
        ["temb_dense0", p] => Some(format!("time_embedding.linear_1.{p}")),
        ["temb_dense1", p] => Some(format!("time_embedding.linear_2.{p}")),
        ["conv_in", p] | ["conv_out", p] => Some(path.to_string()).filter(|_| !p.is_empty()),
        ["norm_out", p] => Some(format!("conv_norm_out.{}", norm_param(p))),
        ["mid_block1", rest @ ..] => resnet_key(rest).map(|k| format!("mid_block.resnets.0.{k}")),
        ["mid_block2", rest @ ..] => resnet_key(rest).map(|k| format!("mid_block.resnets.1.{k}")),
        ["mid_attn", rest @ ..] => attn_key(rest).map(|k| format!("mid_block.attentions.0.{k}")),
        [dir @ ("down" | "up"), level, kind, rest @ ..] => {
            level.parse::<usize>().ok()?;
            let blocks = if *dir == "down" { "down_blocks" } else { "up_blocks" };
            match (*kind, rest) {
                ("blocks", [j, rest @ ..]) => {
                    j.parse::<usize>().ok()?;
                    resnet_key(rest).map(|k| format!("{blocks}.{level}.resnets.{j}.{k}"))
                }
                ("attns", [j, rest @ ..]) => {
                    j.parse::<usize>().ok()?;
                    attn_key(rest).map(|k| format!("{blocks}.{level}.attentions.{j}.{k}"))
                }
                ("resample", [p]) => {
                    let sampler = if *dir == "down" { "downsamplers" } else { "upsamplers" };
                    Some(format!("{blocks}.{level}.{sampler}.0.conv.{p}"))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The Burn path of the [`DdpmUnet`] parameter diffusers calls `key` (the inverse of
/// [`diffusers_key`]), or `None` for a key DdpmUnet has no parameter for. Legacy attention
/// names are not accepted here; see [`modernize_keys`].
pub fn burn_path(key: &str) -> Option<String> {
    let segs: Vec<&str> = key.split('.').collect();
    match segs.as_slice() {
        ["time_embedding", "linear_1", p] => Some(format!("temb_dense0.{p}")),
        ["time_embedding", "linear_2", p] => Some(format!("temb_dense1.{p}")),
        ["conv_in", _] | ["conv_out", _] => Some(key.to_string()),
        ["conv_norm_out", p] => Some(format!("norm_out.{}", norm_param_back(p))),
        ["mid_block", "resnets", "0", rest @ ..] => resnet_path(rest).map(|p| format!("mid_block1.{p}")),
        ["mid_block", "resnets", "1", rest @ ..] => resnet_path(rest).map(|p| format!("mid_block2.{p}")),
        ["mid_block", "attentions", "0", rest @ ..] => attn_path(rest).map(|p| format!("mid_attn.{p}")),
        [blocks @ ("down_blocks" | "up_blocks"), level, kind, rest @ ..] => {
            level.parse::<usize>().ok()?;
            let dir = if *blocks == "down_blocks" { "down" } else { "up" };
            match (*kind, rest) {
                ("resnets", [j, rest @ ..]) => {
                    j.parse::<usize>().ok()?;
                    resnet_path(rest).map(|p| format!("{dir}.{level}.blocks.{j}.{p}"))
                }
                ("attentions", [j, rest @ ..]) => {
                    j.parse::<usize>().ok()?;
                    attn_path(rest).map(|p| format!("{dir}.{level}.attns.{j}.{p}"))
                }
                ("downsamplers", ["0", "conv", p]) if dir == "down" => Some(format!("down.{level}.resample.{p}")),
                ("upsamplers", ["0", "conv", p]) if dir == "up" => Some(format!("up.{level}.resample.{p}")),
                _ => None,
            }
        }
        _ => None,
    }
}

impl ReferenceKeys for DiffusersKeys {
    fn reference_key(&self, path: &str) -> String {
        // A path diffusers cannot name is reported as missing under its own name.
        diffusers_key(path).unwrap_or_else(|| format!("<no diffusers name for {path}>"))
    }

    /// Attention projections: `[c, c, 1, 1]` -> `[c, c]` (diffusers' `nn.Linear`).
    fn reference_shape(&self, path: &str, shape: &[usize]) -> Vec<usize> {
        let attention = path.contains(".attns.") || path.starts_with("mid_attn.");
        if attention && shape.len() == 4 && shape[2] == 1 && shape[3] == 1 { vec![shape[0], shape[1]] } else { shape.to_vec() }
    }

    fn config_hint(&self, key: &str) -> &'static str {
        if key.contains(".attentions.") || key.starts_with("<no diffusers name") {
            "down_block_types / up_block_types (AttnDownBlock2D / AttnUpBlock2D levels), attention_head_dim and block_out_channels in unet/config.json"
        } else if key.starts_with("time_embedding") {
            "block_out_channels[0] and time_embedding_dim in unet/config.json"
        } else if key.starts_with("conv_in") {
            "in_channels and block_out_channels[0] in unet/config.json"
        } else if key.starts_with("conv_out") || key.starts_with("conv_norm_out") {
            "out_channels, block_out_channels[0] and norm_num_groups in unet/config.json"
        } else {
            "block_out_channels, layers_per_block and the block types in unet/config.json"
        }
    }
}

/// `state` with diffusers' legacy attention names (`query`, `key`, `value`, `proj_attn`, as
/// written before diffusers 0.14 and still in google/ddpm-cifar10-32's `.bin`) renamed to the
/// current ones (`to_q`, `to_k`, `to_v`, `to_out.0`), as diffusers converts them on load. A file
/// holding one tensor under both names is an error.
pub fn modernize_keys(state: &StateDict, file: &str) -> Result<StateDict> {
    const LEGACY: [(&str, &str); 4] = [("query", "to_q"), ("key", "to_k"), ("value", "to_v"), ("proj_attn", "to_out.0")];
    let mut out = StateDict::new();
    let mut problems = Vec::new();
    for (key, tensor) in state {
        let segs: Vec<&str> = key.split('.').collect();
        let n = segs.len();
        let renamed = (n >= 3 && segs[..n - 2].contains(&"attentions"))
            .then(|| LEGACY.iter().find(|(old, _)| segs[n - 2] == *old))
            .flatten()
            .map(|(_, new)| format!("{}.{new}.{}", segs[..n - 2].join("."), segs[n - 1]));
        let name = renamed.unwrap_or_else(|| key.clone());
        if name != *key && state.contains_key(&name) {
            problems.push(format!("`{key}` (legacy name) and `{name}` name the same tensor; keep one of them"));
            continue;
        }
        out.insert(name, tensor.clone());
    }
    if problems.is_empty() { Ok(out) } else { Err(ModelError::Weights { file: file.to_string(), problems }) }
}

/// Loads diffusers weights (current or legacy names) into `model`; every parameter must be found
/// with its shape and every tensor of the file used, or the error lists each problem with the key
/// and the `unet/config.json` keys to check. `file` names the source in messages.
pub fn load_unet(model: DdpmUnet, state: &StateDict, file: &str) -> Result<DdpmUnet> {
    if model.class_emb.is_some() {
        return Err(ModelError::config(
            "num_classes",
            "Some",
            "diffusers' UNet2DModel weights are unconditional; build the DdpmUnet without num_classes",
        ));
    }
    Ok(load_with_keys(model, &DiffusersKeys, &modernize_keys(state, file)?, file)?)
}

/// The network's parameters as diffusers' state dict (current names and layouts).
pub fn unet_state_dict(model: &DdpmUnet) -> StateDict {
    state_dict_with_keys(model, &DiffusersKeys)
}

// ------------------------------------------------------------------------------------------------
// Scheduler configuration
// ------------------------------------------------------------------------------------------------

/// diffusers' `DDPMScheduler` / `DDIMScheduler` configuration (`scheduler/scheduler_config.json`),
/// with the keys `DDIMScheduler.from_config(ddpm_scheduler.config)` carries over and diffusers'
/// defaults for missing ones. `set_alpha_to_one` is DDIM's own (absent from DDPM configs, where
/// `from_config` gives DDIM its default, true); `variance_type` is DDPM's (used by ancestral
/// sampling only). Other keys are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name", default = "ddpm_scheduler")]
    pub class_name: String,
    #[serde(rename = "_diffusers_version", default, skip_serializing_if = "Option::is_none")]
    pub diffusers_version: Option<String>,
    #[serde(default = "thousand")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "linear_str")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "fixed_small_str")]
    pub variance_type: String,
    #[serde(default = "yes")]
    pub clip_sample: bool,
    #[serde(default = "one_f64")]
    pub clip_sample_range: f64,
    #[serde(default = "epsilon_str")]
    pub prediction_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_alpha_to_one: Option<bool>,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default = "leading_str")]
    pub timestep_spacing: String,
    #[serde(default)]
    pub thresholding: bool,
    #[serde(default = "default_ratio")]
    pub dynamic_thresholding_ratio: f64,
    #[serde(default = "one_f64")]
    pub sample_max_value: f64,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    /// Keys this struct does not name, kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
    /// Where the configuration was read from (named in errors).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

fn ddpm_scheduler() -> String {
    "DDPMScheduler".into()
}
fn thousand() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    1e-4
}
fn default_beta_end() -> f64 {
    0.02
}
fn linear_str() -> String {
    "linear".into()
}
fn fixed_small_str() -> String {
    "fixed_small".into()
}
fn epsilon_str() -> String {
    "epsilon".into()
}
fn leading_str() -> String {
    "leading".into()
}
fn default_ratio() -> f64 {
    0.995
}

/// A `sample_max_value` at least this large means "no upper bound" on dynamic thresholding's `s`
/// (ddpm-core's [`X0Clip::Dynamic`] has none).
const UNCAPPED: f64 = f32::MAX as f64;

impl JsonConfig for SchedulerConfig {
    const WHAT: &'static str = "diffusers scheduler config";
    const DEFAULT_PATH: &'static str = "scheduler/scheduler_config.json";
    fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }
    fn set_source(&mut self, file: PathBuf) {
        self.source = Some(file);
    }
}

impl SchedulerConfig {
    fn err(&self, key: &str, value: impl Display, fix: impl Display) -> ModelError {
        bad(&self.file(), key, value, fix)
    }

    /// Refuses schedulers other than DDPMScheduler and DDIMScheduler, naming `_class_name`.
    pub fn check_class(&self) -> Result<()> {
        match self.class_name.as_str() {
            "DDPMScheduler" | "DDIMScheduler" => Ok(()),
            other => Err(self.err(
                "_class_name",
                format!("{other:?}"),
                "ddpm-rs reads DDPMScheduler and DDIMScheduler configs (convert others with DDIMScheduler.from_config)",
            )),
        }
    }

    /// The betas exactly as diffusers computes them, in f32: `linear` is
    /// `torch.linspace(beta_start, beta_end, T)` in f32 ([`torch_linspace_f32`]),
    /// `scaled_linear` its square-root version squared in f32, `squaredcos_cap_v2` (and `laplace`)
    /// `betas_for_alpha_bar` in f64 then f32, `sigmoid` `sigmoid(linspace(-6, 6, T)) (end - start)
    /// + start` (torch's vectorised f32 sigmoid is not correctly rounded; the f64 one rounded is
    /// used, within 1e-8), `trained_betas` as given; then `rescale_betas_zero_snr` with torch's f32
    /// operations (torch's f32 `sqrt` is not correctly rounded either, so rescaled schedules agree in
    /// `alphas_cumprod` to f32 precision, not bit for bit). Bit-exact for the other schedules.
    pub fn betas(&self) -> Result<Vec<f32>> {
        self.check_class()?;
        let t = self.num_train_timesteps;
        if t == 0 {
            return Err(self.err("num_train_timesteps", 0, "use at least one diffusion step (1000 is usual)"));
        }
        let (bs, be) = (self.beta_start, self.beta_end);
        let mut betas = if let Some(trained) = &self.trained_betas {
            if trained.len() != t {
                return Err(self.err(
                    "trained_betas",
                    format!("[{} values]", trained.len()),
                    format!("give num_train_timesteps = {t} betas, or set num_train_timesteps to {}", trained.len()),
                ));
            }
            trained.iter().map(|&b| b as f32).collect()
        } else {
            match self.beta_schedule.as_str() {
                "linear" => torch_linspace_f32(bs, be, t),
                "scaled_linear" => torch_linspace_f32(bs.sqrt(), be.sqrt(), t).into_iter().map(|v| v * v).collect(),
                "squaredcos_cap_v2" => betas_for_alpha_bar_f32(t, |x| {
                    let c = ((x + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos();
                    c * c
                }),
                "laplace" if self.class_name == "DDPMScheduler" => betas_for_alpha_bar_f32(t, |x| {
                    let lmb = -0.5 * (0.5 - x).signum() * (1.0 - 2.0 * (0.5 - x).abs() + 1e-6).ln();
                    let snr = lmb.exp();
                    (snr / (1.0 + snr)).sqrt()
                }),
                "sigmoid" if self.class_name == "DDPMScheduler" => {
                    let (scale, shift) = ((be - bs) as f32, bs as f32);
                    torch_linspace_f32(-6.0, 6.0, t).into_iter().map(|x| (1.0 / (1.0 + (-f64::from(x)).exp())) as f32 * scale + shift).collect()
                }
                other => {
                    return Err(self.err(
                        "beta_schedule",
                        format!("{other:?}"),
                        format!(
                            "{} supports linear, scaled_linear, squaredcos_cap_v2{}, or trained_betas",
                            self.class_name,
                            if self.class_name == "DDPMScheduler" { ", sigmoid, laplace" } else { "" }
                        ),
                    ));
                }
            }
        };
        if self.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr_f32(&betas);
        }
        Ok(betas)
    }

    /// diffusers' `alphas_cumprod`: `cumprod(1 - betas)` in f32 ([`torch_cumprod_f32`]).
    pub fn alphas_cumprod(&self) -> Result<Vec<f32>> {
        let alphas: Vec<f32> = self.betas()?.iter().map(|b| 1.0 - b).collect();
        Ok(torch_cumprod_f32(&alphas))
    }

    /// ddpm-core's schedule for these betas: a custom schedule whose f64 alphas are diffusers'
    /// f32 alphas `1 - beta` exactly (`beta' = 1 - f64(alpha_f32)`). ddpm-core's f64 cumulative
    /// product is then torch's f64 running product before its rounding to f32, so our
    /// `alphas_cumprod` equals diffusers' to half an f32 ulp (< 6e-8 relative; ~3e-7 for `sigmoid`
    /// and zero-SNR rescaled schedules, see [`SchedulerConfig::betas`]).
    pub fn beta_schedule(&self) -> Result<BetaSchedule> {
        let betas = self.betas()?;
        Ok(BetaSchedule::Custom { betas: betas.iter().map(|b| 1.0 - f64::from(1.0 - b)).collect() })
    }

    /// `prediction_type`: `epsilon` -> eps, `sample` -> x0, `v_prediction` -> v.
    pub fn objective(&self) -> Result<Objective> {
        match self.prediction_type.as_str() {
            "epsilon" => Ok(Objective::PredNoise),
            "sample" => Ok(Objective::PredX0),
            "v_prediction" => Ok(Objective::PredV),
            other => Err(self.err("prediction_type", format!("{other:?}"), "use epsilon, sample or v_prediction")),
        }
    }

    /// `variance_type` as ddpm-core's reverse variance (ancestral sampling only; DDIM ignores it):
    /// `fixed_small` and `fixed_small_log` (the same standard deviation) -> fixed-small,
    /// `fixed_large` -> fixed-large (beta_t; ddpm-core's t = 0 entry differs, but no noise is added
    /// there), `learned_range` -> learned-range. `learned` (the raw output as the variance) has no
    /// counterpart; diffusers' own step takes the square root of `log(beta) < 0` for
    /// `fixed_large_log`.
    pub fn model_variance(&self) -> Result<ModelVariance> {
        match self.variance_type.as_str() {
            "fixed_small" | "fixed_small_log" => Ok(ModelVariance::FixedSmall),
            "fixed_large" => Ok(ModelVariance::FixedLarge),
            "learned_range" => Ok(ModelVariance::LearnedRange),
            "fixed_large_log" => Err(self.err(
                "variance_type",
                "\"fixed_large_log\"",
                "diffusers' DDPMScheduler.step draws noise with sqrt(log(beta_t)), which is NaN; use fixed_large",
            )),
            other => {
                Err(self.err("variance_type", format!("{other:?}"), "ddpm-rs reproduces fixed_small, fixed_small_log, fixed_large and learned_range"))
            }
        }
    }

    /// How x0 predictions are clipped: `thresholding` (which diffusers checks first) with
    /// `sample_max_value = 1` is plain clipping to [-1, 1] (s = clamp(q, 1, 1) = 1); with an
    /// uncapped `sample_max_value` (>= f32::MAX) it is dynamic thresholding at
    /// `dynamic_thresholding_ratio`. Otherwise `clip_sample` clips to `clip_sample_range`, which
    /// must be 1.
    pub fn clip(&self) -> Result<X0Clip> {
        if self.thresholding {
            let p = self.dynamic_thresholding_ratio;
            if !(p > 0.0 && p <= 1.0) {
                return Err(self.err("dynamic_thresholding_ratio", p, "give a quantile in (0, 1]; Imagen uses 0.995"));
            }
            return if self.sample_max_value == 1.0 {
                Ok(X0Clip::Static)
            } else if self.sample_max_value >= UNCAPPED {
                Ok(X0Clip::Dynamic { percentile: p })
            } else {
                Err(self.err(
                    "sample_max_value",
                    self.sample_max_value,
                    format!("ddpm-core's dynamic thresholding has no upper bound on s: use 1 (plain clipping) or {UNCAPPED:e} (no bound)"),
                ))
            };
        }
        if !self.clip_sample {
            return Ok(X0Clip::None);
        }
        if self.clip_sample_range != 1.0 {
            return Err(self.err("clip_sample_range", self.clip_sample_range, "ddpm-core clips x0 to [-1, 1]: use 1.0, or clip_sample = false"));
        }
        Ok(X0Clip::Static)
    }

    /// ddpm-core's settings for this scheduler: `timesteps = num_train_timesteps`, the exact
    /// betas ([`SchedulerConfig::beta_schedule`]; a zero-SNR rescale is already in them), the
    /// objective and the reverse variance.
    pub fn diffusion_config(&self) -> Result<GaussianDiffusionConfig> {
        Ok(GaussianDiffusionConfig::new()
            .with_timesteps(self.num_train_timesteps)
            .with_beta_schedule(self.beta_schedule()?)
            .with_zero_terminal_snr(false)
            .with_objective(self.objective()?)
            .with_variance(self.model_variance()?))
    }

    /// The process of [`SchedulerConfig::diffusion_config`].
    pub fn diffusion(&self) -> Result<GaussianDiffusion> {
        self.diffusion_config()?.init().map_err(|e| ModelError::File { file: self.file(), message: e.to_string() })
    }

    /// diffusers' `timestep_spacing` as ddpm-core's (`linspace` is diffusers' own,
    /// [`TimestepSpacing::DiffusersLinspace`]).
    pub fn timestep_spacing(&self) -> Result<TimestepSpacing> {
        match self.timestep_spacing.as_str() {
            "leading" => Ok(TimestepSpacing::Leading),
            "trailing" => Ok(TimestepSpacing::Trailing),
            "linspace" => Ok(TimestepSpacing::DiffusersLinspace),
            other => Err(self.err("timestep_spacing", format!("{other:?}"), "use leading, trailing or linspace")),
        }
    }

    /// The steps `DDIMScheduler.from_config(this).set_timesteps(steps)` takes, each with the
    /// `prev_timestep = t - T div S` its `step` uses ([`diffusers_ddim_steps`]).
    pub fn ddim_steps(&self, steps: usize) -> Result<Vec<DdimStep>> {
        diffusers_ddim_steps(self.timestep_spacing()?, self.num_train_timesteps, steps, self.steps_offset)
            .map_err(|e| ModelError::File { file: self.file(), message: e.to_string() })
    }

    /// DDIM as `DDIMPipeline` runs it: eps kept from the network output
    /// (`use_clipped_model_output = False`) and `set_alpha_to_one` (default true).
    pub fn ddim_options(&self) -> DdimOptions {
        DdimOptions::diffusers(self.set_alpha_to_one.unwrap_or(true))
    }

    /// A `DDPMScheduler` configuration for ddpm-core's `diffusion` and `clip` (for export).
    /// `linear` (whose end points ddpm-core scales by 1000/T) becomes diffusers' `linear` with the
    /// scaled end points, `scaled_linear` stays, `cosine` with s = 0.008 becomes
    /// `squaredcos_cap_v2` (the same formula); every other schedule is written as
    /// `trained_betas`. diffusers then computes the betas in f32, about 1e-7 relative from
    /// ddpm-core's f64 ones. Dynamic thresholding is written uncapped (`sample_max_value` =
    /// f32::MAX). DDIM's `timestep_spacing` is left at diffusers' `leading`.
    pub fn from_diffusion(diffusion: &GaussianDiffusionConfig, clip: X0Clip) -> Result<Self> {
        let t = diffusion.timesteps;
        let mut config: Self = serde_json::from_str("{}").map_err(|e| ModelError::config("scheduler config", "{}", e.to_string()))?;
        config.diffusers_version = Some(DIFFUSERS_VERSION.into());
        config.num_train_timesteps = t;
        match diffusion.beta_schedule {
            BetaSchedule::Linear { beta_start, beta_end } => {
                let scale = 1000.0 / t as f64;
                (config.beta_start, config.beta_end) = (beta_start * scale, beta_end * scale);
            }
            BetaSchedule::ScaledLinear { beta_start, beta_end } => {
                config.beta_schedule = "scaled_linear".into();
                (config.beta_start, config.beta_end) = (beta_start, beta_end);
            }
            BetaSchedule::Cosine { s: 0.008 } => config.beta_schedule = "squaredcos_cap_v2".into(),
            ref other => {
                config.trained_betas = Some(other.betas(t).map_err(|e| ModelError::config("beta_schedule", other, e.to_string()))?);
            }
        }
        config.rescale_betas_zero_snr = diffusion.zero_terminal_snr;
        config.prediction_type = match diffusion.objective {
            Objective::PredNoise => "epsilon",
            Objective::PredX0 => "sample",
            Objective::PredV => "v_prediction",
            other => return Err(ModelError::config("objective", other, "diffusers predicts epsilon, sample (x0) or v_prediction")),
        }
        .into();
        config.variance_type = match diffusion.variance {
            ModelVariance::FixedSmall => "fixed_small",
            ModelVariance::FixedLarge => "fixed_large",
            ModelVariance::LearnedRange => "learned_range",
        }
        .into();
        if diffusion.self_condition {
            return Err(ModelError::config("self_condition", true, "diffusers' pipelines do not feed x0 back to the network"));
        }
        match clip {
            X0Clip::None => config.clip_sample = false,
            X0Clip::Static => config.clip_sample = true,
            X0Clip::Dynamic { percentile } => {
                config.clip_sample = false;
                config.thresholding = true;
                config.dynamic_thresholding_ratio = percentile;
                config.sample_max_value = UNCAPPED;
            }
        }
        Ok(config)
    }
}

// ------------------------------------------------------------------------------------------------
// Folders
// ------------------------------------------------------------------------------------------------

/// A `UNet2DModel` folder as read: its configuration and its weights (diffusers' names).
#[derive(Debug, Clone)]
pub struct DiffusersUnet {
    pub config: UNet2DModelConfig,
    pub weights: StateDict,
    /// The weights file (the index file for sharded weights).
    pub weights_file: PathBuf,
}

impl DiffusersUnet {
    /// The [`DdpmUnetConfig`] of the folder's network.
    pub fn ddpm_config(&self) -> Result<DdpmUnetConfig> {
        self.config.to_ddpm_unet()
    }

    /// Builds the [`DdpmUnet`] on `device` and loads the weights.
    pub fn init(&self, device: &Device) -> Result<DdpmUnet> {
        let model = self.ddpm_config()?.init(device)?;
        load_unet(model, &self.weights, &self.weights_file.display().to_string())
    }
}

/// Reads a bare `UNet2DModel` folder: `config.json` and `diffusion_pytorch_model.safetensors`
/// (or its sharded `.safetensors.index.json`, or the PyTorch pickle `diffusion_pytorch_model.bin`,
/// read without running pickle code).
pub fn read_unet_folder(dir: impl AsRef<Path>) -> Result<DiffusersUnet> {
    let dir = dir.as_ref();
    let config = UNet2DModelConfig::read(dir.join(UNET_CONFIG))?;
    let (weights, weights_file) = if dir.join(UNET_WEIGHTS).is_file() {
        (read_safetensors(dir.join(UNET_WEIGHTS))?, dir.join(UNET_WEIGHTS))
    } else if dir.join(UNET_WEIGHTS_INDEX).is_file() {
        (read_sharded(&dir.join(UNET_WEIGHTS_INDEX))?, dir.join(UNET_WEIGHTS_INDEX))
    } else if dir.join(UNET_WEIGHTS_BIN).is_file() {
        (read_pytorch(dir.join(UNET_WEIGHTS_BIN))?, dir.join(UNET_WEIGHTS_BIN))
    } else {
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        found.sort();
        return Err(file_err(
            dir,
            format!(
                "no {UNET_WEIGHTS}, {UNET_WEIGHTS_INDEX} or {UNET_WEIGHTS_BIN} (found: {}); variants such as .fp16 are not read: save with save_pretrained(..., safe_serialization=True)",
                if found.is_empty() { "nothing".to_string() } else { found.join(", ") }
            ),
        ));
    };
    Ok(DiffusersUnet { config, weights, weights_file })
}

/// A sharded safetensors checkpoint: `{"weight_map": {key: shard file}}` next to the shards.
fn read_sharded(index: &Path) -> Result<StateDict> {
    let text = std::fs::read_to_string(index).map_err(|e| file_err(index, format!("cannot read: {e}")))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| file_err(index, format!("not JSON: {e}")))?;
    let map = value.get("weight_map").and_then(Value::as_object).ok_or_else(|| file_err(index, "no `weight_map` object: not a safetensors index"))?;
    let shards: BTreeSet<&str> = map.values().filter_map(Value::as_str).collect();
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut out = StateDict::new();
    for shard in shards {
        if shard.contains('/') || shard.contains('\\') || shard.contains("..") {
            return Err(file_err(index, format!("shard `{shard}` is not a file name in this folder")));
        }
        out.extend(read_safetensors(dir.join(shard))?);
    }
    Ok(out)
}

/// A `DDPMPipeline` (or `DDIMPipeline`) folder as read.
#[derive(Debug, Clone)]
pub struct DiffusersPipeline {
    /// `model_index.json`'s `_class_name`.
    pub class_name: String,
    pub unet: DiffusersUnet,
    pub scheduler: SchedulerConfig,
}

fn component<'a>(index: &'a Value, name: &str, file: &Path) -> Result<(&'a str, &'a str)> {
    let entry = index.get(name).and_then(Value::as_array);
    match entry.map(|a| a.iter().map(Value::as_str).collect::<Vec<_>>()).as_deref() {
        Some([Some(library), Some(class)]) => Ok((library, class)),
        _ => Err(bad(
            &file.display().to_string(),
            name,
            index.get(name).map_or("missing".to_string(), Value::to_string),
            "expected [\"diffusers\", \"<class>\"]: a DDPMPipeline lists its unet and scheduler",
        )),
    }
}

/// Reads a pipeline folder: `model_index.json` (`DDPMPipeline` or `DDIMPipeline` with a
/// `UNet2DModel` and a `DDPMScheduler` / `DDIMScheduler`), `unet/` ([`read_unet_folder`]) and
/// `scheduler/scheduler_config.json`. Build the process and network with
/// [`SchedulerConfig::diffusion`] and [`DiffusersUnet::init`].
pub fn read_pipeline(dir: impl AsRef<Path>) -> Result<DiffusersPipeline> {
    let dir = dir.as_ref();
    let index_path = dir.join(MODEL_INDEX);
    let text = std::fs::read_to_string(&index_path)
        .map_err(|e| file_err(&index_path, format!("cannot read: {e} (is this a diffusers pipeline folder?)")))?;
    let index: Value = serde_json::from_str(&text).map_err(|e| file_err(&index_path, format!("not JSON: {e}")))?;
    let class_name = index.get("_class_name").and_then(Value::as_str).unwrap_or("").to_string();
    if !matches!(class_name.as_str(), "DDPMPipeline" | "DDIMPipeline") {
        return Err(bad(
            &index_path.display().to_string(),
            "_class_name",
            format!("{class_name:?}"),
            "ddpm-rs reads DDPMPipeline and DDIMPipeline folders (a UNet2DModel and a DDPM/DDIM scheduler)",
        ));
    }
    let (library, unet_class) = component(&index, "unet", &index_path)?;
    if library != "diffusers" || unet_class != "UNet2DModel" {
        return Err(bad(
            &index_path.display().to_string(),
            "unet",
            format!("[{library:?}, {unet_class:?}]"),
            "expected [\"diffusers\", \"UNet2DModel\"]",
        ));
    }
    let (library, scheduler_class) = component(&index, "scheduler", &index_path)?;
    if library != "diffusers" {
        return Err(bad(
            &index_path.display().to_string(),
            "scheduler",
            format!("[{library:?}, {scheduler_class:?}]"),
            "expected a diffusers scheduler",
        ));
    }
    let unet = read_unet_folder(dir.join("unet"))?;
    let scheduler = SchedulerConfig::read(dir.join("scheduler").join(SCHEDULER_CONFIG))?;
    scheduler.check_class()?;
    Ok(DiffusersPipeline { class_name, unet, scheduler })
}

/// Writes into a fresh temporary folder next to `dir`, then renames it to `dir`, so that an
/// interrupted write never leaves a half-written model. `dir` must not exist or be empty.
fn write_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty {
            return Err(file_err(dir, "exists and is not empty; remove it or choose another folder (nothing is overwritten)"));
        }
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = dir.file_name().ok_or_else(|| file_err(dir, "not a folder name"))?.to_string_lossy().into_owned();
    std::fs::create_dir_all(parent).map_err(|e| file_err(parent, format!("cannot create: {e}")))?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| file_err(&tmp, format!("cannot create: {e}")))?;
    let result = fill(&tmp).and_then(|()| {
        if dir.exists() {
            std::fs::remove_dir(dir).map_err(|e| file_err(dir, format!("cannot replace the empty folder: {e}")))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| file_err(dir, format!("cannot rename {} into place: {e}", tmp.display())))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn write_json(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, format!("{text}\n")).map_err(|e| file_err(path, format!("cannot write: {e}")))
}

/// Checks that `model` has the structure `config` describes (diffusers rebuilds the network from
/// the JSON, so a mismatch would only show when loading in Python).
fn check_structure(model: &DdpmUnet, config: &DdpmUnetConfig, unet: &UNet2DModelConfig) -> Result<()> {
    let mismatch =
        |what: String| ModelError::config("config", "the given DdpmUnetConfig", format!("{what}: pass the configuration the network was built from"));
    let (ch, levels) = (config.ch, config.ch_mult.len());
    let conv_in = model.conv_in.weight.val().dims();
    if conv_in[..2] != [ch, unet.in_channels] {
        return Err(mismatch(format!("conv_in is {conv_in:?}, the configuration says [{ch}, {}, 3, 3]", unet.in_channels)));
    }
    let conv_out = model.conv_out.weight.val().dims();
    if conv_out[..2] != [unet.out_channels, ch] {
        return Err(mismatch(format!("conv_out is {conv_out:?}, the configuration says [{}, {ch}, 3, 3]", unet.out_channels)));
    }
    if model.down.len() != levels || model.up.len() != levels {
        return Err(mismatch(format!("the network has {} levels, the configuration {levels}", model.down.len())));
    }
    for (i, level) in model.down.iter().enumerate() {
        let attn = unet.down_block_types[i] == "AttnDownBlock2D";
        let width = level.blocks.first().map(|b| b.conv1.weight.val().dims()[0]);
        if level.blocks.len() != config.num_res_blocks
            || level.attns.len() != if attn { config.num_res_blocks } else { 0 }
            || width != Some(unet.block_out_channels[i])
        {
            return Err(mismatch(format!(
                "down level {i} has {} ResNet blocks of width {width:?} and {} attention blocks, the configuration {} of width {} and {}",
                level.blocks.len(),
                level.attns.len(),
                config.num_res_blocks,
                unet.block_out_channels[i],
                if attn { config.num_res_blocks } else { 0 }
            )));
        }
    }
    Ok(())
}

fn fill_unet(dir: &Path, model: &DdpmUnet, config: &DdpmUnetConfig) -> Result<()> {
    let unet_config = UNet2DModelConfig::from_ddpm_unet(config)?;
    check_structure(model, config, &unet_config)?;
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, format!("cannot create: {e}")))?;
    write_json(&dir.join(UNET_CONFIG), &unet_config.to_json()?)?;
    Ok(write_safetensors(dir.join(UNET_WEIGHTS), &unet_state_dict(model))?)
}

/// Writes a bare `UNet2DModel` folder (`config.json`, `diffusion_pytorch_model.safetensors`)
/// that `UNet2DModel.from_pretrained(dir)` loads. `config` must be the one `model` was built from.
pub fn write_unet_folder(dir: impl AsRef<Path>, model: &DdpmUnet, config: &DdpmUnetConfig) -> Result<()> {
    write_atomically(dir.as_ref(), |tmp| fill_unet(tmp, model, config))
}

/// Writes a `DDPMPipeline` folder that `DDPMPipeline.from_pretrained(dir)` loads:
/// `model_index.json`, `unet/config.json`, `unet/diffusion_pytorch_model.safetensors` and
/// `scheduler/scheduler_config.json` (e.g. from [`SchedulerConfig::from_diffusion`]).
pub fn write_pipeline(dir: impl AsRef<Path>, model: &DdpmUnet, config: &DdpmUnetConfig, scheduler: &SchedulerConfig) -> Result<()> {
    scheduler.check_class()?;
    let index = serde_json::json!({
        "_class_name": "DDPMPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "scheduler": ["diffusers", scheduler.class_name],
        "unet": ["diffusers", "UNet2DModel"],
    });
    let index = serde_json::to_string_pretty(&index).map_err(|e| ModelError::config("model_index", "?", e.to_string()))?;
    let scheduler_json = scheduler.to_json()?;
    write_atomically(dir.as_ref(), |tmp| {
        write_json(&tmp.join(MODEL_INDEX), &index)?;
        fill_unet(&tmp.join("unet"), model, config)?;
        let sched = tmp.join("scheduler");
        std::fs::create_dir_all(&sched).map_err(|e| file_err(&sched, format!("cannot create: {e}")))?;
        write_json(&sched.join(SCHEDULER_CONFIG), &scheduler_json)
    })
}
