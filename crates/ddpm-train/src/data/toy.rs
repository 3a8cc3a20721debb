//! 2-D toy distributions, scaled to about [-1, 1]. Each has known modes or a known curve, so
//! sample quality can be measured exactly.

use std::f64::consts::PI;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Result, TrainError};

/// The toy set names.
pub const TOY_SETS: [&str; 5] = ["gaussian8", "gaussian25", "swissroll", "spiral", "moons"];

/// Mode centres of the mixture sets (empty for the curves).
pub fn toy_modes(name: &str) -> Vec<[f64; 2]> {
    match name {
        "gaussian8" => (0..8).map(|k| [(k as f64 * PI / 4.0).cos(), (k as f64 * PI / 4.0).sin()]).collect(),
        "gaussian25" => (0..25).map(|k| [(k % 5) as f64 * 0.5 - 1.0, (k / 5) as f64 * 0.5 - 1.0]).collect(),
        _ => Vec::new(),
    }
}

/// Standard deviation of each mixture component.
pub fn toy_mode_std(name: &str) -> f64 {
    match name {
        "gaussian8" => 0.05,
        _ => 0.04,
    }
}

/// `count` points of the named set, flattened `[count, 2]`.
pub fn toy(name: &str, count: usize, seed: u64) -> Result<Vec<f32>> {
    Ok(toy_labelled(name, count, seed)?.0)
}

/// [`toy`] with, for the mixtures, each point's mode index as its class label.
pub fn toy_labelled(name: &str, count: usize, seed: u64) -> Result<(Vec<f32>, Option<Vec<u32>>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = |rng: &mut ChaCha8Rng| -> f64 { StandardNormal.sample(rng) };
    let mut out = Vec::with_capacity(count * 2);
    let mut labels = Vec::with_capacity(count);
    for _ in 0..count {
        let (x, y) = match name {
            "gaussian8" | "gaussian25" => {
                let modes = toy_modes(name);
                let k = rng.random_range(0..modes.len());
                labels.push(k as u32);
                let m = modes[k];
                let s = toy_mode_std(name);
                (m[0] + s * normal(&mut rng), m[1] + s * normal(&mut rng))
            }
            "swissroll" => {
                let t = 1.5 * PI * (1.0 + 2.0 * rng.random::<f64>());
                ((t * t.cos()) / 15.0 + 0.02 * normal(&mut rng), (t * t.sin()) / 15.0 + 0.02 * normal(&mut rng))
            }
            "spiral" => {
                let t = 3.0 * PI * rng.random::<f64>().sqrt();
                let arm = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                (arm * t * t.cos() / (3.0 * PI) + 0.02 * normal(&mut rng), arm * t * t.sin() / (3.0 * PI) + 0.02 * normal(&mut rng))
            }
            "moons" => {
                let a = PI * rng.random::<f64>();
                let (x, y) = if rng.random_bool(0.5) { (a.cos(), a.sin()) } else { (1.0 - a.cos(), 0.5 - a.sin()) };
                ((x - 0.5) * 0.8 + 0.03 * normal(&mut rng), (y - 0.25) * 0.8 + 0.03 * normal(&mut rng))
            }
            other => {
                return Err(TrainError::config("data.name", format!("unknown toy set `{other}`; use one of {}", TOY_SETS.join(", "))));
            }
        };
        out.push(x as f32);
        out.push(y as f32);
    }
    Ok((out, (!labels.is_empty()).then_some(labels)))
}
