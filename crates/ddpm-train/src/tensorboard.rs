//! TensorBoard scalars beside `metrics.jsonl`, so `tensorboard --logdir runs/` shows loss, learning
//! rate, gradient norm, throughput and the in-training metrics.
//!
//! The format is TensorBoard's event file: a sequence of records `[u64 length][u32 masked
//! CRC32C of the length][data][u32 masked CRC32C of the data]` (little endian; the mask is
//! `((crc >> 15) | (crc << 17)) + 0xa282ead8`), each record an `Event` protocol buffer:
//! `wall_time` (field 1, double), `step` (2, int64), `file_version` (3, string, in the first
//! record) or `summary` (5) holding `Summary.Value`s of `tag` (1, string) and `simple_value`
//! (2, float). The few fields are encoded here by hand; no protobuf library is needed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};
use crate::fsio::io;

const FILE_PREFIX: &str = "events.out.tfevents.";

fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn length_delimited(field: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push((field << 3) | 2);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// An `Event` with `wall_time`, `step` and either a file version or scalar values.
fn event(wall_time: f64, step: u64, file_version: Option<&str>, scalars: &[(&str, f64)]) -> Vec<u8> {
    let mut e = vec![0x09];
    e.extend_from_slice(&wall_time.to_le_bytes());
    e.push(0x10);
    varint(step, &mut e);
    if let Some(v) = file_version {
        length_delimited(3, v.as_bytes(), &mut e);
    }
    if !scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut v = Vec::new();
            length_delimited(1, tag.as_bytes(), &mut v);
            v.push(0x15);
            v.extend_from_slice(&(*value as f32).to_le_bytes());
            length_delimited(1, &v, &mut summary);
        }
        length_delimited(5, &summary, &mut e);
    }
    e
}

fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut r = Vec::with_capacity(data.len() + 16);
    r.extend_from_slice(&len);
    r.extend_from_slice(&masked_crc(&len).to_le_bytes());
    r.extend_from_slice(data);
    r.extend_from_slice(&masked_crc(data).to_le_bytes());
    r
}

/// Appends scalar events to a new event file in a run folder.
pub struct EventWriter {
    file: fs::File,
    path: PathBuf,
}

impl EventWriter {
    /// A new event file in `dir` (one per process: its name carries the time and the process id),
    /// starting with the file-version record TensorBoard expects. TensorBoard and
    /// [`event_files`] read a folder's files in name order, so the name's second is made later
    /// than every existing file's: a run resumed within the second it was stopped would otherwise
    /// sort by process id, and its steps could come before the earlier ones.
    pub fn create(dir: &Path) -> Result<Self> {
        let now = crate::fsio::unix_time();
        let newest = event_files(dir).iter().filter_map(|p| file_second(p)).max();
        let second = newest.map_or(now as u64, |newest| (now as u64).max(newest + 1));
        let path = dir.join(format!("{FILE_PREFIX}{second}.ddpm-rs.{}", std::process::id()));
        let file = fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io(&path, e))?;
        let mut w = Self { file, path };
        w.append(&event(now, 0, Some("brain.Event:2"), &[]))?;
        Ok(w)
    }

    /// Writes `scalars` (tag, value) at `step`.
    pub fn scalars(&mut self, step: u64, scalars: &[(&str, f64)]) -> Result<()> {
        self.append(&event(crate::fsio::unix_time(), step, None, scalars))
    }

    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.file.write_all(&record(data)).map_err(|e| io(&self.path, e))
    }
}

/// One record read back: the step and the scalars of an `Event` (none for the version record).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarEvent {
    pub step: u64,
    pub wall_time: f64,
    pub scalars: Vec<(String, f32)>,
    /// The record's bytes, to write it back unchanged.
    raw: Vec<u8>,
}

