//! Where the FID weights file is: given, named by the environment, already in a cache (ours or
//! PyTorch hub's, where pytorch-fid keeps it), or downloaded once into our cache.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::download::{Checksum, cache_dir, download};
use crate::error::{EvalError, Result};

/// Where pytorch-fid downloads its weights from.
pub const FID_WEIGHTS_URL: &str = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth";
/// The weights' file name; `torch.hub` saves it under this name.
pub const FID_WEIGHTS_FILE: &str = "pt_inception-2015-12-05-6726825d.pth";
/// The start of the file's SHA-256, as its name says and as `torch.hub` checks it.
pub const FID_WEIGHTS_SHA256_PREFIX: &str = "6726825d";
/// Environment variable: a weights file (`.pth` or `.safetensors`) to use.
pub const ENV_WEIGHTS: &str = "DDPM_INCEPTION_WEIGHTS";
/// Environment variable: a URL to download [`FID_WEIGHTS_FILE`] from in place of GitHub's.
pub const ENV_WEIGHTS_URL: &str = "DDPM_INCEPTION_URL";

/// How [`WeightsLookup::resolve`] finds the weights, first match wins: `given`, `env_weights`,
/// `torch_hub_dir`/[`FID_WEIGHTS_FILE`], `cache_dir`/[`FID_WEIGHTS_FILE`], and, when `download`
/// is on, a download from `url` into `cache_dir` checked against `checksum`.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsLookup {
    /// A path the user gave (`--weights`, `eval.weights`); it must exist.
    pub given: Option<PathBuf>,
    /// `$DDPM_INCEPTION_WEIGHTS`; it must exist when set.
    pub env_weights: Option<PathBuf>,
    /// PyTorch hub's checkpoint folder (`$TORCH_HOME/hub/checkpoints`, else
    /// `$XDG_CACHE_HOME/torch/hub/checkpoints`, else `~/.cache/torch/hub/checkpoints`).
    pub torch_hub_dir: Option<PathBuf>,
    /// Our cache folder (`$XDG_CACHE_HOME/ddpm-rs/weights`, else `~/.cache/ddpm-rs/weights`).
    pub cache_dir: Option<PathBuf>,
    /// Where to download from: `$DDPM_INCEPTION_URL`, else [`FID_WEIGHTS_URL`].
    pub url: String,
    pub checksum: Checksum,
    /// Whether a missing file may be downloaded.
    pub download: bool,
}

fn non_empty(v: Option<OsString>) -> Option<PathBuf> {
    v.filter(|s| !s.is_empty()).map(PathBuf::from)
}

impl WeightsLookup {
    /// The lookup for this process's environment, with `given` from the user.
    pub fn from_env(given: Option<&Path>, download: bool) -> Self {
        let var = |k: &str| non_empty(std::env::var_os(k));
        let torch_hub_dir = var("TORCH_HOME")
            .or_else(|| {
                var("XDG_CACHE_HOME")
                    .filter(|d| d.is_absolute())
                    .map(|d| d.join("torch"))
            })
            .or_else(|| var("HOME").map(|h| h.join(".cache").join("torch")))
            .map(|t| t.join("hub").join("checkpoints"));
        Self {
            given: given.map(Path::to_path_buf),
            env_weights: var(ENV_WEIGHTS),
            torch_hub_dir,
            cache_dir: cache_dir("weights"),
            url: std::env::var(ENV_WEIGHTS_URL)
                .ok()
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| FID_WEIGHTS_URL.to_string()),
            checksum: Checksum::Sha256Prefix(FID_WEIGHTS_SHA256_PREFIX.into()),
            download,
        }
    }

    /// The weights file (see the type's documentation for the order).
    pub fn resolve(&self) -> Result<PathBuf> {
        let must_exist = |path: &PathBuf, from: &str| -> Result<PathBuf> {
            if path.is_file() {
                Ok(path.clone())
            } else {
                Err(EvalError::file(
                    path,
                    format!(
                        "no such Inception weights file (from {from}); give pytorch-fid's {FID_WEIGHTS_FILE} or a .safetensors with its keys"
                    ),
                ))
            }
        };
        if let Some(path) = &self.given {
            return must_exist(path, "the command line or config");
        }
        if let Some(path) = &self.env_weights {
            return must_exist(path, ENV_WEIGHTS);
        }
        for dir in [&self.torch_hub_dir, &self.cache_dir].into_iter().flatten() {
            let path = dir.join(FID_WEIGHTS_FILE);
            if path.is_file() {
                return Ok(path);
            }
        }
        let Some(cache) = &self.cache_dir else {
            return Err(EvalError::input(format!(
                "FID needs the Inception weights and there is no cache folder to download them to (neither XDG_CACHE_HOME nor HOME is set): \
                 download {} and give its path (--weights / eval.weights / {ENV_WEIGHTS})",
                self.url
            )));
        };
        let dest = cache.join(FID_WEIGHTS_FILE);
        if !self.download {
            return Err(EvalError::input(format!(
                "FID needs the Inception weights and downloading is off: download {} ({}) and save it as {}, or give its path \
                 (--weights / eval.weights / {ENV_WEIGHTS})",
                self.url,
                self.checksum,
                dest.display()
            )));
        }
        download(&self.url, &dest, &self.checksum, "Inception weights")?;
        Ok(dest)
    }
}
