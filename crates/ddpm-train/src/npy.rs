//! NumPy `.npy` arrays in and out (through `npyz`): initial noise, saved samples, vector data sets.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

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

/// Reads a `.npy` file of any float or integer dtype into `f32` (C order; Fortran-ordered arrays are
/// refused with the fix).
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let file = File::open(path).map_err(|e| npy_err(path, format!("cannot open: {e}")))?;
    let npy = npyz::NpyFile::new(BufReader::new(file)).map_err(|e| npy_err(path, format!("not a .npy file: {e}")))?;
    if npy.order() == npyz::Order::Fortran {
        return Err(npy_err(path, "the array is Fortran-ordered; save it with np.save(path, np.ascontiguousarray(a))"));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let descr = npy.dtype().descr();
    let dtype = descr.trim_matches(['\'', '"']);
    let data: Vec<f32> = match dtype.trim_start_matches(['<', '|', '=']) {
        "f4" => npy.into_vec::<f32>().map_err(|e| npy_err(path, e.to_string()))?,
        "f8" => npy.into_vec::<f64>().map_err(|e| npy_err(path, e.to_string()))?.into_iter().map(|v| v as f32).collect(),
        "f2" => return Err(npy_err(path, "float16 arrays are not read; convert with a.astype(np.float32)")),
        "u1" => npy.into_vec::<u8>().map_err(|e| npy_err(path, e.to_string()))?.into_iter().map(f32::from).collect(),
        "i4" => npy.into_vec::<i32>().map_err(|e| npy_err(path, e.to_string()))?.into_iter().map(|v| v as f32).collect(),
        "i8" => npy.into_vec::<i64>().map_err(|e| npy_err(path, e.to_string()))?.into_iter().map(|v| v as f32).collect(),
        other => return Err(npy_err(path, format!("dtype `{other}` is not supported; use float32, float64, uint8, int32 or int64"))),
    };
    Ok(NpyArray { shape, data })
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
