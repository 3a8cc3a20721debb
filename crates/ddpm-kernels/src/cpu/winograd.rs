//! 3x3 stride-1 "same" convolutions by Winograd's minimal filtering F(m x m, 3x3) (Lavin and Gray
//! 2016), for m = 2 and m = 4. Each `a x a` input tile `d` (`a = m + 2`, tiles `m` pixels apart)
//! and 3x3 filter `g` give the `m x m` output `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Over a batch that is
//! `a²` GEMMs, one per position `ξ` of the transformed tile, `M_ξ[C_out, T] = U_ξ[C_out, C_in]
//! V_ξ[C_in, T]` for `T` tiles:
//! - F(2x2, 3x3): 16 products for 4 outputs, 2.25x fewer multiply-adds than the im2col GEMM, on a
//!   transformed input 4/9 the size of the patch matrix;
//! - F(4x4, 3x3): 36 products for 16 outputs, 4x fewer, on a transformed input 1/4 the size of the
//!   patch matrix. Its transforms carry factors up to 8 and 1/24, so its f32 round-off is a few
//!   times F(2x2)'s (the kernel tests bound both).
//!
//! The gradients are the same products transposed: with `dM = A dY Aᵀ` per output tile,
//! `dU_ξ = dM_ξ V_ξᵀ` gives `dW = Gᵀ dU G`, and `dV_ξ = U_ξᵀ dM_ξ` gives `dX = B dV Bᵀ`, added
//! over the overlapping input tiles. Every product is laid out so both of its operands are read
//! along rows.

use rayon::prelude::*;

use super::geometry::{ConvGeometry, ConvMode, batch_groups};
use super::scratch::{Scratch, scratch};
use super::matmul::{MatRef, matmul_serial};
use super::per_task;

/// The tilings this module runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiling {
    /// F(2x2, 3x3).
    F2,
    /// F(4x4, 3x3).
    F4,
}

/// The tiling that computes `g`, if any: 3x3, stride 1, no dilation, padding 1 on every side
/// (output as large as the input), with enough channels that the transforms pay off.
/// `DDPM_CONV=im2col` or `by-image` turns Winograd off, `winograd2` keeps it to F(2x2) (to compare).
pub fn tiling(g: &ConvGeometry) -> Option<Tiling> {
    let same_3x3 = g.kernel == [3, 3] && g.stride == [1, 1] && g.dilation == [1, 1] && g.pad == [1, 1] && g.out == [g.height, g.width];
    let mode = ConvMode::get();
    if !same_3x3 || !mode.winograd() {
        return None;
    }
    let (narrow, wide) = (g.c_in.min(g.c_out), g.c_in.max(g.c_out));
    let f4_tiles = Grid::new::<4>(g, g.batch).all;
    if mode.winograd4() && narrow >= F4_MIN_CHANNELS && g.height.min(g.width) >= 4 && f4_tiles >= F4_TILES_PER_CHANNEL * wide {
        Some(Tiling::F4)
    } else if narrow >= F2_MIN_CHANNELS {
        Some(Tiling::F2)
    } else {
        None
    }
}

/// Below this many input or output channels F(2x2)'s tile transforms cost more than the saved
/// products (measured on 2-core Zen 3 and Zen 4 machines: at 16 and 32 channels im2col is faster,
/// at 64 the two are even, from 128 F(2x2) wins).
const F2_MIN_CHANNELS: usize = 128;

/// F(4x4, 3x3) needs this many channels each way, and this many tiles in the batch per channel
/// (of the wider side): its 36 transformed filter matrices are 2.25 times F(2x2)'s, and each is
/// packed and multiplied once per product, so with few tiles per product the filters' memory
/// traffic outweighs the 44% of multiply-adds it saves. Measured with `examples/conv_parts`
/// (batch 16, 2-core Zen 3; forward, backward in ms): 64 channels at 32x32 (1024 tiles) 8.1, 15.1
/// against im2col's 9.1, 17.3; 128 at 16x16 (256 tiles) 6.2, 11.3 against F(2x2)'s 6.5, 14.7;
/// 256 at 8x8 (64 tiles) 6.5, 13.1 against F(2x2)'s 5.7, 11.8; 512 at 4x4 (16 tiles) 18.2, 33.9
/// against 7.9, 20.6.
const F4_MIN_CHANNELS: usize = 64;
const F4_TILES_PER_CHANNEL: usize = 2;

