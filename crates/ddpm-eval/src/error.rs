//! Errors of ddpm-eval: each names the file, the key or the value, and the fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file that cannot be read, written or understood.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// Inputs that do not fit together (shapes, sizes, counts).
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Download(#[from] crate::download::DownloadError),
    #[error(transparent)]
    Core(#[from] ddpm_core::Error),
    #[error(transparent)]
    Io(#[from] ddpm_io::IoError),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

impl EvalError {
    /// A [`EvalError::File`] for `path` with `message` (which says what is wrong and the fix).
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        EvalError::File { path: path.into(), message: message.into() }
    }

    /// An [`EvalError::Input`] with `message` (which names the value and the fix).
    pub fn input(message: impl Into<String>) -> Self {
        EvalError::Input(message.into())
    }
}
