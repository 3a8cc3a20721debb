//! The network behind the math: anything that maps `(x_t, t, conditioning)` to an output, and
//! [`ModelCalls`], the one way every sampler calls it (self-conditioning and CFG++ live there).

use burn::tensor::{Int, Tensor};

use crate::error::{Error, Result};

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

    /// A training step's conditioning under self-conditioning (Chen et al. 2022): with `on`, the
    /// network first runs without it and its x0 `estimate` (detached: no gradient flows through
    /// the first pass) is fed to the second; otherwise none.
    pub fn self_conditioned(&self, on: bool, estimate: impl FnOnce(&Self) -> Result<Tensor<D>>) -> Result<Self> {
        let unconditioned = self.with_self_cond(None);
        if !on {
            return Ok(unconditioned);
        }
        let x0 = estimate(&unconditioned)?.detach();
        Ok(self.with_self_cond(Some(x0)))
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

/// A network behind `&dyn Denoiser`. The samplers' public functions hand their bodies this one
/// type, so each body is compiled once per rank, not once per network, guidance wrapper and
/// caller; one virtual call per network call costs nothing next to the network.
#[derive(Clone, Copy)]
pub(crate) struct DynDenoiser<'a, const D: usize>(pub(crate) &'a dyn Denoiser<D>);

impl<const D: usize> Denoiser<D> for DynDenoiser<'_, D> {
    fn denoise(&self, x_t: Tensor<D>, t: Tensor<1>, cond: &Conditioning<D>) -> Tensor<D> {
        self.0.denoise(x_t, t, cond)
    }

    fn unconditional_output(&self) -> Option<Tensor<D>> {
        self.0.unconditional_output()
    }

    fn learned_log_snr(&self, t: Tensor<1>) -> Option<Tensor<1>> {
        self.0.learned_log_snr(t)
    }
}

/// A network as every sampler calls it: the sampler's conditioning on each call (any `self_cond`
/// in it is dropped: the sampler manages it), with the previous step's x0 estimate as
/// self-conditioning when `self_condition` (the first call gets none), and a CFG++ guidance's
/// unconditional output ([`Denoiser::unconditional_output`]) handed back with the output, or
/// refused by the samplers that have no CFG++ form.
pub struct ModelCalls<'a, const D: usize, M> {
    model: &'a M,
    cond: Conditioning<D>,
    self_condition: bool,
    previous_x0: Option<Tensor<D>>,
}

impl<'a, const D: usize, M: Denoiser<D>> ModelCalls<'a, D, M> {
    pub fn new(model: &'a M, cond: Conditioning<D>, self_condition: bool) -> Self {
        Self { model, cond: cond.with_self_cond(None), self_condition, previous_x0: None }
    }

    /// The network's output for `x_t` at `time`, and under CFG++ its unconditional output.
    pub fn call(&mut self, x_t: Tensor<D>, time: Tensor<1>) -> (Tensor<D>, Option<Tensor<D>>) {
        let output = if self.self_condition {
            self.model.denoise(x_t, time, &self.cond.with_self_cond(self.previous_x0.clone()))
        } else {
            self.model.denoise(x_t, time, &self.cond)
        };
        (output, self.model.unconditional_output())
    }

    /// [`ModelCalls::call`] for a sampler without a CFG++ form: under CFG++ an error names
    /// `sampler` and the samplers that have one.
    pub fn call_without_cfg_pp(&mut self, x_t: Tensor<D>, time: Tensor<1>, sampler: &str) -> Result<Tensor<D>> {
        match self.call(x_t, time) {
            (output, None) => Ok(output),
            (_, Some(_)) => Err(Error::invalid("cfg_pp", true, format!("{sampler} has no CFG++ form; use ddim, euler or euler_ancestral, or plain guidance"))),
        }
    }

    /// Keeps this step's x0 estimate as the next call's self-conditioning input.
    pub fn remember(&mut self, x0: &Tensor<D>) {
        if self.self_condition {
            self.previous_x0 = Some(x0.clone().detach());
        }
    }
}
