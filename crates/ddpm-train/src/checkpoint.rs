//! Checkpoints: a folder `checkpoints/step-NNNNNNN/` with the model, the EMA and the optimiser
//! state (burnpack, which keeps Burn's parameter ids so the optimiser state finds its parameters
//! again on resume), the EMA once more as `ema.safetensors`, and `state.json` (step, RNG
//! positions, data order). The folder is written as
//! `*.tmp` and renamed into place, so a kill never leaves a half-written checkpoint under a real
//! name; the newest complete folder is the one to resume from. The last `keep_last` checkpoints of
//! the run (its `run_id`, in `state.json`) are kept; a checkpoint of another run is never removed.
//! Pruning renames a folder to `*.trash` before deleting it, so a kill during the deletion leaves no
//! half-deleted folder under a real name; [`recover`] finishes what a kill interrupted.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;

use crate::error::{Result, TrainError};
use crate::fsio::io;
use serde::{Deserialize, Serialize};

/// Where a run stands; saved with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimiser steps done.
    pub step: usize,
    /// Word position of the timestep / coin stream (seeded by `seed`).
    pub rng_word_pos: u128,
    /// Word position of the noise stream (seeded by `seed + 1`).
    pub noise_word_pos: u128,
    /// Data order: epoch and offset within it.
    pub epoch: u64,
    pub offset: usize,
    /// The last logged (moving-average) loss (JSON null, read back as NaN, before the first step).
    #[serde(deserialize_with = "null_as_nan")]
    pub loss: f64,
    /// The best in-training evaluation score so far (lower is better).
    #[serde(default)]
    pub best_eval: Option<f64>,
    /// The run that wrote the checkpoint (see [`crate::run_dir`]); checkpoints of older versions
    /// have none.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Where imported weights came from (`ddpm-train import`); such a checkpoint has no optimiser state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
}

fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

const MODEL: &str = "model.bpk";
/// The EMA weights (burnpack), which `ddpm-train sample --weights ema` reads.
pub const EMA: &str = "ema.bpk";
const OPTIM: &str = "optim.bpk";
const STATE: &str = "state.json";
/// The run's resolved config, as `ddpm-train sample` reads it by default.
pub const CONFIG: &str = "config.toml";
/// The EMA weights again as safetensors (Burn's parameter paths), for use outside ddpm-train:
/// `net.load_from(&mut SafetensorsStore::from_file(path))`. Resuming reads the burnpack files,
/// which also carry the parameter ids that the optimiser state is keyed by.
const EMA_SAFETENSORS: &str = "ema.safetensors";

fn ckpt_err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Checkpoint { path: path.to_path_buf(), message: message.into() }
}

/// What a checkpoint holds: the trained network, its EMA, the post-hoc EMA's power-function
/// averages (`power-ema-K.bpk`), the optimiser, the run state and the run's resolved config (so a
/// checkpoint folder is self-contained).
pub struct Parts<'a, M> {
    pub model: &'a M,
    pub ema: &'a M,
    pub power: &'a [M],
    pub optim: &'a ModuleOptimizer,
    pub state: &'a RunState,
    pub config: &'a str,
}

/// Saves a checkpoint for `parts.state.step` and prunes the run's older ones (keeping
/// `keep_last`); returns its folder.
pub fn save<M: Module>(run_dir: &Path, parts: &Parts<'_, M>, keep_last: usize) -> Result<PathBuf> {
    let state = parts.state;
    let dir = run_dir.join("checkpoints").join(format!("step-{:07}", state.step));
    save_as(&dir, parts)?;
    let mut ours = Vec::new();
    for ckpt in list(run_dir)? {
        if read_state(&ckpt)?.run_id == state.run_id {
            ours.push(ckpt);
        }
    }
    while ours.len() > keep_last.max(1) {
        remove_folder(&ours.remove(0))?;
    }
    Ok(dir)
}

/// Deletes a folder by first renaming it to `NAME.trash` (one atomic step that takes it out of
/// [`list`]), so a kill during the deletion never leaves a partial folder under its real name.
fn remove_folder(dir: &Path) -> Result<()> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint");
    let trash = dir.with_file_name(format!("{name}.trash"));
    if trash.exists() {
        fs::remove_dir_all(&trash).map_err(|e| io(&trash, e))?;
    }
    fs::rename(dir, &trash).map_err(|e| io(dir, e))?;
    fs::remove_dir_all(&trash).map_err(|e| io(&trash, e))
}

/// The run state saved in a checkpoint folder.
pub fn read_state(dir: &Path) -> Result<RunState> {
    let state_path = dir.join(STATE);
    let text = fs::read_to_string(&state_path).map_err(|e| ckpt_err(dir, format!("cannot read {STATE}: {e}; is this a ddpm-train checkpoint folder?")))?;
    serde_json::from_str(&text).map_err(|e| ckpt_err(&state_path, format!("corrupt run state: {e}")))
}

