//! Drawing samples: per-seed noise (so `--seeds` can be split over processes and machines and
//! still give the same images), a start from noise, given noise or data, guidance, the x0
//! trajectory. The command line's jobs (files in, PNGs and `.npy` out) are [`crate::sample_job`].

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, TensorCreationOptions, TensorData};
use ddpm_core::{ClassifierGuidance, Known};
use ddpm_core::prelude::*;
use image::{DynamicImage, GrayImage, RgbImage, RgbaImage};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// Which weights of a checkpoint to sample with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// The exponential moving average (what the reference samples with).
    Ema,
    /// The online network.
    Model,
}

impl std::str::FromStr for Weights {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ema" => Ok(Self::Ema),
            "model" => Ok(Self::Model),
            other => Err(TrainError::config("--weights", format!("`{other}`: use ema or model"))),
        }
    }
}

/// Parses a seed list like EDM's: `0-49999`, `0,5,9`, `0-9,100-109`.
pub fn parse_seeds(text: &str) -> Result<Vec<u64>> {
    let bad = |part: &str| TrainError::config("--seeds", format!("`{part}` is not a seed or a range; write e.g. 0-49999 or 1,5,10-19"));
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (a.trim().parse().map_err(|_| bad(part))?, b.trim().parse().map_err(|_| bad(part))?);
                if b < a {
                    return Err(bad(part));
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad(part))?),
        }
    }
    if out.is_empty() {
        return Err(bad(text));
    }
    Ok(out)
}

/// The part `i` (0-based) of `n` contiguous parts of `seeds`, from `i/n`.
pub fn shard(seeds: &[u64], spec: &str) -> Result<Vec<u64>> {
    let bad = || TrainError::config("--shard", format!("`{spec}` is not i/n with 0 <= i < n (e.g. --shard 0/4)"));
    let (i, n) = spec.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if n == 0 || i >= n {
        return Err(bad());
    }
    let per = seeds.len().div_ceil(n);
    Ok(seeds.iter().skip(i * per).take(per).copied().collect())
}

/// Where sampling starts.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// From noise drawn from each sample's seed.
    Noise,
    /// From given initial noise, one row per seed (`[N, ..item]`, flattened).
    InitialNoise(&'a [f32]),
    /// From given data (one row per seed, in the model's range), noised to `strength` (SDEdit).
    Partial { x0: &'a [f32], strength: f64 },
    /// Inpainting of given data (one row per seed) where `mask` (same layout; 1 = keep) is 0.
    Inpaint { x0: &'a [f32], mask: &'a [f32], repaint: ddpm_core::RePaint },
}

/// Class conditioning of a sampling run with classifier-free guidance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    /// Classes of the model; label `num_classes` is its null class.
    pub num_classes: usize,
    /// One class for every sample; `None` gives sample `i` class `i mod num_classes`.
    pub class: Option<usize>,
    /// Guidance scale (1: the conditional model).
    pub scale: f64,
    pub rescaled_phi: f64,
    /// Parallel-component removal: the share of the update along the conditional output kept.
    pub keep_parallel: Option<f64>,
    /// CFG++: `scale` is lambda in [0, 1].
    pub cfg_pp: bool,
}

impl Guidance {
    /// The guidance of a config: `None` for an unconditional model.
    pub fn from_config(cfg: &TrainConfig) -> Result<Option<Self>> {
        let Some(num_classes) = cfg.model.num_classes() else { return Ok(None) };
        if let Some(c) = cfg.sample.class
            && c >= num_classes
        {
            return Err(TrainError::config("sample.class", format!("class {c} does not exist; the model has classes 0 to {}", num_classes - 1)));
        }
        if let Some(k) = cfg.sample.keep_parallel
            && !(0.0..=1.0).contains(&k)
        {
            return Err(TrainError::config("sample.keep_parallel", format!("{k} is not a share: use a value in [0, 1] (0 removes the parallel component)")));
        }
        if cfg.sample.cfg_pp && !(0.0..=1.0).contains(&cfg.sample.cond_scale) {
            return Err(TrainError::config(
                "sample.cond_scale",
                format!("{} is outside [0, 1]: with sample.cfg_pp the scale is CFG++'s lambda (0.2 to 0.8 match plain guidance at 5 to 12)", cfg.sample.cond_scale),
            ));
        }
        Ok(Some(Self {
            cfg_pp: cfg.sample.cfg_pp,
            num_classes,
            class: cfg.sample.class,
            scale: cfg.sample.cond_scale,
            rescaled_phi: cfg.sample.rescaled_phi,
            keep_parallel: cfg.sample.keep_parallel,
        }))
    }
}

