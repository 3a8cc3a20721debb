//! Where Gaussian noise comes from. Every function in ddpm-core that needs noise draws it from a
//! [`NoiseSource`], so a run is reproducible from a seed on any backend ([`HostNoise`]), a recorded
//! sequence can be replayed exactly ([`ReplayNoise`]), and a GPU run can draw on the device
//! ([`DeviceNoise`]).

use std::collections::VecDeque;

use burn::tensor::{Distribution, Tensor, TensorCreationOptions, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, StandardNormal};

use crate::error::{Error, Result};

/// A source of standard normal noise.
pub trait NoiseSource {
    /// A tensor of i.i.d. N(0, 1) values of `shape`, created with `options` (device and dtype).
    fn normal<const D: usize>(&mut self, shape: [usize; D], options: TensorCreationOptions) -> Result<Tensor<D>>;

    /// Noise shaped and placed like `like`.
    fn normal_like<const D: usize>(&mut self, like: &Tensor<D>) -> Result<Tensor<D>> {
        self.normal(like.dims(), crate::tensor::options_like(like))
    }
}

/// Noise drawn on the host from a seeded ChaCha8 stream and uploaded: the same seed gives the same
/// numbers on every backend and every machine.
#[derive(Debug, Clone)]
pub struct HostNoise {
    rng: ChaCha8Rng,
}

impl HostNoise {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// The position in the stream (in 32-bit words), to save for resuming.
    pub fn word_pos(&self) -> u128 {
        self.rng.get_word_pos()
    }

    /// Continues the stream from `seed` at `word_pos` (see [`HostNoise::word_pos`]).
    pub fn resume(seed: u64, word_pos: u128) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_word_pos(word_pos);
        Self { rng }
    }

    /// `n` standard normal values (f32 precision for f32 tensors is applied on upload).
    pub fn draw(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| StandardNormal.sample(&mut self.rng)).collect()
    }
}

impl NoiseSource for HostNoise {
    fn normal<const D: usize>(&mut self, shape: [usize; D], options: TensorCreationOptions) -> Result<Tensor<D>> {
        let n = shape.iter().product();
        Ok(Tensor::from_data(TensorData::new(self.draw(n), shape), options))
    }
}

/// Noise drawn by the backend's own generator on the device: fastest on a GPU, reproducible only on
/// the same backend (seed it with `Device::seed`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceNoise;

impl NoiseSource for DeviceNoise {
    fn normal<const D: usize>(&mut self, shape: [usize; D], options: TensorCreationOptions) -> Result<Tensor<D>> {
        let dtype = options.dtype;
        let t = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &options.device);
        Ok(match dtype {
            Some(d) if d != t.dtype() => t.cast(burn::tensor::FloatDType::from(d)),
            _ => t,
        })
    }
}

/// Plays back recorded draws in order (for example the noise a reference implementation used), so
/// that a sampler's trajectory can be compared step by step.
#[derive(Debug, Clone, Default)]
pub struct ReplayNoise {
    draws: VecDeque<TensorData>,
    served: usize,
}

impl ReplayNoise {
    /// Replays `draws`, first to last.
    pub fn new(draws: impl IntoIterator<Item = TensorData>) -> Self {
        Self { draws: draws.into_iter().collect(), served: 0 }
    }

    /// Draws not used yet.
    pub fn remaining(&self) -> usize {
        self.draws.len()
    }
}

impl NoiseSource for ReplayNoise {
    fn normal<const D: usize>(&mut self, shape: [usize; D], options: TensorCreationOptions) -> Result<Tensor<D>> {
        let data = self.draws.pop_front().ok_or_else(|| {
            Error::Noise(format!("asked for draw #{} of shape {shape:?}, but only {} were recorded", self.served + 1, self.served))
        })?;
        if data.shape().as_slice() != shape.as_slice() {
            return Err(Error::Noise(format!(
                "draw #{} was recorded with shape {:?}, but shape {shape:?} was asked for",
                self.served + 1,
                data.shape().as_slice()
            )));
        }
        self.served += 1;
        Ok(Tensor::from_data(data, options))
    }
}

/// One seeded stream per batch row: row `i` of every draw comes from the stream of `seeds[i]`, so a
/// sample depends only on its own seed, not on which other seeds share its batch (EDM's
/// `StackedRandomGenerator`). This is what lets `--seeds 0-49999` be split over any number of
/// processes and still give the same images.
#[derive(Debug, Clone)]
pub struct PerSampleNoise {
    streams: Vec<HostNoise>,
}

impl PerSampleNoise {
    /// A stream for each seed; the batch size of every draw must be `seeds.len()`.
    pub fn new(seeds: &[u64]) -> Self {
        Self { streams: seeds.iter().map(|&s| HostNoise::new(s)).collect() }
    }
}

impl NoiseSource for PerSampleNoise {
    fn normal<const D: usize>(&mut self, shape: [usize; D], options: TensorCreationOptions) -> Result<Tensor<D>> {
        if D == 0 || shape[0] != self.streams.len() {
            return Err(Error::Noise(format!("asked for a batch of shape {shape:?}, but there are {} per-sample seeds", self.streams.len())));
        }
        let row: usize = shape[1..].iter().product();
        let values: Vec<f64> = self.streams.iter_mut().flat_map(|s| s.draw(row)).collect();
        Ok(Tensor::from_data(TensorData::new(values, shape), options))
    }
}

/// Serves the given draws first (for example an initial noise read from a file), then draws from
/// `rest`.
#[derive(Debug, Clone)]
pub struct PrefixedNoise<N> {
    prefix: ReplayNoise,
    rest: N,
}

impl<N: NoiseSource> PrefixedNoise<N> {
    pub fn new(prefix: impl IntoIterator<Item = TensorData>, rest: N) -> Self {
        Self { prefix: ReplayNoise::new(prefix), rest }
    }
}

impl<N: NoiseSource> NoiseSource for PrefixedNoise<N> {
    fn normal<const D: usize>(&mut self, shape: [usize; D], options: TensorCreationOptions) -> Result<Tensor<D>> {
        if self.prefix.remaining() > 0 { self.prefix.normal(shape, options) } else { self.rest.normal(shape, options) }
    }
}
