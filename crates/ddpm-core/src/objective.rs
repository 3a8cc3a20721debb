//! What the network predicts, what variance the reverse process uses, and how the loss is weighted.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The network's target (the "parameterisation").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// eps-prediction (Ho et al. 2020): the network predicts the noise.
    PredNoise,
    /// x0-prediction: the network predicts the clean data.
    PredX0,
    /// v-prediction (Salimans & Ho 2022): `v = sqrt(abar) eps - sqrt(1 - abar) x0`. The reference's default.
    #[default]
    PredV,
    /// Mean-prediction (tqch's `mean`): the network predicts the posterior mean
    /// `mu~(x_t, x0) = coef1 x0 + coef2 x_t` directly.
    Mean,
    /// The reference's `WeightedObjectiveGaussianDiffusion`: the network outputs eps, x0 and two
    /// weight logits (`2 C + 2` channels), and its x0 is the softmax-weighted sum of the x0 implied
    /// by eps and the predicted x0 (per pixel for images). Trained on that blend, plus eps and x0
    /// losses weighted by `pred_noise_loss_weight` and `pred_x0_loss_weight` (0.1 each).
    Weighted,
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PredNoise => "pred_noise",
            Self::PredX0 => "pred_x0",
            Self::PredV => "pred_v",
            Self::Mean => "mean",
            Self::Weighted => "weighted",
        })
    }
}

impl FromStr for Objective {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "pred_noise" | "eps" => Self::PredNoise,
            "pred_x0" | "x0" | "x_0" => Self::PredX0,
            "pred_v" | "v" => Self::PredV,
            "mean" => Self::Mean,
            "weighted" => Self::Weighted,
            other => return Err(Error::invalid("objective", other, "use pred_noise, pred_x0, pred_v, mean or weighted")),
        })
    }
}

/// The variance of the reverse step `p(x_{t-1} | x_t)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ModelVariance {
    /// The posterior variance `beta~_t` (the reference's only choice).
    #[default]
    FixedSmall,
    /// `beta_t`, with the t = 0 entry set to `beta~_1` as tqch and OpenAI do (DDPM's CIFAR-10 choice).
    FixedLarge,
    /// Learned interpolation (Nichol & Dhariwal 2021): the network outputs twice the channels; the
    /// second half `v` in [-1, 1] gives `ln sigma^2 = f ln beta_t + (1 - f) ln beta~_t`,
    /// `f = (v + 1) / 2`. Trained with the hybrid loss.
    LearnedRange,
}

impl ModelVariance {
    /// Whether the network outputs the variance (and so twice the channels).
    pub fn is_learned(self) -> bool {
        matches!(self, Self::LearnedRange)
    }
}

impl Objective {
    /// Output channels of a network for data with `channels` channels (features, for vectors).
    pub fn output_channels(self, channels: usize) -> usize {
        match self {
            Self::Weighted => 2 * channels + 2,
            _ => channels,
        }
    }
}

/// The weighted objective's output split along axis 1 into `(eps, x0, weights)`, and the
/// softmax-weighted blend `w_0 x0(eps) + w_1 x0` with `x0(eps)` from `x0_from_eps`.
pub(crate) fn weighted_parts<const D: usize>(
    output: burn::tensor::Tensor<D>,
    like: &burn::tensor::Tensor<D>,
    x0_from_eps: impl Fn(burn::tensor::Tensor<D>) -> burn::tensor::Tensor<D>,
) -> Result<WeightedParts<D>> {
    let (c, got) = (like.dims()[1], output.dims()[1]);
    if got != 2 * c + 2 {
        return Err(Error::invalid("objective", "weighted", format!("the network must output 2 x {c} + 2 = {} channels (eps, x0, two weights), but it outputs {got}", 2 * c + 2)));
    }
    let eps = output.clone().narrow(1, 0, c);
    let x0 = output.clone().narrow(1, c, c);
    let weights = burn::tensor::activation::softmax(output.narrow(1, 2 * c, 2), 1);
    let from_eps = x0_from_eps(eps.clone());
    Ok(WeightedParts { eps, x0, weights, from_eps })
}

pub(crate) struct WeightedParts<const D: usize> {
    pub eps: burn::tensor::Tensor<D>,
    pub x0: burn::tensor::Tensor<D>,
    pub weights: burn::tensor::Tensor<D>,
    pub from_eps: burn::tensor::Tensor<D>,
}

