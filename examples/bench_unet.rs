//! Speed of a training step (loss, backward, Adam) and of a no-grad forward pass (one sampling
//! step), best of N after warm-up, for the cases `shared/bench/time_reference.py` times in PyTorch:
//!
//! - `unet64`: Unet(dim 64, mults 1,2,4,8) at 32x32, batch 16 (sigmoid schedule, v objective);
//! - `unet32`: Unet(dim 32, mults 1,2,2) at 32x32, batch 32;
//! - `mlp_toy`: the `Mlp` (hidden 128, 3 layers) on 2-D points, batch 1000 (linear betas
//!   1e-3..0.2 over 100 steps, eps objective, Adam lr 1e-3).
//!
//!     cargo run --release --example bench_unet -- [--device flex] [--iters 5] [--case unet64]
//!
//! Prints one JSON object per case: `case`, `device`, `params`, `batch`, `train_step_s`,
//! `forward_s`, `peak_rss_bytes` (the process's peak resident memory so far: that case's alone when
//! `--case` names it). `DDPM_KERNELS=burn` runs Burn's own ops instead of ddpm-kernels', to compare.

use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use ddpm::core::prelude::*;
use ddpm::models::{MlpConfig, UnetConfig};
use rand::SeedableRng;

/// Best wall time of `iters` calls after two untimed ones.
fn best_of(iters: usize, device: &Device, mut f: impl FnMut()) -> f64 {
    for _ in 0..2 {
        f();
    }
    device.sync().ok();
    (0..iters)
        .map(|_| {
            let start = Instant::now();
            f();
            device.sync().ok();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Times one case: `network` built on a device, called as a denoiser on `[batch, item..]` data.
fn bench_case<const D: usize, M>(name: &str, device: &Device, iters: usize, diffusion: &GaussianDiffusion, shape: [usize; D], lr: f64, build: impl Fn(&Device) -> M)
where
    M: Denoiser<D> + Module,
{
    let infer = build(device);
    let params = infer.num_params();
    let batch = shape[0];
    let x = Tensor::<D>::random(shape, Distribution::Uniform(-1.0, 1.0), device);
    let t = Tensor::<1>::from_data(TensorData::new((0..batch).map(|i| (i * 61 % diffusion.num_timesteps()) as f32).collect::<Vec<_>>(), [batch]), device);
    let forward = best_of(iters, device, || {
        let _ = infer.denoise(x.clone(), t.clone(), &Conditioning::none()).into_data();
    });
    let train_device = device.clone().autodiff();
    let mut model = Some(build(&train_device));
    // As the reference's Trainer: Adam, betas (0.9, 0.99), eps 1e-8.
    let mut optim = ddpm::kernels::FusedAdam::new([0.9, 0.99], 1e-8, 0.0).init();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut noise = HostNoise::new(0);
    let x_train = Tensor::<D>::random(shape, Distribution::Uniform(-1.0, 1.0), &train_device);
    let step = best_of(iters, device, || {
        let m = model.take().expect("model");
        let out = diffusion.training_loss(&m, x_train.clone(), &Conditioning::none(), &mut rng, &mut noise).expect("loss");
        let grads = GradientsParams::from_grads(out.loss.backward(), &m);
        model = Some(optim.step(lr, m, grads));
    });
    let peak = ddpm::io::memory::peak_host_bytes().map_or("null".to_string(), |b| b.to_string());
    println!(
        "{{\"case\": \"{name}\", \"device\": \"{device:?}\", \"params\": {params}, \"batch\": {batch}, \"train_step_s\": {step:.5}, \"forward_s\": {forward:.5}, \"peak_rss_bytes\": {peak}}}"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let device = ddpm::io::device::parse_device(&arg("--device").unwrap_or_else(|| "flex".into())).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let iters: usize = match arg("--iters").map(|s| s.parse()) {
        None => 5,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("error: --iters takes a positive whole number");
            std::process::exit(2)
        }
    };
    let only = arg("--case");
    const CASES: [&str; 3] = ["unet64", "unet32", "mlp_toy"];
    if let Some(case) = &only
        && !CASES.contains(&case.as_str())
    {
        eprintln!("error: unknown --case `{case}`; the cases are {}", CASES.join(", "));
        std::process::exit(2)
    }
    // Timed on a rayon pool thread and with freed memory kept, as the ddpm-train and ddpm-eval
    // commands run.
    ddpm::kernels::keep_freed_memory();
    ddpm::kernels::on_workers(|| run_cases(&device, iters, only.as_deref()));
}

fn run_cases(device: &Device, iters: usize, only: Option<&str>) {
    let wanted = |case: &str| only.is_none_or(|c| c == case);
    let image = GaussianDiffusionConfig::new().init().expect("default diffusion");
    for (name, dim, mults, batch) in [("unet64", 64, vec![1, 2, 4, 8], 16usize), ("unet32", 32, vec![1, 2, 2], 32)] {
        if wanted(name) {
            let config = UnetConfig::new(dim).with_dim_mults(mults);
            bench_case(name, device, iters, &image, [batch, 3, 32, 32], 1e-4, |d| config.init(d).expect("network"));
        }
    }
    if wanted("mlp_toy") {
        // T = 100 scales the linear schedule by 1000 / T: 1e-4..0.02 becomes 1e-3..0.2.
        let toy = GaussianDiffusionConfig::new()
            .with_timesteps(100)
            .with_beta_schedule(BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 })
            .with_objective(Objective::PredNoise)
            .init()
            .expect("toy diffusion");
        let config = MlpConfig::new(2).with_hidden(128).with_num_layers(3);
        bench_case("mlp_toy", device, iters.max(20), &toy, [1000, 2], 1e-3, |d| config.init(d).expect("network"));
    }
}