/// Classifier guidance of a sampling run: a trained noise-aware classifier and its scale.
pub struct ClassifierGuide {
    pub classifier: crate::classifier::TrainedClassifier,
    pub scale: f64,
    /// One class for every sample; `None` gives sample `i` class `i mod num_classes`.
    pub class: Option<usize>,
}

impl ClassifierGuide {
    /// The classifier guidance of a config (`sample.classifier_scale` > 0), loaded for items of
    /// `item_shape`; `None` when off.
    pub fn from_config(cfg: &TrainConfig, item_shape: &[usize], device: &Device) -> Result<Option<Self>> {
        let scale = cfg.sample.classifier_scale;
        if scale == 0.0 {
            return Ok(None);
        }
        if !(scale > 0.0) {
            return Err(TrainError::config("sample.classifier_scale", format!("{scale}: use 0 (off) or a positive scale")));
        }
        let folder = cfg.sample.classifier.clone().unwrap_or_else(|| cfg.classifier.folder(cfg));
        let classifier = crate::classifier::load_classifier(&folder, item_shape, device)?;
        let n = classifier.info().num_classes;
        if let Some(c) = cfg.sample.class
            && c >= n
        {
            return Err(TrainError::config("sample.class", format!("class {c} does not exist; the classifier knows classes 0 to {}", n - 1)));
        }
        Ok(Some(Self { classifier, scale, class: cfg.sample.class }))
    }
}

/// What a sampling run draws: the process, the item shape, the device, the sampler, one sample
/// per seed `batch_size` at a time, where sampling starts, guidance and clipping.
#[derive(Clone, Copy)]
pub struct Draw<'a> {
    pub diffusion: &'a Process,
    pub item_shape: &'a [usize],
    pub device: &'a Device,
    pub sampler: &'a Sampler,
    pub seeds: &'a [u64],
    pub batch_size: usize,
    pub start: Start<'a>,
    /// Classifier-free guidance: sample `i` (in seed order) is drawn for its class.
    pub guidance: Option<Guidance>,
    pub classifier: Option<&'a ClassifierGuide>,
    /// How x0 predictions are clipped; `None`: to [-1, 1] for images, not at all for vectors and
    /// sequences.
    pub clip: Option<X0Clip>,
    pub progress: crate::progress::ProgressMode,
    /// Records the x0 estimate of every sampling step of the first batch (started from noise):
    /// `(step, steps, values)` (`ddpm-train sample --trajectory`).
    pub trajectory: Option<&'a std::cell::RefCell<Vec<TrajectoryFrame>>>,
}

/// Seeds (rows) and steps (columns) of `trajectory.png`.
pub const TRAJECTORY_SEEDS: usize = 4;
pub const TRAJECTORY_COLUMNS: usize = 10;

/// One step of a sampling trajectory: the step, the number of steps, and the x0 estimates of the
/// first batch's samples at that step, in the model's range.
#[derive(Debug, Clone)]
pub struct TrajectoryFrame {
    pub step: usize,
    pub steps: usize,
    pub values: Vec<f32>,
}

impl<'a> Draw<'a> {
    /// Unguided sampling from noise, clipped as the data kind suggests, without progress output.
    pub fn new(diffusion: &'a Process, item_shape: &'a [usize], device: &'a Device, sampler: &'a Sampler, seeds: &'a [u64], batch_size: usize) -> Self {
        Self { diffusion, item_shape, device, sampler, seeds, batch_size, start: Start::Noise, guidance: None, classifier: None, clip: None, progress: crate::progress::ProgressMode::Quiet, trajectory: None }
    }
}