/// One tiling's transforms, each applied to a vector: `M` outputs per tile side, `A = M + 2`
/// inputs.
trait Transforms<const M: usize, const A: usize> {
    /// `Bᵀ v`.
    fn bt(v: [f32; A]) -> [f32; A];
    /// `B v`.
    fn b(v: [f32; A]) -> [f32; A];
    /// `G v`.
    fn g(v: [f32; 3]) -> [f32; A];
    /// `Gᵀ v`.
    fn gt(v: [f32; A]) -> [f32; 3];
    /// `Aᵀ v`.
    fn at(v: [f32; A]) -> [f32; M];
    /// `A v`.
    fn a(v: [f32; M]) -> [f32; A];
}

/// F(2x2, 3x3) at the points 0, 1, -1 and ∞.
struct F2;

impl Transforms<2, 4> for F2 {
    #[inline(always)]
    fn bt(v: [f32; 4]) -> [f32; 4] {
        [v[0] - v[2], v[1] + v[2], v[2] - v[1], v[1] - v[3]]
    }
    #[inline(always)]
    fn b(v: [f32; 4]) -> [f32; 4] {
        [v[0], v[1] - v[2] + v[3], v[1] + v[2] - v[0], -v[3]]
    }
    #[inline(always)]
    fn g(v: [f32; 3]) -> [f32; 4] {
        let half = 0.5 * (v[0] + v[2]);
        [v[0], half + 0.5 * v[1], half - 0.5 * v[1], v[2]]
    }
    #[inline(always)]
    fn gt(v: [f32; 4]) -> [f32; 3] {
        let (s, d) = (0.5 * (v[1] + v[2]), 0.5 * (v[1] - v[2]));
        [v[0] + s, d, s + v[3]]
    }
    #[inline(always)]
    fn at(v: [f32; 4]) -> [f32; 2] {
        [v[0] + v[1] + v[2], v[1] - v[2] - v[3]]
    }
    #[inline(always)]
    fn a(v: [f32; 2]) -> [f32; 4] {
        [v[0], v[0] + v[1], v[0] - v[1], -v[1]]
    }
}

/// F(4x4, 3x3) at the points 0, 1, -1, 2, -2 and ∞.
struct F4;

impl Transforms<4, 6> for F4 {
    #[inline(always)]
    fn bt(v: [f32; 6]) -> [f32; 6] {
        let (p, q) = (v[4] - 4.0 * v[2], v[3] - 4.0 * v[1]);
        let (r, s) = (v[4] - v[2], 2.0 * (v[3] - v[1]));
        [4.0 * v[0] - 5.0 * v[2] + v[4], p + q, p - q, r + s, r - s, 4.0 * v[1] - 5.0 * v[3] + v[5]]
    }
    #[inline(always)]
    fn b(v: [f32; 6]) -> [f32; 6] {
        let (d12, d34) = (v[1] - v[2], v[3] - v[4]);
        [
            4.0 * v[0],
            -4.0 * d12 - 2.0 * d34 + 4.0 * v[5],
            -5.0 * v[0] - 4.0 * (v[1] + v[2]) - (v[3] + v[4]),
            d12 + 2.0 * d34 - 5.0 * v[5],
            v[0] + v[1] + v[2] + v[3] + v[4],
            v[5],
        ]
    }
    #[inline(always)]
    fn g(v: [f32; 3]) -> [f32; 6] {
        let (outer, middle) = (v[0] + v[2], v[1]);
        let quarter = v[0] / 24.0 + v[2] / 6.0;
        [v[0] / 4.0, -(outer + middle) / 6.0, -(outer - middle) / 6.0, quarter + middle / 12.0, quarter - middle / 12.0, v[2]]
    }
    #[inline(always)]
    fn gt(v: [f32; 6]) -> [f32; 3] {
        let (s12, d12, s34, d34) = (v[1] + v[2], v[1] - v[2], v[3] + v[4], v[3] - v[4]);
        [v[0] / 4.0 - s12 / 6.0 + s34 / 24.0, -d12 / 6.0 + d34 / 12.0, -s12 / 6.0 + s34 / 6.0 + v[5]]
    }
    #[inline(always)]
    fn at(v: [f32; 6]) -> [f32; 4] {
        let (s12, d12, s34, d34) = (v[1] + v[2], v[1] - v[2], v[3] + v[4], v[3] - v[4]);
        [v[0] + s12 + s34, d12 + 2.0 * d34, s12 + 4.0 * s34, d12 + 8.0 * d34 + v[5]]
    }
    #[inline(always)]
    fn a(v: [f32; 4]) -> [f32; 6] {
        let (even, odd) = (v[0] + v[2], v[1] + v[3]);
        let (even2, odd2) = (v[0] + 4.0 * v[2], 2.0 * v[1] + 8.0 * v[3]);
        [v[0], even + odd, even - odd, even2 + odd2, even2 - odd2, v[3]]
    }
}

