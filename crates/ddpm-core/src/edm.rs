//! EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"),
//! as the reference's `ElucidatedDiffusion`: a network `F` preconditioned into a denoiser
//! `D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)` with (Table 1)
//! `c_skip = sd^2 / (sigma^2 + sd^2)`, `c_out = sigma sd / sqrt(sigma^2 + sd^2)`,
//! `c_in = 1 / sqrt(sigma^2 + sd^2)`, `c_noise = ln(sigma) / 4`; trained at log-normal noise levels
//! `ln sigma ~ N(P_mean, P_std^2)` with the weight `(sigma^2 + sd^2) / (sigma sd)^2`; sampled on the
//! Karras grid with the stochastic Heun sampler (Algorithm 2). The network gets `c_noise` as its
//! time input, so it needs a time embedding for real-valued inputs (Fourier features).

use burn::tensor::Tensor;
use rand::{Rng, RngExt};

use crate::denoiser::{Conditioning, Denoiser};
use crate::error::{Error, Result};
use crate::karras::{Churn, Preconditioned, Preconditioning, SigmaRun, SigmaSolver, sample_sigmas};
use crate::loss::{LossOutput, NoiseLevels};
use crate::noise::NoiseSource;
use crate::tensor::{from_f64, mean_flat, per_sample};

/// EDM's settings; the defaults are the reference's (and the paper's).
#[derive(burn::config::Config, Debug, PartialEq)]
pub struct EdmConfig {
    /// Smallest noise level of the sampling grid.
    #[config(default = 0.002)]
    pub sigma_min: f64,
    /// Largest noise level of the sampling grid.
    #[config(default = 80.0)]
    pub sigma_max: f64,
    /// Standard deviation of the data.
    #[config(default = 0.5)]
    pub sigma_data: f64,
    /// Curvature of the sampling grid.
    #[config(default = 7.0)]
    pub rho: f64,
    /// Mean of ln sigma during training.
    #[config(default = -1.2)]
    pub p_mean: f64,
    /// Standard deviation of ln sigma during training.
    #[config(default = 1.2)]
    pub p_std: f64,
    /// Sampling steps N.
    #[config(default = 32)]
    pub num_sample_steps: usize,
    /// Stochasticity of the sampler (Table 5).
    #[config(default = 80.0)]
    pub s_churn: f64,
    #[config(default = 0.05)]
    pub s_tmin: f64,
    #[config(default = 50.0)]
    pub s_tmax: f64,
    #[config(default = 1.003)]
    pub s_noise: f64,
}

impl EdmConfig {
    pub fn init(&self) -> Result<Edm> {
        if !(self.sigma_min > 0.0 && self.sigma_max > self.sigma_min && self.sigma_data > 0.0 && self.rho > 0.0) {
            return Err(Error::invalid(
                "edm",
                format!("sigma_min {} sigma_max {} sigma_data {} rho {}", self.sigma_min, self.sigma_max, self.sigma_data, self.rho),
                "need 0 < sigma_min < sigma_max, sigma_data > 0 and rho > 0",
            ));
        }
        if self.num_sample_steps == 0 {
            return Err(Error::invalid("num_sample_steps", 0, "sample with at least one step"));
        }
        Ok(Edm { config: self.clone() })
    }
}

/// The EDM process.
#[derive(Debug, Clone)]
pub struct Edm {
    pub config: EdmConfig,
}

impl Edm {
    pub fn c_skip(&self, sigma: f64) -> f64 {
        let sd = self.config.sigma_data;
        sd * sd / (sigma * sigma + sd * sd)
    }

    pub fn c_out(&self, sigma: f64) -> f64 {
        let sd = self.config.sigma_data;
        sigma * sd / (sigma * sigma + sd * sd).sqrt()
    }

    pub fn c_in(&self, sigma: f64) -> f64 {
        let sd = self.config.sigma_data;
        1.0 / (sigma * sigma + sd * sd).sqrt()
    }

