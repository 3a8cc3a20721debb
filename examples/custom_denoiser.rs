//! Train and sample your own Burn module with ddpm-core alone.
//!
//! A small MLP learns the "8 Gaussians" toy distribution (eight modes on the unit circle). The
//! network is ordinary Burn code; all the diffusion math (schedule, q_sample, loss, DDIM and DDPM
//! sampling) comes from ddpm-core through one trait, `Denoiser`.
//!
//!     cargo run --release --example custom_denoiser -- [--steps 8000] [--device flex] [--out samples.png]
//!
//! It prints the loss as it trains, then the share of samples near a mode and the number of modes
//! covered for both samplers, and writes a scatter plot of the samples as PNG.

use std::f64::consts::PI;
use std::time::Instant;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor, TensorCreationOptions, TensorData};
use ddpm::core::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The user's network: `[x (2), sinusoidal(t) (32)] -> 128 -> 128 -> 128 -> 2`, SiLU between.
#[derive(Module, Debug)]
pub struct ToyDenoiser {
    layers: Vec<Linear>,
}

const TIME_DIM: usize = 32;

impl ToyDenoiser {
    pub fn new(device: &Device) -> Self {
        let dims = [2 + TIME_DIM, 128, 128, 128, 2];
        let layers = dims.windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(device)).collect();
        Self { layers }
    }

    /// `[sin(t w_i), cos(t w_i)]` with `w_i = 10000^(-i / (half - 1))`.
    fn time_embedding(t: Tensor<1>) -> Tensor<2> {
        let half = TIME_DIM / 2;
        let freqs: Vec<f64> = (0..half).map(|i| (-(10000f64.ln()) * i as f64 / (half - 1) as f64).exp()).collect();
        let freqs = Tensor::<2>::from_data(TensorData::new(freqs, [1, half]), TensorCreationOptions::new(t.device()).with_dtype(t.dtype()));
        let args = t.unsqueeze_dim::<2>(1) * freqs;
        Tensor::cat(vec![args.clone().sin(), args.cos()], 1)
    }
}

impl Denoiser<2> for ToyDenoiser {
    fn denoise(&self, x: Tensor<2>, t: Tensor<1>, _cond: &Conditioning<2>) -> Tensor<2> {
        let mut h = Tensor::cat(vec![x, Self::time_embedding(t)], 1);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h);
            if i < last {
                h = silu(h);
            }
        }
        h
    }
}

/// Eight modes on the unit circle, standard deviation 0.05.
pub const MODE_STD: f64 = 0.05;

pub fn modes() -> Vec<[f64; 2]> {
    (0..8).map(|k| [(k as f64 * PI / 4.0).cos(), (k as f64 * PI / 4.0).sin()]).collect()
}

fn gaussian8(n: usize, rng: &mut ChaCha8Rng, noise: &mut HostNoise) -> Vec<f64> {
    let m = modes();
    let z = noise.draw(2 * n);
    (0..n)
        .flat_map(|i| {
            let c = m[rng.random_range(0..8)];
            [c[0] + MODE_STD * z[2 * i], c[1] + MODE_STD * z[2 * i + 1]]
        })
        .collect()
}

/// How close samples come to the true distribution.
#[derive(Debug, Clone, Copy)]
pub struct Quality {
    /// Share of samples within 3 standard deviations of some mode.
    pub near_mode: f64,
    /// Modes that received at least 1% of the samples.
    pub modes_hit: usize,
}

pub fn quality(points: &[f64]) -> Quality {
    let m = modes();
    let n = points.len() / 2;
    let mut counts = [0usize; 8];
    let mut near = 0;
    for p in points.chunks(2) {
        let (k, d) = m
            .iter()
            .enumerate()
            .map(|(k, c)| (k, ((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2)).sqrt()))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        if d < 3.0 * MODE_STD {
            near += 1;
            counts[k] += 1;
        }
    }
    Quality { near_mode: near as f64 / n as f64, modes_hit: counts.iter().filter(|&&c| c * 100 >= n).count() }
}

pub struct Report {
    pub final_loss: f64,
    pub ddim: (Vec<f64>, Quality),
    pub ddpm: (Vec<f64>, Quality),
}