impl<const D: usize> WeightedParts<D> {
    /// `w_0 a + w_1 b`, the weights broadcast over the channels.
    pub fn blend(&self, a: burn::tensor::Tensor<D>, b: burn::tensor::Tensor<D>) -> burn::tensor::Tensor<D> {
        a * self.weights.clone().narrow(1, 0, 1) + b * self.weights.clone().narrow(1, 1, 1)
    }
}

impl fmt::Display for ModelVariance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FixedSmall => "fixed_small",
            Self::FixedLarge => "fixed_large",
            Self::LearnedRange => "learned_range",
        })
    }
}

impl FromStr for ModelVariance {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "fixed_small" | "fixed-small" => Self::FixedSmall,
            "fixed_large" | "fixed-large" => Self::FixedLarge,
            "learned_range" | "learned-range" | "learned" => Self::LearnedRange,
            other => return Err(Error::invalid("variance", other, "use fixed_small, fixed_large or learned_range")),
        })
    }
}

/// The training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Mean absolute error against the objective's target.
    L1,
    /// Mean squared error against the objective's target ("L_simple").
    #[default]
    L2,
    /// The variational bound term `L_t` in bits per dimension (tqch's `kl`): the KL between the
    /// true posterior and the model's reverse step, and the discretised decoder NLL at t = 0.
    Kl,
}

impl fmt::Display for LossType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::L1 => "l1",
            Self::L2 => "l2",
            Self::Kl => "kl",
        })
    }
}

impl FromStr for LossType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "l1" => Self::L1,
            "l2" | "mse" => Self::L2,
            "kl" | "vlb" => Self::Kl,
            other => return Err(Error::invalid("loss_type", other, "use l1, l2 (mse) or kl")),
        })
    }
}

/// The per-timestep loss weight of the reference, with optional min-SNR-gamma (Hang et al. 2023).
///
/// With `snr_t = abar_t / (1 - abar_t)` and `s_t = min(snr_t, gamma)` (or `snr_t` without min-SNR):
/// `pred_noise: s_t / snr_t`, `pred_x0: s_t`, `pred_v: s_t / (snr_t + 1)`. Each makes the
/// objective's loss equal to a weighted x0-loss. `mean`, `weighted` and the `kl` loss are not
/// reweighted (1).
pub fn loss_weight(objective: Objective, snr: &[f64], min_snr_gamma: Option<f64>) -> Vec<f64> {
    snr.iter()
        .map(|&snr| {
            let clipped = match min_snr_gamma {
                Some(g) if !snr.is_nan() => snr.min(g),
                _ => snr,
            };
            weight_of(objective, snr, clipped, || 1.0)
        })
        .collect()
}

/// The weight of [`loss_weight`] from `snr` and `clipped = min(snr, gamma)` (or `snr`), for host
/// numbers and for tensors (the continuous-time loss, where it must stay differentiable).
pub(crate) fn weight_of<T>(objective: Objective, snr: T, clipped: T, one: impl FnOnce() -> T) -> T
where
    T: std::ops::Div<Output = T> + std::ops::Add<f64, Output = T>,
{
    match objective {
        Objective::PredNoise => clipped / snr,
        Objective::PredX0 => clipped,
        Objective::PredV => clipped / (snr + 1.0),
        Objective::Mean | Objective::Weighted => one(),
    }
}

impl Objective {
    /// The x0 that a network output `out` of this objective means at `x_t = alpha x0 + sigma eps`
    /// (any variance-preserving or continuous-time parameterisation of the noise level).
    pub fn x0_at<const D: usize>(self, out: burn::tensor::Tensor<D>, x_t: burn::tensor::Tensor<D>, alpha: f64, sigma: f64) -> Result<burn::tensor::Tensor<D>> {
        Ok(match self {
            Objective::PredNoise => (x_t - out.mul_scalar(sigma)).div_scalar(alpha),
            Objective::PredX0 => out,
            Objective::PredV => x_t.mul_scalar(alpha) - out.mul_scalar(sigma),
            Objective::Weighted => {
                let parts = weighted_parts(out, &x_t, |eps| (x_t.clone() - eps.mul_scalar(sigma)).div_scalar(alpha))?;
                parts.blend(parts.from_eps.clone(), parts.x0.clone())
            }
            Objective::Mean => return Err(Error::invalid("objective", "mean", "a mean-predicting model has no x0 at continuous times; use pred_noise, pred_x0 or pred_v")),
        })
    }
}
