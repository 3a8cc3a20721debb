//! Files of features and statistics, in numpy's formats so that pytorch-fid and ddpm-eval can read
//! each other's:
//!
//! - statistics: an `.npz` with `mu` (`[d]`) and `sigma` (`[d, d]`), float64 (float32 accepted) —
//!   exactly pytorch-fid's `--save-stats` files — plus, when ddpm-eval wrote it, `n` (the sample
//!   count, int64 scalar), which pytorch-fid ignores;
//! - features: an `.npy` of shape `[N, d]`, float32 (float64 accepted), one row per image.
//!
//! Writes are atomic: a temporary file in the same folder, renamed over the target when complete.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use npyz::npz::{NpzArchive, NpzWriter};
use npyz::{DType, NpyFile, Order, TypeChar, WriterBuilder};

use crate::error::{EvalError, Result};
use crate::features::FeatureMatrix;
use crate::frechet::FeatureStats;

/// A `[rows, dim]` feature matrix read from a file, widened to f64.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureArray {
    /// Row-major values.
    pub values: Vec<f64>,
    /// Number of rows (samples).
    pub rows: usize,
    /// Values per row.
    pub dim: usize,
}

impl FeatureArray {
    /// The values as a checked [`FeatureMatrix`]; `what` names it in errors.
    pub fn matrix(&self, what: &str) -> Result<FeatureMatrix<'_>> {
        FeatureMatrix::with_rows(&self.values, self.rows, self.dim, what)
    }
}

/// Reads pytorch-fid statistics: the arrays `mu` (`[d]`) and `sigma` (`[d, d]`) of an `.npz`
/// (float64 or float32, compressed or not), and `n` when present (0 otherwise).
///
/// Errors name the file and what is missing or malformed.
pub fn read_stats_npz(path: &Path) -> Result<FeatureStats> {
    let mut archive = NpzArchive::open(path).map_err(|e| {
        EvalError::file(path, format!("cannot open as an .npz archive: {e}; statistics files are numpy .npz with `mu` and `sigma`"))
    })?;
    let names: Vec<String> = archive.array_names().map(str::to_owned).collect();
    let mut array = |key: &str| -> Result<(Vec<u64>, Vec<f64>)> {
        let npy = archive
            .by_name(key)
            .map_err(|e| EvalError::file(path, format!("cannot read array `{key}`: {e}")))?
            .ok_or_else(|| {
                EvalError::file(
                    path,
                    format!(
                        "no array `{key}` (the file has: {}); pytorch-fid statistics hold `mu` [d] and `sigma` [d, d] \
                         — write them with `ddpm-eval stats` or pytorch-fid's --save-stats",
                        if names.is_empty() { "nothing".to_owned() } else { names.join(", ") }
                    ),
                )
            })?;
        read_float_array(npy).map_err(|message| EvalError::file(path, format!("array `{key}`: {message}")))
    };
    let (mu_shape, mu) = array("mu")?;
    let (sigma_shape, sigma) = array("sigma")?;
    let d = mu.len();
    if mu_shape.len() != 1 {
        return Err(EvalError::file(path, format!("`mu` has shape {mu_shape:?}; expected [d]")));
    }
    if sigma_shape != [d as u64, d as u64] {
        return Err(EvalError::file(path, format!("`sigma` has shape {sigma_shape:?}; expected [{d}, {d}] to match `mu` [{d}]")));
    }
    let n = if names.iter().any(|name| name == "n") {
        let (_, n) = array("n")?;
        match n.as_slice() {
            [count] if *count >= 0.0 && count.fract() == 0.0 => *count as usize,
            _ => return Err(EvalError::file(path, format!("`n` is {n:?}; expected one non-negative whole number (the sample count)"))),
        }
    } else {
        0
    };
    let stats = FeatureStats { mu, sigma, d, n };
    stats.validate(&path.display().to_string())?;
    Ok(stats)
}

/// Writes `stats` as an `.npz` pytorch-fid reads (`mu` float64 `[d]`, `sigma` float64 `[d, d]`,
/// uncompressed like `np.savez`) plus `n` (int64 scalar), atomically.
pub fn write_stats_npz(path: &Path, stats: &FeatureStats) -> Result<()> {
    stats.validate("statistics to write")?;
    let d = stats.d as u64;
    write_atomically(path, |tmp| {
        let mut npz = NpzWriter::create(tmp)?;
        let options = || npyz::zip::write::FileOptions::default().compression_method(npyz::zip::CompressionMethod::Stored);
        let mut mu = npz.array::<f64>("mu", options())?.default_dtype().shape(&[d]).begin_nd()?;
        mu.extend(stats.mu.iter().copied())?;
        mu.finish()?;
        let mut sigma = npz.array::<f64>("sigma", options())?.default_dtype().shape(&[d, d]).begin_nd()?;
        sigma.extend(stats.sigma.iter().copied())?;
        sigma.finish()?;
        let mut n = npz.array::<i64>("n", options())?.default_dtype().shape(&[]).begin_nd()?;
        n.push(&(stats.n as i64))?;
        n.finish()?;
        // Finish the archive (central directory), flush the buffer and reach the disk before the rename.
        npz.zip_writer().finish().map_err(io::Error::from)?.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()
    })
}

