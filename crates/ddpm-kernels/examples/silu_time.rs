use std::time::Instant;
use burn::tensor::{Device, Distribution, Tensor};
fn main() {
    let device = Device::flex();
    for n in [32_768usize, 1 << 20] {
        let x: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 0.1 - 4.0).collect();
        let reps = (1 << 24) / n;
        let t = Instant::now();
        let mut s = 0.0;
        for _ in 0..reps { s += ddpm_kernels::silu_slices(&x)[7]; }
        let raw = t.elapsed().as_secs_f64() / (reps * n) as f64 * 1e9;
        let t = Instant::now();
        for _ in 0..reps { let y: Vec<f32> = x.iter().map(|&v| v * ddpm_kernels::fast_exp(v)).collect(); s += y[5]; }
        let serial = t.elapsed().as_secs_f64() / (reps * n) as f64 * 1e9;
        let xt = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &device);
        let t = Instant::now();
        for _ in 0..reps { let y = ddpm_kernels::silu(xt.clone()); s += if y.dims()[0] > 0 { 1.0 } else { 0.0 }; }
        let tensor = t.elapsed().as_secs_f64() / (reps * n) as f64 * 1e9;
        println!("n={n}: slices {raw:.2} ns/value, serial exp-map {serial:.2}, tensor {tensor:.2} ({s})");
    }
}
