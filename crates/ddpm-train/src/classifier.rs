//! Classifier guidance: a noise-aware classifier trained by ddpm-train on the run's labelled data
//! and diffusion (`ddpm-train classifier`), saved in the run folder, and loaded at sample time as
//! ddpm-core's [`ClassifierGradient`] (`sample.classifier_scale`).
//!
//! Training draws a batch, timesteps uniform over `0..T` and noise, noises the batch with the
//! run's schedule and minimises the cross-entropy of the classifier's logits at `(x_t, t)`: so it
//! learns `p(y | x_t, t)` at every noise level, which guidance differentiates.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use ddpm_core::{ClassifierGradient, HostNoise, NoiseSource};
use ddpm_models::{EncoderClassifier, EncoderClassifierConfig, Mlp, MlpConfig};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use crate::config::ClassifierSection;
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// What is saved next to the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierInfo {
    pub num_classes: usize,
    pub width: usize,
    pub item_shape: Vec<usize>,
    pub steps: usize,
    /// Accuracy on a fresh batch at t = 0, T/4, T/2, 3T/4 (by timestep).
    pub accuracy: Vec<(usize, f64)>,
}

const WEIGHTS: &str = "classifier.bpk";
const INFO: &str = "classifier.json";

/// A classifier network: logits `[B, classes]` of `x_t` at timesteps `t`.
pub trait ClassifierNet<const D: usize>: Module + Clone {
    fn logits(&self, x: Tensor<D>, t: Tensor<1>) -> Tensor<2>;
}

impl ClassifierNet<2> for Mlp {
    fn logits(&self, x: Tensor<2>, t: Tensor<1>) -> Tensor<2> {
        self.forward(x, t, None, None)
    }
}

impl ClassifierNet<4> for EncoderClassifier {
    fn logits(&self, x: Tensor<4>, t: Tensor<1>) -> Tensor<2> {
        self.forward(x, t)
    }
}

/// The network for data items of `item_shape`: an MLP for vectors, the encoder for images.
fn with_classifier<R>(item_shape: &[usize], num_classes: usize, width: usize, vectors: impl FnOnce(MlpConfig) -> R, images: impl FnOnce(EncoderClassifierConfig) -> R) -> Result<R> {
    match item_shape.len() {
        1 => Ok(vectors(MlpConfig::new(item_shape[0]).with_hidden(width).with_out_features(Some(num_classes)))),
        3 => Ok(images(EncoderClassifierConfig::new(num_classes).with_channels(item_shape[0]).with_dim(width))),
        _ => Err(TrainError::config("classifier", format!("classifier guidance is for images and vectors, not items of shape {item_shape:?}"))),
    }
}

