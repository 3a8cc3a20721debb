//! 3x3 max and average pooling of NCHW planes, as the FID Inception uses them: the taps that fall
//! on padding never count (PyTorch pads a max pool with -inf, and pytorch-fid's average pools
//! divide by the in-image tap count). Each output sums (or maxes) its taps in PyTorch's order, row
//! by row and left to right, so the results are PyTorch's bit for bit (a NaN tap is skipped by the
//! max, where PyTorch would propagate it); the loops run over a whole output row at a time, which
//! vectorises.

use rayon::prelude::*;

use super::per_task;
use crate::PoolKind;

/// The shape of a 3x3 pooling: `planes` (batch x channels) planes of `height x width`.
#[derive(Debug, Clone, Copy)]
pub struct PoolShape {
    pub planes: usize,
    pub height: usize,
    pub width: usize,
    pub stride: usize,
    pub pad: usize,
}

const K: usize = 3;

impl PoolShape {
    /// Output side for an input side: `(side + 2 pad - 3) / stride + 1`.
    fn out(&self, side: usize) -> usize {
        (side + 2 * self.pad).saturating_sub(K) / self.stride + 1
    }

    /// `[out_height, out_width]`.
    pub fn out_size(&self) -> [usize; 2] {
        [self.out(self.height), self.out(self.width)]
    }

    /// Whether every window holds at least one tap of the image (`pad < 3`), with a valid stride.
    pub fn is_valid(&self) -> bool {
        self.stride > 0 && self.pad < K && self.height + 2 * self.pad >= K && self.width + 2 * self.pad >= K
    }

    /// The input taps `[lo, hi)` of output position `o` along a side of `side` pixels.
    fn taps(&self, o: usize, side: usize) -> (usize, usize) {
        let start = (o * self.stride) as isize - self.pad as isize;
        (start.max(0) as usize, ((start + K as isize) as usize).min(side))
    }
}

/// `y[planes, oh, ow]` from `x[planes, height, width]`.
pub fn pool3x3(x: &[f32], s: &PoolShape, kind: PoolKind) -> Vec<f32> {
    assert!(s.is_valid(), "pool3x3: {s:?} has windows outside the image");
    let plane = s.height * s.width;
    assert_eq!(x.len(), s.planes * plane);
    let [oh, ow] = s.out_size();
    let mut y = vec![0.0f32; s.planes * oh * ow];
    y.par_chunks_mut(oh * ow).zip(x.par_chunks(plane)).with_min_len(per_task(plane)).for_each(|(y, x)| pool_plane(y, x, s, kind));
    y
}

per_simd_level! {
    fn pool_plane(y: &mut [f32], x: &[f32], s: &PoolShape, kind: PoolKind) {
        let ow = s.out_size()[1];
        // Output columns whose three taps are all inside the image: one loop over them per tap.
        let inner_lo = s.pad.div_ceil(s.stride).min(ow);
        let inner_hi = if s.width + s.pad >= K { ((s.width + s.pad - K) / s.stride + 1).min(ow) } else { 0 }.max(inner_lo);
        let init = match kind {
            PoolKind::Max => f32::NEG_INFINITY,
            PoolKind::Mean => 0.0,
        };
        for (oy, out) in y.chunks_exact_mut(ow).enumerate() {
            let (y_lo, y_hi) = s.taps(oy, s.height);
            out.fill(init);
            for iy in y_lo..y_hi {
                let row = &x[iy * s.width..][..s.width];
                for kx in 0..K {
                if inner_lo < inner_hi {
                    let inner = &mut out[inner_lo..inner_hi];
                    // An inner column's taps start at `ox stride - pad >= 0`.
                    let taps = &row[inner_lo * s.stride + kx - s.pad..];
                    match (kind, s.stride) {
                        (PoolKind::Max, 1) => inner.iter_mut().zip(taps).for_each(|(o, &v)| *o = o.max(v)),
                        (PoolKind::Mean, 1) => inner.iter_mut().zip(taps).for_each(|(o, &v)| *o += v),
                        (PoolKind::Max, _) => inner.iter_mut().zip(taps.iter().step_by(s.stride)).for_each(|(o, &v)| *o = o.max(v)),
                        (PoolKind::Mean, _) => inner.iter_mut().zip(taps.iter().step_by(s.stride)).for_each(|(o, &v)| *o += v),
                    }
                }
                    for ox in (0..inner_lo).chain(inner_hi..ow) {
                        let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                        if ix >= 0 && (ix as usize) < s.width {
                            let v = row[ix as usize];
                            out[ox] = match kind {
                                PoolKind::Max => out[ox].max(v),
                                PoolKind::Mean => out[ox] + v,
                            };
                        }
                    }
                }
            }
            if kind == PoolKind::Mean {
                let rows = y_hi - y_lo;
                for (ox, o) in out.iter_mut().enumerate() {
                    let (x_lo, x_hi) = s.taps(ox, s.width);
                    *o /= (rows * (x_hi - x_lo)) as f32;
                }
            }
        }
    }
}
