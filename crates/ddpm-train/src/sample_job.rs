//! Sampling jobs of the command line: what to sample (seeds, start, outputs) with which weights,
//! written as one PNG per seed, a grid, optionally a trajectory strip and a `.npy`. Above both
//! [`crate::sample`] (the drawing) and [`crate::pipeline`] (the loading).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::npy::{read_npy, write_npy};
use crate::pipeline::{Pipeline, SampleOptions as Request, Source, StartFrom};
use crate::sample::{TRAJECTORY_COLUMNS, TRAJECTORY_SEEDS, Weights};

/// What to sample and where to put it.
#[derive(Debug, Clone)]
pub struct SampleJob {
    /// A ddpm-train checkpoint folder, a denoising-diffusion-pytorch `Trainer` checkpoint
    /// (`model-N.pt`), or a `.safetensors` state dict with the reference's key names.
    pub checkpoint: PathBuf,
    pub weights: Weights,
    /// One sample per seed; sample `i` draws all its noise from `seeds[i]`.
    pub seeds: Vec<u64>,
    /// Samples per network call.
    pub batch_size: usize,
    /// Initial noise, float32 `[N, ..item]` with N = number of seeds.
    pub init_noise: Option<PathBuf>,
    /// Partial denoising (SDEdit) of given data instead of sampling from noise: a `.npy`
    /// (`[N, ..item]`; images in [0, 1]), an image file or a folder of images, lifted to noise
    /// level `strength` (in (0, 1]) and denoised from there. N must equal the number of seeds.
    pub from: Option<(PathBuf, f64)>,
    /// Inpainting with RePaint: the data (as for `from`; one item is used for every seed), a mask
    /// (an image, white = keep, black = fill; or a `.npy` of the item shape with 1 = keep) and the
    /// time-travel settings. Runs RePaint's ancestral walk whatever `sample.sampler` says.
    pub inpaint: Option<Inpaint>,
    /// Save the samples as float32 `[N, ..item]` (images in [0, 1]).
    pub save_npy: Option<PathBuf>,
    /// Folder for the PNGs (`{seed:06}.png` per image, `grid.png`).
    pub out_dir: PathBuf,
    pub progress: bool,
}

/// The inputs of an inpainting job.
#[derive(Debug, Clone)]
pub struct Inpaint {
    pub image: PathBuf,
    pub mask: PathBuf,
    pub repaint: ddpm_core::RePaint,
}

/// What a sampling job did.
#[derive(Debug, Clone)]
pub struct SampleReport {
    pub count: usize,
    pub seconds: f64,
    pub grid: PathBuf,
}

/// Runs a sampling job with the network of `cfg` and the weights at `job.checkpoint` (any form
/// [`crate::pipeline::Source`] detects but a diffusers folder, which carries its own config: use
/// [`write_samples`] with [`Pipeline::load`] for those).
pub fn run_job(cfg: &TrainConfig, job: &SampleJob) -> Result<SampleReport> {
    let pipe = Pipeline::from_config(cfg, Source::detect(&job.checkpoint)?, job.weights)?;
    write_samples(&pipe, job, &Request::default())
}

/// Samples with `pipe` as `job` says (seeds, start, outputs) and `overrides` (sampler, steps,
/// guidance) ask, and writes one PNG per seed (images), a grid and optionally a `.npy`.
pub fn write_samples(pipe: &Pipeline, job: &SampleJob, overrides: &Request) -> Result<SampleReport> {
    let item_shape = pipe.item_shape().to_vec();
    let item: usize = item_shape.iter().product();
    let initial = match &job.init_noise {
        Some(p) => {
            let a = read_npy(p)?;
            let mut want = vec![job.seeds.len()];
            want.extend_from_slice(&item_shape);
            if a.shape != want {
                return Err(TrainError::Data {
                    path: p.clone(),
                    message: format!("the initial noise has shape {:?}, but {} samples of {item_shape:?} need {want:?}", a.shape, job.seeds.len()),
                });
            }
            Some(a)
        }
        None => None,
    };
    let partial = match &job.from {
        Some((path, strength)) => Some((read_start_data(path, &item_shape, job.seeds.len())?, *strength)),
        None => None,
    };
    let inpaint = match &job.inpaint {
        Some(p) => Some((read_start_data(&p.image, &item_shape, job.seeds.len())?, read_mask(&p.mask, &item_shape, job.seeds.len())?, p.repaint)),
        None => None,
    };
    let start = match (initial, partial, inpaint) {
        (None, None, None) => StartFrom::Noise,
        (Some(a), None, None) => StartFrom::InitialNoise(a.data),
        (None, Some((x0, strength)), None) => StartFrom::Partial { x0, strength },
        (None, None, Some((x0, mask, repaint))) => StartFrom::Inpaint { x0, mask, repaint },
        _ => return Err(TrainError::config("--init-noise", "give one of --init-noise, --from and --inpaint")),
    };
    std::fs::create_dir_all(&job.out_dir).map_err(|e| crate::fsio::io(&job.out_dir, e))?;
    let started = Instant::now();
    let opts = Request { seeds: job.seeds.clone(), batch_size: Some(job.batch_size), start, progress: job.progress, ..overrides.clone() };
    let samples = pipe.sample_with(&opts)?;
    for (i, image) in samples.images().into_iter().enumerate() {
        let path = job.out_dir.join(format!("{:06}.png", samples.seeds[i]));
        image.save(&path).map_err(|e| TrainError::Io { path: path.clone(), message: e.to_string() })?;
    }
    if !samples.trajectory.is_empty() {
        let frames: Vec<&[f32]> = samples.trajectory.iter().map(|f| f.values.as_slice()).collect();
        crate::grid::write_trajectory(&job.out_dir.join("trajectory.png"), &frames, &item_shape, TRAJECTORY_SEEDS, TRAJECTORY_COLUMNS)?;
    }
    let all = samples.values;
    let grid = job.out_dir.join("grid.png");
    let shown = job.seeds.len().min(if item_shape.len() == 3 { 64 } else { job.seeds.len() });
    let options = crate::grid::GridOptions::for_data(&pipe.config().data);
    crate::grid::write_grid_with(&grid, &all[..shown * item].iter().map(|&v| v as f64).collect::<Vec<_>>(), &item_shape, &options)?;
    if let Some(path) = &job.save_npy {
        let mut shape = vec![job.seeds.len()];
        shape.extend_from_slice(&item_shape);
        let values: Vec<f32> = if item_shape.len() == 3 { all.iter().map(|v| (v + 1.0) * 0.5).collect() } else { all };
        write_npy(path, &shape, &values)?;
    }
    Ok(SampleReport { count: job.seeds.len(), seconds: started.elapsed().as_secs_f64(), grid })
}