/// Draws what `d` asks for with `model`, calling `on_batch(seeds, values)` with each batch in the
/// model's range.
pub fn draw<const D: usize, M: Denoiser<D>>(d: &Draw<'_>, model: &M, mut on_batch: impl FnMut(&[u64], Vec<f32>) -> Result<()>) -> Result<()> {
    let Draw { diffusion, item_shape, device, sampler, seeds, batch_size, start, guidance, classifier, clip, progress, trajectory } = *d;
    let item: usize = item_shape.iter().product();
    let clip = clip.unwrap_or(if item_shape.len() == 3 { X0Clip::Static } else { X0Clip::None });
    let bar = crate::progress::Progress::new("sampling", seeds.len() as u64, 0, 1.0, "samples", progress);
    let batch_size = batch_size.max(1);
    for (k, batch) in seeds.chunks(batch_size).enumerate() {
        let mut shape = [0usize; D];
        shape[0] = batch.len();
        shape[1..].copy_from_slice(item_shape);
        let rows = |values: &[f32]| {
            let first = k * batch_size * item;
            TensorData::new(values[first..first + batch.len() * item].to_vec(), shape)
        };
        let labelling = guidance.map(|g| (g.num_classes, g.class)).or_else(|| classifier.map(|c| (c.classifier.info().num_classes, c.class)));
        let cond = match labelling {
            None => Conditioning::none(),
            Some((n, class)) => {
                let labels: Vec<i64> = (0..batch.len()).map(|j| class.unwrap_or((k * batch_size + j) % n) as i64).collect();
                Conditioning::classes(burn::tensor::Tensor::<1, Int>::from_data(TensorData::new(labels, [batch.len()]), device))
            }
        };
        let opts = SampleOptions { clip, cond };
        let options = TensorCreationOptions::new(device.clone());
        let free = guidance.map(|g| {
            let mut w = if g.cfg_pp { ClassifierFreeGuidance::cfg_pp(model, g.scale, g.num_classes as i64) } else { ClassifierFreeGuidance::new(model, g.scale, g.num_classes as i64) }
                .with_rescaled_phi(g.rescaled_phi);
            w.keep_parallel = g.keep_parallel;
            w
        });
        let rows = start.rows(&rows);
        let mut record = |step: usize, steps: usize, x0: &burn::tensor::Tensor<D>| {
            if let Some(frames) = trajectory {
                let values = x0.clone().into_data().try_to_vec_as::<f32>().expect("float tensor data converts to f32");
                frames.borrow_mut().push(TrajectoryFrame { step, steps, values });
            }
        };
        let observe: ddpm_core::process::Observer<'_, D> = (k == 0 && trajectory.is_some()).then_some(&mut record as _);
        let batch_at = BatchAt { seeds: batch, start: rows, observe };
        let x = match (&free, classifier) {
            (Some(w), Some(c)) => {
                let guided = ClassifierGuidance::new(w, &c.classifier, diffusion.gaussian("classifier guidance")?, c.scale)?;
                sample_batch(diffusion, &guided, shape, options, sampler, &opts, batch_at)?
            }
            (None, Some(c)) => {
                let guided = ClassifierGuidance::new(model, &c.classifier, diffusion.gaussian("classifier guidance")?, c.scale)?;
                sample_batch(diffusion, &guided, shape, options, sampler, &opts, batch_at)?
            }
            (Some(w), None) => sample_batch(diffusion, w, shape, options, sampler, &opts, batch_at)?,
            (None, None) => sample_batch(diffusion, model, shape, options, sampler, &opts, batch_at)?,
        };
        let values = x.into_data().try_to_vec_as::<f32>().expect("float tensor data converts to f32");
        on_batch(batch, values)?;
        bar.inc(batch.len() as u64);
    }
    bar.finish();
    Ok(())
}

/// Draws every seed of `d` with `model` and writes them as one picture at `path`: a grid of
/// images, a scatter plot of points or panels of sequences (see [`crate::grid::write_grid_with`]).
pub fn draw_picture<const D: usize, M: Denoiser<D>>(d: &Draw<'_>, model: &M, path: &std::path::Path, options: &crate::grid::GridOptions) -> Result<()> {
    let mut values = Vec::with_capacity(d.seeds.len() * d.item_shape.iter().product::<usize>());
    draw::<D, M>(d, model, |_, v| {
        values.extend(v.into_iter().map(f64::from));
        Ok(())
    })?;
    crate::grid::write_grid_with(path, &values, d.item_shape, options)
}

