//! 2-D convolution (NCHW, one group) forward and backward as three batch-folded GEMMs.
//!
//! With the patch matrix `cols[K, P]` (`K = C_in kh kw` rows, one column per output pixel of every
//! image, `P = N OH OW`), the convolution is `Y[C_out, P] = W[C_out, K] cols`, and its gradients
//! are `dW = dY cols^T` and `dcols = W^T dY`, scattered back onto the input (col2im). Folding the
//! batch into `P` gives one large GEMM per pass instead of one small one per image, which is what
//! keeps the 4x4 and 8x8 stages of a U-Net efficient. 3x3 "same" convolutions with enough
//! channels go to [`super::winograd`] instead, the other 3x3 "same" ones with channels in fours
//! to [`super::direct`] (forward and input gradient), and batches of images of 8x8 and larger run
//! image by image ([`by_image`]).

use rayon::prelude::*;

use super::matmul::{MatRef, matmul, matmul_serial};
use super::geometry::{ConvMode, Taps, batch_groups};
pub use super::geometry::ConvGeometry;
use super::norm::lane_sum;
use super::per_task;
use super::scratch::{Scratch, scratch};
use super::winograd;

/// Fills `cols[K, P]` with the input patches (zeros where a patch overlaps the padding).
pub fn im2col(x: &[f32], g: &ConvGeometry, cols: &mut [f32]) {
    assert_eq!(x.len(), g.input_len());
    assert_eq!(cols.len(), g.patch() * g.columns());
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let taps = Taps::new(g);
    cols.par_chunks_mut(g.columns()).enumerate().with_min_len(per_task(g.columns())).for_each(|(row, dst)| im2col_row(x, g, &taps, [row / (kh * kw), row / kw % kh, row % kw], dst));
}

/// [`im2col`] on the calling thread.
fn im2col_serial(x: &[f32], g: &ConvGeometry, cols: &mut [f32]) {
    assert_eq!(x.len(), g.input_len());
    assert_eq!(cols.len(), g.patch() * g.columns());
    let taps = Taps::new(g);
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let rows = (0..g.c_in).flat_map(|ci| (0..kh).flat_map(move |ki| (0..kw).map(move |kj| [ci, ki, kj])));
    cols.chunks_mut(g.columns()).zip(rows).for_each(|(dst, tap)| im2col_row(x, g, &taps, tap, dst));
}

