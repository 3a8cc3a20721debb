//! The Frechet LeNet Distance (FLD) of DenoisingDiffusion.jl: the Frechet distance between the
//! Gaussians fitted to the 84-d features of a LeNet-5 classifier, in place of Inception's 2048-d
//! ones. The classifier is trained by this tool on the labelled data set itself, so FLD needs no
//! download; its weights are saved and reused, and FLD values compare only under the same weights
//! file.
//!
//! The network is the Flux LeNet-5 that DenoisingDiffusion.jl trains on MNIST: two 5x5 valid
//! convolutions (6 and 16 channels) each followed by ReLU and a 2x2 max pool, then dense layers
//! 256 -> 120 -> 84 -> classes with ReLU between; the features are the 84 ReLU outputs. Inputs are
//! images in [0, 1], turned into the network's channels (PIL's luma for grey, grey repeated for
//! colour), resized to `image_size` (28) with the bilinear resize of [`crate::inception`], and
//! mapped to [-1, 1].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{EvalError, Result};
use crate::frechet::FeatureStats;
use crate::inception::resize_bilinear;
use ddpm_kernels::ConvForward;

/// The length of the FLD features.
pub const FEATURE_DIM: usize = 84;

/// The LeNet-5 of FLD.
#[derive(Config, Debug, PartialEq)]
pub struct LeNet5Config {
    /// Input channels: 1 (grey) or 3 (RGB).
    #[config(default = 1)]
    pub channels: usize,
    /// Number of classes of the data set.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Side of the square input every image is resized to; at least 16.
    #[config(default = 28)]
    pub image_size: usize,
}

impl LeNet5Config {
    fn check(&self) -> Result<()> {
        if !matches!(self.channels, 1 | 3) {
            return Err(EvalError::input(format!(
                "LeNet-5 channels {}: use 1 (grey) or 3 (RGB)",
                self.channels
            )));
        }
        if self.num_classes < 2 {
            return Err(EvalError::input(format!(
                "LeNet-5 with {} classes: a classifier needs at least 2",
                self.num_classes
            )));
        }
        if self.image_size < 16 {
            return Err(EvalError::input(format!(
                "LeNet-5 input size {}: use at least 16 (28 is the default)",
                self.image_size
            )));
        }
        Ok(())
    }

    /// The side of the 16-channel map after the two convolution and pool stages.
    fn trunk_side(&self) -> usize {
        ((self.image_size - 4) / 2 - 4) / 2
    }

    /// A randomly initialised network.
    pub fn init(&self, device: &Device) -> Result<LeNet5> {
        self.check()?;
        let side = self.trunk_side();
        Ok(LeNet5 {
            conv1: Conv2dConfig::new([self.channels, 6], [5, 5]).init(device),
            conv2: Conv2dConfig::new([6, 16], [5, 5]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(16 * side * side, 120).init(device),
            fc2: LinearConfig::new(120, FEATURE_DIM).init(device),
            fc3: LinearConfig::new(FEATURE_DIM, self.num_classes).init(device),
        })
    }
}

/// LeNet-5 (see the module documentation).
#[derive(Module, Debug)]
pub struct LeNet5 {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl LeNet5 {
    /// The 84-d features of network inputs `[N, C, S, S]` (see [`lenet_input`]).
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(relu(self.conv1.conv(x)));
        let x = self.pool.forward(relu(self.conv2.conv(x)));
        let x = x.flatten::<2>(1, 3);
        relu(self.fc2.forward(relu(self.fc1.forward(x))))
    }

    /// Class logits `[N, classes]` of network inputs.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc3.forward(self.features(x))
    }
}

/// Images `[N, C, H, W]` in [0, 1] (C = 1, 3 or 4; alpha is dropped) as inputs of `config`'s
/// network: its channels (grey as PIL's `L`, `0.299 R + 0.587 G + 0.114 B`, or grey repeated),
/// resized to `image_size`, mapped to [-1, 1].
pub fn lenet_input(images: Tensor<4>, config: &LeNet5Config) -> Tensor<4> {
    let c = images.dims()[1];
    let rgb = |x: Tensor<4>| match x.dims()[1] {
        1 => Tensor::cat(vec![x.clone(), x.clone(), x], 1),
        _ => x.narrow(1, 0, 3),
    };
    let x = match (config.channels, c) {
        (1, 1) => images,
        (1, _) => {
            let x = rgb(images);
            x.clone().narrow(1, 0, 1) * 0.299
                + x.clone().narrow(1, 1, 1) * 0.587
                + x.narrow(1, 2, 1) * 0.114
        }
        _ => rgb(images),
    };
    resize_bilinear(x, [config.image_size, config.image_size]) * 2.0 - 1.0
}

