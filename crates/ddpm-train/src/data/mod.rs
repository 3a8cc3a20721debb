//! Data sets held in memory as `f32` in the model's range ([-1, 1] for images), with a seeded,
//! resumable batch order.

pub mod shapes;
pub mod toy;

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::config::DataConfig;
use crate::error::{Result, TrainError};

/// Items of one shape, stored contiguously.
#[derive(Debug, Clone)]
pub struct InMemory {
    pub data: Vec<f32>,
    /// Shape of one item, e.g. `[3, 16, 16]` or `[2]`.
    pub item_shape: Vec<usize>,
}

impl InMemory {
    pub fn len(&self) -> usize {
        self.data.len() / self.item_len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn item_len(&self) -> usize {
        self.item_shape.iter().product()
    }

    /// Items `indices` as a `[B, ..item_shape]` tensor of rank `D`.
    pub fn batch<const D: usize>(&self, indices: &[usize], device: &Device) -> Tensor<D> {
        let n = self.item_len();
        let mut buf = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            buf.extend_from_slice(&self.data[i * n..(i + 1) * n]);
        }
        let mut shape = vec![indices.len()];
        shape.extend_from_slice(&self.item_shape);
        Tensor::from_data(TensorData::new(buf, shape), device)
    }
}

/// Loads the configured data set (images in [-1, 1]).
pub fn load(config: &DataConfig, seed: u64) -> Result<InMemory> {
    match config {
        DataConfig::Shapes { image_size, count } => {
            if *image_size < 4 || *count == 0 {
                return Err(TrainError::config("data.image_size", "the shapes set needs image_size >= 4 and count >= 1"));
            }
            let data = shapes::shapes(*count, *image_size, seed).into_iter().map(|v| v * 2.0 - 1.0).collect();
            Ok(InMemory { data, item_shape: vec![3, *image_size, *image_size] })
        }
        DataConfig::Toy { name, count } => Ok(InMemory { data: toy::toy(name, *count, seed)?, item_shape: vec![2] }),
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
