//! Hugging Face diffusers at the trainer's level: a diffusers pipeline or `UNet2DModel` folder
//! becomes a ddpm-train config (the network, the schedule and diffusers' DDIM, from its JSON files)
//! plus weights, and a DDPM-paper network becomes a `DDPMPipeline` folder. The conversions of
//! configurations, keys and layouts live in [`ddpm_models::diffusers`].

use std::path::{Path, PathBuf};

use ddpm_core::{Process, X0Clip};
use ddpm_models::diffusers::{self as hf, DiffusersUnet, JsonConfig, SchedulerConfig, UNet2DModelConfig};
use ddpm_models::weights::StateDict;
use ddpm_models::{DdpmUnet, DdpmUnetConfig};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// Loads diffusers-named weights into a DDPM-paper network (legacy attention names included).
pub(crate) fn load_ddpm_unet(model: DdpmUnet, state: &StateDict, file: &str) -> Result<DdpmUnet> {
    Ok(hf::load_unet(model, state, file)?)
}

/// The network's weights with diffusers' key names and layouts.
pub(crate) fn ddpm_unet_state_dict(model: &DdpmUnet) -> StateDict {
    hf::unet_state_dict(model)
}

/// The `UNet2DModel` folder of a pipeline folder, or the folder itself.
fn unet_dir(dir: &Path) -> PathBuf {
    if dir.join(hf::MODEL_INDEX).is_file() { dir.join("unet") } else { dir.to_path_buf() }
}

/// The weights of a diffusers pipeline or `UNet2DModel` folder, and the file they came from.
pub fn read_diffusers_unet(dir: &Path) -> Result<(StateDict, PathBuf)> {
    let DiffusersUnet { weights, weights_file, .. } = hf::read_unet_folder(unet_dir(dir))?;
    Ok((weights, weights_file))
}

/// The scheduler of a pipeline folder; a bare `UNet2DModel` folder gets `DDPMScheduler()`'s
/// defaults (linear betas 1e-4 to 0.02 over 1000 steps, eps-prediction, clipping), which is what
/// `DDPMPipeline(unet, DDPMScheduler())` would use.
fn scheduler_of(dir: &Path) -> Result<SchedulerConfig> {
    if dir.join(hf::MODEL_INDEX).is_file() {
        let scheduler = SchedulerConfig::read(dir.join("scheduler").join(hf::SCHEDULER_CONFIG))?;
        scheduler.check_class()?;
        Ok(scheduler)
    } else {
        Ok(SchedulerConfig::from_json(r#"{"_class_name": "DDPMScheduler"}"#, dir.join("(DDPMScheduler defaults)"))?)
    }
}

fn toml_value<T: serde::Serialize>(v: &T) -> toml::Value {
    toml::Value::try_from(v).expect("ddpm-rs settings serialise to TOML")
}

/// The ddpm-train config of a diffusers folder: `model.kind = "ddpm_unet"` from the UNet's
/// `config.json`, `data.kind = "none"` with its item shape, the scheduler's exact betas, objective
/// and variance, and diffusers' DDIM (50 steps, eta 0, the scheduler's spacing, offset, final
/// alpha and clipping) as the sampling default. `ddpm-train import` writes it into the checkpoint.
pub fn diffusers_config(dir: &Path) -> Result<TrainConfig> {
    let unet_path = unet_dir(dir).join(hf::UNET_CONFIG);
    let unet = UNet2DModelConfig::read(&unet_path)?.to_ddpm_unet()?;
    let scheduler = scheduler_of(dir)?;
    let diffusion = scheduler.diffusion_config()?;
    let learned = diffusion.variance.is_learned();
    let out = unet.out_channels.unwrap_or(unet.in_channels);
    let want = if learned { 2 * unet.in_channels } else { unet.in_channels };
    if out != want {
        return Err(TrainError::config(
            "out_channels",
            format!(
                "{}: the UNet outputs {out} channels for {} input channels, but the scheduler's variance_type {:?} needs {want}",
                unet_path.display(),
                unet.in_channels,
                scheduler.variance_type
            ),
        ));
    }
    let mut model = toml::Table::new();
    model.insert("kind".into(), "ddpm_unet".into());
    model.insert("ch".into(), toml_value(&unet.ch));
    model.insert("ch_mult".into(), toml_value(&unet.ch_mult));
    model.insert("num_res_blocks".into(), toml_value(&unet.num_res_blocks));
    model.insert("attn_resolutions".into(), toml_value(&unet.attn_resolutions));
    model.insert("dropout".into(), toml_value(&unet.dropout));
    if let Some(g) = unet.norm_num_groups {
        model.insert("norm_num_groups".into(), toml_value(&g));
    }
    model.insert("norm_eps".into(), toml_value(&unet.norm_eps));
    model.insert("time_frequencies".into(), toml_value(&unet.time_frequencies));
    let mut data = toml::Table::new();
    data.insert("kind".into(), "none".into());
    data.insert("shape".into(), toml_value(&[unet.in_channels, unet.resolution, unet.resolution]));
    let mut diff = toml::Table::new();
    diff.insert("timesteps".into(), toml_value(&diffusion.timesteps));
    diff.insert("beta_schedule".into(), toml_value(&diffusion.beta_schedule));
    diff.insert("objective".into(), toml_value(&diffusion.objective));
    diff.insert("variance".into(), toml_value(&diffusion.variance));
    let mut sample = toml::Table::new();
    sample.insert("sampler".into(), "ddim".into());
    sample.insert("steps".into(), toml_value(&50usize));
    sample.insert("eta".into(), toml_value(&0.0f64));
    sample.insert("spacing".into(), toml_value(&scheduler.timestep_spacing()?));
    sample.insert("clip".into(), toml_value(&scheduler.clip()?));
    let mut ddim = toml::Table::new();
    ddim.insert("steps_offset".into(), toml_value(&scheduler.steps_offset));
    ddim.insert("set_alpha_to_one".into(), toml_value(&scheduler.set_alpha_to_one.unwrap_or(true)));
    sample.insert("diffusers_ddim".into(), toml::Value::Table(ddim));
    let mut doc = toml::Table::new();
    doc.insert("data".into(), toml::Value::Table(data));
    doc.insert("model".into(), toml::Value::Table(model));
    doc.insert("diffusion".into(), toml::Value::Table(diff));
    doc.insert("sample".into(), toml::Value::Table(sample));
    let text = toml::to_string(&doc).expect("a table renders");
    crate::config::parse_config(&text, &format!("{} (translated from diffusers)", dir.display()), &[])
}

/// The `scheduler_config.json` of a process: a `DDPMScheduler` with the process's exact betas
/// (`trained_betas`), objective, variance and clipping. Only discrete Gaussian diffusion has one.
pub fn scheduler_for(process: &Process, clip: X0Clip) -> Result<SchedulerConfig> {
    let d = process.gaussian("a diffusers scheduler")?;
    Ok(SchedulerConfig::from_diffusion(&d.config, clip)?)
}

/// Writes `model` (a DDPM-paper network of settings `unet`) and the scheduler of `process` as a
/// diffusers `DDPMPipeline` folder (written to a temporary folder and renamed into place).
pub fn write_diffusers_pipeline(out: &Path, model: &DdpmUnet, unet: &DdpmUnetConfig, process: &Process, clip: X0Clip) -> Result<()> {
    let scheduler = scheduler_for(process, clip)?;
    Ok(hf::write_pipeline(out, model, unet, &scheduler)?)
}
