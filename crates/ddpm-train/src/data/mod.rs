//! Data sets held in memory (images as bytes, vectors as `f32`), with a seeded, resumable batch
//! order. Batches come out as `f32` in the model's range ([-1, 1] for images).
//!
//! Sources: the embedded shapes and toy sets, image folders ([`images`]), CelebA, CIFAR-10
//! ([`cifar`]), MNIST and Fashion-MNIST ([`mnist`]), fetched by [`download`] into a cache folder,
//! and vectors or sequences from `.npy` / `.safetensors` / `.csv` files ([`vectors`]).

pub mod cifar;
pub mod download;
pub mod images;
pub mod mnist;
pub mod shapes;
pub mod toy;
pub mod vectors;


use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

pub use crate::config::{ImageSize, MnistVariant, Normalize, Split};
use crate::config::DataConfig;
use crate::error::{Result, TrainError};

/// The values of all items, item after item, each in C order.
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    /// Image bytes 0..=255, mapped to [-1, 1] (`v / 127.5 - 1`) when a batch is built; a quarter
    /// of the memory of `f32` (CelebA at 64x64 is 2.5 GB as bytes).
    U8(Vec<u8>),
    /// Values already in the model's range (vectors, toy points, generated shapes).
    F32(Vec<f32>),
}