/// Reads a `[N, d]` feature matrix from an `.npy` (float32 or float64, C or Fortran order).
pub fn read_features_npy(path: &Path) -> Result<FeatureArray> {
    let file = fs::File::open(path).map_err(|e| EvalError::file(path, format!("cannot open: {e}")))?;
    let npy = NpyFile::new(io::BufReader::new(file))
        .map_err(|e| EvalError::file(path, format!("not a numpy .npy file: {e}")))?;
    let order = npy.order();
    let (shape, values) = read_float_array(npy).map_err(|message| EvalError::file(path, message))?;
    let [rows, dim] = shape[..] else {
        return Err(EvalError::file(path, format!("shape {shape:?}; features are a 2-D [N, d] array, one row per sample")));
    };
    let (rows, dim) = (rows as usize, dim as usize);
    if rows == 0 || dim == 0 {
        return Err(EvalError::file(path, format!("shape [{rows}, {dim}] holds no features")));
    }
    let values = match order {
        Order::C => values,
        // Column-major on disk: transpose to rows.
        Order::Fortran => (0..rows * dim).map(|i| values[(i % dim) * rows + i / dim]).collect(),
    };
    Ok(FeatureArray { values, rows, dim })
}

/// Writes a `[rows, dim]` float32 feature matrix as an `.npy` (C order), atomically.
pub fn write_features_npy(path: &Path, values: &[f32], rows: usize, dim: usize) -> Result<()> {
    if values.len() != rows * dim {
        return Err(EvalError::input(format!(
            "writing {}: {} values given for [{rows}, {dim}] features ({} expected)",
            path.display(),
            values.len(),
            rows * dim
        )));
    }
    write_atomically(path, |tmp| {
        let mut file = io::BufWriter::new(fs::File::create(tmp)?);
        let mut writer =
            npyz::WriteOptions::<f32>::new().default_dtype().shape(&[rows as u64, dim as u64]).writer(&mut file).begin_nd()?;
        writer.extend(values.iter().copied())?;
        writer.finish()?;
        file.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()
    })
}

/// Features of the images in a folder, e.g. Inception-v3 pool features (see [`load_or_compute_stats`]).
pub type FolderFeatureExtractor<'a> = dyn Fn(&Path) -> Result<FeatureArray> + 'a;

/// Statistics of `path` by its kind:
///
/// - an `.npz` file: read as pytorch-fid statistics ([`read_stats_npz`]);
/// - an `.npy` file: read as `[N, d]` features ([`read_features_npy`]) and reduced to their mean
///   and covariance ([`FeatureStats::from_features`]);
/// - a directory: handed to `folder_features` (e.g. Inception-v3 pool features of the images in
///   it), whose features are reduced the same way. With `None` a directory is an error that says
///   which inputs work.
pub fn load_or_compute_stats(
    path: &Path,
    folder_features: Option<&FolderFeatureExtractor<'_>>,
) -> Result<FeatureStats> {
    if path.is_dir() {
        let Some(extract) = folder_features else {
            return Err(EvalError::file(
                path,
                "is a directory; reading images needs a feature extractor (Inception-v3), which this caller \
                 does not provide: pass a features .npy [N, d] or a statistics .npz (mu, sigma)",
            ));
        };
        let features = extract(path)?;
        return FeatureStats::from_matrix(&features.matrix(&path.display().to_string())?);
    }
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("npz") => read_stats_npz(path),
        Some("npy") => {
            let features = read_features_npy(path)?;
            FeatureStats::from_matrix(&features.matrix(&path.display().to_string())?)
        }
        _ => Err(EvalError::file(
            path,
            if path.exists() {
                "unknown kind of file; pass a features .npy [N, d] or a statistics .npz (mu, sigma)"
            } else {
                "does not exist; pass a features .npy [N, d] or a statistics .npz (mu, sigma)"
            },
        )),
    }
}

/// Reads a float32/float64 array of any shape into f64; the error message names the dtype.
fn read_float_array<R: Read>(npy: NpyFile<R>) -> std::result::Result<(Vec<u64>, Vec<f64>), String> {
    let shape = npy.shape().to_vec();
    let dtype = npy.dtype();
    let unsupported = || format!("dtype {} is not supported; expected float64 or float32", dtype.descr());
    let DType::Plain(type_str) = &dtype else { return Err(unsupported()) };
    let values = match (type_str.type_char(), type_str.size_field()) {
        (TypeChar::Float, 8) => npy.into_vec::<f64>().map_err(|e| e.to_string())?,
        (TypeChar::Float, 4) => npy.into_vec::<f32>().map_err(|e| e.to_string())?.into_iter().map(f64::from).collect(),
        // `n` is written as int64; accept integers so that the sample count round-trips.
        (TypeChar::Int, 8) => npy.into_vec::<i64>().map_err(|e| e.to_string())?.into_iter().map(|v| v as f64).collect(),
        _ => return Err(unsupported()),
    };
    Ok((shape, values))
}

/// Runs `write` on a temporary path next to `path`, then renames it over `path`; on failure the
/// temporary file is removed and the error names `path`.
fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> io::Result<()>) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| EvalError::file(path, "is not a file path"))?
        .to_string_lossy()
        .into_owned();
    let tmp: PathBuf = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = write(&tmp).and_then(|()| fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        EvalError::file(path, format!("cannot write: {e}"))
    })
}
