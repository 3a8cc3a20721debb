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

use std::marker::PhantomData;
use std::ops::{Add, Div, Mul, Neg, Sub};

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
    if mode.winograd4() && narrow >= F4_MIN_CHANNELS && g.height.min(g.width) >= 4 && f4_tiles >= (F4_TILES_PER_CHANNEL * wide).max(F4_MIN_TILES) {
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

/// F(4x4, 3x3) needs this many channels each way, and at least as many tiles in the batch as the
/// wider side has channels, and this many in all: its 36 transformed filter matrices are 2.25
/// times F(2x2)'s, and each is packed and multiplied once per product, so with few tiles per
/// product the filters' memory traffic outweighs the 44% of multiply-adds it saves. Measured with
/// `examples/conv_parts` (batch 16 unless said, 2-core Zen 3; forward, backward in ms, best of 3),
/// with the transforms 8 tiles at a time:
/// - wins: 64 channels at 32x32 (1024 tiles) 5.1, 10.3 against im2col's 7.4, 13.1; 128 at 16x16
///   5.0, 9.1 against F(2x2)'s 6.5, 14.7; batch 32, 32 channels at 32x32 5.6, 9.4 against 7.6,
///   9.5; 96 to 32 channels at 32x32 14.5, 20 against 23.3, 28.3; 32 to 64 at 16x16 1.7, 2.9
///   against 2.0, 4.0; 64 channels at 8x8 (128 tiles) 1.0, 1.7 against 1.2, 2.4; one tile per
///   channel: batch 32, 128 channels at 8x8 2.5, 4.8 against F(2x2)'s 3.2, 6.3, 128 to 64 at 8x8
///   1.6, 3.0 against im2col's 2.4, 4.9, batch 64, 256 channels at 8x8 14.6, 30.6 against F(2x2)'s
///   20.5, 39.0;
/// - even: 32 channels at 16x16 (256 tiles) 0.61, 1.09 against 0.63, 1.19; 16 channels at 32x32
///   1.0, 1.5 either way (so 16 channels stay with im2col);
/// - losses: 32 channels at 8x8 (64 tiles) 0.28, 0.49 against 0.19, 0.41; a quarter of a tile per
///   channel, 256 at 8x8, against F(2x2) (6.5, 13.1 against 5.7, 11.8); 512 at 4x4 (18.2, 33.9
///   against 7.9, 20.6).
const F4_MIN_CHANNELS: usize = 32;
const F4_MIN_TILES: usize = 128;
const F4_TILES_PER_CHANNEL: usize = 1;

/// One tiling's transforms, each applied to a vector of values (one tile's, or [`Lanes`] of 8
/// tiles'): `M` outputs per tile side, `A = M + 2` inputs.
trait Transforms<const M: usize, const A: usize> {
    /// `Bᵀ v`.
    fn bt<V: Value>(v: [V; A]) -> [V; A];
    /// `B v`.
    fn b<V: Value>(v: [V; A]) -> [V; A];
    /// `G v`.
    fn g<V: Value>(v: [V; 3]) -> [V; A];
    /// `Gᵀ v`.
    fn gt<V: Value>(v: [V; A]) -> [V; 3];
    /// `Aᵀ v`.
    fn at<V: Value>(v: [V; A]) -> [V; M];
    /// `A v`.
    fn a<V: Value>(v: [V; M]) -> [V; A];
}

/// F(2x2, 3x3) at the points 0, 1, -1 and ∞.
struct F2;

impl Transforms<2, 4> for F2 {
    #[inline(always)]
    fn bt<V: Value>(v: [V; 4]) -> [V; 4] {
        [v[0] - v[2], v[1] + v[2], v[2] - v[1], v[1] - v[3]]
    }
    #[inline(always)]
    fn b<V: Value>(v: [V; 4]) -> [V; 4] {
        [v[0], v[1] - v[2] + v[3], v[1] + v[2] - v[0], -v[3]]
    }
    #[inline(always)]
    fn g<V: Value>(v: [V; 3]) -> [V; 4] {
        let half = (v[0] + v[2]) * 0.5;
        [v[0], half + v[1] * 0.5, half - v[1] * 0.5, v[2]]
    }
    #[inline(always)]
    fn gt<V: Value>(v: [V; 4]) -> [V; 3] {
        let (s, d) = ((v[1] + v[2]) * 0.5, (v[1] - v[2]) * 0.5);
        [v[0] + s, d, s + v[3]]
    }
    #[inline(always)]
    fn at<V: Value>(v: [V; 4]) -> [V; 2] {
        [v[0] + v[1] + v[2], v[1] - v[2] - v[3]]
    }
    #[inline(always)]
    fn a<V: Value>(v: [V; 2]) -> [V; 4] {
        [v[0], v[0] + v[1], v[0] - v[1], -v[1]]
    }
}

/// F(4x4, 3x3) at the points 0, 1, -1, 2, -2 and ∞.
struct F4;

impl Transforms<4, 6> for F4 {
    #[inline(always)]
    fn bt<V: Value>(v: [V; 6]) -> [V; 6] {
        let (p, q) = (v[4] - v[2] * 4.0, v[3] - v[1] * 4.0);
        let (r, s) = (v[4] - v[2], (v[3] - v[1]) * 2.0);
        [v[0] * 4.0 - v[2] * 5.0 + v[4], p + q, p - q, r + s, r - s, v[1] * 4.0 - v[3] * 5.0 + v[5]]
    }
    #[inline(always)]
    fn b<V: Value>(v: [V; 6]) -> [V; 6] {
        let (d12, d34) = (v[1] - v[2], v[3] - v[4]);
        [
            v[0] * 4.0,
            -(d12 * 4.0) - d34 * 2.0 + v[5] * 4.0,
            -(v[0] * 5.0) - (v[1] + v[2]) * 4.0 - (v[3] + v[4]),
            d12 + d34 * 2.0 - v[5] * 5.0,
            v[0] + v[1] + v[2] + v[3] + v[4],
            v[5],
        ]
    }
    #[inline(always)]
    fn g<V: Value>(v: [V; 3]) -> [V; 6] {
        let (outer, middle) = (v[0] + v[2], v[1]);
        let quarter = v[0] / 24.0 + v[2] / 6.0;
        [v[0] / 4.0, -(outer + middle) / 6.0, -(outer - middle) / 6.0, quarter + middle / 12.0, quarter - middle / 12.0, v[2]]
    }
    #[inline(always)]
    fn gt<V: Value>(v: [V; 6]) -> [V; 3] {
        let (s12, d12, s34, d34) = (v[1] + v[2], v[1] - v[2], v[3] + v[4], v[3] - v[4]);
        [v[0] / 4.0 - s12 / 6.0 + s34 / 24.0, -d12 / 6.0 + d34 / 12.0, -s12 / 6.0 + s34 / 6.0 + v[5]]
    }
    #[inline(always)]
    fn at<V: Value>(v: [V; 6]) -> [V; 4] {
        let (s12, d12, s34, d34) = (v[1] + v[2], v[1] - v[2], v[3] + v[4], v[3] - v[4]);
        [v[0] + s12 + s34, d12 + d34 * 2.0, s12 + s34 * 4.0, d12 + d34 * 8.0 + v[5]]
    }
    #[inline(always)]
    fn a<V: Value>(v: [V; 4]) -> [V; 6] {
        let (even, odd) = (v[0] + v[2], v[1] + v[3]);
        let (even2, odd2) = (v[0] + v[2] * 4.0, v[1] * 2.0 + v[3] * 8.0);
        [v[0], even + odd, even - odd, even2 + odd2, even2 - odd2, v[3]]
    }
}

/// What the transforms compute on: one value, or [`Lanes`].
trait Value: Copy + Add<Output = Self> + Sub<Output = Self> + Neg<Output = Self> + Mul<f32, Output = Self> + Div<f32, Output = Self> {}

impl Value for f32 {}

const LANES: usize = 8;

/// One value of `LANES` neighbouring tiles: the transforms on these are element-wise arithmetic on
/// a fixed-size array, which the compiler turns into vector instructions (the tile transforms took
/// more time than the GEMMs when they ran a tile at a time).
#[derive(Clone, Copy)]
struct Lanes([f32; LANES]);

macro_rules! lanes_op {
    ($trait:ident, $method:ident, $op:tt) => {
        impl $trait for Lanes {
            type Output = Self;
            #[inline(always)]
            fn $method(mut self, rhs: Self) -> Self {
                for l in 0..LANES {
                    self.0[l] = self.0[l] $op rhs.0[l];
                }
                self
            }
        }
    };
    ($trait:ident, $method:ident, $op:tt, f32) => {
        impl $trait<f32> for Lanes {
            type Output = Self;
            #[inline(always)]
            fn $method(mut self, rhs: f32) -> Self {
                for l in 0..LANES {
                    self.0[l] = self.0[l] $op rhs;
                }
                self
            }
        }
    };
}
lanes_op!(Add, add, +);
lanes_op!(Sub, sub, -);
lanes_op!(Mul, mul, *, f32);
lanes_op!(Div, div, /, f32);

impl Neg for Lanes {
    type Output = Self;
    #[inline(always)]
    fn neg(mut self) -> Self {
        for l in 0..LANES {
            self.0[l] = -self.0[l];
        }
        self
    }
}

impl Value for Lanes {}

impl Lanes {
    const ZERO: Self = Lanes([0.0; LANES]);

    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        Lanes(src[..LANES].try_into().expect("LANES values"))
    }

    #[inline(always)]
    fn store(self, dst: &mut [f32]) {
        dst[..LANES].copy_from_slice(&self.0);
    }

    /// The first `len < LANES` values of `src`, zeros after them (a band's last tiles).
    fn load_part(src: &[f32], len: usize) -> Self {
        let mut v = [0.0; LANES];
        v[..len].copy_from_slice(&src[..len]);
        Lanes(v)
    }

    /// Writes the first `len < LANES` values to `dst`.
    fn store_part(self, dst: &mut [f32], len: usize) {
        dst[..len].copy_from_slice(&self.0[..len]);
    }
}