/// `L m Rᵀ` for a tile `m` given as rows: `rows` applies `R` to each row, `cols` applies `L` to
/// each column of the result.
#[inline(always)]
fn both<const R: usize, const C: usize, const R2: usize, const C2: usize>(m: [[f32; C]; R], rows: impl Fn([f32; C]) -> [f32; C2], cols: impl Fn([f32; R]) -> [f32; R2]) -> [[f32; C2]; R2] {
    let mut t = [[0.0; C2]; R];
    for r in 0..R {
        t[r] = rows(m[r]);
    }
    let mut out = [[0.0; C2]; R2];
    for c in 0..C2 {
        let mut column = [0.0; R];
        for r in 0..R {
            column[r] = t[r][c];
        }
        let col = cols(column);
        for r in 0..R2 {
            out[r][c] = col[r];
        }
    }
    out
}

/// `[parts[0][at], parts[1][at], ...]` (a plain loop: `array::map` is not always inlined, and a
/// call per value keeps the loops around it from being vectorised).
#[inline(always)]
fn gather<const N: usize>(parts: &[&[f32]; N], at: usize) -> [f32; N] {
    let mut v = [0.0; N];
    for k in 0..N {
        v[k] = parts[k][at];
    }
    v
}

/// Where a convolution's tiles lie on its images: `M x M` output tiles, so `(th, tw)` tiles per
/// image and `all` in a group of `count` images.
#[derive(Clone, Copy)]
struct Grid {
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
    count: usize,
    all: usize,
}

impl Grid {
    fn new<const M: usize>(g: &ConvGeometry, count: usize) -> Self {
        let (th, tw) = (g.height.div_ceil(M), g.width.div_ceil(M));
        Self { h: g.height, w: g.width, th, tw, count, all: count * th * tw }
    }
}

/// At most this many values in one transformed buffer: the batch is cut into groups of images.
const BUDGET: usize = 1 << 23;

fn image_groups<const M: usize, const A: usize>(g: &ConvGeometry) -> impl Iterator<Item = (usize, usize)> {
    let tiles = Grid::new::<M>(g, 1).all;
    batch_groups(g.batch, A * A * g.c_in.max(g.c_out) * tiles, BUDGET)
}

/// `a²` matrices of `rows x cols` values, one per position `ξ`, each followed by `PAD` unused
/// values.
struct Stack {
    data: Scratch,
    rows: usize,
    cols: usize,
}

/// Matrices a power of two apart would put the `a²` runs that a task reads or writes at one
/// position into one cache set (36 of them into an 8-way set for F(4x4)); a cache line between
/// them spreads those runs over the sets.
const PAD: usize = 16;

impl Stack {
    fn new(xis: usize, rows: usize, cols: usize) -> Self {
        Self { data: scratch(xis * (rows * cols + PAD)), rows, cols }
    }

    fn stride(&self) -> usize {
        self.rows * self.cols + PAD
    }

    fn mat(&self, xi: usize) -> MatRef<'_> {
        MatRef::row_major(&self.data[xi * self.stride()..][..self.rows * self.cols], self.rows, self.cols)
    }

    /// `[start, start + len)` of row `row` of matrix `ξ`.
    fn run(&self, xi: usize, row: usize, start: usize, len: usize) -> &[f32] {
        &self.data[xi * self.stride() + row * self.cols + start..][..len]
    }
}

/// The transformed filters `U[C_out][ξ][C_in] = G g Gᵀ`; [`filter`] views `U_ξ`.
fn filters<const M: usize, const A: usize, T: Transforms<M, A>>(w: &[f32], g: &ConvGeometry) -> Scratch {
    let (ci, xis) = (g.c_in, A * A);
    let mut u = scratch(g.c_out * xis * ci);
    u.par_chunks_mut(xis * ci).enumerate().with_min_len(per_task(xis * ci)).for_each(|(o, dst)| {
        for i in 0..ci {
            let k = &w[(o * ci + i) * 9..][..9];
            let t = both([[k[0], k[1], k[2]], [k[3], k[4], k[5]], [k[6], k[7], k[8]]], T::g, T::g);
            for (xi, v) in t.iter().flatten().enumerate() {
                dst[xi * ci + i] = *v;
            }
        }
    });
    u
}