/// Reads the complete, CRC-checked records of an event file written by [`EventWriter`]; reading
/// stops at a record cut short by a kill (as TensorBoard does).
pub fn read_events(path: &Path) -> Result<Vec<ScalarEvent>> {
    let bytes = fs::read(path).map_err(|e| io(path, e))?;
    let bad = |m: String| TrainError::Data { path: path.to_path_buf(), message: m };
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 12 <= bytes.len() {
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        if u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes")) != masked_crc(len_bytes) {
            return Err(bad(format!("record at byte {at}: the length's checksum does not match; not a TensorBoard event file or corrupt")));
        }
        let Some(end) = usize::try_from(len).ok().and_then(|l| (at + 12).checked_add(l)).filter(|&e| e + 4 <= bytes.len()) else { break };
        let data = &bytes[at + 12..end];
        if u32::from_le_bytes(bytes[end..end + 4].try_into().expect("4 bytes")) != masked_crc(data) {
            break;
        }
        out.push(parse_event(data).map_err(|m| bad(format!("record at byte {at}: {m}")))?);
        at = end + 4;
    }
    Ok(out)
}

fn read_varint(b: &[u8], at: &mut usize) -> std::result::Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or("a varint runs past the record")?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a varint longer than 10 bytes".into())
}

fn fields(b: &[u8]) -> std::result::Result<Vec<(u64, &[u8], u64)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let key = read_varint(b, &mut at)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((field, &b[0..0], read_varint(b, &mut at)?)),
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                let slice = b.get(at..at + n).ok_or("a fixed-width field runs past the record")?;
                at += n;
                out.push((field, slice, 0));
            }
            2 => {
                let n = read_varint(b, &mut at)? as usize;
                let slice = b.get(at..at.checked_add(n).ok_or("a length overflows")?).ok_or("a field runs past the record")?;
                at += n;
                out.push((field, slice, 0));
            }
            other => return Err(format!("wire type {other} is not written by ddpm-rs")),
        }
    }
    Ok(out)
}

fn parse_event(data: &[u8]) -> std::result::Result<ScalarEvent, String> {
    let mut e = ScalarEvent { step: 0, wall_time: 0.0, scalars: Vec::new(), raw: data.to_vec() };
    for (field, bytes, int) in fields(data)? {
        match field {
            1 => e.wall_time = f64::from_le_bytes(bytes.try_into().map_err(|_| "wall_time is not 8 bytes")?),
            2 => e.step = int,
            5 => {
                for (_, value, _) in fields(bytes)?.into_iter().filter(|f| f.0 == 1) {
                    let (mut tag, mut v) = (String::new(), f32::NAN);
                    for (f, b, _) in fields(value)? {
                        match f {
                            1 => tag = String::from_utf8_lossy(b).into_owned(),
                            2 => v = f32::from_le_bytes(b.try_into().map_err(|_| "simple_value is not 4 bytes")?),
                            _ => {}
                        }
                    }
                    e.scalars.push((tag, v));
                }
            }
            _ => {}
        }
    }
    Ok(e)
}

/// The second in an event file's name (`events.out.tfevents.<second>.…`).
fn file_second(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_prefix(FILE_PREFIX)?.split('.').next()?.parse().ok()
}

/// The event files of a run folder, oldest first.
pub fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(FILE_PREFIX))).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Cuts every event file of `dir` back to `step` (as `--resume` does to `metrics.jsonl`): the
/// records of later steps and any record cut short by a kill are dropped; each file is rewritten
/// through a temporary file and a rename.
pub fn truncate(dir: &Path, step: usize) -> Result<()> {
    for path in event_files(dir) {
        let events = read_events(&path)?;
        let keep: Vec<&ScalarEvent> = events.iter().filter(|e| e.scalars.is_empty() || e.step as usize <= step).collect();
        let bytes: Vec<u8> = keep.iter().flat_map(|e| record(&e.raw)).collect();
        if bytes.len() as u64 != fs::metadata(&path).map_err(|e| io(&path, e))?.len() {
            // A hidden temporary name, which TensorBoard (and `event_files`) never reads.
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let tmp = path.with_file_name(format!(".{name}.tmp"));
            fs::write(&tmp, &bytes).map_err(|e| io(&tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}