impl Storage {
    /// Number of stored values.
    pub fn len(&self) -> usize {
        match self {
            Storage::U8(v) => v.len(),
            Storage::F32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Items of one shape, stored contiguously.
#[derive(Debug, Clone, PartialEq)]
pub struct InMemory {
    pub storage: Storage,
    /// Shape of one item, e.g. `[3, 16, 16]` or `[2]`.
    pub item_shape: Vec<usize>,
    /// The class of each item (`0..num_classes`) for labelled sets (CIFAR-10, MNIST,
    /// Fashion-MNIST); `None` otherwise.
    pub labels: Option<Vec<u32>>,
    /// Number of classes; 0 when unlabelled.
    pub num_classes: usize,
    /// Whether training mirrors items horizontally at random (the config's `hflip`).
    pub hflip: bool,
}

impl InMemory {
    /// Unlabelled images stored as bytes, never flipped (see [`InMemory::with_hflip`]).
    pub fn from_u8(pixels: Vec<u8>, item_shape: Vec<usize>) -> Self {
        Self { storage: Storage::U8(pixels), item_shape, labels: None, num_classes: 0, hflip: false }
    }

    /// Unlabelled items already in the model's range, never flipped.
    pub fn from_f32(values: Vec<f32>, item_shape: Vec<usize>) -> Self {
        Self { storage: Storage::F32(values), item_shape, labels: None, num_classes: 0, hflip: false }
    }

    /// The same items with one label per item, each below `num_classes`.
    pub fn with_labels(self, labels: Vec<u32>, num_classes: usize) -> Self {
        Self { labels: Some(labels), num_classes, ..self }
    }

    /// The same items with random horizontal flips on or off.
    pub fn with_hflip(self, hflip: bool) -> Self {
        Self { hflip, ..self }
    }

    pub fn len(&self) -> usize {
        match self.item_len() {
            0 => 0,
            n => self.storage.len() / n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn item_len(&self) -> usize {
        self.item_shape.iter().product()
    }

    /// Items `indices` as `f32` in the model's range, laid out `[B, ..item_shape]`. `flips` is
    /// empty or holds one entry per index: `flips[i]` mirrors item `i` along its last axis (the
    /// width of an image); missing entries mean no flip.
    pub fn host_batch(&self, indices: &[usize], flips: &[bool]) -> Vec<f32> {
        let n = self.item_len();
        let row = self.item_shape.last().copied().unwrap_or(1).max(1);
        let mut out = Vec::with_capacity(indices.len() * n);
        for (k, &i) in indices.iter().enumerate() {
            let start = out.len();
            match &self.storage {
                Storage::U8(v) => out.extend(v[i * n..(i + 1) * n].iter().map(|&b| f32::from(b) / 127.5 - 1.0)),
                Storage::F32(v) => out.extend_from_slice(&v[i * n..(i + 1) * n]),
            }
            if flips.get(k).copied().unwrap_or(false) {
                out[start..].chunks_exact_mut(row).for_each(<[f32]>::reverse);
            }
        }
        out
    }

    /// Items `indices` as a `[B, ..item_shape]` tensor of rank `D` (no flips).
    pub fn batch<const D: usize>(&self, indices: &[usize], device: &Device) -> Tensor<D> {
        let buf = self.host_batch(indices, &[]);
        let mut shape = vec![indices.len()];
        shape.extend_from_slice(&self.item_shape);
        Tensor::from_data(TensorData::new(buf, shape), device)
    }
}

/// Loads the configured data set.
pub fn load(config: &DataConfig, seed: u64) -> Result<InMemory> {
    let data = load_unchecked(config, seed)?;
    if data.is_empty() {
        // An empty set would leave the batch order nothing to draw from.
        return Err(TrainError::config("data", "the data set holds no items"));
    }
    Ok(data)
}

fn load_unchecked(config: &DataConfig, seed: u64) -> Result<InMemory> {
    match config {
        DataConfig::Shapes { image_size, count } => {
            if *image_size < 4 || *count == 0 {
                return Err(TrainError::config("data.image_size", "the shapes set needs image_size >= 4 and count >= 1"));
            }
            // Kept as f32: the generated colours are not multiples of 1/255.
            let (values, labels) = shapes::shapes(*count, *image_size, seed);
            let data = values.into_iter().map(|v| v * 2.0 - 1.0).collect();
            Ok(InMemory::from_f32(data, vec![3, *image_size, *image_size]).with_labels(labels, shapes::SHAPE_CLASSES.len()))
        }
        DataConfig::Toy { name, count } => {
            let (points, labels) = toy::toy_labelled(name, *count, seed)?;
            let set = InMemory::from_f32(points, vec![2]);
            // The mixtures are labelled by mode, for class-conditional models.
            Ok(match labels {
                Some(l) => set.with_labels(l, toy::toy_modes(name).len()),
                None => set,
            })
        }
        DataConfig::ImageFolder { path, image_size, channels, hflip, skip_corrupt } => {
            let opts = images::FolderOptions {
                height: image_size.height(),
                width: image_size.width(),
                channels: *channels,
                square_cut: None,
                skip_corrupt: *skip_corrupt,
            };
            Ok(images::load_folder(path, &opts)?.with_hflip(*hflip))
        }
        DataConfig::Celeba { path, image_size, crop, crop_top, hflip, skip_corrupt } => {
            let opts = images::FolderOptions {
                height: *image_size,
                width: *image_size,
                channels: 3,
                square_cut: (*crop > 0).then_some(images::SquareCut { side: *crop, top: *crop_top }),
                skip_corrupt: *skip_corrupt,
            };
            Ok(images::load_folder(path, &opts)?.with_hflip(*hflip))
        }
        DataConfig::Cifar10 { root, download, split, hflip, mirror, md5 } => {
            let root = match root {
                Some(r) => r.clone(),
                None => download::cache_root(cifar::CACHE_NAME)?,
            };
            let fetch = download::Fetch::new(*download, mirror.as_deref(), cifar::BASE_URL, &cifar::official_md5(), md5)?;
            Ok(cifar::load(&root, *split, &fetch)?.with_hflip(*hflip))
        }
        DataConfig::Mnist { variant, root, download, split, image_size, mirror, md5 } => {
            let root = match root {
                Some(r) => r.clone(),
                None => download::cache_root(mnist::cache_name(*variant))?,
            };
            let fetch = download::Fetch::new(*download, mirror.as_deref(), mnist::base_url(*variant), &mnist::official_md5(*variant), md5)?;
            mnist::load(&root, *split, *image_size, &fetch)
        }
        DataConfig::None { shape } => Err(TrainError::config(
            "data.kind",
            format!("`none` (items of shape {shape:?}, no data) is for sampling imported weights; set [data] to a data set to train or evaluate"),
        )),
        DataConfig::Sequences { path, key, normalize } => vectors::load(path, key.as_deref(), *normalize, vectors::Layout::Sequences),
        DataConfig::Embeddings { path, key, normalize } => vectors::load(path, key.as_deref(), *normalize, vectors::Layout::Embeddings),
    }
}

/// The order in which items are visited: a fresh permutation per epoch, drawn from
/// `(seed, epoch)`, so any position can be restored from `(epoch, offset)` alone.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOrder {
    seed: u64,
    len: usize,
    pub epoch: u64,
    pub offset: usize,
    perm: Vec<usize>,
}

impl BatchOrder {
    pub fn new(seed: u64, len: usize) -> Self {
        Self::resume(seed, len, 0, 0)
    }

    pub fn resume(seed: u64, len: usize, epoch: u64, offset: usize) -> Self {
        let mut o = Self { seed, len, epoch, offset, perm: Vec::new() };
        o.shuffle();
        o
    }

    fn shuffle(&mut self) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ self.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.perm = (0..self.len).collect();
        self.perm.shuffle(&mut rng);
    }

    /// The next `batch` indices (wrapping into the next epoch).
    pub fn next(&mut self, batch: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(batch);
        while out.len() < batch {
            if self.offset == self.len {
                self.epoch += 1;
                self.offset = 0;
                self.shuffle();
            }
            out.push(self.perm[self.offset]);
            self.offset += 1;
        }
        out
    }
}

/// The shape of one item of the configured data set, without loading the images (sampling and
/// benchmarks need only this). Vector and sequence files are read to find it.
pub fn item_shape(config: &DataConfig) -> Result<Vec<usize>> {
    match config.stated_item_shape() {
        Some(shape) => shape,
        None => Ok(load(config, 0)?.item_shape),
    }
}
