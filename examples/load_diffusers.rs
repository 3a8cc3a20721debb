//! Samples a Hugging Face diffusers `DDPMPipeline` folder (as `save_pretrained` writes it) from
//! Rust: the network and the schedule come from its JSON files, the sampler is diffusers' DDIM.
//!
//! ```sh
//! cargo run --release --example load_diffusers -- [PIPELINE_DIR] [OUT.png]
//! ```
//!
//! The default folder is the small randomly initialised pipeline of the test fixtures; a download
//! of `google/ddpm-cifar10-32` (the DDPM paper's CIFAR-10 network) works the same way.

use ddpm::train::TrainError;
use ddpm::train::pipeline::{Pipeline, SampleOptions};

fn main() -> Result<(), TrainError> {
    let mut args = std::env::args().skip(1);
    let folder = args.next().unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/diffusers/tiny_pipeline").into());
    let out = std::path::PathBuf::from(args.next().unwrap_or_else(|| "diffusers-samples.png".into()));
    let pipe = Pipeline::load(&folder)?;
    println!("loaded {}", pipe.describe());
    let samples = pipe.sample_with(&SampleOptions { steps: Some(25), ..SampleOptions::seeds(0..16) })?;
    let shape = &samples.item_shape;
    let grid: Vec<f64> = samples.values.iter().map(|&v| f64::from(v)).collect();
    ddpm::train::grid::write_grid(&out, &grid, shape)?;
    println!("{} samples of {shape:?} drawn with diffusers' DDIM, grid in {}", samples.seeds.len(), out.display());
    Ok(())
}