/// Trains for `steps` Adam steps (batch 256) on `device`, then draws `n` samples with DDIM (50
/// steps) and with DDPM (all 100 steps).
pub fn run(device: &Device, steps: usize, n: usize, seed: u64, verbose: bool) -> Result<Report, ddpm::core::Error> {
    let diffusion = GaussianDiffusionConfig::new()
        .with_timesteps(100)
        .with_beta_schedule(BetaSchedule::cosine())
        .with_objective(Objective::PredNoise)
        .init()?;
    let train_device = device.clone().autodiff();
    // Burn's parameter initialisers draw from the backend's generator: seed it for a repeatable run.
    train_device.seed(seed);
    let mut model = ToyDenoiser::new(&train_device);
    let mut optim = AdamConfig::new().init();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut noise = HostNoise::new(seed);
    let start = Instant::now();
    let mut ema_loss = f64::NAN;
    for step in 1..=steps {
        let lr = 2e-3 * (1.0 - step as f64 / (steps as f64 + 1.0));
        let data = gaussian8(256, &mut rng, &mut noise);
        let x0 = Tensor::<2>::from_data(TensorData::new(data, [256, 2]), &train_device);
        let out = diffusion.training_loss(&model, x0, &Conditioning::none(), &mut rng, &mut noise)?;
        let loss: f64 = out.loss.clone().into_scalar::<f64>();
        ema_loss = if ema_loss.is_nan() { loss } else { 0.98 * ema_loss + 0.02 * loss };
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optim.step(lr, model, grads);
        if verbose && (step % 250 == 0 || step == steps) {
            let rate = step as f64 / start.elapsed().as_secs_f64();
            let eta = (steps - step) as f64 / rate;
            eprintln!("step {step:>5}/{steps}  loss {ema_loss:.4}  {rate:.0} steps/s  ETA {eta:.0}s");
        }
    }
    let model = model.valid();
    let options = TensorCreationOptions::new(device.clone());
    // Toy data is not confined to [-1, 1]: no x0 clipping.
    let opts = SampleOptions { clip: X0Clip::None, cond: Conditioning::none() };
    let mut draw = |sampler: Sampler| -> Result<(Vec<f64>, Quality), ddpm::core::Error> {
        let z = noise.normal([n, 2], options.clone())?;
        let x = sample(&diffusion, &model, z, &sampler, &opts, &mut noise, no_callback)?;
        let pts = ddpm::core::tensor::to_f64_vec(&x);
        let q = quality(&pts);
        Ok((pts, q))
    };
    let ddim = draw(Sampler::Ddim { steps: 50, eta: 0.0, spacing: TimestepSpacing::Linspace })?;
    let ddpm = draw(Sampler::Ddpm)?;
    Ok(Report { final_loss: ema_loss, ddim, ddpm })
}

/// A 512x256 PNG: DDIM samples left, DDPM samples right, modes marked in red.
pub fn scatter_png(path: &str, left: &[f64], right: &[f64]) -> std::io::Result<()> {
    let (w, h) = (512u32, 256u32);
    let mut img = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    let mut plot = |pts: &[f64], x_off: u32, color: [u8; 3]| {
        for p in pts.chunks(2) {
            let (px, py) = ((p[0] / 1.5 * 120.0 + 128.0) as i64, (-p[1] / 1.5 * 120.0 + 128.0) as i64);
            if (0..256).contains(&px) && (0..256).contains(&py) {
                img.put_pixel(px as u32 + x_off, py as u32, image::Rgb(color));
            }
        }
    };
    plot(left, 0, [30, 60, 200]);
    plot(right, 256, [30, 140, 60]);
    // A small cross at each true mode.
    let marks: Vec<f64> = modes()
        .iter()
        .flat_map(|m| (-3..=3).flat_map(move |d| [m[0] + d as f64 * 0.0125, m[1], m[0], m[1] + d as f64 * 0.0125]))
        .collect();
    plot(&marks, 0, [220, 0, 0]);
    plot(&marks, 256, [220, 0, 0]);
    for y in 0..h {
        img.put_pixel(256, y, image::Rgb([0, 0, 0]));
    }
    img.save(path).map_err(std::io::Error::other)
}

#[allow(dead_code)]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
    };
    let steps: usize = arg("--steps", "8000").parse().unwrap_or_else(|_| exit_with("--steps takes a whole number, e.g. --steps 3000"));
    let out = arg("--out", "custom_denoiser.png");
    let device = ddpm::io::device::parse_device(&arg("--device", "flex")).unwrap_or_else(|e| exit_with(&e.to_string()));
    eprintln!("training a 4-layer MLP on 8 Gaussians for {steps} steps on {device:?}");
    let start = Instant::now();
    let report = run(&device, steps, 2000, 0, true).unwrap_or_else(|e| exit_with(&e.to_string()));
    println!("trained in {:.1}s, final loss {:.4}", start.elapsed().as_secs_f64(), report.final_loss);
    for (name, (_, q)) in [("DDIM (50 steps, eta 0)", &report.ddim), ("DDPM (100 steps)", &report.ddpm)] {
        println!("{name:<24} {:5.1}% of 2000 samples within 3 sigma of a mode, {}/8 modes covered", 100.0 * q.near_mode, q.modes_hit);
    }
    scatter_png(&out, &report.ddim.0, &report.ddpm.0).unwrap_or_else(|e| exit_with(&format!("writing {out}: {e}")));
    println!("wrote {out} (left: DDIM, right: DDPM, red: the true modes)");
}

fn exit_with(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}
