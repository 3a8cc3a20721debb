//! Errors of ddpm-models: each names the setting or the weight key, the values, and the fix.

use std::fmt::Display;

/// Errors from building networks and moving weights in and out.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration value that cannot work.
    #[error("invalid `{key}` = {value}: {fix}")]
    Config { key: String, value: String, fix: String },
    /// Weights that do not fit the network, every problem listed.
    #[error("weights from {file} do not fit the network:\n  {}", problems.join("\n  "))]
    Weights { file: String, problems: Vec<String> },
    /// A weights file that cannot be read or written.
    #[error("{file}: {message}")]
    File { file: String, message: String },
}

impl From<ddpm_io::IoError> for ModelError {
    fn from(e: ddpm_io::IoError) -> Self {
        match e {
            ddpm_io::IoError::Weights { file, problems } => Self::Weights { file, problems },
            ddpm_io::IoError::File { file, message } => Self::File { file, message },
            ddpm_io::IoError::Device { name, fix } => Self::Config { key: "device".into(), value: name, fix },
        }
    }
}

impl ModelError {
    pub(crate) fn config(key: impl Into<String>, value: impl Display, fix: impl Into<String>) -> Self {
        Self::Config { key: key.into(), value: value.to_string(), fix: fix.into() }
    }
}

/// `Result` with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