/// Finishes what a kill interrupted in the folders of a run (`checkpoints/`, `post-hoc/`): a
/// `NAME.old` whose replacement never arrived is put back as `NAME` (the replacement, `NAME.tmp`,
/// may be incomplete), and leftover `*.tmp`, `*.old` and `*.trash` folders are removed. Every
/// folder under a real name is complete, because [`write_folder`] renames only finished folders.
pub fn recover(run_dir: &Path) -> Result<()> {
    for root in [run_dir.join("checkpoints"), run_dir.join("post-hoc")] {
        let Ok(entries) = fs::read_dir(&root) else { continue };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in &paths {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if let Some(real) = name.strip_suffix(".old") {
                let real = path.with_file_name(real);
                if real.exists() {
                    fs::remove_dir_all(path).map_err(|e| io(path, e))?;
                } else {
                    fs::rename(path, &real).map_err(|e| io(path, e))?;
                }
            }
        }
        for path in &paths {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if (name.ends_with(".tmp") || name.ends_with(".trash")) && path.is_dir() {
                fs::remove_dir_all(path).map_err(|e| io(path, e))?;
            }
        }
    }
    Ok(())
}

/// The folder of the best checkpoint by the in-training evaluation (not a resume candidate).
pub fn best_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints").join("best")
}

/// Writes a checkpoint folder `dir` through `dir.tmp` and renames it into place; an existing `dir`
/// is moved aside first and removed last, so some complete version exists at every moment.
pub fn save_as<M: Module>(dir: &Path, parts: &Parts<'_, M>) -> Result<()> {
    let Parts { model, ema, power, optim, state, config } = *parts;
    write_folder(dir, |tmp| {
        model.clone().save_file(tmp.join(MODEL)).map_err(|e| ckpt_err(tmp, format!("saving the model: {e}")))?;
        ema.clone().save_file(tmp.join(EMA)).map_err(|e| ckpt_err(tmp, format!("saving the EMA: {e}")))?;
        for (k, p) in power.iter().enumerate() {
            p.clone().save_file(tmp.join(power_file(k))).map_err(|e| ckpt_err(tmp, format!("saving power EMA {k}: {e}")))?;
        }
        let mut store = burn::store::SafetensorsStore::from_file(tmp.join(EMA_SAFETENSORS)).metadata("step", state.step.to_string());
        burn::store::ModuleSnapshot::save_into(ema, &mut store).map_err(|e| ckpt_err(tmp, format!("saving the EMA as safetensors: {e}")))?;
        optim.save(tmp.join(OPTIM)).map_err(|e| ckpt_err(tmp, format!("saving the optimiser: {e}")))?;
        let json = serde_json::to_vec_pretty(state).expect("state serialises");
        fs::write(tmp.join(STATE), json).map_err(|e| io(tmp, e))?;
        fs::write(tmp.join(CONFIG), config).map_err(|e| io(tmp, e))
    })
}

/// Writes a checkpoint folder of imported weights (`ddpm-train import`): the weights as both the
/// model and the EMA, the config and a state at step 0 naming the source, no optimiser state
/// (resuming from it starts a fresh optimiser on these weights).
pub fn save_imported<M: Module>(dir: &Path, weights: &M, state: &RunState, config: &str) -> Result<()> {
    write_folder(dir, |tmp| {
        weights.clone().save_file(tmp.join(MODEL)).map_err(|e| ckpt_err(tmp, format!("saving the weights: {e}")))?;
        weights.clone().save_file(tmp.join(EMA)).map_err(|e| ckpt_err(tmp, format!("saving the weights: {e}")))?;
        let mut store = burn::store::SafetensorsStore::from_file(tmp.join(EMA_SAFETENSORS)).metadata("step", state.step.to_string());
        burn::store::ModuleSnapshot::save_into(weights, &mut store).map_err(|e| ckpt_err(tmp, format!("saving the weights as safetensors: {e}")))?;
        fs::write(tmp.join(STATE), serde_json::to_vec_pretty(state).expect("state serialises")).map_err(|e| io(tmp, e))?;
        fs::write(tmp.join(CONFIG), config).map_err(|e| io(tmp, e))
    })
}

fn power_file(k: usize) -> String {
    format!("power-ema-{k}.bpk")
}

/// Writes the folder `dir` through `dir.tmp` (filled by `fill`) and a rename; an existing `dir`
/// is moved aside first and removed last.
pub(crate) fn write_folder(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint").to_string();
    let tmp = dir.with_file_name(format!("{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    fill(&tmp)?;
    let old = dir.with_file_name(format!("{name}.old"));
    if dir.exists() {
        if old.exists() {
            fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
        }
        fs::rename(dir, &old).map_err(|e| io(dir, e))?;
    }
    fs::rename(&tmp, dir).map_err(|e| io(dir, e))?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    }
    Ok(())
}

/// Complete checkpoint folders of a run, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let root = run_dir.join("checkpoints");
    let mut out: Vec<PathBuf> = match fs::read_dir(&root) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(is_final_name))
            .filter(|p| p.join(STATE).is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    Ok(out)
}

