//! Hugging Face diffusers at the trainer's level: a diffusers pipeline or `UNet2DModel` folder as a
//! ddpm-train config and weights, and a DDPM-paper network written as a `DDPMPipeline` folder.

use std::path::{Path, PathBuf};

use ddpm_core::Process;
use ddpm_models::weights::StateDict;
use ddpm_models::{DdpmUnet, DdpmUnetConfig};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

fn pending(what: &str) -> TrainError {
    TrainError::config("diffusers", format!("{what}: in progress"))
}

pub(crate) fn load_ddpm_unet(_model: DdpmUnet, _state: &StateDict, file: &str) -> Result<DdpmUnet> {
    Err(pending(file))
}

pub(crate) fn ddpm_unet_state_dict(_model: &DdpmUnet) -> Result<StateDict> {
    Err(pending("export"))
}

pub fn read_diffusers_unet(dir: &Path) -> Result<(StateDict, PathBuf)> {
    Err(pending(&dir.display().to_string()))
}

pub fn diffusers_config(dir: &Path) -> Result<TrainConfig> {
    Err(pending(&dir.display().to_string()))
}

pub fn write_diffusers_pipeline(out: &Path, _state: &StateDict, _unet: &DdpmUnetConfig, _process: &Process) -> Result<()> {
    Err(pending(&out.display().to_string()))
}
