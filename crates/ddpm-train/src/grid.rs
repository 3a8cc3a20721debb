//! Pictures people look at: sample grids, 2-D scatter plots and the loss curve, as PNG.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{Result, TrainError};

fn save(img: &RgbImage, path: &Path) -> Result<()> {
    let tmp = path.with_extension("tmp.png");
    img.save(&tmp).map_err(|e| TrainError::Io { path: tmp.clone(), message: e.to_string() })?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::Io { path: path.to_path_buf(), message: e.to_string() })
}

/// The smallest side of an image tile in a grid: small images are enlarged by an integer factor
/// (nearest neighbour, so pixels stay sharp) until their shorter side is at least this.
pub const MIN_TILE: usize = 64;

/// The integer factor that brings an `h` x `w` image to tiles of at least [`MIN_TILE`] pixels.
pub fn tile_scale(h: usize, w: usize) -> usize {
    MIN_TILE.div_ceil(h.min(w).max(1)).max(1)
}

/// Writes samples as a PNG: images (`item_shape` `[C, H, W]`, values in [-1, 1]) as a square-ish
/// grid with 2-pixel gaps, each enlarged by [`tile_scale`] (like torchvision's `make_grid` after a
/// nearest-neighbour resize); 2-D points (`[2]`) as a scatter plot of [-1.5, 1.5]^2; sequences
/// (`[C, L]`) as a grid of line plots, one colour per channel, each panel scaled to its range.
pub fn write_grid(path: &Path, values: &[f64], item_shape: &[usize]) -> Result<()> {
    if item_shape.len() == 2 {
        return save(&sequence_panels(values, item_shape[0], item_shape[1]), path);
    }
    if item_shape.len() == 1 {
        let (w, h) = (384u32, 384u32);
        let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
        for p in values.chunks(item_shape[0].max(1)) {
            let (x, y) = (p[0], p.get(1).copied().unwrap_or(0.0));
            let (px, py) = (((x / 1.5 + 1.0) * 0.5 * w as f64) as i64, ((1.0 - (y / 1.5 + 1.0) * 0.5) * h as f64) as i64);
            if (0..w as i64).contains(&px) && (0..h as i64).contains(&py) {
                img.put_pixel(px as u32, py as u32, Rgb([30, 60, 200]));
            }
        }
        return save(&img, path);
    }
    let (c, hh, ww) = (item_shape[0], item_shape[1], item_shape[2]);
    let n = values.len() / (c * hh * ww);
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols.max(1));
    let gap = 2;
    let s = tile_scale(hh, ww);
    let (th, tw) = (hh * s, ww * s);
    let (w, h) = ((cols * (tw + gap) + gap) as u32, (rows * (th + gap) + gap) as u32);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let to_u8 = |v: f64| (((v + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
    for i in 0..n {
        let (r, q) = (i / cols, i % cols);
        let base = i * c * hh * ww;
        for y in 0..th {
            for x in 0..tw {
                let at = |ch: usize| to_u8(values[base + ch.min(c - 1) * hh * ww + (y / s) * ww + x / s]);
                let px = Rgb([at(0), at(1), at(2)]);
                img.put_pixel((gap + q * (tw + gap) + x) as u32, (gap + r * (th + gap) + y) as u32, px);
            }
        }
    }
    save(&img, path)
}

/// `progress.png` of a run: the first row of every sample grid `samples/step-NNNNNNN.png` up to
/// `upto` (the same seeds at each step, oldest at the top), stacked, so one picture shows how the
/// samples formed. Rebuilt from the grids each time, so a resumed run's picture has each step once.
pub fn write_progress(samples: &Path, path: &Path, upto: usize, item_shape: &[usize]) -> Result<()> {
    if item_shape.len() != 3 {
        return Ok(());
    }
    let tile_h = (item_shape[1] * tile_scale(item_shape[1], item_shape[2])) as u32;
    let mut grids: Vec<(usize, std::path::PathBuf)> = std::fs::read_dir(samples)
        .map_err(|e| TrainError::Io { path: samples.to_path_buf(), message: e.to_string() })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let step = p.file_name()?.to_str()?.strip_prefix("step-")?.strip_suffix(".png")?.parse().ok()?;
            Some((step, p))
        })
        .filter(|(step, _)| *step <= upto)
        .collect();
    grids.sort();
    let mut bands: Vec<RgbImage> = Vec::new();
    for (_, p) in &grids {
        let grid = image::open(p).map_err(|e| TrainError::Io { path: p.clone(), message: e.to_string() })?.to_rgb8();
        // The first row of tiles, below the grid's 2-pixel top gap.
        let h = tile_h.min(grid.height().saturating_sub(2));
        bands.push(image::imageops::crop_imm(&grid, 0, 2, grid.width(), h).to_image());
    }
    if bands.is_empty() {
        return Ok(());
    }
    let gap = 2u32;
    let width = bands.iter().map(|b| b.width()).max().unwrap_or(0);
    let height = bands.iter().map(|b| b.height() + gap).sum::<u32>() + gap;
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let mut y = gap;
    for b in &bands {
        image::imageops::replace(&mut img, b, 0, i64::from(y));
        y += b.height() + gap;
    }
    save(&img, path)
}

