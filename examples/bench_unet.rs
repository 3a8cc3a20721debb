//! Speed of the reference U-Net on a device: median seconds of a no-grad forward pass and of a
//! training step (loss, backward, Adam), after warm-up.
//!
//!     cargo run --release --example bench_unet -- [--device flex] [--iters 5]
//!
//! The two cases are those `shared/bench/time_reference.py` times for PyTorch:
//! Unet(dim=64, dim_mults=(1,2,4,8)) at 32x32 batch 16, and Unet(dim=32, dim_mults=(1,2,2)) at
//! 32x32 batch 32. Prints one JSON object per case.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use ddpm::core::prelude::*;
use ddpm::models::UnetConfig;
use rand::SeedableRng;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_it(iters: usize, device: &Device, mut f: impl FnMut()) -> f64 {
    f();
    device.sync().ok();
    median(
        (0..iters)
            .map(|_| {
                let start = Instant::now();
                f();
                device.sync().ok();
                start.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.into());
    let device = ddpm::core::device::parse_device(&arg("--device", "flex")).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let iters: usize = arg("--iters", "5").parse().unwrap_or(5);
    let diffusion = GaussianDiffusionConfig::new().init().expect("default diffusion");
    for (name, dim, mults, batch) in [("unet64", 64, vec![1, 2, 4, 8], 16usize), ("unet32", 32, vec![1, 2, 2], 32)] {
        let config = UnetConfig::new(dim).with_dim_mults(mults);
        let infer = config.init(&device).expect("network");
        let params = infer.num_params();
        let x = Tensor::<4>::random([batch, 3, 32, 32], Distribution::Uniform(-1.0, 1.0), &device);
        let t = Tensor::<1>::from_data(TensorData::new((0..batch).map(|i| (i * 61 % 1000) as f32).collect::<Vec<_>>(), [batch]), &device);
        let forward = time_it(iters, &device, || {
            let _ = infer.forward(x.clone(), t.clone(), None).into_data();
        });
        let train_device = device.clone().autodiff();
        let mut model = Some(config.init(&train_device).expect("network"));
        let mut optim = AdamConfig::new().init();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut noise = HostNoise::new(0);
        let x_train = Tensor::<4>::random([batch, 3, 32, 32], Distribution::Uniform(-1.0, 1.0), &train_device);
        let step = time_it(iters, &device, || {
            let m = model.take().expect("model");
            let out = diffusion.training_loss(&m, x_train.clone(), &Conditioning::none(), &mut rng, &mut noise).expect("loss");
            let grads = GradientsParams::from_grads(out.loss.backward(), &m);
            model = Some(optim.step(1e-4, m, grads));
        });
        println!(
            "{{\"case\": \"{name}\", \"device\": \"{device:?}\", \"params\": {params}, \"batch\": {batch}, \"forward_s\": {forward:.4}, \"train_step_s\": {step:.4}}}"
        );
    }
}
