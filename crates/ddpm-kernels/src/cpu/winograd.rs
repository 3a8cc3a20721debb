//! 3x3 stride-1 "same" convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray
//! 2016). Each 4x4 input tile `d` (tiles two pixels apart) and 3x3 filter `g` give the 2x2 output
//! `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Over a batch that is 16 GEMMs, one per position `ξ` of the 4x4
//! transformed tile, `M_ξ[C_out, T] = U_ξ[C_out, C_in] V_ξ[C_in, T]` for `T` tiles: 2.25x fewer
//! multiply-adds than the im2col GEMM, on a transformed input 4/9 the size of the patch matrix.
//!
//! The gradients are the same 16 products transposed: with `dM = A dY Aᵀ` per output tile,
//! `dU_ξ = dM_ξ V_ξᵀ` gives `dW = Gᵀ dU G`, and `dV_ξ = U_ξᵀ dM_ξ` gives `dX = B dV Bᵀ`, added
//! over the overlapping input tiles. Every product is laid out so both of its operands are read
//! along rows.

use rayon::prelude::*;

use super::geometry::{ConvGeometry, ConvMode, batch_groups};
use super::scratch::{Scratch, scratch};
use super::matmul::{MatRef, matmul_serial};
use super::per_task;

/// Positions of a transformed 4x4 tile.
const XI: usize = 16;

/// Whether `g` is a convolution this module computes: 3x3, stride 1, no dilation, padding 1 on
/// every side (output as large as the input), with enough channels that the transforms pay off.
/// `DDPM_CONV=im2col` or `by-image` turns it off (to compare).
pub fn applies(g: &ConvGeometry) -> bool {
    g.kernel == [3, 3]
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.pad == [1, 1]
        && g.out == [g.height, g.width]
        && g.c_in >= MIN_CHANNELS
        && g.c_out >= MIN_CHANNELS
        && ConvMode::get().winograd()
}

/// Below this many input or output channels the tile transforms cost more than the saved products
/// (measured on a 2-core Zen 4: at 16 and 32 channels im2col is faster, at 64 the two are even
/// and whole U-Nets with Winograd at 64 channels were no faster, from 128 Winograd wins).
const MIN_CHANNELS: usize = 128;

/// Tile counts `(th, tw)` per image: output tiles of 2x2.
fn tiles(g: &ConvGeometry) -> (usize, usize) {
    (g.height.div_ceil(2), g.width.div_ceil(2))
}

/// At most this many values in one transformed buffer: the batch is cut into groups of images.
const BUDGET: usize = 1 << 23;

fn image_groups(g: &ConvGeometry) -> impl Iterator<Item = (usize, usize)> {
    let (th, tw) = tiles(g);
    batch_groups(g.batch, XI * g.c_in.max(g.c_out) * th * tw, BUDGET)
}

/// `Bᵀ v` for a 4-vector.
#[inline(always)]
fn bt(v: [f32; 4]) -> [f32; 4] {
    [v[0] - v[2], v[1] + v[2], v[2] - v[1], v[1] - v[3]]
}

/// `B v` (the transpose of [`bt`]).
#[inline(always)]
fn b(v: [f32; 4]) -> [f32; 4] {
    [v[0], v[1] - v[2] + v[3], v[1] + v[2] - v[0], -v[3]]
}

/// `G v` for a 3-vector.
#[inline(always)]
fn gm(v: [f32; 3]) -> [f32; 4] {
    let half = 0.5 * (v[0] + v[2]);
    [v[0], half + 0.5 * v[1], half - 0.5 * v[1], v[2]]
}

/// `Gᵀ v` for a 4-vector.
#[inline(always)]
fn gt(v: [f32; 4]) -> [f32; 3] {
    let (s, d) = (0.5 * (v[1] + v[2]), 0.5 * (v[1] - v[2]));
    [v[0] + s, d, s + v[3]]
}