/// Whether a folder name is a finished `step-NNNNNNN` (not a `.tmp`, `.old` or `.trash` one).
fn is_final_name(name: &str) -> bool {
    name.starts_with("step-") && !name.ends_with(".tmp") && !name.ends_with(".old") && !name.ends_with(".trash")
}

/// The newest complete checkpoint of a run.
pub fn latest(run_dir: &Path) -> Result<PathBuf> {
    list(run_dir)?.pop().ok_or_else(|| {
        ckpt_err(&run_dir.join("checkpoints"), "no complete checkpoint to resume from; start without --resume, or name a checkpoint folder")
    })
}

/// Loads a checkpoint folder into freshly built `model` / `ema` / `optim`.
pub fn load<M: Module>(dir: &Path, model: M, ema: M, optim: ModuleOptimizer) -> Result<(M, M, ModuleOptimizer, RunState)> {
    let state = read_state(dir)?;
    let model = model
        .try_load_file(dir.join(MODEL))
        .map_err(|e| ckpt_err(&dir.join(MODEL), format!("cannot load the model ({e}); the file is truncated or the config's model differs from the run's")))?;
    let ema = ema
        .try_load_file(dir.join(EMA))
        .map_err(|e| ckpt_err(&dir.join(EMA), format!("cannot load the EMA ({e}); the file is truncated or the config's model differs")))?;
    // Imported weights come without optimiser state: training from them starts a fresh optimiser.
    let optim = if state.imported_from.is_some() && !dir.join(OPTIM).exists() {
        optim
    } else {
        optim.load(dir.join(OPTIM)).map_err(|e| ckpt_err(&dir.join(OPTIM), format!("cannot load the optimiser state ({e})")))?
    };
    Ok((model, ema, optim, state))
}

/// Loads only the weights (`ema` or `model`) of a checkpoint folder, for sampling.
pub fn load_weights<M: Module>(dir: &Path, model: M, ema: bool) -> Result<M> {
    let file = dir.join(if ema { EMA } else { MODEL });
    model.try_load_file(&file).map_err(|e| ckpt_err(&file, format!("cannot load ({e}); the file is truncated or the config's model differs")))
}

/// Loads the power-function averages of a checkpoint into freshly built `power` (one per
/// configured `sigma_rel`).
pub fn load_power<M: Module>(dir: &Path, power: Vec<M>) -> Result<Vec<M>> {
    power
        .into_iter()
        .enumerate()
        .map(|(k, p)| {
            let file = dir.join(power_file(k));
            if !file.is_file() {
                return Err(ckpt_err(
                    &file,
                    format!("missing: the checkpoint holds fewer power-function averages than train.post_hoc_ema.sigma_rels asks for ({}); resume with the run's own settings", k + 1),
                ));
            }
            p.try_load_file(&file).map_err(|e| ckpt_err(&file, format!("cannot load power EMA {k} ({e}); the file is truncated or the model differs")))
        })
        .collect()
}

/// What a post-hoc EMA snapshot holds: the averages' exponents at one step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    pub step: usize,
    pub sigma_rels: Vec<f64>,
    pub gammas: Vec<f64>,
}

const SNAPSHOT: &str = "snapshot.json";

/// Stores the power-function averages at `info.step` as `post-hoc/step-NNNNNNN/ema-K.bpk` (through
/// a temporary folder and a rename).
pub fn save_snapshot<M: Module>(run_dir: &Path, power: &[M], info: &SnapshotInfo) -> Result<PathBuf> {
    let dir = run_dir.join("post-hoc").join(format!("step-{:07}", info.step));
    write_folder(&dir, |tmp| {
        for (k, p) in power.iter().enumerate() {
            p.clone().save_file(tmp.join(snapshot_file(k))).map_err(|e| ckpt_err(tmp, format!("saving power EMA {k}: {e}")))?;
        }
        fs::write(tmp.join(SNAPSHOT), serde_json::to_vec_pretty(info).expect("serialises")).map_err(|e| io(tmp, e))
    })?;
    Ok(dir)
}

/// The file of average `k` in a snapshot folder.
pub fn snapshot_file(k: usize) -> String {
    format!("ema-{k}.bpk")
}

/// The complete post-hoc EMA snapshots of a run, oldest first.
pub fn list_snapshots(run_dir: &Path) -> Result<Vec<(PathBuf, SnapshotInfo)>> {
    let root = run_dir.join("post-hoc");
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(&root) else { return Ok(out) };
    for dir in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let complete = dir.file_name().and_then(|n| n.to_str()).is_some_and(is_final_name);
        if !complete || !dir.join(SNAPSHOT).is_file() {
            continue;
        }
        let file = dir.join(SNAPSHOT);
        let text = fs::read_to_string(&file).map_err(|e| io(&file, e))?;
        let info: SnapshotInfo = serde_json::from_str(&text).map_err(|e| ckpt_err(&file, format!("corrupt snapshot description: {e}")))?;
        out.push((dir, info));
    }
    out.sort_by_key(|(_, info)| info.step);
    Ok(out)
}
