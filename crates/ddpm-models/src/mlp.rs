//! An MLP denoiser for vectors: 2-D toy data, or embeddings (text or image) of any width.
//!
//! After tqch's toy model: an input projection, `num_layers` residual "temporal" layers (norm,
//! activation, linear, plus a projection of the time embedding; norm, activation, linear; skip),
//! and an output head. Class labels, when configured, add a learned embedding to the time
//! embedding (with an extra "null" class for classifier-free guidance).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use ddpm_kernels::{LinearForward, silu};
use burn::tensor::{Device, Int, Tensor};
use ddpm_core::{Conditioning, Denoiser};

use crate::error::{ModelError, Result};
use crate::layers::{ClassEmbedding, DistinctTimes, sinusoidal_embedding};

/// Settings of [`Mlp`]; the defaults are tqch's toy model (128 features, 3 temporal layers).
#[derive(Config, Debug, PartialEq)]
pub struct MlpConfig {
    /// Width of the data vectors (2 for toy sets).
    pub features: usize,
    /// Hidden width.
    #[config(default = 128)]
    pub hidden: usize,
    /// Residual temporal layers.
    #[config(default = 3)]
    pub num_layers: usize,
    /// Output width (default: `features`, doubled with `learned_variance`).
    #[config(default = "None")]
    pub out_features: Option<usize>,
    #[config(default = false)]
    pub learned_variance: bool,
    /// Take the previous x0 estimate as extra input features.
    #[config(default = false)]
    pub self_condition: bool,
    /// Class-conditional when set; label `num_classes` means "no class" (for guidance).
    #[config(default = "None")]
    pub num_classes: Option<usize>,
}

/// Epsilon of every LayerNorm (PyTorch's default). Burn's `LayerNorm` keeps its own private, so
/// the fused [`norm_silu`] reads it from here: `init` builds every norm with it.
const NORM_EPS: f64 = 1e-5;

/// `silu(norm(x))` in one kernel on Flex (see [`ddpm_kernels::layer_norm`]).
fn norm_silu(norm: &LayerNorm, x: Tensor<2>) -> Tensor<2> {
    ddpm_kernels::layer_norm(x, norm.gamma.val(), norm.beta.as_ref().map(|b| b.val()), NORM_EPS, true)
}

/// A residual layer conditioned on the time embedding.
#[derive(Module, Debug)]
pub struct TemporalLayer {
    pub norm1: LayerNorm,
    pub fc1: Linear,
    pub time: Linear,
    pub norm2: LayerNorm,
    pub fc2: Linear,
}

impl TemporalLayer {
    /// `temb` has a row per batch row, or one per distinct time with `times` saying which.
    fn forward(&self, x: Tensor<2>, temb: Tensor<2>, times: Option<&DistinctTimes>) -> Tensor<2> {
        let time = self.time.linear(temb);
        let time = match times {
            Some(times) => times.expand(time),
            None => time,
        };
        let h = self.fc1.linear(norm_silu(&self.norm1, x.clone())) + time;
        x + self.fc2.linear(norm_silu(&self.norm2, h))
    }
}

/// The MLP denoiser on `[B, features]`.
#[derive(Module, Debug)]
pub struct Mlp {
    pub input: Linear,
    pub time_proj: Linear,
    pub class_emb: Option<ClassEmbedding>,
    pub layers: Vec<TemporalLayer>,
    pub out_norm: LayerNorm,
    pub output: Linear,
    pub hidden: usize,
    pub features: usize,
    pub self_condition: bool,
}

impl MlpConfig {
    pub fn init(&self, device: &Device) -> Result<Mlp> {
        if self.features == 0 || self.hidden < 2 || self.hidden % 2 != 0 {
            return Err(ModelError::config("hidden", self.hidden, "features must be positive and hidden an even number >= 2"));
        }
        let h = self.hidden;
        let input_features = self.features * if self.self_condition { 2 } else { 1 };
        let out = self.out_features.unwrap_or(self.features * if self.learned_variance { 2 } else { 1 });
        let norm = || LayerNormConfig::new(h).with_epsilon(NORM_EPS).init(device);
        let lin = |a, b| LinearConfig::new(a, b).init(device);
        Ok(Mlp {
            input: lin(input_features, h),
            time_proj: lin(h, h),
            class_emb: self.num_classes.map(|n| ClassEmbedding::new(n, h, device)),
            layers: (0..self.num_layers)
                .map(|_| TemporalLayer { norm1: norm(), fc1: lin(h, h), time: lin(h, h), norm2: norm(), fc2: lin(h, h) })
                .collect(),
            out_norm: norm(),
            output: lin(h, out),
            hidden: h,
            features: self.features,
            self_condition: self.self_condition,
        })
    }
}

impl Mlp {
    /// `x`: `[B, features]`, `time`: `[B]`, `classes`: `[B]` labels (`num_classes` = unconditional).
    pub fn forward(&self, x: Tensor<2>, time: Tensor<1>, self_cond: Option<Tensor<2>>, classes: Option<Tensor<1, Int>>) -> Tensor<2> {
        let x = if self.self_condition {
            let sc = self_cond.unwrap_or_else(|| x.zeros_like());
            Tensor::cat(vec![sc, x], 1)
        } else {
            x
        };
        // The time path (embedding, its projection and each layer's) once per distinct time,
        // unless class labels make the rows differ.
        let distinct = match (&self.class_emb, &classes) {
            (Some(_), Some(_)) => None,
            _ => DistinctTimes::of(&time),
        };
        let time = distinct.as_ref().map_or(time, |d| d.values.clone());
        let temb = silu(self.time_proj.linear(sinusoidal_embedding(time, self.hidden, 10000.0)));
        let temb = ClassEmbedding::add_to(&self.class_emb, temb, classes);
        let mut h = self.input.linear(x);
        for layer in &self.layers {
            h = layer.forward(h, temb.clone(), distinct.as_ref());
        }
        self.output.linear(norm_silu(&self.out_norm, h))
    }
}

impl Denoiser<2> for Mlp {
    fn denoise(&self, x_t: Tensor<2>, t: Tensor<1>, cond: &Conditioning<2>) -> Tensor<2> {
        self.forward(x_t, t, cond.self_cond.clone(), cond.classes.clone())
    }
}