/// `Aᵀ v` for a 4-vector.
#[inline(always)]
fn at(v: [f32; 4]) -> [f32; 2] {
    [v[0] + v[1] + v[2], v[1] - v[2] - v[3]]
}

/// `A v` for a 2-vector.
#[inline(always)]
fn a(v: [f32; 2]) -> [f32; 4] {
    [v[0], v[0] + v[1], v[0] - v[1], -v[1]]
}

/// `L m Rᵀ` for a tile `m` given as rows: `rows` applies `R` to each row, `cols` applies `L` to
/// each column of the result.
#[inline(always)]
fn both<const R: usize, const C: usize, const R2: usize, const C2: usize>(m: [[f32; C]; R], rows: impl Fn([f32; C]) -> [f32; C2], cols: impl Fn([f32; R]) -> [f32; R2]) -> [[f32; C2]; R2] {
    let t: [[f32; C2]; R] = m.map(rows);
    let mut out = [[0.0; C2]; R2];
    for c in 0..C2 {
        let col = cols(std::array::from_fn(|r| t[r][c]));
        for r in 0..R2 {
            out[r][c] = col[r];
        }
    }
    out
}

/// The transformed filters `U[C_out][ξ][C_in] = G g Gᵀ`; [`filter`] views `U_ξ`.
fn filters(w: &[f32], g: &ConvGeometry) -> Scratch {
    let ci = g.c_in;
    let mut u = scratch(g.c_out * XI * ci);
    u.par_chunks_mut(XI * ci).enumerate().with_min_len(per_task(XI * ci)).for_each(|(o, dst)| {
        for i in 0..ci {
            let k = &w[(o * ci + i) * 9..][..9];
            let t = both([[k[0], k[1], k[2]], [k[3], k[4], k[5]], [k[6], k[7], k[8]]], gm, gm);
            for (xi, v) in t.iter().flatten().enumerate() {
                dst[xi * ci + i] = *v;
            }
        }
    });
    u
}

/// `U_ξ[C_out, C_in]` of [`filters`]' output.
fn filter<'a>(u: &'a [f32], g: &ConvGeometry, xi: usize) -> MatRef<'a> {
    MatRef { data: &u[xi * g.c_in..], rows: g.c_out, cols: g.c_in, row_stride: XI * g.c_in, col_stride: 1 }
}

/// The four input rows `2i-1 ..= 2i+2` of a plane, each with a zero column before it and zeros
/// after it up to `2 tw + 2` values (zero rows outside the image).
fn padded_rows(src: &[f32], w: usize, h: usize, i: usize, rows: &mut [Vec<f32>; 4]) {
    for (r, row) in rows.iter_mut().enumerate() {
        let y = (2 * i + r) as isize - 1;
        row.fill(0.0);
        if y >= 0 && (y as usize) < h {
            row[1..=w].copy_from_slice(&src[y as usize * w..][..w]);
        }
    }
}

/// The transformed input tiles `V[ξ][C_in][T] = Bᵀ d B` of images `[first, first + count)`, tile
/// `t = (n th + i) tw + j` reading input rows `2i-1 ..= 2i+2` and columns `2j-1 ..= 2j+2` (zero
/// outside the image). A row of tiles at a time: `Bᵀ` down the four rows as whole vectors, then
/// `B` along them, each `ξ` written as one run of `tw` values.
fn input_tiles(x: &[f32], g: &ConvGeometry, first: usize, count: usize, v: &mut [f32]) {
    let (th, tw) = tiles(g);
    let (h, w, ci) = (g.height, g.width, g.c_in);
    let t_all = count * th * tw;
    let plane = h * w;
    let width = 2 * tw + 2;
    // One task per input channel: it writes that channel's row of every V_ξ.
    split_rows(v, ci, t_all).into_par_iter().with_min_len(per_task(XI * t_all)).for_each(|(c, mut dst)| {
        let mut rows: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0.0; width]);
        let mut cols: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0.0; width]);
        for n in 0..count {
            let src = &x[((first + n) * ci + c) * plane..][..plane];
            for i in 0..th {
                padded_rows(src, w, h, i, &mut rows);
                let [r0, r1, r2, r3] = &rows;
                for q in 0..width {
                    let col = bt([r0[q], r1[q], r2[q], r3[q]]);
                    for (k, value) in col.into_iter().enumerate() {
                        cols[k][q] = value;
                    }
                }
                let t0 = (n * th + i) * tw;
                for (r, col) in cols.iter().enumerate() {
                    let [o0, o1, o2, o3] = dst.runs(r * 4, t0, tw);
                    for j in 0..tw {
                        let d = bt([col[2 * j], col[2 * j + 1], col[2 * j + 2], col[2 * j + 3]]);
                        (o0[j], o1[j], o2[j], o3[j]) = (d[0], d[1], d[2], d[3]);
                    }
                }
            }
        }
    });
}