    pub fn c_noise(&self, sigma: f64) -> f64 {
        sigma.ln() * 0.25
    }

    /// The training weight `lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2`.
    pub fn loss_weight(&self, sigma: f64) -> f64 {
        let sd = self.config.sigma_data;
        (sigma * sigma + sd * sd) / (sigma * sd).powi(2)
    }

    /// `D(x; sigma)` for a batch with one noise level per sample; the output is clamped to [-1, 1]
    /// when `clamp` (the reference does so while sampling).
    pub fn denoise<const D: usize, M: Denoiser<D>>(&self, model: &M, x: Tensor<D>, sigmas: &[f64], cond: &Conditioning<D>, clamp: bool) -> Tensor<D> {
        let (input, noise_level) = self.network_input(&x, sigmas);
        self.estimate(model.denoise(input, noise_level, cond), &x, sigmas, clamp)
    }

    /// The network's input `c_in(sigma) x` and time input `c_noise(sigma)`, one level per sample.
    pub fn network_input<const D: usize>(&self, x: &Tensor<D>, sigmas: &[f64]) -> (Tensor<D>, Tensor<1>) {
        let c_in = per_sample(sigmas.iter().map(|&s| self.c_in(s)).collect(), x);
        (x.clone() * c_in, from_f64(sigmas.iter().map(|&s| self.c_noise(s)).collect(), [sigmas.len()], x))
    }

    /// The estimate `D = c_skip(sigma) x + c_out(sigma) F` of the network's output `F`, clamped to
    /// [-1, 1] when `clamp`.
    pub fn estimate<const D: usize>(&self, output: Tensor<D>, x: &Tensor<D>, sigmas: &[f64], clamp: bool) -> Tensor<D> {
        let per = |f: &dyn Fn(f64) -> f64| per_sample(sigmas.iter().map(|&s| f(s)).collect(), x);
        let d = x.clone() * per(&|s| self.c_skip(s)) + output * per(&|s| self.c_out(s));
        if clamp { d.clamp(-1.0, 1.0) } else { d }
    }

    /// The noise levels of the sampling grid (equation 5), then 0.
    pub fn sample_schedule(&self, steps: usize) -> Vec<f64> {
        let c = &self.config;
        let mut s = crate::karras::spaced_sigmas(c.sigma_max, c.sigma_min, steps, crate::karras::SigmaSpacing::Karras { rho: c.rho }).expect("Karras spacing needs no table");
        s.push(0.0);
        s
    }

    /// The training loss: `sigma = exp(P_mean + P_std n)` (n from `rng`), `x = x0 + sigma eps` (eps
    /// from `noise`), `lambda(sigma) mean((D(x; sigma) - x0)^2)` per sample, averaged. With
    /// `self_condition`, half the batches (a coin from `rng`) first get a no-grad estimate.
    pub fn training_loss<const D: usize, M: Denoiser<D>, R: Rng + ?Sized, N: NoiseSource>(
        &self,
        model: &M,
        x0: Tensor<D>,
        cond: &Conditioning<D>,
        self_condition: bool,
        rng: &mut R,
        noise: &mut N,
    ) -> Result<LossOutput> {
        let b = x0.dims()[0];
        let normal: Vec<f64> = (0..b).map(|_| rand_distr::Distribution::<f64>::sample(&rand_distr::StandardNormal, rng)).collect();
        let sigmas: Vec<f64> = normal.iter().map(|n| (self.config.p_mean + self.config.p_std * n).exp()).collect();
        let eps = noise.normal_like(&x0)?;
        self.loss_at(model, x0, &sigmas, eps, cond, self_condition && rng.random_bool(0.5))
    }

