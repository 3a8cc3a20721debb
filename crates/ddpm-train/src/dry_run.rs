//! `ddpm-train --dry-run`: everything a run checks before its first step, and one training step in
//! memory, without writing a byte: the config, the data (with a count of unreadable items), the
//! network, one forward and backward pass on a real batch with its time and the peak memory, and
//! what the run would do in its folder.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use ddpm_core::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::config::{DataConfig, TrainConfig};
use crate::error::{Result, TrainError};
use crate::TrainModel;

/// What a dry run found.
#[derive(Debug, Clone, Serialize)]
pub struct DryRunReport {
    /// The resolved config (every default filled in), as TOML.
    pub config: String,
    /// Items of the data set that a run would train on.
    pub data_items: usize,
    /// Files of an image folder that could not be decoded.
    pub unreadable_items: usize,
    /// Shape of one data item.
    pub item_shape: Vec<usize>,
    /// A note on the data, e.g. that a data set is not downloaded yet.
    pub data_note: Option<String>,
    pub model: String,
    pub parameters: usize,
    /// Seconds of the one optimiser step (loss, backward, clipping, Adam) on a batch of the data;
    /// the first step includes one-off costs (allocation, kernel compilation on GPUs).
    pub step_seconds: f64,
    /// The loss of that step.
    pub loss: f64,
    /// Peak resident memory of the process (Linux), bytes.
    pub peak_host_bytes: Option<u64>,
    /// The run folder.
    pub out_dir: PathBuf,
    /// What the run would do there.
    pub plan: String,
}

/// Checks `cfg` end to end without writing anything; `resume` and `overwrite` are the options the
/// real run would get, so the plan says what it would do with the run folder.
pub fn dry_run(cfg: &TrainConfig, resume: bool, overwrite: bool) -> Result<DryRunReport> {
    let (data, unreadable_items, data_note) = open_data(cfg)?;
    let out = &cfg.run.out_dir;
    let plan = if resume {
        match crate::checkpoint::list(out)?.pop() {
            Some(c) => format!("resume from {} (step {})", c.display(), crate::checkpoint::read_state(&c)?.step),
            None => format!("nothing to resume in {}: no checkpoint", out.display()),
        }
    } else {
        match crate::run_dir::prepare_fresh_check(out, overwrite)? {
            None => format!("start a fresh run in {}", out.display()),
            Some(desc) => format!("move the run in {} ({desc}) aside and start a fresh one", out.display()),
        }
    };
    struct Step<'a>(&'a TrainConfig, &'a crate::data::InMemory);
    impl crate::AnyRank for Step<'_> {
        type Output = (String, usize, f64, f64);
        fn run<const D: usize, M: TrainModel<D>>(self, init: &dyn Fn(&Device) -> Result<M>) -> Result<(String, usize, f64, f64)> {
            let (cfg, data) = (self.0, self.1);
            let device = cfg.run.devices()?.remove(0).autodiff();
            device.seed(cfg.run.seed);
            let model = init(&device)?;
            let parameters = burn::module::Module::num_params(&model);
            let diffusion = cfg.build_diffusion()?;
            let batch = cfg.train.batch_size.min(data.len()).max(1);
            let indices: Vec<usize> = (0..batch).collect();
            let mut shape = [0usize; D];
            shape[0] = batch;
            shape[1..].copy_from_slice(&data.item_shape);
            let x0 = Tensor::<D>::from_data(TensorData::new(data.host_batch(&indices, &[]), shape), &device);
            let cond = match (cfg.model.num_classes(), &data.labels) {
                (Some(_), Some(labels)) => {
                    let l: Vec<i64> = indices.iter().map(|&i| labels[i] as i64).collect();
                    Conditioning::classes(Tensor::<1, Int>::from_data(TensorData::new(l, [batch]), &device))
                }
                _ => Conditioning::none(),
            };
            let mut optim = crate::trainer::optimizer(cfg);
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.run.seed);
            let mut noise = HostNoise::new(cfg.run.seed.wrapping_add(1));
            let started = Instant::now();
            let step = crate::trainer::optimizer_step(&diffusion, model, &mut optim, std::iter::once((x0, cond)), &crate::trainer::StepSettings { replicas: &[], grad_clip: cfg.train.grad_clip, lr: cfg.train.lr_at(1) }, &mut rng, &mut noise)?;
            device.sync().map_err(|e| TrainError::config("run.device", format!("{e:?}")))?;
            Ok((cfg.model.kind().to_string(), parameters, started.elapsed().as_secs_f64(), step.loss))
        }
    }
    let (model, parameters, step_seconds, loss) = crate::with_model(cfg, &data.item_shape, Step(cfg, &data))?;
    Ok(DryRunReport {
        config: toml::to_string(cfg).expect("a parsed config renders"),
        data_items: data.len(),
        unreadable_items,
        item_shape: data.item_shape.clone(),
        data_note,
        model,
        parameters,
        step_seconds,
        loss,
        peak_host_bytes: ddpm_io::memory::peak_host_bytes(),
        out_dir: out.clone(),
        plan,
    })
}