/// Row `c` of every one of the 16 matrices `[XI][rows][len]` in `buf`, as one writable handle per
/// row index: each task of [`input_tiles`] owns one.
struct Rows<'a> {
    parts: Vec<&'a mut [f32]>,
}

impl Rows<'_> {
    /// `[start, start + len)` of the rows of `ξ = first .. first + 4`.
    fn runs(&mut self, first: usize, start: usize, len: usize) -> [&mut [f32]; 4] {
        let [a, b, c, d] = &mut self.parts[first..first + 4] else { unreachable!("16 parts") };
        [&mut a[start..start + len], &mut b[start..start + len], &mut c[start..start + len], &mut d[start..start + len]]
    }
}

fn split_rows(buf: &mut [f32], rows: usize, len: usize) -> Vec<(usize, Rows<'_>)> {
    let mut per_row: Vec<Vec<&mut [f32]>> = (0..rows).map(|_| Vec::with_capacity(XI)).collect();
    for matrix in buf.chunks_mut(rows * len) {
        for (r, row) in matrix.chunks_mut(len).enumerate() {
            per_row[r].push(row);
        }
    }
    per_row.into_iter().enumerate().map(|(r, parts)| (r, Rows { parts })).collect()
}

/// `y[n, co] (+ bias)` from `M[ξ][C_out][T]`: `Aᵀ m A` per tile, cut at the image's edge. A row
/// of tiles at a time: `A` along each run of `tw` values, then `Aᵀ` down as whole rows.
fn output_tiles(m: &[f32], g: &ConvGeometry, first: usize, count: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    let (th, tw) = tiles(g);
    let (h, w, co) = (g.height, g.width, g.c_out);
    let t_all = count * th * tw;
    let plane = h * w;
    let out = &mut y[first * co * plane..][..count * co * plane];
    out.par_chunks_mut(plane).enumerate().with_min_len(per_task(plane)).for_each(|(nc, dst)| {
        let (n, o) = (nc / co, nc % co);
        let add = bias.map_or(0.0, |b| b[o]);
        let mut rows: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0.0; 2 * tw]);
        for i in 0..th {
            let t0 = (n * th + i) * tw;
            for (r, row) in rows.iter_mut().enumerate() {
                let run = |s: usize| &m[((r * 4 + s) * co + o) * t_all + t0..][..tw];
                let (m0, m1, m2, m3) = (run(0), run(1), run(2), run(3));
                for j in 0..tw {
                    let [p, q] = at([m0[j], m1[j], m2[j], m3[j]]);
                    (row[2 * j], row[2 * j + 1]) = (p, q);
                }
            }
            let [q0, q1, q2, q3] = &rows;
            // Output rows 2i and 2i + 1 (the second cut off at the image's edge), written together.
            let (upper, lower) = dst[2 * i * w..].split_at_mut(w);
            let lower = if 2 * i + 1 < h { Some(&mut lower[..w]) } else { None };
            match lower {
                Some(lower) => {
                    for xx in 0..w {
                        let [top, bottom] = at([q0[xx], q1[xx], q2[xx], q3[xx]]);
                        (upper[xx], lower[xx]) = (top + add, bottom + add);
                    }
                }
                None => {
                    for (xx, value) in upper.iter_mut().enumerate() {
                        *value = at([q0[xx], q1[xx], q2[xx], q3[xx]])[0] + add;
                    }
                }
            }
        }
    });
}