/// `U_ξ[C_out, C_in]` of [`filters`]' output, `xis` positions per tile.
fn filter<'a>(u: &'a [f32], g: &ConvGeometry, xis: usize, xi: usize) -> MatRef<'a> {
    MatRef { data: &u[xi * g.c_in..], rows: g.c_out, cols: g.c_in, row_stride: xis * g.c_in, col_stride: 1 }
}

/// Cuts planes into tiles and transforms them: the `S x S` tiles of plane `c` of images
/// `[first, first + count)` of `src[N][planes][h][w]`, `M` apart and starting `pad` before the
/// image (zeros outside it), each turned by `f` along both axes into the `A x A` values that go to
/// row `c` of every `dst_ξ[planes][T]`. Tile `t = (n th + i) tw + j`.
///
/// A task per plane index `c`. For each row of tiles, the `S` input rows (padded) are transformed
/// down as whole rows, then along each of the `A` results; each `ξ` gets a run of `tw` values.
fn to_tiles<const M: usize, const S: usize, const A: usize>(src: &[f32], planes: usize, first: usize, grid: Grid, pad: usize, f: impl Fn([f32; S]) -> [f32; A] + Sync, dst: &mut Stack) {
    let Grid { h, w, th, tw, count, all } = grid;
    let plane = h * w;
    let len = M * (tw - 1) + S;
    split_rows(dst).into_par_iter().with_min_len(per_task(A * A * all)).for_each(|(c, mut out)| {
        let mut rows: [Vec<f32>; S] = std::array::from_fn(|_| vec![0.0; len]);
        let mut cols: [Vec<f32>; A] = std::array::from_fn(|_| vec![0.0; len]);
        for n in 0..count {
            let image = &src[((first + n) * planes + c) * plane..][..plane];
            for i in 0..th {
                for (r, row) in rows.iter_mut().enumerate() {
                    let y = (M * i + r).wrapping_sub(pad);
                    if y < h {
                        row[..pad].fill(0.0);
                        row[pad..pad + w].copy_from_slice(&image[y * w..][..w]);
                        row[pad + w..].fill(0.0);
                    } else {
                        row.fill(0.0);
                    }
                }
                {
                    let rows: [&[f32]; S] = std::array::from_fn(|r| &rows[r][..len]);
                    let mut cols: [&mut [f32]; A] = cols.each_mut().map(|col| &mut col[..len]);
                    for q in 0..len {
                        for (col, v) in cols.iter_mut().zip(f(gather(&rows, q))) {
                            col[q] = v;
                        }
                    }
                }
                let t0 = (n * th + i) * tw;
                for (k, col) in cols.iter().enumerate() {
                    let mut runs: [&mut [f32]; A] = out.runs(k * A, t0, tw);
                    for j in 0..tw {
                        let tile: &[f32; S] = col[M * j..][..S].try_into().expect("S values");
                        for (run, v) in runs.iter_mut().zip(f(*tile)) {
                            run[j] = v;
                        }
                    }
                }
            }
        }
    });
}

/// Row `c` of every matrix of a [`Stack`], as one writable handle per row index: each task of
/// [`to_tiles`] owns one.
struct Rows<'a> {
    parts: Vec<&'a mut [f32]>,
}

impl Rows<'_> {
    /// `[start, start + len)` of the rows of `ξ = first .. first + A`.
    fn runs<const A: usize>(&mut self, first: usize, start: usize, len: usize) -> [&mut [f32]; A] {
        let mut parts = self.parts[first..first + A].iter_mut();
        std::array::from_fn(|_| &mut parts.next().expect("A parts")[start..start + len])
    }
}

fn split_rows(stack: &mut Stack) -> Vec<(usize, Rows<'_>)> {
    let (rows, cols, stride) = (stack.rows, stack.cols, stack.stride());
    let mut per_row: Vec<Vec<&mut [f32]>> = (0..rows).map(|_| Vec::new()).collect();
    for matrix in stack.data.chunks_mut(stride) {
        for (r, row) in matrix[..rows * cols].chunks_mut(cols).enumerate() {
            per_row[r].push(row);
        }
    }
    per_row.into_iter().enumerate().map(|(r, parts)| (r, Rows { parts })).collect()
}

