//! 3x3 "same" convolutions (stride 1, padding 1) with few channels, computed straight from a
//! zero-padded copy of each image: no patch matrix, no packing of it.
//!
//! With the image padded to rows of `Wp = W + 2` values, output pixel `(y, x)` at position
//! `q = y Wp + x` reads padded input `q + ki Wp + kj` through tap `(ki, kj)`: every tap is the
//! same image shifted by a constant, so a vector of 8 neighbouring positions reads 8 neighbouring
//! inputs. Positions `x >= W` of each row are computed and thrown away (2 of every `W + 2`).
//!
//! A tile is [`CB`] output channels by [`V`] vectors of positions: for each input channel and tap,
//! `V` vector loads, `CB` broadcast weights and `CB V` multiply-adds into accumulators that stay
//! in registers. With 16 to 64 channels the patch-matrix GEMM spends as long building and packing
//! its operand as multiplying it (`conv_parts`).
//!
//! The input gradient of such a convolution is the same convolution of the output gradient with
//! the kernel flipped and its channel axes swapped, so it runs on the same tiles.

use rayon::prelude::*;

use super::geometry::ConvGeometry;
use super::scratch::scratch;

const LANES: usize = 8;
/// Output channels per tile.
const CB: usize = 4;
/// Vectors of positions per tile.
const V: usize = 2;
/// Positions per tile.
const TILE: usize = V * LANES;
const TAPS: usize = 9;

/// Whether `g` is a convolution this module computes: 3x3, stride 1, padding 1, output as large
/// as the input, and channel counts in whole tiles each way (the input gradient swaps them).
pub fn applies(g: &ConvGeometry) -> bool {
    has_fma() && g.kernel == [3, 3] && g.stride == [1, 1] && g.pad == [1, 1] && g.dilation == [1, 1] && g.out == [g.height, g.width] && g.c_out % CB == 0 && g.c_in % CB == 0
}

/// Whether the CPU multiplies and adds in one instruction: the tiles' `mul_add` is one `vfmadd`
/// there, and a call into libm per value on x86-64 CPUs without FMA (older than 2013).
fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("fma");
    #[cfg(target_arch = "aarch64")]
    return true;
    #[allow(unreachable_code)]
    false
}

/// The padded layout of one image's planes.
#[derive(Clone, Copy)]
struct Padded {
    height: usize,
    width: usize,
    /// `W + 2`.
    row: usize,
    /// Positions computed per plane: `H (W + 2)` rounded up to whole tiles.
    positions: usize,
    /// Values per padded plane: every position plus the largest tap offset.
    plane: usize,
}

impl Padded {
    fn new(height: usize, width: usize) -> Self {
        let row = width + 2;
        let positions = (height * row).div_ceil(TILE) * TILE;
        Self { height, width, row, positions, plane: positions + 2 * row + 2 }
    }

    /// Writes `channels` planes of `x` into `xp`, zeros around them.
    fn pad(&self, x: &[f32], channels: usize, xp: &mut [f32]) {
        let (h, w) = (self.height, self.width);
        for (src, dst) in x.chunks_exact(h * w).zip(xp.chunks_exact_mut(self.plane)).take(channels) {
            dst[..self.row + 1].fill(0.0);
            for (y, line) in src.chunks_exact(w).enumerate() {
                let at = (y + 1) * self.row + 1;
                dst[at..at + w].copy_from_slice(line);
                dst[at + w..at + w + 2].fill(0.0);
            }
            dst[(h + 1) * self.row + 1..].fill(0.0);
        }
    }
}

/// Weights in tile order: `[C_out / CB][C_in][tap][CB]`, from `weight(o, i, tap)`.
fn pack(c_out: usize, c_in: usize, weight: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
    let mut packed = Vec::with_capacity(c_out * c_in * TAPS);
    for block in 0..c_out / CB {
        for i in 0..c_in {
            for tap in 0..TAPS {
                packed.extend((0..CB).map(|j| weight(block * CB + j, i, tap)));
            }
        }
    }
    packed
}

/// `y = conv(x, w) (+ bias)` for `g` ([`applies`]).
pub fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
    let (co, ci) = (g.c_out, g.c_in);
    let packed = pack(co, ci, |o, i, tap| w[(o * ci + i) * TAPS + tap]);
    same_conv(x, &packed, bias, g.batch, ci, co, g.height, g.width)
}

/// The input gradient `dx[N, C_in, H, W]` of [`forward`] for the output gradient `dy`.
pub fn input_grad(dy: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (co, ci) = (g.c_out, g.c_in);
    let packed = pack(ci, co, |i, o, tap| w[(o * ci + i) * TAPS + TAPS - 1 - tap]);
    same_conv(dy, &packed, None, g.batch, co, ci, g.height, g.width)
}