/// `y[N, C_out, H, W]` of the convolution `g` (see [`applies`]).
pub fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
    let u = filters(w, g);
    let (th, tw) = tiles(g);
    let mut y = vec![0.0; g.batch * g.c_out * g.height * g.width];
    for (first, count) in image_groups(g) {
        let t_all = count * th * tw;
        let mut v = scratch(XI * g.c_in * t_all);
        input_tiles(x, g, first, count, &mut v);
        let mut m = scratch(XI * g.c_out * t_all);
        products(&mut m, false, |xi| filter(&u, g, xi), |xi| MatRef::row_major(&v[xi * g.c_in * t_all..][..g.c_in * t_all], g.c_in, t_all));
        output_tiles(&m, g, first, count, bias, &mut y);
    }
    y
}

/// The 16 products `dst_ξ = lhs(ξ) rhs(ξ)` (`+=` with `accumulate`), one per task.
fn products<'a>(dst: &mut [f32], accumulate: bool, lhs: impl Fn(usize) -> MatRef<'a> + Sync, rhs: impl Fn(usize) -> MatRef<'a> + Sync) {
    let len = dst.len() / XI;
    dst.par_chunks_mut(len).enumerate().for_each(|(xi, out)| matmul_serial(out, lhs(xi), rhs(xi), accumulate));
}

/// The output gradient's tiles `dM[ξ][T][C_out] = A dy Aᵀ` (one row of `C_out` per tile).
fn output_grad_tiles(dy: &[f32], g: &ConvGeometry, first: usize, count: usize, dm: &mut [f32]) {
    let (th, tw) = tiles(g);
    let (h, w, co) = (g.height, g.width, g.c_out);
    let plane = h * w;
    let t_all = count * th * tw;
    // One task per tile row of one image: it writes rows `t` of every dM_ξ for its tiles.
    let per_row = tw * co;
    let mut parts: Vec<Vec<&mut [f32]>> = (0..count * th).map(|_| Vec::with_capacity(XI)).collect();
    for matrix in dm.chunks_mut(t_all * co) {
        for (k, chunk) in matrix.chunks_mut(per_row).enumerate() {
            parts[k].push(chunk);
        }
    }
    parts.into_par_iter().enumerate().with_min_len(per_task(XI * per_row)).for_each(|(ni, mut dst)| {
        let (n, i) = (ni / th, ni % th);
        for o in 0..co {
            let src = &dy[((first + n) * co + o) * plane..][..plane];
            for j in 0..tw {
                let d: [[f32; 2]; 2] = std::array::from_fn(|r| {
                    let yy = 2 * i + r;
                    std::array::from_fn(|s| {
                        let xx = 2 * j + s;
                        if yy < h && xx < w { src[yy * w + xx] } else { 0.0 }
                    })
                });
                for (xi, val) in both(d, a, a).iter().flatten().enumerate() {
                    dst[xi][j * co + o] = *val;
                }
            }
        }
    });
}

