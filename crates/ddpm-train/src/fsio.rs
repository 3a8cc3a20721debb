//! Small file-system helpers every module uses: the I/O error that names its path, atomic writes,
//! timestamps. A leaf: it imports nothing of the crate but its error type.

use std::fs;
use std::path::Path;

use crate::error::{Result, TrainError};

/// Seconds since the Unix epoch, for log lines.
pub fn unix_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

pub fn io(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Io { path: path.to_path_buf(), message: e.to_string() }
}

/// Writes a file through a temporary name and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io(path, e))
}
