//! Errors of ddpm-train: each names the file, the key or the value, and the fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration that cannot work.
    #[error("{origin}{}: {}{message}", line.map(|l| format!(":{l}")).unwrap_or_default(), if key.is_empty() { String::new() } else { format!("`{key}`: ") })]
    Config { origin: String, line: Option<usize>, key: String, message: String },
    /// A file that cannot be read or written.
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// A checkpoint that is missing, truncated or does not fit.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    /// A data file that is missing, corrupt or in the wrong format.
    #[error("{}: {message}", path.display())]
    Data { path: PathBuf, message: String },
    /// A download that failed or whose checksum does not match.
    #[error("download {url}: {message}")]
    Download { url: String, message: String },
    /// A run folder that holds another run, or checkpoints that do not fit the one resumed.
    #[error("run folder {}: {message}", path.display())]
    RunFolder { path: PathBuf, message: String },
    /// Training diverged.
    #[error("{0}")]
    Diverged(String),
    #[error(transparent)]
    Core(#[from] ddpm_core::Error),
    #[error(transparent)]
    Model(#[from] ddpm_models::ModelError),
    /// Weights files and device names (ddpm-io).
    #[error(transparent)]
    Files(#[from] ddpm_io::IoError),
}

impl TrainError {
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config { origin: "config".into(), line: None, key: key.into(), message: message.into() }
    }
}

impl From<ddpm_io::download::DownloadError> for TrainError {
    fn from(e: ddpm_io::download::DownloadError) -> Self {
        use ddpm_io::download::DownloadError as D;
        match e {
            D::Network { url, message } | D::Mismatch { url, message } => {
                TrainError::Download { url, message }
            }
            D::Io { path, message } => TrainError::Io { path, message },
        }
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