/// The convolution of `x[N, c_in, H, W]` with packed weights, image by image, a contiguous range of
/// images per thread.
#[allow(clippy::too_many_arguments)]
fn same_conv(x: &[f32], packed: &[f32], bias: Option<&[f32]>, batch: usize, c_in: usize, c_out: usize, height: usize, width: usize) -> Vec<f32> {
    let layout = Padded::new(height, width);
    let (in_image, out_image) = (c_in * height * width, c_out * height * width);
    let per_task = batch.div_ceil(rayon::current_num_threads().max(1)).max(1);
    let mut y = vec![0.0; batch * out_image];
    y.par_chunks_mut(per_task * out_image).enumerate().for_each(|(task, ys)| {
        let mut xp = scratch(c_in * layout.plane);
        let mut tiles_out = scratch(CB * layout.positions);
        for (i, y_n) in ys.chunks_exact_mut(out_image).enumerate() {
            let n = task * per_task + i;
            layout.pad(&x[n * in_image..][..in_image], c_in, &mut xp);
            for block in 0..c_out / CB {
                let w = &packed[block * c_in * TAPS * CB..][..c_in * TAPS * CB];
                tiles(&xp, w, c_in, layout.plane, layout.row, &mut tiles_out);
                for j in 0..CB {
                    let o = block * CB + j;
                    let b = bias.map_or(0.0, |b| b[o]);
                    let plane = &mut y_n[o * height * width..][..height * width];
                    let computed = &tiles_out[j * layout.positions..][..layout.positions];
                    for (line, src) in plane.chunks_exact_mut(width).zip(computed.chunks(layout.row)) {
                        line.iter_mut().zip(src).for_each(|(d, s)| *d = s + b);
                    }
                }
            }
        }
    });
    y
}

per_simd_level! {
    /// Every tile of one block of [`CB`] output channels: `out[j, q] = Σ_i Σ_tap w[i, tap, j]
    /// xp[i, q + offset(tap)]` for the positions `q` of `out`'s rows.
    fn tiles(xp: &[f32], w: &[f32], c_in: usize, plane: usize, row: usize, out: &mut [f32]) {
        let positions = out.len() / CB;
        let offsets = [0, 1, 2, row, row + 1, row + 2, 2 * row, 2 * row + 1, 2 * row + 2];
        for q0 in (0..positions).step_by(TILE) {
            let mut acc = [[[0.0f32; LANES]; V]; CB];
            for (i, w_i) in w.chunks_exact(TAPS * CB).enumerate().take(c_in) {
                let window = &xp[i * plane + q0..][..TILE + 2 * row + 2];
                for (tap, w_t) in w_i.chunks_exact(CB).enumerate() {
                    let from = &window[offsets[tap]..][..TILE];
                    let mut xs = [[0.0f32; LANES]; V];
                    for v in 0..V {
                        xs[v].copy_from_slice(&from[v * LANES..][..LANES]);
                    }
                    for j in 0..CB {
                        let wj = w_t[j];
                        for v in 0..V {
                            for l in 0..LANES {
                                acc[j][v][l] = wj.mul_add(xs[v][l], acc[j][v][l]);
                            }
                        }
                    }
                }
            }
            for j in 0..CB {
                for v in 0..V {
                    out[j * positions + q0 + v * LANES..][..LANES].copy_from_slice(&acc[j][v]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution by its definition, one multiply-add at a time.
    fn naive(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
        let (h, wd) = (g.height as isize, g.width as isize);
        let mut y = vec![0.0; g.batch * g.c_out * g.height * g.width];
        for n in 0..g.batch {
            for o in 0..g.c_out {
                for oy in 0..h {
                    for ox in 0..wd {
                        let mut s = bias.map_or(0.0, |b| b[o]) as f64;
                        for i in 0..g.c_in {
                            for ki in 0..3isize {
                                for kj in 0..3isize {
                                    let (iy, ix) = (oy + ki - 1, ox + kj - 1);
                                    if iy >= 0 && iy < h && ix >= 0 && ix < wd {
                                        let xv = x[((n * g.c_in + i) * g.height + iy as usize) * g.width + ix as usize];
                                        s += (xv * w[((o * g.c_in + i) * 3 + ki as usize) * 3 + kj as usize]) as f64;
                                    }
                                }
                            }
                        }
                        y[((n * g.c_out + o) * g.height + oy as usize) * g.width + ox as usize] = s as f32;
                    }
                }
            }
        }
        y
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32).map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    #[test]
    fn direct_convolution_matches_its_definition() {
        for (batch, c_in, c_out, height, width) in [(3, 4, 8, 5, 7), (2, 16, 16, 16, 16), (5, 8, 4, 4, 4), (1, 12, 20, 9, 3)] {
            let g = ConvGeometry { batch, c_in, height, width, c_out, kernel: [3, 3], stride: [1, 1], pad: [1, 1], dilation: [1, 1], out: [height, width] };
            assert!(applies(&g));
            let x = values(g.input_len(), 1);
            let w = values(c_out * c_in * 9, 2);
            let b = values(c_out, 3);
            let y = forward(&x, &w, Some(&b), &g);
            let want = naive(&x, &w, Some(&b), &g);
            let err = y.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err < 1e-4, "{g:?}: forward off by {err}");
            // The input gradient is the adjoint: <conv(x), dy> = <x, input_grad(dy)>.
            let dy = values(g.output_len(), 4);
            let dx = input_grad(&dy, &w, &g);
            let lhs: f64 = forward(&x, &w, None, &g).iter().zip(&dy).map(|(a, b)| (a * b) as f64).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| (a * b) as f64).sum();
            assert!((lhs - rhs).abs() < 1e-3 * (1.0 + lhs.abs()), "{g:?}: input gradient {rhs} against {lhs}");
        }
    }
}