/// The inverse of [`to_tiles`]' layout: row `c` of every `src_ξ[planes][T]` is a plane's tiles of
/// `A x A` values, each turned by `f` along both axes into `S x S` values that lie `M` apart,
/// starting `pad` before the image. Where tiles overlap (`S > M`) their values add up; what falls
/// outside the image is dropped. Writes planes `[first, first + count)` of `dst[N][planes][h][w]`
/// (plus `bias[c]`), every value of them.
///
/// A task per plane. For each row of tiles, `f` along each of the `A` rows of runs, then down the
/// whole rows, into `S` rows of sums; the first `M` of them are complete once the next row of
/// tiles starts, and the rest carry over.
fn from_tiles<const M: usize, const A: usize, const S: usize>(src: &Stack, planes: usize, first: usize, grid: Grid, pad: usize, f: impl Fn([f32; A]) -> [f32; S] + Sync, bias: Option<&[f32]>, dst: &mut [f32]) {
    let Grid { h, w, th, tw, count, .. } = grid;
    let plane = h * w;
    let len = M * (tw - 1) + S;
    let out = &mut dst[first * planes * plane..][..count * planes * plane];
    out.par_chunks_mut(plane).enumerate().with_min_len(per_task(plane)).for_each(|(nc, image)| {
        let (n, c) = (nc / planes, nc % planes);
        let add = bias.map_or(0.0, |b| b[c]);
        let mut rows: [Vec<f32>; A] = std::array::from_fn(|_| vec![0.0; len]);
        let mut sums: [Vec<f32>; S] = std::array::from_fn(|_| vec![0.0; len]);
        for i in 0..th {
            let t0 = (n * th + i) * tw;
            for (r, row) in rows.iter_mut().enumerate() {
                let runs: [&[f32]; A] = std::array::from_fn(|s| src.run(r * A + s, c, t0, tw));
                row.fill(0.0);
                for j in 0..tw {
                    let part: &mut [f32; S] = (&mut row[M * j..][..S]).try_into().expect("S values");
                    for (p, v) in part.iter_mut().zip(f(gather(&runs, j))) {
                        *p += v;
                    }
                }
            }
            {
                let rows: [&[f32]; A] = std::array::from_fn(|r| &rows[r][..len]);
                let mut sums: [&mut [f32]; S] = sums.each_mut().map(|sum| &mut sum[..len]);
                for q in 0..len {
                    for (sum, v) in sums.iter_mut().zip(f(gather(&rows, q))) {
                        sum[q] += v;
                    }
                }
            }
            // Rows `M i - pad ..`: the first `M` are complete (all of them after the last row of
            // tiles).
            let done = if i + 1 == th { S } else { M };
            for (r, sum) in sums.iter().take(done).enumerate() {
                let y = (M * i + r).wrapping_sub(pad);
                if y < h {
                    for (d, v) in image[y * w..][..w].iter_mut().zip(&sum[pad..pad + w]) {
                        *d = v + add;
                    }
                }
            }
            sums.rotate_left(M);
            for sum in sums.iter_mut().skip(S - M) {
                sum.fill(0.0);
            }
        }
    });
}

/// `y[N, C_out, H, W]` of the convolution `g` by `tiling` (see [`tiling`]).
pub fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeometry, tiling: Tiling) -> Vec<f32> {
    match tiling {
        Tiling::F2 => forward_by::<2, 4, F2>(x, w, bias, g),
        Tiling::F4 => forward_by::<4, 6, F4>(x, w, bias, g),
    }
}

fn forward_by<const M: usize, const A: usize, T: Transforms<M, A>>(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
    let (co, ci, xis) = (g.c_out, g.c_in, A * A);
    let u = filters::<M, A, T>(w, g);
    let mut y = vec![0.0; g.batch * co * g.height * g.width];
    for (first, count) in image_groups::<M, A>(g) {
        let grid = Grid::new::<M>(g, count);
        let t = grid.all;
        let mut v = Stack::new(xis, ci, t);
        to_tiles::<M, A, A>(x, ci, first, grid, 1, T::bt, &mut v);
        let mut m = Stack::new(xis, co, t);
        products(&mut m, false, |xi| filter(&u, g, xis, xi), |xi| v.mat(xi));
        from_tiles::<M, A, M>(&m, co, first, grid, 0, T::at, bias, &mut y);
    }
    y
}