/// Trains the classifier of `cfg` on its data and saves it; returns its folder and description.
pub fn train_classifier(cfg: &TrainConfig, progress: bool) -> Result<(PathBuf, ClassifierInfo)> {
    let c = &cfg.classifier;
    let data = crate::data::load(&cfg.data, cfg.run.seed)?;
    let labels = match (&data.labels, data.num_classes) {
        (Some(l), n) if n >= 2 => l.clone(),
        _ => return Err(TrainError::config("data", "classifier guidance needs labelled data (cifar10, mnist, shapes, the gaussian8/25 toy sets)")),
    };
    let process = cfg.build_diffusion()?;
    let diffusion = process.gaussian("training a noise-aware classifier")?.clone();
    if c.steps == 0 || c.batch_size == 0 {
        return Err(TrainError::config("classifier.steps", "steps and batch_size must be at least 1"));
    }
    let device = ddpm_io::device::parse_device(&cfg.run.device)?;
    let shape = data.item_shape.clone();
    let folder = c.folder(cfg);
    struct Job<'a> {
        cfg: &'a TrainConfig,
        data: &'a crate::data::InMemory,
        labels: &'a [u32],
        diffusion: &'a ddpm_core::GaussianDiffusion,
        device: Device,
        progress: bool,
        folder: &'a Path,
    }
    impl Job<'_> {
        fn run<const D: usize, C: ClassifierNet<D>>(&self, init: impl Fn(&Device) -> Result<C>) -> Result<ClassifierInfo> {
            let c = &self.cfg.classifier;
            let ad = self.device.clone().autodiff();
            ad.seed(self.cfg.run.seed ^ 0xC1A5);
            let mut net = init(&ad)?;
            let mut optim = AdamConfig::new().init();
            let loss_fn = CrossEntropyLossConfig::new().init(&ad);
            let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.run.seed ^ 0xC1A5);
            let mut noise = HostNoise::new(self.cfg.run.seed ^ 0xC1A6);
            let t_max = self.diffusion.num_timesteps();
            let batch = |rng: &mut ChaCha8Rng, noise: &mut HostNoise, device: &Device, t: Option<usize>| -> Result<(Tensor<D>, Tensor<1>, Tensor<1, Int>)> {
                let idx: Vec<usize> = (0..c.batch_size).map(|_| rng.random_range(0..self.data.len())).collect();
                let mut dims = [0usize; D];
                dims[0] = c.batch_size;
                dims[1..].copy_from_slice(&self.data.item_shape);
                let x0 = Tensor::<D>::from_data(TensorData::new(self.data.host_batch(&idx, &vec![false; idx.len()]), dims), device);
                let ts: Vec<usize> = (0..c.batch_size).map(|_| t.unwrap_or_else(|| rng.random_range(0..t_max))).collect();
                let x_t = self.diffusion.q_sample(x0.clone(), &ts, noise.normal_like(&x0)?)?;
                let y: Vec<i64> = idx.iter().map(|&i| self.labels[i] as i64).collect();
                Ok((x_t, ddpm_core::tensor::time_tensor(&ts, &x0), Tensor::from_data(TensorData::new(y, [c.batch_size]), device)))
            };
            let mode = crate::progress::ProgressMode::new(!self.progress, self.cfg.run.progress_seconds);
            let bar = crate::progress::Progress::new("classifier", c.steps as u64, 0, c.batch_size as f64, "items", mode);
            for _ in 0..c.steps {
                let (x_t, t, y) = batch(&mut rng, &mut noise, &ad, None)?;
                let loss = loss_fn.forward(net.logits(x_t, t), y);
                let value = loss.clone().into_scalar::<f64>();
                if !value.is_finite() {
                    return Err(TrainError::Diverged(format!("the classifier's loss became {value}; lower classifier.lr")));
                }
                let grads = GradientsParams::from_grads(loss.backward(), &net);
                net = optim.step(c.lr, net, grads);
                bar.set_message(format!("loss {value:.3}"));
                bar.inc(1);
            }
            bar.finish();
            let valid = net.valid();
            let mut accuracy = Vec::new();
            for t in [0, t_max / 4, t_max / 2, 3 * t_max / 4] {
                let (x_t, ts, y) = batch(&mut rng, &mut noise, &self.device, Some(t))?;
                let right = valid.logits(x_t, ts).argmax(1).reshape([c.batch_size]).equal(y).int().sum().into_scalar::<i64>();
                accuracy.push((t, right as f64 / c.batch_size as f64));
            }
            let info = ClassifierInfo { num_classes: self.data.num_classes, width: c.width, item_shape: self.data.item_shape.clone(), steps: c.steps, accuracy };
            crate::checkpoint::write_folder(self.folder, |tmp| {
                valid.clone().save_file(tmp.join(WEIGHTS)).map_err(|e| TrainError::Checkpoint { path: tmp.to_path_buf(), message: format!("saving the classifier: {e}") })?;
                std::fs::write(tmp.join(INFO), serde_json::to_vec_pretty(&info).expect("serialises")).map_err(|e| crate::fsio::io(tmp, e))
            })?;
            Ok(info)
        }
    }
    let job = Job { cfg, data: &data, labels: &labels, diffusion: &diffusion, device, progress, folder: &folder };
    let n = data.num_classes;
    let info = with_classifier(&shape, n, c.width, |m| job.run::<2, Mlp>(|d| Ok(m.init(d)?)), |e| job.run::<4, EncoderClassifier>(|d| Ok(e.init(d)?)))??;
    Ok((folder, info))
}

