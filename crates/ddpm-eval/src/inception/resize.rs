//! pytorch-fid's input pipeline: `F.interpolate(x, (299, 299), mode="bilinear",
//! align_corners=False)` and then `2x - 1`.
//!
//! The resize is written out here rather than taken from Burn's `interpolate` so that every
//! backend computes PyTorch's exact taps: half-pixel centres, source coordinates clamped at 0, no
//! antialiasing when shrinking, weights computed in f32 as PyTorch's CPU and CUDA kernels do. For
//! small generated images the resize dominates the features (the weights README measured a 24-33%
//! change from a TF1-style resize at 32x32), so "close" is not good enough.

use burn::tensor::{Tensor, TensorCreationOptions, TensorData};

/// The side of the square images the network was trained on.
pub const INPUT_SIZE: usize = 299;

/// The bilinear interpolation matrix `[output, input]` of one axis: row `o` holds the two taps
/// of output pixel `o`. PyTorch (`area_pixel_compute_source_index`, `guard_index_and_lambda`):
/// `src = max((o + 0.5) * in / out - 0.5, 0)`, `i0 = min(floor(src), in - 1)`,
/// `i1 = min(i0 + 1, in - 1)`, `l1 = clamp(src - i0, 0, 1)`, `l0 = 1 - l1`.
pub fn bilinear_matrix(input: usize, output: usize) -> Vec<f32> {
    assert!(input > 0 && output > 0, "bilinear resize from {input} to {output} pixels");
    let scale = input as f32 / output as f32;
    let mut m = vec![0f32; output * input];
    for o in 0..output {
        let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let l1 = (src - i0 as f32).clamp(0.0, 1.0);
        m[o * input + i0] += 1.0 - l1;
        m[o * input + i1] += l1;
    }
    m
}

/// PyTorch's `F.interpolate(x, size, mode="bilinear", align_corners=False)` (antialias off) on
/// `[B, C, H, W]`: interpolation along W, then along H, each a product with the axis's tap
/// matrix. A same-size resize returns `x` unchanged, as PyTorch's does.
pub fn resize_bilinear(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let [out_h, out_w] = size;
    if [h, w] == size {
        return x;
    }
    let options = TensorCreationOptions::new(x.device()).with_dtype(x.dtype());
    let rows: Tensor<2> = Tensor::from_data(TensorData::new(bilinear_matrix(h, out_h), [out_h, h]), options.clone());
    let cols: Tensor<2> = Tensor::from_data(TensorData::new(bilinear_matrix(w, out_w), [out_w, w]), options);
    let along_w = x.reshape([b * c * h, w]).matmul(cols.transpose()); // [b c h, out_w]
    let along_w = along_w.reshape([b * c, h, out_w]);
    let rows = rows.unsqueeze_dim::<3>(0).expand([b * c, out_h, h]);
    rows.matmul(along_w).reshape([b, c, out_h, out_w])
}

/// pytorch-fid's `resize_input` and `normalize_input`: images in [0, 1] `[B, 3, H, W]` to the
/// network's `[B, 3, 299, 299]` in [-1, 1].
pub fn preprocess(images: Tensor<4>) -> Tensor<4> {
    resize_bilinear(images, [INPUT_SIZE, INPUT_SIZE]) * 2.0 - 1.0
}
