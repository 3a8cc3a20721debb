//! NumPy `.npy` arrays in and out (through `npyz`): initial noise, saved samples, vector data sets.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use ddpm_eval::stats::read_npy_header;
use npyz::WriterBuilder;

use crate::error::{Result, TrainError};

fn npy_err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Data { path: path.to_path_buf(), message: message.into() }
}

/// An array read from a `.npy` file: C-order values as `f32` and the shape.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads a `.npy` file of a float or integer dtype (float32, float64, uint8, int32, int64) into
/// `f32` (C order; Fortran-ordered arrays are refused with the fix).
///
/// The header's claim (dtype, shape, data size) is checked against the file's size before
/// anything is allocated for the data, so a truncated file or a lying header gets an error that
/// says both, e.g. `x.npy: the header says float32 [1000, 3, 32, 32] = 12,288,000 bytes of data but
/// the file holds 4,096 bytes after its 128-byte header; it is truncated or the header is wrong`.
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let file = File::open(path).map_err(|e| npy_err(path, format!("cannot open: {e}")))?;
    let file_len = file.metadata().map_err(|e| npy_err(path, format!("cannot read its size: {e}")))?.len();
    let mut reader = BufReader::new(file);
    let (claim, raw_header) = read_npy_header(&mut reader, file_len, "the file").map_err(|message| npy_err(path, message))?;
    let dtype = claim.descr.trim_start_matches(['<', '>', '|', '=']).to_owned();
    if !matches!(dtype.as_str(), "f4" | "f8" | "u1" | "i4" | "i8") {
        let fix = if dtype == "f2" { "convert with a.astype(np.float32)" } else { "use float32, float64, uint8, int32 or int64 (a.astype(np.float32))" };
        return Err(npy_err(path, format!("dtype {} (`{}`) is not read; {fix}", claim.dtype_name(), claim.descr)));
    }
    if claim.fortran_order {
        return Err(npy_err(path, "the array is Fortran-ordered; save it with np.save(path, np.ascontiguousarray(a))"));
    }
    let shape = claim.shape.iter().map(|&d| usize::try_from(d)).collect::<std::result::Result<Vec<usize>, _>>();
    let n = usize::try_from(claim.elements);
    let (Ok(shape), Ok(n)) = (shape, n) else {
        return Err(npy_err(path, format!("{} does not fit in this machine's memory", claim.describe())));
    };
    // npyz parses the header again: it was checked above, so the data it reads is what the file holds.
    let npy = npyz::NpyFile::new(std::io::Cursor::new(raw_header).chain(reader)).map_err(|e| npy_err(path, format!("not a .npy file: {e}")))?;
    if npy.shape() != claim.shape.as_slice() {
        return Err(npy_err(path, format!("the header's shape {:?} reads as {:?}; the header is malformed", claim.shape, npy.shape())));
    }
    let data = match dtype.as_str() {
        "f4" => collect(path, npy.data::<f32>(), n, |v| v),
        "f8" => collect(path, npy.data::<f64>(), n, |v| v as f32),
        "u1" => collect(path, npy.data::<u8>(), n, f32::from),
        "i4" => collect(path, npy.data::<i32>(), n, |v| v as f32),
        _ => collect(path, npy.data::<i64>(), n, |v| v as f32),
    }?;
    Ok(NpyArray { shape, data })
}

/// The `n` values of a `.npy` (their count checked against the file's size) as `f32`.
fn collect<T: npyz::Deserialize, R: Read>(
    path: &Path,
    reader: std::result::Result<npyz::NpyReader<T, R>, npyz::DTypeError>,
    n: usize,
    convert: impl Fn(T) -> f32,
) -> Result<Vec<f32>> {
    let reader = reader.map_err(|e| npy_err(path, e.to_string()))?;
    let mut out = Vec::with_capacity(n);
    for (i, value) in reader.enumerate() {
        let value = value.map_err(|e| npy_err(path, format!("the data ends after {i} of the {n} values its header claims: {e}")))?;
        out.push(convert(value));
    }
    Ok(out)
}

/// Writes `data` as a little-endian float32 `.npy` of `shape`, through a temporary file and a rename.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let expected: usize = shape.iter().product();
    if expected != data.len() {
        return Err(npy_err(path, format!("{} values do not fill the shape {shape:?}", data.len())));
    }
    let tmp = path.with_extension("npy.tmp");
    let write = || -> std::io::Result<()> {
        let file = std::io::BufWriter::new(File::create(&tmp)?);
        let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(file).begin_nd()?;
        w.extend(data.iter().copied())?;
        w.finish()
    };
    write().map_err(|e| npy_err(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| npy_err(path, format!("cannot rename into place: {e}")))
}
