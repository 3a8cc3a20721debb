//! A run folder holds one run.
//!
//! A fresh run starts only in an empty (or missing) `run.out_dir`; one that finds another run's
//! files stops before writing anything and names `--resume` and `--overwrite`. `--overwrite` moves
//! the old run aside (`OUT_DIR.replaced-YYYYMMDD-HHMMSS`), never deletes it. Every checkpoint
//! carries the id of the run that wrote it, so pruning never removes another run's checkpoints.
//! Resuming first finishes what a kill interrupted ([`crate::checkpoint::recover`]) and cuts the
//! logs back to the resumed step, so that the steps run again are logged once.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};
use crate::fsio::{io, write_atomic};

/// The metrics log of a run (one JSON object per line, each with a `step`).
pub const METRICS: &str = "metrics.jsonl";

/// What a fresh run may find in its folder: things prepared for the run before it starts (a
/// guidance classifier trained with `ddpm-train classifier`, evaluation caches of the data).
const PREPARATIONS: [&str; 2] = ["classifier", "eval"];

/// A new run id: the UTC start time and a random suffix, e.g. `20261206-043048-9f3a1c2e`.
pub fn new_run_id() -> String {
    format!("{}-{:08x}", chrono::Utc::now().format("%Y%m%d-%H%M%S"), rand::random::<u32>())
}

/// The entries of `out` that belong to a run (everything but the preparations), sorted.
fn run_entries(out: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(out) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(out, e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // A `*.tmp` file is a write that a kill cut short (e.g. the first config.toml): not a run.
        .filter(|n| !PREPARATIONS.contains(&n.as_str()) && !n.ends_with(".tmp"))
        .collect();
    names.sort();
    Ok(names)
}

/// A one-line account of the run in `out`: its files and its newest checkpoint.
pub fn describe(out: &Path) -> Result<String> {
    let names = run_entries(out)?;
    let ckpts = crate::checkpoint::list(out)?;
    let newest = match ckpts.last() {
        Some(c) => format!("{} checkpoint(s), the newest {}", ckpts.len(), c.file_name().unwrap_or_default().to_string_lossy()),
        None => "no checkpoint".into(),
    };
    let shown: Vec<&str> = names.iter().take(6).map(String::as_str).collect();
    let more = if names.len() > shown.len() { format!(", and {} more", names.len() - shown.len()) } else { String::new() };
    Ok(format!("{} ({newest}){more}", shown.join(", ")))
}

/// What [`prepare_fresh`] would do, without doing it: `None` for an empty folder, the account of
/// the run it would move aside with `overwrite`, and the refusal without.
pub fn prepare_fresh_check(out: &Path, overwrite: bool) -> Result<Option<String>> {
    if run_entries(out)?.is_empty() {
        return Ok(None);
    }
    if !overwrite {
        return Err(TrainError::RunFolder {
            path: out.to_path_buf(),
            message: format!(
                "already holds a run: {}. Continue it with --resume, start over with --overwrite (which moves the old run aside, it deletes nothing), or set run.out_dir to another folder",
                describe(out)?
            ),
        });
    }
    Ok(Some(describe(out)?))
}

/// Makes `out` ready for a fresh run: refuses a folder holding another run unless `overwrite`, in
/// which case the old run is moved aside (returned). Nothing is written when it refuses.
pub fn prepare_fresh(out: &Path, overwrite: bool) -> Result<Option<PathBuf>> {
    if prepare_fresh_check(out, overwrite)?.is_none() {
        return Ok(None);
    }
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
    let mut aside = out.with_file_name(format!("{name}.replaced-{stamp}"));
    let mut k = 1;
    while aside.exists() {
        aside = out.with_file_name(format!("{name}.replaced-{stamp}-{k}"));
        k += 1;
    }
    fs::rename(out, &aside).map_err(|e| io(out, e))?;
    Ok(Some(aside))
}

/// Where a resumed run starts.
#[derive(Debug, Clone, PartialEq)]
pub enum ResumeFrom {
    /// A checkpoint folder.
    Checkpoint(PathBuf),
    /// Step 0: the run in the folder was stopped before its first checkpoint.
    Start,
}

/// The newest complete checkpoint of the run in `out` after finishing what a kill interrupted; a
/// run stopped before its first checkpoint (its `config.toml` is there) starts again from step 0.
pub fn resume_latest(out: &Path) -> Result<ResumeFrom> {
    crate::checkpoint::recover(out)?;
    match crate::checkpoint::list(out)?.pop() {
        Some(dir) => Ok(ResumeFrom::Checkpoint(dir)),
        None if out.join(crate::checkpoint::CONFIG).is_file() => Ok(ResumeFrom::Start),
        None => Err(TrainError::Checkpoint {
            path: out.join("checkpoints"),
            message: "no run to resume here (no checkpoint and no config.toml); start without --resume, or name a checkpoint folder".into(),
        }),
    }
}

/// Makes the run folder `out` ready to continue at `step`: finishes interrupted folder moves,
/// refuses when the run has checkpoints newer than `step` (resuming from an older one would mix
/// two histories), and cuts the logs (`metrics.jsonl`, TensorBoard's event files) back to `step`.
pub fn prepare_resume(out: &Path, step: usize) -> Result<()> {
    crate::checkpoint::recover(out)?;
    let newer: Vec<String> = crate::checkpoint::list(out)?
        .iter()
        .filter(|c| crate::checkpoint::read_state(c).is_ok_and(|s| s.step > step))
        .map(|c| c.file_name().unwrap_or_default().to_string_lossy().into_owned())
        .collect();
    if !newer.is_empty() {
        return Err(TrainError::RunFolder {
            path: out.join("checkpoints"),
            message: format!(
                "holds checkpoints newer than step {step}, the one to resume from: {}. Resume from the newest (--resume), or move those folders out of the run first",
                newer.join(", ")
            ),
        });
    }
    truncate_log(&out.join(METRICS), step)?;
    crate::tensorboard::truncate(out, step)
}

/// Keeps the lines of a JSON-lines log whose `step` is at most `step` (a line cut short by a kill,
/// or not JSON, is dropped); rewritten through a temporary file, so a kill leaves either log.
/// Returns the number of lines dropped.
pub fn truncate_log(path: &Path, step: usize) -> Result<usize> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(path, e)),
    };
    let mut kept = String::with_capacity(text.len());
    let mut dropped = 0;
    for line in text.lines() {
        let line_step = serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v.get("step").and_then(serde_json::Value::as_u64));
        match line_step {
            Some(s) if s as usize <= step => {
                kept.push_str(line);
                kept.push('\n');
            }
            _ => dropped += 1,
        }
    }
    if dropped > 0 {
        write_atomic(path, kept.as_bytes())?;
    }
    Ok(dropped)
}
