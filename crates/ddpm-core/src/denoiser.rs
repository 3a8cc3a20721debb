//! The network behind the math: anything that maps `(x_t, t, conditioning)` to an output.

use burn::tensor::{Int, Tensor};

/// What a network may be conditioned on besides `x_t` and `t`.
#[derive(Debug, Clone, Default)]
pub struct Conditioning<const D: usize> {
    /// Self-conditioning (Chen et al. 2022): the previous x0 estimate, same shape as `x_t`.
    /// `None` means "none this time"; networks built for self-conditioning feed zeros then, as the
    /// reference's `Unet` does.
    pub self_cond: Option<Tensor<D>>,
    /// Class labels, one per batch element.
    pub classes: Option<Tensor<1, Int>>,
}

impl<const D: usize> Conditioning<D> {
    /// No conditioning.
    pub fn none() -> Self {
        Self { self_cond: None, classes: None }
    }

    /// Class labels only.
    pub fn classes(classes: Tensor<1, Int>) -> Self {
        Self { self_cond: None, classes: Some(classes) }
    }

    /// The same conditioning with `self_cond` replaced.
    pub fn with_self_cond(&self, self_cond: Option<Tensor<D>>) -> Self {
        Self { self_cond, classes: self.classes.clone() }
    }
}

/// A denoising network: `x_t` of shape `[B, C, ..]`, the timestep of each batch element as a float
/// tensor `[B]` (discrete steps `0..T` as floats; continuous-time models get their own time value),
/// and the conditioning. It returns the objective's prediction (eps, x0, v or the posterior mean),
/// with twice the channels when the variance is learned.
///
/// Implement it for any Burn module; closures `Fn(Tensor<D>, Tensor<1>, &Conditioning<D>) -> Tensor<D>`
/// implement it already.
pub trait Denoiser<const D: usize> {
    /// Runs the network.
    fn denoise(&self, x_t: Tensor<D>, t: Tensor<1>, cond: &Conditioning<D>) -> Tensor<D>;

    /// For CFG++ ([`crate::guidance::ClassifierFreeGuidance::cfg_pp`]): the unconditional output of
    /// the last [`Denoiser::denoise`] call, whose noise estimate the sampler carries to the next
    /// level instead of the guided one. `None` (the default) means "step with the output itself".
    fn unconditional_output(&self) -> Option<Tensor<D>> {
        None
    }

    /// For a continuous-time model trained with a learned noise schedule
    /// ([`crate::continuous::LearnedScheduleModel`]): the log-SNR at times `t` in [0, 1], through
    /// the schedule's parameters (so a loss differentiates them). `None` (the default): the model
    /// carries no schedule.
    fn learned_log_snr(&self, _t: Tensor<1>) -> Option<Tensor<1>> {
        None
    }
}

impl<const D: usize, F> Denoiser<D> for F
where
    F: Fn(Tensor<D>, Tensor<1>, &Conditioning<D>) -> Tensor<D>,
{
    fn denoise(&self, x_t: Tensor<D>, t: Tensor<1>, cond: &Conditioning<D>) -> Tensor<D> {
        self(x_t, t, cond)
    }
}
