//! Sample quality against network evaluations for every sampler, from one trained model.
//!
//!     cargo run --release --example sampler_table [pred_v|pred_noise|pred_x0|edm]
//!
//! Trains the MLP of `configs/toy-gaussian8.toml` with T = 1000 (cosine schedule, v prediction
//! unless another objective is given; `edm` trains with EDM's preconditioning and loss instead) through ddpm-train, then draws 2000 samples with the EMA weights and each sampler at several
//! step counts, and prints a Markdown table: network evaluations (NFE), the share of samples within
//! 3 sigma of one of the 8 modes, modes hit, the energy distance to fresh data, and the time.

use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use ddpm::eval::toy::{ModeSet, energy_distance, mode_coverage};
use ddpm::models::MlpConfig;
use ddpm::train::{RunOptions, load_config};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::temp_dir().join("ddpm-sampler-table");
    let _ = std::fs::remove_dir_all(&out);
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/toy-gaussian8.toml");
    let objective = std::env::args().nth(1).unwrap_or_else(|| "pred_v".into());
    let mut overrides = vec![
        format!("run.out_dir=\"{}\"", out.display()),
        "diffusion.timesteps=1000".into(),
        "train.sample_every=0".into(),
        "train.checkpoint_every=100000".into(),
    ];
    let edm = objective == "edm";
    if edm {
        overrides.extend(["diffusion.kind=\"edm\"".into(), "sample.sampler=\"heun\"".into()]);
    } else {
        overrides.push(format!("diffusion.objective=\"{objective}\""));
    }
    let cfg = load_config(&config, &overrides)?;
    let started = Instant::now();
    let summary = ddpm::train::run(&cfg, &RunOptions { progress: true, ..Default::default() })?;
    eprintln!("trained {} steps in {:.1} s", summary.steps, started.elapsed().as_secs_f64());
    let checkpoint = summary.last_checkpoint.expect("the last step writes a checkpoint");

    let device = Device::flex();
    let net = MlpConfig::new(2).with_hidden(128).with_num_layers(3).init(&device)?;
    let model = ddpm::train::checkpoint::load_weights(&checkpoint, net, true)?;
    let diffusion = cfg.build_diffusion()?;
    let reference = ddpm::train::data::toy::toy("gaussian8", 2000, 12345)?;
    let modes = ModeSet::gaussian8();
    let seeds: Vec<u64> = (0..2000).collect();

    let runs: &[(&str, &[usize])] = &[
        ("ddpm", &[1000]),
        ("ddim", &[10, 20, 50, 100]),
        ("euler", &[10, 20, 50]),
        ("euler_ancestral", &[20, 50, 100]),
        ("heun", &[5, 10, 20]),
        ("dpmpp_2m", &[10, 20, 50]),
        ("dpmpp_2m_sde", &[10, 20, 50]),
        ("dpmpp_3m_sde", &[10, 20, 50]),
    ];
    println!("| sampler | steps | NFE | within 3 sigma | modes hit | energy distance | seconds |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (name, step_counts) in runs.iter().filter(|(name, _)| !(edm && matches!(*name, "ddpm" | "ddim"))) {
        for &steps in *step_counts {
            let mut section = cfg.sample.clone();
            section.sampler = name.to_string();
            section.steps = steps;
            let sampler = section.sampler()?;
            let nfe = diffusion.network_calls(&sampler);
            let t0 = Instant::now();
            let mut samples = Vec::with_capacity(4000);
            let what = ddpm::train::sample::Draw::new(&diffusion, &[2], &device, &sampler, &seeds, 1000);
            ddpm::train::sample::draw::<2, _>(&what, &model, |_, v| {
                samples.extend(v);
                Ok(())
            })?;
            let secs = t0.elapsed().as_secs_f64();
            let cov = mode_coverage(&samples, &modes, None)?;
            let ed = energy_distance(&samples, &reference, 2)?;
            println!(
                "| {name} | {steps} | {nfe} | {:.1}% | {}/{} | {ed:.4} | {secs:.2} |",
                100.0 * cov.near_mode_share,
                cov.modes_hit,
                cov.modes_total
            );
        }
    }
    Ok(())
}