/// The inpainting mask, one row per seed in the item's layout, 1 where the data is kept and 0 where
/// it is filled in: an image (white = keep; read as grey, > 0.5 keeps) or a `.npy` `[N, ..item]` /
/// `[1, ..item]` of zeros and ones, in either case for one item or for each seed.
fn read_mask(path: &Path, item_shape: &[usize], count: usize) -> Result<Vec<f32>> {
    let is_npy = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let images = item_shape.len() == 3;
    let values = if images && !is_npy {
        // A grey mask at the image size, repeated over the channels.
        let grey = read_start_data(path, &[1, item_shape[1], item_shape[2]], count)?;
        let plane = item_shape[1] * item_shape[2];
        grey.chunks(plane).flat_map(|p| std::iter::repeat_n(p, item_shape[0]).flatten().map(|&v| if v > 0.0 { 1.0 } else { 0.0 })).collect()
    } else {
        let raw = read_start_data(path, item_shape, count)?;
        // Image masks in a .npy were mapped from [0, 1] to [-1, 1] like images.
        raw.into_iter().map(|v| if (images && v > 0.0) || (!images && v > 0.5) { 1.0 } else { 0.0 }).collect()
    };
    Ok(values)
}

/// The data to partially denoise, in the model's range, one row per seed: a `.npy` `[N, ..item]`
/// (images given in [0, 1]), one image file, or a folder of images (sorted by path). One item is
/// used for every seed.
fn read_start_data(path: &Path, item_shape: &[usize], count: usize) -> Result<Vec<f32>> {
    let images = item_shape.len() == 3;
    let (values, n) = if path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        let a = read_npy(path)?;
        if a.shape.len() != item_shape.len() + 1 || a.shape[1..] != *item_shape {
            return Err(TrainError::Data { path: path.to_path_buf(), message: format!("has shape {:?}; items of {item_shape:?} need [N, {item_shape:?}]", a.shape) });
        }
        let n = a.shape[0];
        let values = if images { a.data.iter().map(|v| v * 2.0 - 1.0).collect() } else { a.data };
        (values, n)
    } else if images {
        let opts = crate::data::images::FolderOptions { height: item_shape[1], width: item_shape[2], channels: item_shape[0], square_cut: None, skip_corrupt: false };
        let set = if path.is_dir() {
            crate::data::images::load_folder(path, &opts)?
        } else {
            let pixels = crate::data::images::load_image(path, &opts).map_err(|message| TrainError::Data { path: path.to_path_buf(), message })?;
            crate::data::InMemory::from_u8(pixels, item_shape.to_vec())
        };
        let all: Vec<usize> = (0..set.len()).collect();
        (set.host_batch(&all, &[]), set.len())
    } else {
        return Err(TrainError::Data { path: path.to_path_buf(), message: "vectors and sequences are given as a .npy file".into() });
    };
    if n == 1 && count > 1 {
        return Ok(values.repeat(count));
    }
    if n != count {
        return Err(TrainError::Data {
            path: path.to_path_buf(),
            message: format!("holds {n} items but {count} seeds were asked for; give --num {n} (or as many seeds as items), or one item for all"),
        });
    }
    Ok(values)
}