/// The data as a run would see it, the number of unreadable files of an image folder, and a note.
/// A data set that is not downloaded yet is not downloaded (a dry run writes nothing): it is
/// noted, and a batch of zeros of its shape stands in for the step.
fn open_data(cfg: &TrainConfig) -> Result<(crate::data::InMemory, usize, Option<String>)> {
    let mut probe = cfg.data.clone();
    let mut folder = None;
    match &mut probe {
        DataConfig::ImageFolder { path, skip_corrupt, .. } | DataConfig::Celeba { path, skip_corrupt, .. } => {
            folder = Some((path.clone(), *skip_corrupt));
            *skip_corrupt = true;
        }
        DataConfig::Cifar10 { download, .. } | DataConfig::Mnist { download, .. } => *download = false,
        _ => {}
    }
    let data = match crate::data::load(&probe, cfg.run.seed) {
        Ok(d) => d,
        Err(e) if matches!(cfg.data, DataConfig::Cifar10 { download: true, .. } | DataConfig::Mnist { download: true, .. }) => {
            let shape = crate::data::item_shape(&cfg.data)?;
            let n = cfg.train.batch_size.max(1);
            let zeros = crate::data::InMemory::from_f32(vec![0.0; n * shape.iter().product::<usize>()], shape);
            return Ok((zeros, 0, Some(format!("not downloaded yet ({e}); the run downloads it first"))));
        }
        Err(e) => return Err(e),
    };
    let Some((path, skip)) = folder else { return Ok((data, 0, None)) };
    let listed = crate::data::images::list_images(&path)?.len();
    let unreadable = listed - data.len();
    let note = (unreadable > 0 && !skip).then(|| format!("{unreadable} of {listed} images cannot be read: the run stops at the first unless data.skip_corrupt = true"));
    Ok((data, unreadable, note))
}

/// The report as the lines `ddpm-train --dry-run` prints.
pub fn render(r: &DryRunReport) -> String {
    let mut s = String::new();
    s.push_str("# resolved config\n");
    s.push_str(&r.config);
    s.push_str("\n# dry run\n");
    s.push_str(&format!("data: {} items of shape {:?}", r.data_items, r.item_shape));
    if r.unreadable_items > 0 {
        s.push_str(&format!(", {} unreadable", r.unreadable_items));
    }
    s.push('\n');
    if let Some(n) = &r.data_note {
        s.push_str(&format!("data note: {n}\n"));
    }
    s.push_str(&format!("model: {} with {} parameters\n", r.model, r.parameters));
    s.push_str(&format!("one training step: {:.3} s, loss {:.4}\n", r.step_seconds, r.loss));
    if let Some(b) = r.peak_host_bytes {
        s.push_str(&format!("peak memory: {:.1} MiB\n", b as f64 / (1024.0 * 1024.0)));
    }
    s.push_str(&format!("the run would {} (nothing was written)\n", r.plan));
    s
}