/// Images with one class label each, as host floats.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledImages {
    /// `[N, C, H, W]` row-major, in [0, 1].
    pub values: Vec<f32>,
    pub shape: [usize; 4],
    /// The class of each image, below `num_classes`.
    pub labels: Vec<u32>,
    pub num_classes: usize,
}

impl LabelledImages {
    fn check(&self) -> Result<()> {
        let [n, c, h, w] = self.shape;
        if self.values.len() != n * c * h * w || self.labels.len() != n {
            return Err(EvalError::input(format!(
                "labelled images: {} values and {} labels do not fit the shape {:?}",
                self.values.len(),
                self.labels.len(),
                self.shape
            )));
        }
        if let Some(bad) = self
            .labels
            .iter()
            .find(|&&l| l as usize >= self.num_classes)
        {
            return Err(EvalError::input(format!(
                "label {bad} is not below the number of classes {}",
                self.num_classes
            )));
        }
        Ok(())
    }

    fn batch(&self, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let [_, c, h, w] = self.shape;
        let item = c * h * w;
        let mut values = Vec::with_capacity(indices.len() * item);
        for &i in indices {
            values.extend_from_slice(&self.values[i * item..(i + 1) * item]);
        }
        let labels: Vec<i64> = indices.iter().map(|&i| i64::from(self.labels[i])).collect();
        (
            Tensor::from_data(TensorData::new(values, [indices.len(), c, h, w]), device),
            Tensor::from_data(TensorData::new(labels, [indices.len()]), device),
        )
    }
}

/// How the classifier is trained: Adam, cross-entropy, a held-out share for the accuracy.
#[derive(Config, Debug)]
pub struct LeNetTrainingConfig {
    #[config(default = 5)]
    pub epochs: usize,
    #[config(default = 128)]
    pub batch_size: usize,
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    /// Share of the images held out to measure the accuracy (not trained on).
    #[config(default = 0.1)]
    pub holdout: f64,
    /// Seed of the initialisation, the split and the batch order.
    #[config(default = 0)]
    pub seed: u64,
}

/// A trained classifier and how well it classifies held-out images.
#[derive(Debug)]
pub struct TrainedLeNet {
    pub model: LeNet5,
    pub config: LeNet5Config,
    /// Share of held-out images classified right (NaN with no held-out image).
    pub accuracy: f64,
}

/// Trains `config`'s LeNet-5 on `data` on `device` (an autodiff copy of it is used), with an
/// indicatif bar when `progress`.
pub fn train_lenet(
    data: &LabelledImages,
    config: &LeNet5Config,
    training: &LeNetTrainingConfig,
    device: &Device,
    progress: bool,
) -> Result<TrainedLeNet> {
    data.check()?;
    if data.num_classes != config.num_classes {
        return Err(EvalError::input(format!(
            "the data has {} classes and the classifier {}",
            data.num_classes, config.num_classes
        )));
    }
    if training.batch_size == 0 || training.epochs == 0 || !(0.0..1.0).contains(&training.holdout) {
        return Err(EvalError::input(format!(
            "classifier training: epochs {}, batch size {} and holdout {} must be >= 1, >= 1 and in [0, 1)",
            training.epochs, training.batch_size, training.holdout
        )));
    }
    let n = data.shape[0];
    let mut rng = ChaCha8Rng::seed_from_u64(training.seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let held = (n as f64 * training.holdout).round() as usize;
    let (held_out, mut train) = (order[..held].to_vec(), order[held..].to_vec());
    if train.is_empty() {
        return Err(EvalError::input(format!(
            "{n} labelled images leave none to train the classifier on; give more images or a smaller holdout"
        )));
    }

    let ad = device.clone().autodiff();
    ad.seed(training.seed);
    let mut model = config.init(&ad)?;
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let steps = training.epochs * train.len().div_ceil(training.batch_size);
    let bar = if progress {
        ProgressBar::new(steps as u64)
    } else {
        ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::hidden())
    };
    bar.set_style(
        ProgressStyle::with_template(
            "LeNet-5 {bar:40} {pos}/{len} steps [{elapsed} < {eta}, {per_sec}] {msg}",
        )
        .expect("a valid template"),
    );
    for epoch in 0..training.epochs {
        train.shuffle(&mut rng);
        for chunk in train.chunks(training.batch_size) {
            let (x, y) = data.batch(chunk, &ad);
            let loss = loss_fn.forward(model.forward(lenet_input(x, config)), y);
            let value = loss.clone().into_scalar::<f32>();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(training.learning_rate, model, grads);
            bar.set_message(format!("epoch {} loss {value:.3}", epoch + 1));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let model = model.valid();
    let accuracy = if held_out.is_empty() {
        f64::NAN
    } else {
        let mut right = 0usize;
        for chunk in held_out.chunks(training.batch_size) {
            let (x, y) = data.batch(chunk, device);
            let predicted = model
                .forward(lenet_input(x, config))
                .argmax(1)
                .reshape([chunk.len()]);
            right += predicted.equal(y).int().sum().into_scalar::<i64>() as usize;
        }
        right as f64 / held_out.len() as f64
    };
    Ok(TrainedLeNet {
        model,
        config: config.clone(),
        accuracy,
    })
}

const META_CHANNELS: &str = "lenet5.channels";
const META_CLASSES: &str = "lenet5.num_classes";
const META_SIZE: &str = "lenet5.image_size";
const META_ACCURACY: &str = "lenet5.heldout_accuracy";

/// Saves a trained classifier as safetensors, its configuration and accuracy in the metadata.
/// Written to a temporary name and renamed, so a crash never leaves a truncated file.
pub fn save_lenet(trained: &TrainedLeNet, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| EvalError::file(dir, format!("cannot create the folder: {e}")))?;
    }
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let c = &trained.config;
    let mut store = SafetensorsStore::from_file(&tmp)
        .metadata(META_CHANNELS, c.channels.to_string())
        .metadata(META_CLASSES, c.num_classes.to_string())
        .metadata(META_SIZE, c.image_size.to_string())
        .metadata(META_ACCURACY, trained.accuracy.to_string());
    trained
        .model
        .save_into(&mut store)
        .map_err(|e| EvalError::file(&tmp, format!("cannot save the classifier: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        EvalError::file(
            path,
            format!("cannot move the saved classifier into place: {e}"),
        )
    })
}

