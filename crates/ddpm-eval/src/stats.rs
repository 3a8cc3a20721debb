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

use npyz::{DType, NpyFile, Order, TypeChar, WriterBuilder};
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::error::{EvalError, Result};
use crate::features::FeatureMatrix;
use crate::frechet::FeatureStats;
pub use ddpm_io::npy::{NpyClaim, read_npy_header};

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
/// (float64 or float32, stored or deflated), and `n` when present (0 otherwise).
///
/// Every entry's sizes are checked against the file, and every array's header against its
/// entry, before anything is allocated for the data. Errors name the file, the array and what is
/// missing or malformed.
pub fn read_stats_npz(path: &Path) -> Result<FeatureStats> {
    // The zip reader parses the central directory of a file that may be hostile; should it panic
    // on some malformation, the panic is contained here and reported as a malformed archive
    // naming the file instead of unwinding through the caller.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_stats_npz_unguarded(path))).unwrap_or_else(|panic| {
        Err(EvalError::file(path, format!("the .npz (zip) archive is malformed: the zip reader failed on it ({})", ddpm_io::error::panic_text(&*panic))))
    })
}

fn read_stats_npz_unguarded(path: &Path) -> Result<FeatureStats> {
    let file = fs::File::open(path).map_err(|e| EvalError::file(path, format!("cannot open: {e}")))?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut archive = ZipArchive::new(io::BufReader::new(file)).map_err(|e| {
        let e = match e {
            zip::result::ZipError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                format!("a zip record runs past the end of the file ({file_len} bytes), which is truncated or corrupt")
            }
            e => e.to_string(),
        };
        EvalError::file(path, format!("cannot open as an .npz archive: {e}; statistics files are numpy .npz with `mu` and `sigma`"))
    })?;
    // numpy names each array's entry `<name>.npy`.
    let names: Vec<String> = archive.file_names().filter_map(|name| Some(name.ok()?.strip_suffix(".npy")?.to_owned())).collect();
    let mut array = |key: &str| -> Result<(Vec<u64>, Vec<f64>)> {
        if !names.iter().any(|name| name == key) {
            return Err(EvalError::file(
                path,
                format!(
                    "no array `{key}` (the file has: {}); pytorch-fid statistics hold `mu` [d] and `sigma` [d, d] \
                     — write them with `ddpm-eval stats` or pytorch-fid's --save-stats",
                    if names.is_empty() { "nothing".to_owned() } else { names.join(", ") }
                ),
            ));
        }
        read_npz_array(&mut archive, key, file_len).map_err(|message| EvalError::file(path, format!("array `{key}`: {message}")))
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

/// Deflate expands at most about 1032:1; an entry that claims more is corrupt.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// One array of an `.npz`: the entry's sizes checked against the file (`file_len` bytes), then its
/// `.npy` header against the entry, then the data. The message does not name the file.
fn read_npz_array<R: Read + io::Seek>(zip: &mut ZipArchive<R>, key: &str, file_len: u64) -> std::result::Result<(Vec<u64>, Vec<f64>), String> {
    let entry_name = format!("{key}.npy");
    let entry = zip.by_name(&entry_name).map_err(|e| format!("cannot open its zip entry `{entry_name}`: {e}"))?;
    let (size, stored) = (entry.size(), entry.compressed_size());
    // The entry's data must lie inside the file.
    let start = entry.data_start().ok_or_else(|| format!("its zip entry `{entry_name}` has no data offset; the archive is corrupt"))?;
    start.checked_add(stored).filter(|&end| end <= file_len).ok_or_else(|| {
        format!(
            "its zip entry `{entry_name}` says {stored} bytes start at byte {start} but the file holds {file_len} bytes; \
             the file is truncated or the archive is corrupt"
        )
    })?;
    let method = entry.compression();
    if method == CompressionMethod::Stored {
        if size != stored {
            return Err(format!(
                "its zip entry `{entry_name}` is stored uncompressed but declares {size} bytes of content in {stored} stored bytes; \
                 the archive is corrupt"
            ));
        }
    } else if method == CompressionMethod::Deflated {
        if size > stored.saturating_mul(MAX_DEFLATE_RATIO).saturating_add(1024) {
            return Err(format!(
                "its zip entry `{entry_name}` declares {size} bytes once inflated from {stored} compressed bytes, \
                 more than deflate can expand; the archive is corrupt"
            ));
        }
    } else {
        return Err(format!(
            "its zip entry `{entry_name}` is compressed with {method:?}; numpy's savez and savez_compressed store or deflate entries, \
             so resave it with one of them"
        ));
    }
    // Never read past the size the entry declares, whatever the compressed stream holds.
    let mut reader = io::BufReader::new(entry.take(size));
    let (claim, raw_header) = read_npy_header(&mut reader, size, &format!("its zip entry `{entry_name}`"))?;
    // A stored entry's bytes are in the file; a deflated one's are only claimed, so reserve no
    // more values than its compressed bytes could hold uncompressed.
    let reserve = if method == CompressionMethod::Stored { claim.elements } else { stored / claim.item_size.max(1) };
    read_float_array(&claim, raw_header, reader, reserve)
}

/// Writes `stats` as an `.npz` pytorch-fid reads (`mu` float64 `[d]`, `sigma` float64 `[d, d]`,
/// uncompressed like `np.savez`) plus `n` (int64 scalar), atomically.
pub fn write_stats_npz(path: &Path, stats: &FeatureStats) -> Result<()> {
    stats.validate("statistics to write")?;
    let d = stats.d as u64;
    write_atomically(path, |tmp| {
        let mut zip = ZipWriter::new(io::BufWriter::new(fs::File::create(tmp)?));
        write_npz_entry(&mut zip, "mu", &[d], stats.mu.iter().copied())?;
        write_npz_entry(&mut zip, "sigma", &[d, d], stats.sigma.iter().copied())?;
        write_npz_entry(&mut zip, "n", &[], [stats.n as i64])?;
        // Finish the archive (central directory), flush the buffer and reach the disk before the rename.
        zip.finish()?.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()
    })
}

/// Array `name` of `shape` as the archive's entry `name.npy`, stored uncompressed like `np.savez`.
fn write_npz_entry<T: npyz::AutoSerialize, W: io::Write + io::Seek>(zip: &mut ZipWriter<W>, name: &str, shape: &[u64], values: impl IntoIterator<Item = T>) -> io::Result<()> {
    zip.start_file(format!("{name}.npy"), zip::write::SimpleFileOptions::default().compression_method(CompressionMethod::Stored))?;
    let mut writer = npyz::WriteOptions::<T>::new().default_dtype().shape(shape).writer(zip).begin_nd()?;
    writer.extend(values)?;
    writer.finish()
}

/// Reads a `[N, d]` feature matrix from an `.npy` (float32 or float64, C or Fortran order).
///
/// The header is checked against the file's size before anything is allocated for the data.
pub fn read_features_npy(path: &Path) -> Result<FeatureArray> {
    let file = fs::File::open(path).map_err(|e| EvalError::file(path, format!("cannot open: {e}")))?;
    let file_len = file.metadata().map_err(|e| EvalError::file(path, format!("cannot read its size: {e}")))?.len();
    let mut reader = io::BufReader::new(file);
    let (claim, raw_header) = read_npy_header(&mut reader, file_len, "the file").map_err(|message| EvalError::file(path, message))?;
    let [rows, dim] = claim.shape[..] else {
        return Err(EvalError::file(path, format!("shape {:?}; features are a 2-D [N, d] array, one row per sample", claim.shape)));
    };
    let (rows, dim) = (rows as usize, dim as usize);
    if rows == 0 || dim == 0 {
        return Err(EvalError::file(path, format!("shape [{rows}, {dim}] holds no features")));
    }
    let order = if claim.fortran_order { Order::Fortran } else { Order::C };
    // The claim was checked against the file's size: its values are on disk.
    let (_, values) = read_float_array(&claim, raw_header, reader, claim.elements).map_err(|message| EvalError::file(path, message))?;
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

/// Reads the data of a float32/float64 array (int64 too, for `n`) into f64, given its checked
/// header (`claim`, `raw_header`) and the `data` after it; the message names the dtype. At most
/// `reserve` values are allocated ahead: the claim when the bytes behind it are on disk, less
/// when they are inflated from fewer (the vector then grows with the data that really comes).
fn read_float_array<R: Read>(claim: &NpyClaim, raw_header: Vec<u8>, data: R, reserve: u64) -> std::result::Result<(Vec<u64>, Vec<f64>), String> {
    let unsupported = || format!("dtype {} is not supported; expected float64 or float32", claim.dtype_name());
    let (kind, size) = claim.kind_and_size().ok_or_else(unsupported)?;
    // npyz parses the header again; it was checked above, so its shape is what the data holds.
    let npy = NpyFile::new(io::Cursor::new(raw_header).chain(data)).map_err(|e| format!("not a numpy .npy array: {e}"))?;
    if npy.shape() != claim.shape.as_slice() {
        return Err(format!("the header's shape {:?} reads as {:?}; the header is malformed", claim.shape, npy.shape()));
    }
    let DType::Plain(type_str) = npy.dtype() else { return Err(unsupported()) };
    if (type_str.type_char(), type_str.size_field()) != (kind, size) {
        return Err(unsupported());
    }
    let (n, reserve) = (claim.elements, claim.elements.min(reserve));
    let values = match (kind, size) {
        (TypeChar::Float, 8) => collect_values(npy.data::<f64>().map_err(|e| e.to_string())?, n, reserve, |v| v),
        (TypeChar::Float, 4) => collect_values(npy.data::<f32>().map_err(|e| e.to_string())?, n, reserve, f64::from),
        // `n` is written as int64; accept integers so that the sample count round-trips.
        (TypeChar::Int, 8) => collect_values(npy.data::<i64>().map_err(|e| e.to_string())?, n, reserve, |v| v as f64),
        _ => return Err(unsupported()),
    }?;
    Ok((claim.shape.clone(), values))
}

/// The `n` values of `reader` (their count checked against the file by [`read_npy_header`]),
/// `reserve` of them allocated ahead.
fn collect_values<T: npyz::Deserialize, R: Read>(
    reader: npyz::NpyReader<T, R>,
    n: u64,
    reserve: u64,
    convert: impl Fn(T) -> f64,
) -> std::result::Result<Vec<f64>, String> {
    let mut out = Vec::with_capacity(usize::try_from(reserve).map_err(|_| format!("{n} values do not fit in memory here"))?);
    for (i, value) in reader.enumerate() {
        out.push(convert(value.map_err(|e| format!("the data ends after {i} of the {n} values its header claims: {e}"))?));
    }
    Ok(out)
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