/// Where one batch starts: its rows of the initial noise or of the data.
enum BatchStart {
    Noise,
    InitialNoise(TensorData),
    Partial(TensorData, f64),
    Inpaint(TensorData, TensorData, ddpm_core::RePaint),
}

impl Start<'_> {
    fn rows(&self, rows: &dyn Fn(&[f32]) -> TensorData) -> BatchStart {
        match *self {
            Start::Noise => BatchStart::Noise,
            Start::InitialNoise(values) => BatchStart::InitialNoise(rows(values)),
            Start::Partial { x0, strength } => BatchStart::Partial(rows(x0), strength),
            Start::Inpaint { x0, mask, repaint } => BatchStart::Inpaint(rows(x0), rows(mask), repaint),
        }
    }
}

/// One batch: its seeds, where it starts, and who watches its x0 estimates (from noise only).
struct BatchAt<'a, 'b, const D: usize> {
    seeds: &'a [u64],
    start: BatchStart,
    observe: ddpm_core::process::Observer<'b, D>,
}

fn sample_batch<const D: usize, M: Denoiser<D>>(
    diffusion: &Process,
    model: &M,
    shape: [usize; D],
    options: TensorCreationOptions,
    sampler: &Sampler,
    opts: &SampleOptions<D>,
    batch: BatchAt<'_, '_, D>,
) -> Result<burn::tensor::Tensor<D>> {
    let BatchAt { seeds, start, observe } = batch;
    let per_seed = PerSampleNoise::new(seeds);
    Ok(match start {
        BatchStart::Noise => {
            let mut noise = per_seed;
            let z = noise.normal(shape, options)?;
            diffusion.sample_observed(model, z, sampler, opts, &mut noise, observe)?
        }
        BatchStart::InitialNoise(noise) => diffusion.sample(model, shape, options, sampler, opts, &mut PrefixedNoise::new([noise], per_seed))?,
        BatchStart::Partial(x0, strength) => {
            let x0 = burn::tensor::Tensor::<D>::from_data(x0, options);
            diffusion.sdedit(model, x0, strength, sampler, opts, &mut { per_seed })?
        }
        BatchStart::Inpaint(x0, mask, repaint) => {
            let known = Known { x0: burn::tensor::Tensor::<D>::from_data(x0, options.clone()), mask: burn::tensor::Tensor::<D>::from_data(mask, options) };
            ddpm_core::repaint(diffusion.gaussian("inpainting (RePaint)")?, model, known, &repaint, opts, &mut { per_seed }, no_callback)?
        }
    })
}

/// Images `[C, H, W]` in [-1, 1] as 8-bit PNG pixels (grayscale, RGB or RGBA by channel count).
pub fn to_image(values: &[f32], item_shape: &[usize]) -> DynamicImage {
    let (c, h, w) = (item_shape[0], item_shape[1], item_shape[2]);
    let px = |ch: usize, y: usize, x: usize| (((values[ch * h * w + y * w + x] + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
    let (wu, hu) = (w as u32, h as u32);
    match c {
        1 => DynamicImage::ImageLuma8(GrayImage::from_fn(wu, hu, |x, y| image::Luma([px(0, y as usize, x as usize)]))),
        4 => DynamicImage::ImageRgba8(RgbaImage::from_fn(wu, hu, |x, y| {
            let (x, y) = (x as usize, y as usize);
            image::Rgba([px(0, y, x), px(1, y, x), px(2, y, x), px(3, y, x)])
        })),
        _ => DynamicImage::ImageRgb8(RgbImage::from_fn(wu, hu, |x, y| {
            let (x, y) = (x as usize, y as usize);
            image::Rgb([px(0, y, x), px(1.min(c - 1), y, x), px(2.min(c - 1), y, x)])
        })),
    }
}

/// The default config of a ddpm-train checkpoint folder: the resolved `config.toml` saved in it
/// (or, for older folders, the run folder's).
pub fn run_config_of(checkpoint: &Path) -> Option<PathBuf> {
    let inside = checkpoint.join(crate::checkpoint::CONFIG);
    if inside.is_file() {
        return Some(inside);
    }
    let candidate = checkpoint.parent()?.parent()?.join(crate::checkpoint::CONFIG);
    candidate.is_file().then_some(candidate)
}
