//! Samples a denoising-diffusion-pytorch `Trainer` checkpoint (`model-N.pt`) from Rust in one call.
//!
//! ```sh
//! cargo run --release --example load_reference_pt -- [MODEL.pt] [OUT_DIR]
//! ```
//!
//! The default checkpoint is the small reference run kept in the repository's test fixtures
//! (`Unet(dim=8, dim_mults=(1, 2))` in `GaussianDiffusion(image_size=8, timesteps=100)` with the
//! package's defaults). A `.pt` carries weights but no settings, so the config names the network,
//! the data shape and the diffusion, as the reference's constructor arguments would.

use ddpm::train::pipeline::{LoadOptions, Pipeline, SampleOptions};
use ddpm::train::{TrainError, parse_config};

const CONFIG: &str = r#"
[data]
kind = "none"
shape = [3, 8, 8]

[model]
kind = "unet"
dim = 8
dim_mults = [1, 2]

[diffusion]
timesteps = 100

[sample]
sampler = "ddim"
steps = 10
"#;

fn main() -> Result<(), TrainError> {
    let mut args = std::env::args().skip(1);
    let checkpoint = args.next().unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/crates/ddpm-train/tests/fixtures/reference_model-1.pt").into());
    let out = std::path::PathBuf::from(args.next().unwrap_or_else(|| "samples-reference".into()));
    let config = parse_config(CONFIG, "example config", &[])?;
    let pipe = Pipeline::load_with(&checkpoint, &LoadOptions { config: Some(config), ..Default::default() })?;
    println!("loaded {}", pipe.describe());
    let samples = pipe.sample_with(&SampleOptions { sampler: Some("dpmpp_2m".into()), steps: Some(20), ..SampleOptions::seeds(0..16) })?;
    std::fs::create_dir_all(&out).map_err(|e| TrainError::Io { path: out.clone(), message: e.to_string() })?;
    for (seed, image) in samples.seeds.iter().zip(samples.images()) {
        let path = out.join(format!("{seed:06}.png"));
        image.save(&path).map_err(|e| TrainError::Io { path, message: e.to_string() })?;
    }
    println!("{} images of {:?} in {}", samples.seeds.len(), samples.item_shape, out.display());
    Ok(())
}