/// One of a tiling's transforms, applied along one axis of a tile: `I` values in, `O` out.
trait Along<const I: usize, const O: usize> {
    fn along<V: Value>(v: [V; I]) -> [V; O];
}

/// `$name<T, M, A>` applies `T::$method` (`$i` values in, `$o` out) as an [`Along`].
macro_rules! along {
    ($name:ident, $method:ident, $i:tt, $o:tt) => {
        struct $name<T, const M: usize, const A: usize>(PhantomData<T>);

        impl<T: Transforms<M, A>, const M: usize, const A: usize> Along<$i, $o> for $name<T, M, A> {
            #[inline(always)]
            fn along<V: Value>(v: [V; $i]) -> [V; $o] {
                T::$method(v)
            }
        }
    };
}
along!(Bt, bt, A, A); // the input's tiles
along!(B, b, A, A); // the input gradient's tiles
along!(At, at, A, M); // the output's tiles
along!(OfA, a, M, A); // the output gradient's tiles
along!(G, g, 3, A); // the filters
along!(Gt, gt, A, 3); // the filters' gradient

/// `F m Fᵀ` for a tile `m` given as rows: `F` along each row, then along each column of the
/// result.
#[inline(always)]
fn both<const I: usize, const O: usize, F: Along<I, O>>(m: [[f32; I]; I]) -> [[f32; O]; O] {
    let mut rows = [[0.0; O]; I];
    for r in 0..I {
        rows[r] = F::along(m[r]);
    }
    let mut out = [[0.0; O]; O];
    for c in 0..O {
        let col = F::along(column(&rows, c));
        for r in 0..O {
            out[r][c] = col[r];
        }
    }
    out
}