/// Loads a classifier written by [`save_lenet`].
pub fn load_lenet(path: &Path, device: &Device) -> Result<TrainedLeNet> {
    let bytes = std::fs::read(path)
        .map_err(|e| EvalError::file(path, format!("cannot read the classifier: {e}")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        EvalError::file(
            path,
            format!("not a safetensors file ({e}); give a classifier saved by ddpm-eval fld"),
        )
    })?;
    let meta: HashMap<String, String> = header.metadata().clone().unwrap_or_default();
    let field = |key: &str| -> Result<String> {
        meta.get(key).cloned().ok_or_else(|| EvalError::file(path, format!("no `{key}` in the metadata: not a LeNet-5 saved by ddpm-eval; delete it to train a new one")))
    };
    let number = |key: &str| -> Result<usize> {
        field(key)?
            .parse()
            .map_err(|_| EvalError::file(path, format!("`{key}` in the metadata is not a number")))
    };
    let config = LeNet5Config {
        channels: number(META_CHANNELS)?,
        num_classes: number(META_CLASSES)?,
        image_size: number(META_SIZE)?,
    };
    let accuracy = field(META_ACCURACY)?.parse().unwrap_or(f64::NAN);
    let mut model = config.init(device)?;
    model
        .load_from(&mut SafetensorsStore::from_bytes(Some(bytes)))
        .map_err(|e| {
            EvalError::file(
                path,
                format!("the weights do not fit LeNet-5 {config:?}: {e}"),
            )
        })?;
    Ok(TrainedLeNet {
        model,
        config,
        accuracy,
    })
}

/// The 84-d features of images `[N, C, H, W]` in [0, 1] (`values`, row-major), `batch_size` at a
/// time: a row-major `N x 84` buffer.
pub fn lenet_features(
    trained: &TrainedLeNet,
    values: &[f32],
    shape: [usize; 4],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    let [n, c, h, w] = shape;
    if values.len() != n * c * h * w {
        return Err(EvalError::input(format!(
            "{} values do not fit the image shape {shape:?}",
            values.len()
        )));
    }
    let item = c * h * w;
    let mut out = Vec::with_capacity(n * FEATURE_DIM);
    for start in (0..n).step_by(batch_size.max(1)) {
        let end = (start + batch_size.max(1)).min(n);
        let x = Tensor::<4>::from_data(
            TensorData::new(
                values[start * item..end * item].to_vec(),
                [end - start, c, h, w],
            ),
            device,
        );
        let f = trained.model.features(lenet_input(x, &trained.config));
        out.extend(
            f.try_into_vec_as::<f32>()
                .map_err(|e| EvalError::input(format!("cannot read the features back: {e:?}")))?,
        );
    }
    Ok(out)
}