fn sequence_panels(values: &[f64], channels: usize, length: usize) -> RgbImage {
    let colours = [[30u8, 60, 200], [200, 40, 40], [40, 150, 60], [150, 80, 180]];
    let n = values.len() / (channels * length).max(1);
    let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
    let rows = n.div_ceil(cols);
    let (pw, ph, gap) = (160usize, 90usize, 6usize);
    let mut img = RgbImage::from_pixel((cols * (pw + gap) + gap) as u32, (rows * (ph + gap) + gap) as u32, Rgb([255, 255, 255]));
    for (i, item) in values.chunks(channels * length).enumerate().take(n) {
        let (ox, oy) = (gap + (i % cols) * (pw + gap), gap + (i / cols) * (ph + gap));
        for x in 0..pw {
            img.put_pixel((ox + x) as u32, (oy + ph - 1) as u32, Rgb([210, 210, 210]));
        }
        let (lo, hi) = item.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let span = (hi - lo).max(1e-9);
        for (c, series) in item.chunks(length).enumerate() {
            let colour = Rgb(colours[c % colours.len()]);
            let at = |k: usize| -> (f64, f64) {
                (ox as f64 + k as f64 / (length.max(2) - 1) as f64 * (pw - 1) as f64, oy as f64 + (1.0 - (series[k] - lo) / span) * (ph - 2) as f64)
            };
            for k in 1..length {
                let (a, b) = (at(k - 1), at(k));
                let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) as usize).max(1);
                for j in 0..=steps {
                    let f = j as f64 / steps as f64;
                    img.put_pixel((a.0 + (b.0 - a.0) * f) as u32, (a.1 + (b.1 - a.1) * f) as u32, colour);
                }
            }
        }
    }
    img
}

/// Plots `loss` (and `loss_ema`) over `step` from a metrics JSONL file as a PNG line chart (log
/// scale). Does nothing when there are fewer than two points.
pub fn write_loss_curve(metrics: &Path, path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(metrics).map_err(|e| TrainError::Io { path: metrics.to_path_buf(), message: e.to_string() })?;
    let points: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_f64()?, v["loss_ema"].as_f64()?)))
        .filter(|(_, l)| *l > 0.0)
        .collect();
    if points.len() < 2 {
        return Ok(());
    }
    let (w, h, m) = (640u32, 360u32, 30.0);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let (s0, s1) = (points[0].0, points.last().expect("points").0.max(points[0].0 + 1.0));
    let (lmin, lmax) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1.ln()), b.max(p.1.ln())));
    let span = (lmax - lmin).max(1e-6);
    let to_px = |s: f64, l: f64| (m + (s - s0) / (s1 - s0) * (w as f64 - 2.0 * m), h as f64 - m - (l.ln() - lmin) / span * (h as f64 - 2.0 * m));
    for x in m as u32..w - m as u32 {
        img.put_pixel(x, h - m as u32, Rgb([0, 0, 0]));
    }
    for y in m as u32..h - m as u32 {
        img.put_pixel(m as u32, y, Rgb([0, 0, 0]));
    }
    for pair in points.windows(2) {
        let (a, b) = (to_px(pair[0].0, pair[0].1), to_px(pair[1].0, pair[1].1));
        let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) as usize).max(1);
        for k in 0..=n {
            let f = k as f64 / n as f64;
            let (x, y) = (a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f);
            if x >= 0.0 && y >= 0.0 && (x as u32) < w && (y as u32) < h {
                img.put_pixel(x as u32, y as u32, Rgb([200, 40, 40]));
            }
        }
    }
    save(&img, path)
}
