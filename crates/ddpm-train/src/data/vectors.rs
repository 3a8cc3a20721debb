//! Embedding vectors (`[N, D]`, items `[D]`) and 1-D sequences (`[N, C, L]`, items `[C, L]`; a
//! `[N, L]` array is one channel) from `.npy`, `.safetensors` or `.csv` files, kept as `f32`.
//!
//! A CSV file holds one item per row; its first row is taken as a header when any of its fields
//! is not a number (so a header of numeric names is read as data). Values must be finite: a NaN
//! or an infinity is an error naming the row, since it would turn the loss into NaN at once.

use std::path::Path;


use super::{InMemory, Normalize};
use crate::error::{Result, TrainError};
use crate::npy::{NpyArray, read_npy};

/// How the array's axes map to items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[N, D]` -> items `[D]`.
    Embeddings,
    /// `[N, C, L]` -> items `[C, L]`; `[N, L]` -> items `[1, L]`.
    Sequences,
}

fn data_err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Data { path: path.to_path_buf(), message: message.into() }
}

/// Reads the array of a `.npy`, `.safetensors` or `.csv` file. `key` picks a `.safetensors`
/// tensor; it may be left out when the file holds one.
pub fn read_array(path: &Path, key: Option<&str>) -> Result<NpyArray> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    if key.is_some() && ext != "safetensors" {
        return Err(TrainError::config("data.key", format!("{} is not a .safetensors file, which alone holds named tensors; remove data.key", path.display())));
    }
    match ext.as_str() {
        "npy" => Ok(read_npy(path)?),
        "safetensors" => read_safetensors(path, key),
        "csv" => read_csv(path),
        _ => Err(data_err(path, "unknown kind of file; use a .npy, .safetensors or .csv file")),
    }
}

/// One tensor of a `.safetensors` file as `f32` (from F32, F64, F16 or BF16), read by the
/// checked reader of ddpm-models (the header is checked against the file's size).
pub fn read_safetensors(path: &Path, key: Option<&str>) -> Result<NpyArray> {
    let mut tensors = ddpm_models::weights::read_safetensors(path)?;
    let names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    let name = match (key, names.as_slice()) {
        (Some(k), _) if names.contains(&k) => k.to_string(),
        (Some(k), _) => return Err(data_err(path, format!("holds no tensor `{k}` (data.key); it holds: {}", names.join(", ")))),
        (None, [only]) => only.to_string(),
        (None, []) => return Err(data_err(path, "holds no tensors")),
        (None, _) => return Err(data_err(path, format!("holds {} tensors ({}); set data.key to the one to read", names.len(), names.join(", ")))),
    };
    let t = tensors.remove(&name).ok_or_else(|| data_err(path, format!("tensor `{name}` vanished while reading")))?;
    if t.integer {
        return Err(data_err(path, format!("tensor `{name}` holds integers; store the data as F32, F64, F16 or BF16")));
    }
    Ok(NpyArray { shape: t.shape, data: t.data })
}

/// A numeric CSV file as `[rows, columns]`, with an optional header row.
pub fn read_csv(path: &Path) -> Result<NpyArray> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| data_err(path, format!("cannot read: {e}")))?;
    let mut data = Vec::new();
    let mut rows = 0;
    let mut cols = 0;
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| data_err(path, e.to_string()))?;
        if i == 0 && record.iter().any(|f| f.parse::<f64>().is_err()) {
            continue;
        }
        let line = record.position().map_or(i as u64 + 1, |p| p.line());
        for (col, field) in record.iter().enumerate() {
            let v: f64 = field.parse().map_err(|_| data_err(path, format!("line {line}, column {}: `{field}` is not a number", col + 1)))?;
            if !v.is_finite() {
                return Err(data_err(path, format!("line {line}, column {}: `{field}` is not a finite number", col + 1)));
            }
            data.push(v as f32);
        }
        rows += 1;
        cols = record.len();
    }
    if rows == 0 {
        return Err(data_err(path, "holds no rows of numbers"));
    }
    Ok(NpyArray { shape: vec![rows, cols], data })
}

/// Brings each channel (a feature of an embedding, a channel of a sequence) into range over the
/// whole set. `values` holds items of `channels * len` values, channel after channel.
pub fn normalize(values: &mut [f32], channels: usize, len: usize, mode: Normalize) {
    let item = channels * len;
    if mode == Normalize::None || item == 0 {
        return;
    }
    let count = (values.len() / item * len) as f64;
    for c in 0..channels {
        let channel = |values: &[f32]| values.chunks_exact(item).flat_map(move |it| it[c * len..(c + 1) * len].iter().map(|&v| f64::from(v))).collect::<Vec<f64>>();
        let seen = channel(values);
        let map: Box<dyn Fn(f64) -> f64> = match mode {
            Normalize::Minmax => {
                let (lo, hi) = seen.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                if hi > lo { Box::new(move |v| (v - lo) * 2.0 / (hi - lo) - 1.0) } else { Box::new(|_| 0.0) }
            }
            Normalize::Standardize => {
                let mean = seen.iter().sum::<f64>() / count;
                let std = (seen.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count).sqrt();
                if std > 0.0 { Box::new(move |v| (v - mean) / std) } else { Box::new(|_| 0.0) }
            }
            Normalize::None => unreachable!("returned above"),
        };
        for it in values.chunks_exact_mut(item) {
            for v in &mut it[c * len..(c + 1) * len] {
                *v = map(f64::from(*v)) as f32;
            }
        }
    }
}

/// The vectors or sequences of `path`, normalised as asked, never flipped.
pub fn load(path: &Path, key: Option<&str>, mode: Normalize, layout: Layout) -> Result<InMemory> {
    let NpyArray { shape, mut data } = read_array(path, key)?;
    let (item_shape, channels, len) = match (layout, shape.as_slice()) {
        (Layout::Embeddings, &[_, d]) => (vec![d], d, 1),
        (Layout::Embeddings, _) => return Err(data_err(path, format!("embeddings need a 2-D [N, D] array; this one is {shape:?}"))),
        (Layout::Sequences, &[_, l]) => (vec![1, l], 1, l),
        (Layout::Sequences, &[_, c, l]) => (vec![c, l], c, l),
        (Layout::Sequences, _) => return Err(data_err(path, format!("sequences need a [N, L] or [N, C, L] array; this one is {shape:?}"))),
    };
    let item = channels * len;
    if shape[0] == 0 || item == 0 {
        return Err(data_err(path, format!("holds no items (shape {shape:?})")));
    }
    if let Some(bad) = data.iter().position(|v| !v.is_finite()) {
        return Err(data_err(path, format!("row {} (counting from 0) holds {}; remove or fill such values", bad / item, data[bad])));
    }
    normalize(&mut data, channels, len, mode);
    Ok(InMemory::from_f32(data, item_shape))
}