/// The statistics of the LeNet features of images `[N, C, H, W]` in [0, 1].
pub fn lenet_stats(
    trained: &TrainedLeNet,
    values: &[f32],
    shape: [usize; 4],
    batch_size: usize,
    device: &Device,
) -> Result<FeatureStats> {
    let features = lenet_features(trained, values, shape, batch_size, device)?;
    FeatureStats::from_features(&features, shape[0], FEATURE_DIM)
}

/// The images of a folder, all of one size, as `[N, 3, H, W]` floats in [0, 1] (read as
/// [`crate::inception::read_image`] reads them).
#[derive(Debug, Clone, PartialEq)]
pub struct FolderImages {
    pub values: Vec<f32>,
    pub shape: [usize; 4],
    /// With class sub-folders, the class of each image (the index of its folder in `classes`).
    pub labels: Option<Vec<u32>>,
    /// The class sub-folders' names, sorted (torchvision's `ImageFolder` order); empty without.
    pub classes: Vec<String>,
}

impl FolderImages {
    /// Whether every pixel of every image is grey (R = G = B).
    pub fn is_grey(&self) -> bool {
        let [n, _, h, w] = self.shape;
        let plane = h * w;
        (0..n).all(|i| {
            let img = &self.values[i * 3 * plane..(i + 1) * 3 * plane];
            (0..plane).all(|p| img[p] == img[plane + p] && img[p] == img[2 * plane + p])
        })
    }

    /// The images with their labels, for training the classifier; an error naming `dir` when the
    /// folder has no class sub-folders.
    pub fn labelled(self, dir: &Path) -> Result<LabelledImages> {
        match self.labels {
            Some(labels) if self.classes.len() >= 2 => Ok(LabelledImages {
                values: self.values,
                shape: self.shape,
                labels,
                num_classes: self.classes.len(),
            }),
            _ => Err(EvalError::file(
                dir,
                "training the FLD classifier needs labelled images: one sub-folder per class (at least 2), as torchvision's ImageFolder; \
                 or give a trained classifier with --classifier",
            )),
        }
    }
}

/// Reads the images of `dir`: with sub-folders, those in each sub-folder (one class each, sorted by
/// name; images directly in `dir` are then an error), otherwise those directly in `dir`. Every
/// image must have the size of the first.
pub fn read_image_folder(dir: &Path) -> Result<FolderImages> {
    use rayon::prelude::*;
    let entries = std::fs::read_dir(dir)
        .map_err(|e| EvalError::file(dir, format!("cannot list the folder: {e}")))?;
    let mut classes: Vec<String> = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| EvalError::file(dir, format!("cannot list the folder: {e}")))?
            .path();
        if path.is_dir() {
            classes.push(
                path.file_name()
                    .expect("an entry has a name")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    classes.sort();
    let mut paths: Vec<(PathBuf, u32)> = Vec::new();
    if classes.is_empty() {
        paths.extend(
            crate::inception::image_paths(dir)?
                .into_iter()
                .map(|p| (p, 0)),
        );
    } else {
        if let Ok(loose) = crate::inception::image_paths(dir) {
            return Err(EvalError::file(
                &loose[0],
                "an image beside class sub-folders: with sub-folders every image must be in one (its class); move it into its class folder",
            ));
        }
        for (label, class) in classes.iter().enumerate() {
            paths.extend(
                crate::inception::image_paths(&dir.join(class))?
                    .into_iter()
                    .map(|p| (p, label as u32)),
            );
        }
    }
    let images = paths
        .par_iter()
        .map(|(p, _)| crate::inception::read_image(p))
        .collect::<Result<Vec<_>>>()?;
    let [h, w] = images[0].1;
    let mut values = Vec::with_capacity(images.len() * 3 * h * w);
    for ((chw, size), (path, _)) in images.into_iter().zip(&paths) {
        if size != [h, w] {
            return Err(EvalError::file(
                path,
                format!(
                    "is {}x{} while {} is {h}x{w}: FLD reads folders of one image size; resize the images",
                    size[1],
                    size[0],
                    paths[0].0.display()
                ),
            ));
        }
        values.extend(chw);
    }
    let labels = (!classes.is_empty()).then(|| paths.iter().map(|(_, l)| *l).collect());
    Ok(FolderImages {
        values,
        shape: [paths.len(), 3, h, w],
        labels,
        classes,
    })
}
