//! Errors of ddpm-io: each names the file, the key or the device, what is wrong and the fix.

/// Errors from reading and writing weights and from naming devices.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// Weights that do not fit the network, every problem listed.
    #[error("weights from {file} do not fit the network:\n  {}", problems.join("\n  "))]
    Weights { file: String, problems: Vec<String> },
    /// A weights file that cannot be read or written.
    #[error("{file}: {message}")]
    File { file: String, message: String },
    /// A device string named a backend this build does not have, or none at all.
    #[error("device `{name}`: {fix}")]
    Device { name: String, fix: String },
}

/// The message of a panic caught from a third-party reader (for an error that names the file).
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// `Result` with [`IoError`].
pub type Result<T, E = IoError> = std::result::Result<T, E>;