/// Column `c` of `rows`.
#[inline(always)]
fn column<V: Value, const R: usize, const C: usize>(rows: &[[V; C]; R], c: usize) -> [V; R] {
    let mut v = [rows[0][c]; R];
    for r in 1..R {
        v[r] = rows[r][c];
    }
    v
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
/// 4 MB (a few images) keeps a group's transformed tiles in the L3 cache between the transform
/// that writes them and the products that read them; with 32 MB per buffer they went through
/// memory both ways. Best of 4 rounds, batch 32, forward and backward in ms (2-core Zen 3): 32
/// channels at 32x32 5.7, 9.4 -> 3.5, 6.8; 64 to 32 channels 10.1, 14.4 -> 6.2, 12.3; 50 images
/// of 64 to 96 channels at 35x35 (FID Inception's) 29.9, 48.8 -> 25.7, 44.9; small images the
/// same. (2 MB was no better.)
const BUDGET: usize = 1 << 20;

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
            let t = both::<3, A, G<T, M, A>>([[k[0], k[1], k[2]], [k[3], k[4], k[5]], [k[6], k[7], k[8]]]);
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

/// Tiles per band: a task transforms its plane's tiles this many at a time (whole rows of tiles),
/// so that the pieces it cuts them into stay in the L1/L2 cache.
const BAND: usize = 256;

/// How a plane's tiles are cut into bands: `rows` rows of `tw` tiles each (at most). A band's
/// tiles are cut into `S x S` pieces, `len` values apart (a multiple of `LANES`): value `(r, s)`
/// of the band's `k`-th tile is at `(r S + s) len + k`, so each value of `LANES` neighbouring
/// tiles lies in one run.
#[derive(Clone, Copy)]
struct Bands {
    rows: usize,
    len: usize,
}

impl Bands {
    fn new(grid: &Grid) -> Self {
        let rows = (BAND / grid.tw).clamp(1, grid.count * grid.th);
        Self { rows, len: (rows * grid.tw).next_multiple_of(LANES) }
    }

    /// `(first row of tiles, rows)` of each band of a plane.
    fn each(self, grid: &Grid) -> impl Iterator<Item = (usize, usize)> {
        let all = grid.count * grid.th;
        (0..all).step_by(self.rows).map(move |first| (first, self.rows.min(all - first)))
    }
}

/// Cuts planes into tiles and transforms them: the `S x S` tiles of plane `c` of images
/// `[first, first + count)` of `src[N][planes][h][w]`, `M` apart and starting `pad` before the
/// image (zeros outside it), each turned by `F` along both axes into the `A x A` values that go to
/// row `c` of every `dst_ξ[planes][T]`. Tile `t = (n th + i) tw + j`.
///
/// A task per plane index `c`, a band of tiles at a time: the band is cut into pieces (see [`Bands`]), then
/// [`transform_band`] transforms `LANES` tiles at once.
fn to_tiles<const M: usize, const S: usize, const A: usize, F: Along<S, A>>(src: &[f32], planes: usize, first: usize, grid: Grid, pad: usize, dst: &mut Stack) {
    let Grid { h, w, th, tw, all, .. } = grid;
    let plane = h * w;
    let bands = Bands::new(&grid);
    split_rows(dst).into_par_iter().with_min_len(per_task(A * A * all)).for_each(|(c, mut out)| {
        let mut pieces = scratch(S * S * bands.len);
        // One padded image row: `pad` zeros, the row, zeros to the last tile's end.
        let mut line = vec![0.0; M * tw + S];
        for (first_row, rows) in bands.each(&grid) {
            let tiles = rows * tw;
            for row in first_row..first_row + rows {
                let (n, i) = (row / th, row % th);
                let image = &src[((first + n) * planes + c) * plane..][..plane];
                let k0 = (row - first_row) * tw;
                for r in 0..S {
                    let y = (M * i + r).wrapping_sub(pad);
                    if y < h {
                        line[pad..pad + w].copy_from_slice(&image[y * w..][..w]);
                    } else {
                        line[pad..pad + w].fill(0.0);
                    }
                    for s in 0..S {
                        let piece = &mut pieces[(r * S + s) * bands.len + k0..][..tw];
                        for (v, tile) in piece.iter_mut().zip(line[s..].chunks_exact(M)) {
                            *v = tile[0];
                        }
                    }
                }
            }
            for piece in pieces.chunks_mut(bands.len) {
                piece[tiles..].fill(0.0);
            }
            transform_band::<S, A, F>(&pieces, bands.len, tiles, &mut out.parts, first_row * tw);
        }
    });
}

per_simd_level! {
    /// `F` along both axes of a band's tiles (`pieces` `len` apart, see [`Bands`]), `LANES` tiles
    /// at a time: value `(k, a)` of tile `t` goes to `out[k A + a][t0 + t]`.
    fn transform_band<const S: usize, const A: usize, F: Along<S, A>>(pieces: &[f32], len: usize, tiles: usize, out: &mut [&mut [f32]], t0: usize) {
        // Filled once: arrays made anew for each step were cleared with a `memset` each time.
        let mut tile = [Lanes::ZERO; S];
        let mut rows = [[Lanes::ZERO; A]; S];
        for k in (0..tiles).step_by(LANES) {
            let n = LANES.min(tiles - k);
            for r in 0..S {
                for s in 0..S {
                    tile[s] = Lanes::load(&pieces[(r * S + s) * len + k..]);
                }
                rows[r] = F::along(tile);
            }
            for a in 0..A {
                for (down, v) in F::along(column(&rows, a)).iter().enumerate() {
                    let run = &mut out[down * A + a][t0 + k..];
                    if n == LANES {
                        v.store(run);
                    } else {
                        v.store_part(run, n);
                    }
                }
            }
        }
    }
}

/// Row `c` of every matrix of a [`Stack`], as one writable handle per row index: each task of
/// [`to_tiles`] owns one.
struct Rows<'a> {
    parts: Vec<&'a mut [f32]>,
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
/// `A x A` values, each turned by `F` along both axes into `S x S` values that lie `M` apart,
/// starting `pad` before the image. They make up planes `[first, first + count)` of
/// `dst[N][planes][h][w]` (every value written, then added to where tiles overlap, `S > M`), plus
/// `bias[c]` (only with `S = M`: one tile per pixel); what falls outside the image is dropped.
///
/// A task per plane index `c`, a band of tiles at a time: [`untransform_band`] turns `LANES` tiles
/// at once into pieces (see [`Bands`]), which are then summed into the image rows.
fn from_tiles<const M: usize, const A: usize, const S: usize, F: Along<A, S>>(src: &Stack, planes: usize, first: usize, grid: Grid, pad: usize, bias: Option<&[f32]>, dst: &mut [f32]) {
    debug_assert!(bias.is_none() || S == M, "a bias goes with tiles that do not overlap");
    let Grid { h, w, th, tw, count, all } = grid;
    let plane = h * w;
    let bands = Bands::new(&grid);
    let mut per_plane: Vec<Vec<&mut [f32]>> = (0..planes).map(|_| Vec::with_capacity(count)).collect();
    for (nc, image) in dst[first * planes * plane..][..count * planes * plane].chunks_mut(plane).enumerate() {
        per_plane[nc % planes].push(image);
    }
    per_plane.into_par_iter().enumerate().with_min_len(per_task(A * A * all)).for_each(|(c, mut images)| {
        let add = bias.map_or(0.0, |b| b[c]);
        let mut pieces = scratch(S * S * bands.len);
        // One row of the tiles' values, `pad` before the image and to the last tile's end.
        let mut line = vec![0.0; M * tw + S];
        for (first_row, rows) in bands.each(&grid) {
            let tiles = rows * tw;
            let runs: Vec<&[f32]> = (0..A * A).map(|xi| src.run(xi, c, first_row * tw, tiles)).collect();
            untransform_band::<A, S, F>(&runs, tiles, &mut pieces, bands.len);
            for row in first_row..first_row + rows {
                let (n, i) = (row / th, row % th);
                let k0 = (row - first_row) * tw;
                for r in 0..S {
                    let y = (M * i + r).wrapping_sub(pad);
                    if y >= h {
                        continue;
                    }
                    line.fill(0.0);
                    for s in 0..S {
                        let piece = &pieces[(r * S + s) * bands.len + k0..][..tw];
                        for (tile, v) in line[s..].chunks_exact_mut(M).zip(piece) {
                            tile[0] += v;
                        }
                    }
                    let row = &mut images[n][y * w..][..w];
                    // The first tile row that reaches `y` writes it, the next one (tiles overlap
                    // by `S - M` rows) adds to it. Adding to a row never written would read it
                    // first: a fresh allocation's page is then mapped to the zero page, and the
                    // write that follows faults again and flushes every core's TLB (a batch of 10
                    // images of 147x147 ran 4 times slower).
                    if i == 0 || r >= S - M {
                        for (d, v) in row.iter_mut().zip(&line[pad..]) {
                            *d = v + add;
                        }
                    } else {
                        for (d, v) in row.iter_mut().zip(&line[pad..]) {
                            *d += v;
                        }
                    }
                }
            }
        }
    });
}

per_simd_level! {
    /// `F` along both axes of `tiles` tiles, `LANES` at a time: value `ξ = k A + a` of tile `t` is
    /// `runs[ξ][t]`; value `(r, s)` of the result goes to `pieces` (`len` apart, see [`Bands`]).
    fn untransform_band<const A: usize, const S: usize, F: Along<A, S>>(runs: &[&[f32]], tiles: usize, pieces: &mut [f32], len: usize) {
        // Filled once, as in `transform_band`.
        let mut tile = [Lanes::ZERO; A];
        let mut rows = [[Lanes::ZERO; S]; A];
        for k in (0..tiles).step_by(LANES) {
            let n = LANES.min(tiles - k);
            for r in 0..A {
                for a in 0..A {
                    let run = &runs[r * A + a][k..];
                    tile[a] = if n == LANES { Lanes::load(run) } else { Lanes::load_part(run, n) };
                }
                rows[r] = F::along(tile);
            }
            for s in 0..S {
                for (down, v) in F::along(column(&rows, s)).iter().enumerate() {
                    v.store(&mut pieces[(down * S + s) * len + k..]);
                }
            }
        }
    }
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
        to_tiles::<M, A, A, Bt<T, M, A>>(x, ci, first, grid, 1, &mut v);
        let mut m = Stack::new(xis, co, t);
        products(&mut m, false, |xi| filter(&u, g, xis, xi), |xi| v.mat(xi));
        from_tiles::<M, A, M, At<T, M, A>>(&m, co, first, grid, 0, bias, &mut y);
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
        to_tiles::<M, M, A, OfA<T, M, A>>(dy, co, first, grid, 0, &mut dm);
        let dm = &dm;
        if let Some(du) = du.as_mut() {
            // dUᵀ_ξ[C_in, C_out] = V_ξ[C_in, T] dM_ξᵀ[T, C_out], summed over image groups.
            let mut v = Stack::new(xis, ci, t);
            to_tiles::<M, A, A, Bt<T, M, A>>(x, ci, first, grid, 1, &mut v);
            products(du, first > 0, |xi| v.mat(xi), |xi| dm.mat(xi).t());
        }
        if let (Some(dx), Some(u)) = (dx.as_mut(), u.as_ref()) {
            // dV_ξ[C_in, T] = U_ξᵀ[C_in, C_out] dM_ξ[C_out, T], then dx = B dV Bᵀ over the tiles.
            let mut dv = Stack::new(xis, ci, t);
            products(&mut dv, false, |xi| filter(u, g, xis, xi).t(), |xi| dm.mat(xi));
            from_tiles::<M, A, A, B<T, M, A>>(&dv, ci, first, grid, 1, None, dx);
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
                    out[i * 9..][..9].iter_mut().zip(both::<A, 3, Gt<T, M, A>>(tile).iter().flatten()).for_each(|(d, v)| *d = *v);
                }
            }
        });
        dw
    });
    (dx, dw)
}
