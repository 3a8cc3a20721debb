//! The README's "Using ddpm-core in your own Burn project" snippet, compiled and run by the test
//! command (`tests/readme.rs` also checks that the README shows exactly this file's code).
// README:begin
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor, TensorCreationOptions};
use ddpm_core::prelude::*;
use ddpm_core::schedule::BetaSchedule;
use rand::SeedableRng;

/// Your network: any Burn module (a toy one on 2-D points here).
#[derive(Module, Debug)]
pub struct MyNet {
    layer: Linear,
}

// The one trait ddpm-core needs (a closure `|x_t, t, cond| ...` works too).
impl Denoiser<2> for MyNet {
    fn denoise(&self, x_t: Tensor<2>, _t: Tensor<1>, _cond: &Conditioning<2>) -> Tensor<2> {
        self.layer.forward(x_t)
    }
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::flex().autodiff();
    let mut model = MyNet { layer: LinearConfig::new(2, 2).init(&device) };
    let mut optim = AdamConfig::new().init();
    let diffusion = GaussianDiffusionConfig::new() // the reference's defaults:
        .with_beta_schedule(BetaSchedule::cosine()) // T = 1000, sigmoid, pred_v, L2
        .with_objective(Objective::PredNoise)
        .init()?;

    // Training steps: timesteps, noise and the self-conditioning coin come from your RNG and noise source.
    let (mut rng, mut noise) = (rand_chacha::ChaCha8Rng::seed_from_u64(0), HostNoise::new(1));
    for _ in 0..10 {
        let batch = Tensor::<2>::random([64, 2], Distribution::Normal(0.0, 0.5), &device);
        let out = diffusion.training_loss(&model, batch, &Conditioning::none(), &mut rng, &mut noise)?;
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
    }

    // Sampling: any sampler, any noise source, a callback per step.
    let sampler = Sampler::Ddim { steps: 50, eta: 0.0, spacing: TimestepSpacing::Linspace };
    let mut noise = HostNoise::new(0);
    let z = noise.normal([16, 2], TensorCreationOptions::new(device.inner()))?;
    let x = sample(&diffusion, &model.valid(), z, &sampler, &SampleOptions::default(), &mut noise, no_callback)?;
    println!("{:?}", x.dims());
    Ok(())
}
// README:end