    /// The loss at given noise levels and noise.
    pub fn loss_at<const D: usize, M: Denoiser<D>>(
        &self,
        model: &M,
        x0: Tensor<D>,
        sigmas: &[f64],
        eps: Tensor<D>,
        cond: &Conditioning<D>,
        self_cond: bool,
    ) -> Result<LossOutput> {
        if sigmas.len() != x0.dims()[0] {
            return Err(Error::Shape { what: "noise levels (one per batch element)".into(), expected: vec![x0.dims()[0]], got: vec![sigmas.len()] });
        }
        let x = x0.clone() + eps * per_sample(sigmas.to_vec(), &x0);
        let cond = cond.self_conditioned(self_cond, |first| Ok(self.denoise(model, x.clone(), sigmas, first, false)))?;
        let d = self.denoise(model, x, sigmas, &cond, false);
        let weights = from_f64(sigmas.iter().map(|&s| self.loss_weight(s)).collect(), [sigmas.len()], &x0);
        let per = mean_flat((d - x0).powi_scalar(2)) * weights;
        Ok(LossOutput::from_per_sample(per, NoiseLevels::Sigmas(sigmas.to_vec())))
    }
}

/// EDM's scalings: the network sees `c_in(sigma) x` at `c_noise(sigma)`, and
/// `D = c_skip x + c_out F` is its estimate, clamped to [-1, 1] when `clamp`.
pub struct EdmScalings<'a> {
    pub edm: &'a Edm,
    pub clamp: bool,
}

impl<const D: usize> Preconditioning<D> for EdmScalings<'_> {
    fn input(&self, x: &Tensor<D>, sigma: f64) -> Result<(Tensor<D>, Tensor<1>)> {
        Ok(self.edm.network_input(x, &vec![sigma; x.dims()[0]]))
    }

    fn x0(&self, output: Tensor<D>, x: &Tensor<D>, sigma: f64) -> Result<Tensor<D>> {
        Ok(self.edm.estimate(output, x, &vec![sigma; x.dims()[0]], self.clamp))
    }
}

/// An EDM-preconditioned network as a sigma-space denoiser, for the solvers of [`crate::karras`]
/// (Euler, Heun, DPM-Solver++ on any grid). With `self_condition`, each call gets the previous
/// call's estimate.
pub type EdmDenoiser<'a, const D: usize, M> = Preconditioned<'a, D, M, EdmScalings<'a>>;

impl<'a, const D: usize, M: Denoiser<D>> Preconditioned<'a, D, M, EdmScalings<'a>> {
    pub fn new(edm: &'a Edm, model: &'a M, cond: Conditioning<D>, clamp: bool, self_condition: bool) -> Self {
        Self::with_scalings(EdmScalings { edm, clamp }, model, cond, self_condition)
    }
}

impl<const D: usize, M: Denoiser<D>> EdmDenoiser<'_, D, M> {
    /// The reference's sampler (EDM Algorithm 2): from `x = sigma_max z` (`z` the first draw of
    /// `noise`), the Heun solver of [`crate::karras`] on the EDM grid of `steps` levels with the
    /// configured churn (the noise drawn at every step, as the reference does, so recorded noise
    /// replays); the result is clamped to [-1, 1] (the estimates too when the denoiser clamps).
    pub fn sample_heun<N: NoiseSource>(&mut self, shape: [usize; D], options: burn::tensor::TensorCreationOptions, steps: usize, noise: &mut N) -> Result<Tensor<D>> {
        let edm = self.scalings.edm;
        let c = &edm.config;
        let sigmas = edm.sample_schedule(steps);
        let x = noise.normal(shape, options)?.mul_scalar(sigmas[0]);
        let churn = Churn { s_churn: c.s_churn, s_tmin: c.s_tmin, s_tmax: c.s_tmax, s_noise: c.s_noise };
        let x = sample_sigmas(self, x, SigmaRun { sigmas: &sigmas, solver: SigmaSolver::Heun, eta: 0.0, churn }, noise, |_, _, _, _| {})?;
        Ok(x.clamp(-1.0, 1.0))
    }
}