/// The products `dst_ξ = lhs(ξ) rhs(ξ)` (`+=` with `accumulate`), one per task.
fn products<'a>(dst: &mut Stack, accumulate: bool, lhs: impl Fn(usize) -> MatRef<'a> + Sync, rhs: impl Fn(usize) -> MatRef<'a> + Sync) {
    let (len, stride) = (dst.rows * dst.cols, dst.stride());
    dst.data.par_chunks_mut(stride).enumerate().for_each(|(xi, out)| matmul_serial(&mut out[..len], lhs(xi), rhs(xi), accumulate));
}

/// Gradients of [`forward`] for `dy` (input and/or weight).
pub fn backward(x: &[f32], w: &[f32], dy: &[f32], g: &ConvGeometry, tiling: Tiling, want_input: bool, want_weight: bool) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    match tiling {
        Tiling::F2 => backward_by::<2, 4, F2>(x, w, dy, g, want_input, want_weight),
        Tiling::F4 => backward_by::<4, 6, F4>(x, w, dy, g, want_input, want_weight),
    }
}

fn backward_by<const M: usize, const A: usize, T: Transforms<M, A>>(x: &[f32], w: &[f32], dy: &[f32], g: &ConvGeometry, want_input: bool, want_weight: bool) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (co, ci, xis) = (g.c_out, g.c_in, A * A);
    let u = want_input.then(|| filters::<M, A, T>(w, g));
    let mut du = want_weight.then(|| Stack::new(xis, ci, co));
    let mut dx = want_input.then(|| vec![0.0; g.batch * ci * g.height * g.width]);
    for (first, count) in image_groups::<M, A>(g) {
        let grid = Grid::new::<M>(g, count);
        let t = grid.all;
        // The output gradient's tiles dM_ξ[C_out, T] = A dy Aᵀ.
        let mut dm = Stack::new(xis, co, t);
        to_tiles::<M, M, A>(dy, co, first, grid, 0, T::a, &mut dm);
        let dm = &dm;
        if let Some(du) = du.as_mut() {
            // dUᵀ_ξ[C_in, C_out] = V_ξ[C_in, T] dM_ξᵀ[T, C_out], summed over image groups.
            let mut v = Stack::new(xis, ci, t);
            to_tiles::<M, A, A>(x, ci, first, grid, 1, T::bt, &mut v);
            products(du, first > 0, |xi| v.mat(xi), |xi| dm.mat(xi).t());
        }
        if let (Some(dx), Some(u)) = (dx.as_mut(), u.as_ref()) {
            // dV_ξ[C_in, T] = U_ξᵀ[C_in, C_out] dM_ξ[C_out, T], then dx = B dV Bᵀ over the tiles.
            let mut dv = Stack::new(xis, ci, t);
            products(&mut dv, false, |xi| filter(u, g, xis, xi).t(), |xi| dm.mat(xi));
            from_tiles::<M, A, A>(&dv, ci, first, grid, 1, T::b, None, dx);
        }
    }
    let dw = du.map(|du| {
        // dU is [ξ][C_in][C_out]: a task takes a block of output channels, so that for each input
        // channel it reads `a²` short runs along memory instead of values a matrix apart.
        const BLOCK: usize = 16;
        let mut dw = vec![0.0; co * ci * 9];
        dw.par_chunks_mut(BLOCK * ci * 9).enumerate().for_each(|(blk, dst)| {
            let o0 = blk * BLOCK;
            let outputs = dst.len() / (ci * 9);
            for i in 0..ci {
                let runs: [[&[f32]; A]; A] = std::array::from_fn(|r| std::array::from_fn(|s| du.run(r * A + s, i, o0, outputs)));
                for (k, out) in dst.chunks_mut(ci * 9).enumerate() {
                    let mut tile = [[0.0; A]; A];
                    for (row, parts) in tile.iter_mut().zip(&runs) {
                        *row = gather(parts, k);
                    }
                    out[i * 9..][..9].iter_mut().zip(both(tile, T::gt, T::gt).iter().flatten()).for_each(|(d, v)| *d = *v);
                }
            }
        });
        dw
    });
    (dx, dw)
}
