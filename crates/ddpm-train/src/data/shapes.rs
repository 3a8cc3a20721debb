//! The embedded image set: coloured discs, squares and diamonds on plain backgrounds, drawn in code
//! from a seed, so the quickstart needs no download and its samples are easy to judge by eye.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The classes of the shapes set, by label.
pub const SHAPE_CLASSES: [&str; 3] = ["disc", "square", "diamond"];

/// `count` RGB images of `size x size`, values in [0, 1], laid out `[count, 3, size, size]`, and
/// the class of each (an index into [`SHAPE_CLASSES`]).
pub fn shapes(count: usize, size: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let palette: [[f32; 3]; 6] = [[0.9, 0.2, 0.2], [0.2, 0.7, 0.3], [0.2, 0.4, 0.9], [0.95, 0.8, 0.2], [0.8, 0.3, 0.8], [0.2, 0.8, 0.8]];
    let mut out = Vec::with_capacity(count * 3 * size * size);
    let mut labels = Vec::with_capacity(count);
    for _ in 0..count {
        let bg = if rng.random_bool(0.5) { [0.08f32; 3] } else { [0.92f32; 3] };
        let fg = palette[rng.random_range(0..palette.len())];
        let kind = rng.random_range(0..SHAPE_CLASSES.len());
        labels.push(kind as u32);
        let s = size as f32;
        let radius = rng.random_range(0.22..0.38) * s;
        let cx = rng.random_range(radius..s - radius);
        let cy = rng.random_range(radius..s - radius);
        let mut img = vec![0f32; 3 * size * size];
        for y in 0..size {
            for x in 0..size {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                let inside = match kind {
                    0 => dx * dx + dy * dy <= radius * radius,
                    1 => dx.abs() <= radius * 0.85 && dy.abs() <= radius * 0.85,
                    _ => dx.abs() + dy.abs() <= radius * 1.15,
                };
                let c = if inside { fg } else { bg };
                for ch in 0..3 {
                    img[ch * size * size + y * size + x] = c[ch];
                }
            }
        }
        out.extend(img);
    }
    (out, labels)
}