/// Row `(ci kh + ki) kw + kj` of the patch matrix: input channel `ci` seen through kernel tap
/// `(ki, kj)`, at every output pixel of every image.
fn im2col_row(x: &[f32], g: &ConvGeometry, taps: &Taps, [ci, ki, kj]: [usize; 3], dst: &mut [f32]) {
    let (oh, ow) = (g.out[0], g.out[1]);
    let plane = g.height * g.width;
    let (y_lo, y_hi, y0) = taps.row(ki);
    let (x_lo, x_hi, x0) = taps.col(kj);
    let sx = g.stride[1];
    // A stride-1 convolution whose output is as wide as its input ("same" width) maps output
    // position p to input position p + offset: the valid part is one shifted copy, after
    // which only the padding columns are zeroed (not a copy and two fills per line).
    let same_width = same_width(g);
    for n in 0..g.batch {
        let src = &x[(n * g.c_in + ci) * plane..][..plane];
        let out = &mut dst[n * oh * ow..][..oh * ow];
        if same_width && y_lo < y_hi && x_lo < x_hi {
            let (first, last) = (y_lo * ow + x_lo, (y_hi - 1) * ow + x_hi);
            let from = ((y0 + y_lo as isize) * g.width as isize + x0 + x_lo as isize) as usize;
            out[..first].fill(0.0);
            copy_shifted(&mut out[first..last], &src[from..from + (last - first)]);
            out[last..].fill(0.0);
            // Column by column: a per-line loop of one or two zeros compiles to a `memset`
            // call per line.
            let rows = &mut out[y_lo * ow..y_hi * ow];
            for column in (0..x_lo).chain(x_hi..ow) {
                rows.iter_mut().skip(column).step_by(ow).for_each(|v| *v = 0.0);
            }
            continue;
        }
        for oy in 0..oh {
            let line = &mut out[oy * ow..][..ow];
            if oy < y_lo || oy >= y_hi {
                line.fill(0.0);
                continue;
            }
            let iy = (y0 + (oy * g.stride[0]) as isize) as usize;
            let row_src = &src[iy * g.width..][..g.width];
            line[..x_lo].fill(0.0);
            line[x_hi..].fill(0.0);
            if x_hi == x_lo {
                continue;
            }
            let start = (x0 + (x_lo * sx) as isize) as usize;
            if sx == 1 {
                line[x_lo..x_hi].copy_from_slice(&row_src[start..start + (x_hi - x_lo)]);
            } else {
                for (o, v) in line[x_lo..x_hi].iter_mut().enumerate() {
                    *v = row_src[start + o * sx];
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)` in fixed 64-byte pieces, which compile to vector moves: for a few
/// kilobytes libc's `memmove` takes `rep movsb`, which is slow on AMD Zen when source and
/// destination are a few bytes apart modulo 64 (here they are shifted by a pixel or two).
fn copy_shifted(dst: &mut [f32], src: &[f32]) {
    // Arrays, not `chunks_exact`: a chunk's length is a run-time value there, and each 64-byte
    // copy became a `memcpy` call.
    let (d, d_tail) = dst.as_chunks_mut::<16>();
    let (s, s_tail) = src.as_chunks::<16>();
    for (d, s) in d.iter_mut().zip(s) {
        *d = *s;
    }
    for (d, s) in d_tail.iter_mut().zip(s_tail) {
        *d = *s;
    }
}

/// Whether output pixel `p` of an image reads input pixel `p + offset` for every kernel offset (a
/// stride-1 convolution whose output is as wide as its input): a tap's valid part is then one
/// shifted range of the flattened image.
fn same_width(g: &ConvGeometry) -> bool {
    g.stride == [1, 1] && g.out[1] == g.width
}

/// Zeroes the patch gradients of the positions whose kernel tap falls on the left or right
/// padding, so that [`col2im`] can add each tap's rows as one shifted range: those positions then
/// add exactly zero onto the neighbouring line's pixels they wrap onto.
fn zero_padding_columns(dcols: &mut [f32], g: &ConvGeometry, taps: &Taps) {
    dcols.par_chunks_mut(g.columns()).enumerate().with_min_len(per_task(g.columns())).for_each(|(row, values)| zero_padding_row(values, g, taps, row));
}

/// [`zero_padding_columns`] for patch-matrix row `row`.
fn zero_padding_row(values: &mut [f32], g: &ConvGeometry, taps: &Taps, row: usize) {
    let (kw, ow) = (g.kernel[1], g.out[1]);
    let (x_lo, x_hi, _) = taps.col(row % kw);
    for column in (0..x_lo).chain(x_hi..ow) {
        values.iter_mut().skip(column).step_by(ow).for_each(|v| *v = 0.0);
    }
}

/// Adds the patch gradients `dcols[K, P]` back onto the input gradient `dx` (zeroed first).
/// `dcols` is scratch: positions that fall on padding may be zeroed.
pub fn col2im(dcols: &mut [f32], g: &ConvGeometry, dx: &mut [f32]) {
    assert_eq!(dx.len(), g.input_len());
    assert_eq!(dcols.len(), g.patch() * g.columns());
    let taps = Taps::new(g);
    if same_width(g) {
        zero_padding_columns(dcols, g, &taps);
    }
    let dcols = &*dcols;
    let plane = g.height * g.width;
    // One (image, channel) plane per task: the rows that write into it are its own, so no two
    // tasks touch the same value.
    dx.par_chunks_mut(plane).enumerate().with_min_len(per_task(plane * g.kernel[0] * g.kernel[1])).for_each(|(nc, dst)| col2im_plane(dcols, g, &taps, nc, dst));
}

/// [`col2im`] on the calling thread.
fn col2im_serial(dcols: &mut [f32], g: &ConvGeometry, dx: &mut [f32]) {
    assert_eq!(dx.len(), g.input_len());
    assert_eq!(dcols.len(), g.patch() * g.columns());
    let taps = Taps::new(g);
    if same_width(g) {
        for (row, values) in dcols.chunks_mut(g.columns()).enumerate() {
            zero_padding_row(values, g, &taps, row);
        }
    }
    let dcols = &*dcols;
    dx.chunks_mut(g.height * g.width).enumerate().for_each(|(nc, dst)| col2im_plane(dcols, g, &taps, nc, dst));
}

/// Plane `nc` (image `nc / C_in`, channel `nc % C_in`) of [`col2im`]'s output.
fn col2im_plane(dcols: &[f32], g: &ConvGeometry, taps: &Taps, nc: usize, dst: &mut [f32]) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let (oh, ow) = (g.out[0], g.out[1]);
    let p = g.columns();
    let same_width = same_width(g);
    dst.fill(0.0);
    let (n, ci) = (nc / g.c_in, nc % g.c_in);
    for ki in 0..kh {
        let (y_lo, y_hi, y0) = taps.row(ki);
        for kj in 0..kw {
            let (x_lo, x_hi, x0) = taps.col(kj);
            if x_hi == x_lo {
                continue;
            }
            let row = (ci * kh + ki) * kw + kj;
            let src = &dcols[row * p + n * oh * ow..][..oh * ow];
            if same_width {
                if y_lo < y_hi {
                    let (first, last) = (y_lo * ow + x_lo, (y_hi - 1) * ow + x_hi);
                    let from = ((y0 + y_lo as isize) * g.width as isize + x0 + x_lo as isize) as usize;
                    for (d, s) in dst[from..from + (last - first)].iter_mut().zip(&src[first..last]) {
                        *d += s;
                    }
                }
                continue;
            }
            let sx = g.stride[1];
            for oy in y_lo..y_hi {
                let iy = (y0 + (oy * g.stride[0]) as isize) as usize;
                let line = &src[oy * ow..][..ow];
                let out = &mut dst[iy * g.width..][..g.width];
                let start = (x0 + (x_lo * sx) as isize) as usize;
                if sx == 1 {
                    for (d, s) in out[start..start + (x_hi - x_lo)].iter_mut().zip(&line[x_lo..x_hi]) {
                        *d += s;
                    }
                } else {
                    for (o, s) in line[x_lo..x_hi].iter().enumerate() {
                        out[start + o * sx] += s;
                    }
                }
            }
        }
    }
}

/// Images `[first, first + count)` of `[N, C, S]` (NCHW) as `[C, count S]`: the GEMMs' layout.
fn batch_to_columns(y: &[f32], channels: usize, pixels: usize, first: usize, out: &mut [f32]) {
    let count = out.len() / (channels * pixels);
    out.par_chunks_mut(count * pixels).enumerate().with_min_len(per_task(count * pixels)).for_each(|(c, dst)| {
        for n in 0..count {
            dst[n * pixels..][..pixels].copy_from_slice(&y[((first + n) * channels + c) * pixels..][..pixels]);
        }
    });
}

/// `[C, count S]` back into images `[first, first + count)` of `[N, C, S]`, adding `bias[c]`.
fn columns_to_batch(cols: &[f32], channels: usize, pixels: usize, first: usize, bias: Option<&[f32]>, out: &mut [f32]) {
    let count = cols.len() / (channels * pixels);
    let images = &mut out[first * channels * pixels..][..count * channels * pixels];
    images.par_chunks_mut(pixels).enumerate().with_min_len(per_task(pixels)).for_each(|(nc, dst)| {
        let (n, c) = (nc / channels, nc % channels);
        let src = &cols[(c * count + n) * pixels..][..pixels];
        match bias {
            Some(b) => {
                let b = b[c];
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = s + b;
                }
            }
            None => dst.copy_from_slice(src),
        }
    });
}

/// Images `[first, first + count)` of `[N, C, S]` as `[count S, C]` (one row per pixel), by
/// 16 x 16 tiles so that both sides stay in cache.
fn batch_to_rows(y: &[f32], channels: usize, pixels: usize, first: usize, out: &mut [f32]) {
    const TILE: usize = 16;
    out.par_chunks_mut(pixels * channels).enumerate().with_min_len(per_task(pixels * channels)).for_each(|(n, dst)| {
        let src = &y[(first + n) * channels * pixels..][..channels * pixels];
        for c0 in (0..channels).step_by(TILE) {
            for s0 in (0..pixels).step_by(TILE) {
                for c in c0..(c0 + TILE).min(channels) {
                    for s in s0..(s0 + TILE).min(pixels) {
                        dst[s * channels + c] = src[c * pixels + s];
                    }
                }
            }
        }
    });
}

/// `dst[c, r] (+)= src[r, c]` for `src` of `rows x cols`, by tiles, one band of `dst` rows per task.
fn add_transposed(src: &[f32], rows: usize, cols: usize, dst: &mut [f32], accumulate: bool) {
    const TILE: usize = 16;
    dst.par_chunks_mut(TILE * rows).enumerate().with_min_len(per_task(TILE * rows)).for_each(|(band, out)| {
        let c0 = band * TILE;
        let band_cols = out.len() / rows;
        for r0 in (0..rows).step_by(TILE) {
            for dc in 0..band_cols {
                for r in r0..(r0 + TILE).min(rows) {
                    let v = src[r * cols + c0 + dc];
                    let d = &mut out[dc * rows + r];
                    *d = if accumulate { *d + v } else { v };
                }
            }
        }
    });
}

/// At most this many values in one patch matrix (see [`batch_groups`]).
const PATCH_BUDGET: usize = 1 << 23;

/// The image groups `(first, count)` whose patch matrices fit [`PATCH_BUDGET`].
fn image_groups(g: &ConvGeometry) -> impl Iterator<Item = (usize, usize)> {
    batch_groups(g.batch, g.patch() * g.out_pixels(), PATCH_BUDGET)
}

/// The geometry of images `[first, first + count)` alone, and those images' slice of `x`.
fn group<'a>(g: &ConvGeometry, x: &'a [f32], first: usize, count: usize) -> (ConvGeometry, &'a [f32]) {
    let per_image = g.c_in * g.height * g.width;
    (ConvGeometry { batch: count, ..*g }, &x[first * per_image..][..count * per_image])
}

/// The forward pass: `y[N, C_out, OH, OW]` from `x[N, C_in, H, W]`, `w[C_out, C_in, kh, kw]` and
/// an optional `bias[C_out]`.
pub fn conv2d_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
    assert_eq!(w.len(), g.c_out * g.patch());
    assert_eq!(x.len(), g.input_len());
    if let Some(tiling) = winograd::tiling(g) {
        return winograd::forward(x, w, bias, g, tiling);
    }
    if direct(g) {
        return super::direct::forward(x, w, bias, g);
    }
    if by_image(g) {
        return forward_by_image(x, w, bias, g);
    }
    let k = g.patch();
    let mut y = vec![0.0; g.output_len()];
    for (first, count) in image_groups(g) {
        let (gg, xg) = group(g, x, first, count);
        let p = gg.columns();
        let mut cols = scratch(k * p);
        im2col(xg, &gg, &mut cols);
        let mut y_cols = scratch(g.c_out * p);
        matmul(&mut y_cols, MatRef::row_major(w, g.c_out, k), MatRef::row_major(&cols, k, p), false);
        columns_to_batch(&y_cols, g.c_out, g.out_pixels(), first, bias, &mut y);
    }
    y
}

/// Which gradients the backward pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub input: bool,
    pub weight: bool,
    pub bias: bool,
}

/// Gradients of [`conv2d_forward`] for the output gradient `dy` (`None` where not wanted).
#[derive(Debug, Default)]
pub struct ConvGrads {
    pub input: Option<Vec<f32>>,
    pub weight: Option<Vec<f32>>,
    pub bias: Option<Vec<f32>>,
}

/// The backward pass, one image group at a time. The patch matrix is
/// rebuilt from `x` rather than kept from the forward pass: im2col costs a copy, keeping it would
/// cost `kh kw` times the input's memory for every convolution of the step.
pub fn conv2d_backward(x: &[f32], w: &[f32], dy: &[f32], g: &ConvGeometry, wanted: Wanted) -> ConvGrads {
    assert_eq!(dy.len(), g.output_len());
    assert_eq!(x.len(), g.input_len());
    let (k, pixels) = (g.patch(), g.out_pixels());
    let mut grads = ConvGrads::default();
    if wanted.bias {
        grads.bias = Some(
            (0..g.c_out)
                .into_par_iter()
                .with_min_len(per_task(g.batch * pixels))
                .map(|c| (0..g.batch).map(|n| lane_sum(&dy[(n * g.c_out + c) * pixels..][..pixels])).sum())
                .collect(),
        );
    }
    if !(wanted.weight || wanted.input) {
        return grads;
    }
    if let Some(tiling) = winograd::tiling(g) {
        (grads.input, grads.weight) = winograd::backward(x, w, dy, g, tiling, wanted.input, wanted.weight);
        return grads;
    }
    // The input gradient on the direct tiles, the weight gradient by the patch-matrix GEMMs below:
    // direct tiles for the weight gradient measured slower (each value they load feeds 2 to 4
    // multiply-adds, against 4 to 12 in the input gradient's tiles).
    let mut wanted = wanted;
    if direct(g) && wanted.input {
        grads.input = Some(super::direct::input_grad(dy, w, g));
        wanted.input = false;
        if !wanted.weight {
            return grads;
        }
    }
    if by_image(g) {
        let (input, weight) = backward_by_image(x, w, dy, g, wanted);
        grads.input = grads.input.or(input);
        grads.weight = weight;
        return grads;
    }
    let mut dw = wanted.weight.then(|| vec![0.0; g.c_out * k]);
    let mut dx = wanted.input.then(|| vec![0.0; g.input_len()]);
    for (first, count) in image_groups(g) {
        let (gg, xg) = group(g, x, first, count);
        let p = gg.columns();
        let mut cols = scratch(k * p);
        if let Some(dw) = dw.as_mut() {
            // dW^T = cols dY^T with dY laid out one row per pixel, so that both operands are read
            // along rows: dY cols^T reads cols down its columns, a page apart at 32x32, and ran
            // at a third of the speed (so did asking gemm for a column-major dW, which it turns
            // back into that product).
            let mut dy_rows = scratch(p * g.c_out);
            batch_to_rows(dy, g.c_out, pixels, first, &mut dy_rows);
            im2col(xg, &gg, &mut cols);
            let mut dw_t = scratch(k * g.c_out);
            matmul(&mut dw_t, MatRef::row_major(&cols, k, p), MatRef::row_major(&dy_rows, p, g.c_out), false);
            add_transposed(&dw_t, k, g.c_out, dw, first > 0);
        }
        if let Some(dx) = dx.as_mut() {
            let mut dy_cols = scratch(g.c_out * p);
            batch_to_columns(dy, g.c_out, pixels, first, &mut dy_cols);
            let dcols = &mut cols;
            matmul(dcols, MatRef::row_major(w, g.c_out, k).t(), MatRef::row_major(&dy_cols, g.c_out, p), false);
            let per_image = g.c_in * g.height * g.width;
            col2im(dcols, &gg, &mut dx[first * per_image..][..count * per_image]);
        }
    }
    grads.weight = dw;
    grads.input = grads.input.or(dx);
    grads
}

/// Whether `g` runs image by image, a contiguous range of images per thread with one-thread GEMMs
/// ([`forward_by_image`], [`backward_by_image`]), rather than as batch-folded GEMMs: when every
/// thread gets an image and an image has at least 8x8 output pixels. One image's patch matrix then
/// stays in cache between im2col and its GEMM, the output is written in NCHW directly (no layout
/// copies), a 1x1 convolution multiplies the image itself, and the threads never wait for each
/// other. Measured on a 2-core Zen 4 (`conv_parts`, batch 16): 64 channels at 32x32 forward 6.5
/// ms instead of 10.4, backward 13-16 ms instead of 18; the quickstart's 16-32 channels at 16x16
/// and 8x8 about even forward and a third faster backward. At 4x4 (16 pixels) the per-image GEMMs
/// are too narrow and the batch-folded ones stay faster.
///
/// `DDPM_CONV` picks a path for every convolution, to compare ([`ConvMode`]): `batched` (Winograd
/// where it applies, else batch-folded), `winograd2` (as unset, with Winograd kept to F(2x2)),
/// `im2col` (batch-folded only), `by-image` (image by image only). Only unset (`auto`) and
/// `winograd2` take the direct tiles.
pub fn by_image(g: &ConvGeometry) -> bool {
    match ConvMode::get() {
        ConvMode::Batched | ConvMode::Im2col => false,
        ConvMode::ByImage => true,
        ConvMode::Auto | ConvMode::Winograd2 => g.batch >= rayon::current_num_threads() && g.out_pixels() >= BY_IMAGE_MIN_PIXELS,
    }
}

/// Whether [`super::direct`] takes `g` (in `auto` and `winograd2` modes, after Winograd).
fn direct(g: &ConvGeometry) -> bool {
    matches!(ConvMode::get(), ConvMode::Auto | ConvMode::Winograd2) && super::direct::applies(g)
}

/// Whether `g` is a 1x1 convolution that reads every input pixel once, in order: its patch matrix
/// is the image itself.
fn pointwise(g: &ConvGeometry) -> bool {
    g.kernel == [1, 1] && g.stride == [1, 1] && g.pad == [0, 0] && g.out == [g.height, g.width]
}

/// Output pixels per image from which [`by_image`] applies.
const BY_IMAGE_MIN_PIXELS: usize = 64;

/// A buffer for one image's patch matrix (none for a [`pointwise`] convolution).
fn patch_scratch(g: &ConvGeometry) -> Scratch {
    scratch(if pointwise(g) { 0 } else { g.patch() * g.out_pixels() })
}

/// Image `x_n`'s patch matrix `[K, OH OW]` for the one-image geometry `single`: the image itself
/// for a [`pointwise`] convolution, else built in `cols`.
fn patches<'a>(x_n: &'a [f32], single: &ConvGeometry, cols: &'a mut [f32]) -> &'a [f32] {
    if pointwise(single) {
        return x_n;
    }
    im2col_serial(x_n, single, cols);
    cols
}

/// Images per task of the image-by-image passes: the batch cut into one contiguous range per
/// thread, a split that does not depend on timing, so the weight gradient's partial sums add in
/// the same order on every run.
fn images_per_task(batch: usize) -> usize {
    batch.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// [`conv2d_forward`] image by image: `y_n = W cols_n (+ bias)`, written in place.
fn forward_by_image(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
    let (k, pixels) = (g.patch(), g.out_pixels());
    let single = ConvGeometry { batch: 1, ..*g };
    let per_image = g.c_in * g.height * g.width;
    let per_task = images_per_task(g.batch);
    let mut y = vec![0.0; g.output_len()];
    y.par_chunks_mut(per_task * g.c_out * pixels).enumerate().for_each(|(task, ys)| {
        let mut cols = patch_scratch(g);
        for (i, y_n) in ys.chunks_mut(g.c_out * pixels).enumerate() {
            let n = task * per_task + i;
            let cols_n = patches(&x[n * per_image..][..per_image], &single, &mut cols);
            matmul_serial(y_n, MatRef::row_major(w, g.c_out, k), MatRef::row_major(cols_n, k, pixels), false);
            if let Some(b) = bias {
                for (row, b) in y_n.chunks_mut(pixels).zip(b) {
                    row.iter_mut().for_each(|v| *v += b);
                }
            }
        }
    });
    y
}

/// [`conv2d_backward`] image by image: each task builds an image's patch matrix once for both
/// gradients, adds `dWᵀ += cols_n dY_nᵀ` (`dY_nᵀ` a transposed view, which gemm packs as fast as a
/// transposed copy) to a sum of its own (the sums then added in task order),
/// and writes `dx_n = col2im(Wᵀ dY_n)` in place.
fn backward_by_image(x: &[f32], w: &[f32], dy: &[f32], g: &ConvGeometry, wanted: Wanted) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (k, pixels, co) = (g.patch(), g.out_pixels(), g.c_out);
    let single = ConvGeometry { batch: 1, ..*g };
    let per_image = g.c_in * g.height * g.width;
    let per_task = images_per_task(g.batch);
    let tasks = g.batch.div_ceil(per_task);
    let mut dx = wanted.input.then(|| vec![0.0; g.input_len()]);
    let mut dx_parts: Vec<Option<&mut [f32]>> = match dx.as_mut() {
        Some(dx) => dx.chunks_mut(per_task * per_image).map(Some).collect(),
        None => (0..tasks).map(|_| None).collect(),
    };
    let partial_dw_t: Vec<Option<Vec<f32>>> = dx_parts
        .par_iter_mut()
        .enumerate()
        .map(|(task, dx_part)| {
            let mut dw_t = wanted.weight.then(|| vec![0.0; k * co]);
            let mut cols = patch_scratch(g);
            let mut dcols = dx_part.is_some().then(|| patch_scratch(g));
            let images = task * per_task..((task + 1) * per_task).min(g.batch);
            for (i, n) in images.enumerate() {
                let dy_n = MatRef::row_major(&dy[n * co * pixels..][..co * pixels], co, pixels);
                if let Some(dw_t) = dw_t.as_mut() {
                    let cols_n = patches(&x[n * per_image..][..per_image], &single, &mut cols);
                    matmul_serial(dw_t, MatRef::row_major(cols_n, k, pixels), dy_n.t(), true);
                }
                if let (Some(dcols), Some(dx_part)) = (dcols.as_mut(), dx_part.as_mut()) {
                    let dx_n = &mut dx_part[i * per_image..][..per_image];
                    let w_t = MatRef::row_major(w, co, k).t();
                    if pointwise(g) {
                        matmul_serial(dx_n, w_t, dy_n, false);
                    } else {
                        matmul_serial(dcols, w_t, dy_n, false);
                        col2im_serial(dcols, &single, dx_n);
                    }
                }
            }
            dw_t
        })
        .collect();
    let dw = wanted.weight.then(|| {
        let mut dw = vec![0.0; co * k];
        for (t, part) in partial_dw_t.iter().flatten().enumerate() {
            add_transposed(part, k, co, &mut dw, t > 0);
        }
        dw
    });
    (dx, dw)
}
