//! Throughput of FID feature extraction: batches of 32x32 images in [0, 1], resized to 299x299 and
//! run through the FID Inception-v3 to the 2048-d features, as `ddpm-eval fid` does.
//!
//!     cargo run --release -p ddpm-eval --example bench_inception -- \
//!         [--device flex] [--batch 50] [--iters 3] [--size 32] [--weights pt_inception-2015-12-05.safetensors]
//!
//! Without `--weights` (or `DDPM_INCEPTION_WEIGHTS`) the network has random weights, which costs
//! the same. `bench_inception.py` next to this file times pytorch-fid on the same batch. Prints
//! one JSON object: median seconds per batch and images per second, after one warm-up batch.

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use ddpm_eval::inception::InceptionV3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let number = |name: &str, default: usize| arg(name).map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number, not `{v}`")));
    let device = ddpm_io::device::parse_device(&arg("--device").unwrap_or_else(|| "flex".into())).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let (batch, iters, size) = (number("--batch", 50), number("--iters", 3).max(1), number("--size", 32));
    let weights = arg("--weights").or_else(|| std::env::var("DDPM_INCEPTION_WEIGHTS").ok().filter(|v| !v.is_empty()));
    let model = match &weights {
        Some(path) => InceptionV3::from_file(path, &device).unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(2)
        }),
        None => InceptionV3::new(&device),
    };
    let images = Tensor::<4>::random([batch, 3, size, size], Distribution::Uniform(0.0, 1.0), &device);
    let run = || {
        let start = Instant::now();
        // Reading the features back waits for the device, as collecting them for FID does.
        let features = model.features(images.clone()).try_into_vec_as::<f32>().expect("f32 features");
        assert_eq!(features.len(), batch * 2048);
        start.elapsed().as_secs_f64()
    };
    let warmup = run();
    let mut times: Vec<f64> = (0..iters).map(|_| run()).collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{{\"case\": \"inception_features\", \"device\": \"{device:?}\", \"weights\": {}, \"batch\": {batch}, \"input\": \"{size}x{size}\", \"warmup_s\": {warmup:.3}, \"median_s\": {median:.3}, \"images_per_s\": {:.2}, \"threads\": {}}}",
        if weights.is_some() { "\"fid\"" } else { "\"random\"" },
        batch as f64 / median,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
}