/// A trained classifier, on the autodiff device, as guidance's gradient.
pub struct LoadedClassifier<C> {
    net: C,
    pub info: ClassifierInfo,
}

impl<const D: usize, C: ClassifierNet<D>> ClassifierGradient<D> for LoadedClassifier<C> {
    fn log_prob_grad(&self, x_t: Tensor<D>, t: Tensor<1>, classes: Tensor<1, Int>) -> Tensor<D> {
        let device = x_t.device();
        let x = x_t.autodiff().require_grad();
        let logits = self.net.logits(x.clone(), t.autodiff());
        let b = classes.dims()[0];
        let picked = log_softmax(logits, 1).gather(1, classes.autodiff().reshape([b, 1])).sum();
        let grads = picked.backward();
        x.grad(&grads).expect("x requires grad").to_device(&device)
    }
}

/// A trained classifier of either kind, usable as the gradient of any rank: vectors and images
/// are reshaped to the network's own layout.
pub enum TrainedClassifier {
    Vectors(LoadedClassifier<Mlp>),
    Images(LoadedClassifier<EncoderClassifier>),
}

impl TrainedClassifier {
    pub fn info(&self) -> &ClassifierInfo {
        match self {
            Self::Vectors(c) => &c.info,
            Self::Images(c) => &c.info,
        }
    }
}

impl<const D: usize> ClassifierGradient<D> for TrainedClassifier {
    fn log_prob_grad(&self, x_t: Tensor<D>, t: Tensor<1>, classes: Tensor<1, Int>) -> Tensor<D> {
        let dims = x_t.dims();
        let b = dims[0];
        let rest: usize = dims[1..].iter().product();
        match self {
            Self::Vectors(c) => c.log_prob_grad(x_t.reshape([b, rest]), t, classes).reshape(dims),
            Self::Images(c) => {
                let shape = &c.info.item_shape;
                c.log_prob_grad(x_t.reshape([b, shape[0], shape[1], shape[2]]), t, classes).reshape(dims)
            }
        }
    }
}

/// Loads the classifier saved in `folder` for data items of `item_shape`.
pub fn load_classifier(folder: &Path, item_shape: &[usize], device: &Device) -> Result<TrainedClassifier> {
    let info_path = folder.join(INFO);
    let text = std::fs::read_to_string(&info_path).map_err(|e| TrainError::Checkpoint {
        path: info_path.clone(),
        message: format!("cannot read the classifier ({e}); train one with `ddpm-train classifier --config ...` or set sample.classifier"),
    })?;
    let info: ClassifierInfo = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint { path: info_path.clone(), message: format!("corrupt classifier description: {e}") })?;
    if info.item_shape != item_shape {
        return Err(TrainError::Checkpoint { path: info_path, message: format!("the classifier was trained on items {:?}, but the model makes {item_shape:?}", info.item_shape) });
    }
    let ad = device.clone().autodiff();
    let weights = folder.join(WEIGHTS);
    let load_err = |e: burn::store::RecordError| TrainError::Checkpoint { path: weights.clone(), message: format!("cannot load ({e}); the file is truncated or was written by another version") };
    let (n, w) = (info.num_classes, info.width);
    with_classifier(
        item_shape,
        n,
        w,
        |m| -> Result<TrainedClassifier> { Ok(TrainedClassifier::Vectors(LoadedClassifier { net: m.init(&ad)?.try_load_file(&weights).map_err(load_err)?, info: info.clone() })) },
        |e| -> Result<TrainedClassifier> { Ok(TrainedClassifier::Images(LoadedClassifier { net: e.init(&ad)?.try_load_file(&weights).map_err(load_err)?, info: info.clone() })) },
    )?
}
