//! The one error type of ddpm-core: every message names the setting, the value and the fix.

use std::fmt::Display;

/// Errors from ddpm-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting or argument has a value that cannot work.
    #[error("invalid `{key}` = {value}: {fix}")]
    Invalid { key: String, value: String, fix: String },
    /// Two tensors (or a tensor and a setting) disagree on shape.
    #[error("shape mismatch for {what}: expected {expected:?}, got {got:?}")]
    Shape { what: String, expected: Vec<usize>, got: Vec<usize> },
    /// A replayed noise sequence ran out or did not fit.
    #[error("noise replay: {0}")]
    Noise(String),
}

impl Error {
    pub(crate) fn invalid(key: impl Into<String>, value: impl Display, fix: impl Into<String>) -> Self {
        Self::Invalid { key: key.into(), value: value.to_string(), fix: fix.into() }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