/// Gradients of [`forward`] for `dy` (input and/or weight).
pub fn backward(x: &[f32], w: &[f32], dy: &[f32], g: &ConvGeometry, want_input: bool, want_weight: bool) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (co, ci) = (g.c_out, g.c_in);
    let (th, tw) = tiles(g);
    let u = want_input.then(|| filters(w, g));
    let mut du = want_weight.then(|| scratch(XI * ci * co));
    let mut dx = want_input.then(|| vec![0.0; g.batch * ci * g.height * g.width]);
    for (first, count) in image_groups(g) {
        let t_all = count * th * tw;
        let mut dm = scratch(XI * t_all * co);
        output_grad_tiles(dy, g, first, count, &mut dm);
        if let Some(du) = du.as_mut() {
            // dUᵀ_ξ[C_in, C_out] = V_ξ[C_in, T] dM_ξ[T, C_out], summed over image groups.
            let mut v = scratch(XI * ci * t_all);
            input_tiles(x, g, first, count, &mut v);
            products(du, first > 0, |xi| MatRef::row_major(&v[xi * ci * t_all..][..ci * t_all], ci, t_all), |xi| MatRef::row_major(&dm[xi * t_all * co..][..t_all * co], t_all, co));
        }
        if let (Some(dx), Some(u)) = (dx.as_mut(), u.as_ref()) {
            // dVᵀ_ξ[T, C_in] = dM_ξ[T, C_out] U_ξ[C_out, C_in].
            let mut dv = scratch(XI * t_all * ci);
            products(&mut dv, false, |xi| MatRef::row_major(&dm[xi * t_all * co..][..t_all * co], t_all, co), |xi| filter(u, g, xi));
            input_grad_tiles(&dv, g, first, count, dx);
        }
    }
    let dw = du.map(|du| {
        // dU is [ξ][C_in][C_out]: a task takes a block of output channels, so that for each input
        // channel it reads 16 short runs along memory instead of 16 values a matrix apart.
        const BLOCK: usize = 16;
        let mut dw = vec![0.0; co * ci * 9];
        dw.par_chunks_mut(BLOCK * ci * 9).enumerate().for_each(|(blk, dst)| {
            let o0 = blk * BLOCK;
            for i in 0..ci {
                let runs: [&[f32]; XI] = std::array::from_fn(|xi| &du[(xi * ci + i) * co + o0..][..dst.len() / (ci * 9)]);
                for (k, out) in dst.chunks_mut(ci * 9).enumerate() {
                    let tile: [[f32; 4]; 4] = std::array::from_fn(|r| std::array::from_fn(|s| runs[r * 4 + s][k]));
                    out[i * 9..][..9].iter_mut().zip(both(tile, gt, gt).iter().flatten()).for_each(|(d, v)| *d = *v);
                }
            }
        });
        dw
    });
    (dx, dw)
}

/// Adds `B dV Bᵀ` of every tile onto `dx` (images `[first, first + count)`), dropping what falls
/// on the padding. Tiles overlap by two rows and columns, so one task owns one image; a tile's
/// `dV` rows are read whole (all channels), along memory.
fn input_grad_tiles(dv: &[f32], g: &ConvGeometry, first: usize, count: usize, dx: &mut [f32]) {
    let (th, tw) = tiles(g);
    let (h, w, ci) = (g.height, g.width, g.c_in);
    let plane = h * w;
    let t_all = count * th * tw;
    let images = &mut dx[first * ci * plane..][..count * ci * plane];
    images.par_chunks_mut(ci * plane).enumerate().for_each(|(n, dst)| {
        for i in 0..th {
            for j in 0..tw {
                let t = (n * th + i) * tw + j;
                let rows: [&[f32]; XI] = std::array::from_fn(|xi| &dv[(xi * t_all + t) * ci..][..ci]);
                for c in 0..ci {
                    let tile: [[f32; 4]; 4] = std::array::from_fn(|r| std::array::from_fn(|s| rows[r * 4 + s][c]));
                    let d = both(tile, b, b);
                    let out = &mut dst[c * plane..][..plane];
                    for (r, row) in d.iter().enumerate() {
                        let yy = (2 * i + r) as isize - 1;
                        if yy < 0 || yy as usize >= h {
                            continue;
                        }
                        for (s, val) in row.iter().enumerate() {
                            let xx = (2 * j + s) as isize - 1;
                            if xx >= 0 && (xx as usize) < w {
                                out[yy as usize * w + xx as usize] += val;
                            }
                        }
                    }
                }
            }
        }
    });
}
