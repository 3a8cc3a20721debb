//! Pictures people look at: sample grids, 2-D scatter plots and sequence panels, as PNG.
//!
//! Images are tiled as they are (enlarged to tiles of at least [`MIN_TILE`] pixels, 2-pixel
//! gutters). 2-D points and sequences are drawn with plotters ([`crate::plot`]'s helpers and
//! bundled font): a scatter plot with axes and ticks, the samples as small dots and the data set's
//! modes as crosses where known ([`GridOptions::for_data`]); sequences as panels with axes, one
//! colour per channel. The run's curves (`loss.png`, ...) are drawn by [`crate::plot`].

use std::path::Path;

use image::{Rgb, RgbImage};
use plotters::prelude::*;

use crate::config::DataConfig;
use crate::error::{Result, TrainError};
use crate::plot::{COLOURS, DrawResult, MARGIN, SANS, draw_png, padded_range, tick_label};

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

/// What a scatter plot or a sequence plot shows besides the samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GridOptions {
    /// Mode centres of the data set, marked with crosses on a 2-D scatter plot.
    pub modes: Vec<[f64; 2]>,
    /// The title of a scatter plot or of the sequence panels (default: what is shown).
    pub title: Option<String>,
}

impl GridOptions {
    /// The options for samples of `data`: the mode centres of the 2-D toy mixtures (`gaussian8`,
    /// `gaussian25`; see [`crate::data::toy::toy_modes`]), none for other data.
    pub fn for_data(data: &DataConfig) -> Self {
        match data {
            DataConfig::Toy { name, .. } => GridOptions { modes: crate::data::toy::toy_modes(name), title: None },
            _ => GridOptions::default(),
        }
    }
}

/// Size of a 2-D scatter plot.
pub const SCATTER_SIZE: (u32, u32) = (560, 564);
/// The smallest square a scatter plot shows: [-SCATTER_EXTENT, SCATTER_EXTENT]^2 (the toy sets lie
/// in about [-1.2, 1.2]^2); it grows to hold 99% of the samples when they are spread wider.
pub const SCATTER_EXTENT: f64 = 1.5;
/// Width of the area left of a scatter plot's plotting area (tick labels and the `y` label).
pub const SCATTER_Y_LABEL_AREA: u32 = 60;
/// Height of the area below a scatter plot's plotting area (tick labels and the `x` label).
pub const SCATTER_X_LABEL_AREA: u32 = 48;
/// Most sequences drawn (the first ones), one panel each.
pub const MAX_SEQUENCE_PANELS: usize = 64;

/// Writes samples as a PNG: images (`item_shape` `[C, H, W]`, values in [-1, 1]) as a square-ish
/// grid with 2-pixel gaps, each enlarged by [`tile_scale`] (like torchvision's `make_grid` after a
/// nearest-neighbour resize); 2-D points (`[2]`) as a scatter plot with axes (of [-1.5, 1.5]^2, or
/// wider when the samples spread wider, see [`SCATTER_EXTENT`]);
/// sequences (`[C, L]`) as panels with axes, one colour per channel, each scaled to its range.
/// [`write_grid_with`] also marks a toy set's modes.
pub fn write_grid(path: &Path, values: &[f64], item_shape: &[usize]) -> Result<()> {
    write_grid_with(path, values, item_shape, &GridOptions::default())
}

/// [`write_grid`] with the data set's modes (crosses on a scatter plot) and a title.
pub fn write_grid_with(path: &Path, values: &[f64], item_shape: &[usize], opts: &GridOptions) -> Result<()> {
    if item_shape.len() == 2 {
        return write_sequences(path, values, item_shape[0].max(1), item_shape[1].max(1), opts);
    }
    if item_shape.len() == 1 {
        return write_scatter(path, values, item_shape[0].max(1), opts);
    }
    let n = values.len() / item_shape.iter().product::<usize>().max(1);
    image_grid(path, values, item_shape, (n as f64).sqrt().ceil() as usize)
}

/// Images in a grid of `cols` columns (row after row), tiles enlarged by [`tile_scale`], 2-pixel gaps.
fn image_grid(path: &Path, values: &[f64], item_shape: &[usize], cols: usize) -> Result<()> {
    let (c, hh, ww) = (item_shape[0], item_shape[1], item_shape[2]);
    let n = values.len() / (c * hh * ww);
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

/// 2-D points (the first two coordinates of each item of `dim`) as a scatter plot with axes.
fn write_scatter(path: &Path, values: &[f64], dim: usize, opts: &GridOptions) -> Result<()> {
    let points: Vec<(f64, f64)> = values.chunks(dim).map(|p| (p[0], p.get(1).copied().unwrap_or(0.0))).collect();
    let mut radii: Vec<f64> = points.iter().map(|p| p.0.abs().max(p.1.abs())).filter(|r| r.is_finite()).collect();
    radii.sort_by(f64::total_cmp);
    let r99 = radii.get((radii.len() * 99 / 100).min(radii.len().saturating_sub(1))).copied().unwrap_or(0.0);
    let e = if r99 > SCATTER_EXTENT { r99 * 1.05 } else { SCATTER_EXTENT };
    let inside: Vec<(f64, f64)> = points.iter().copied().filter(|&(x, y)| x.abs() <= e && y.abs() <= e).collect();
    let outside = points.len() - inside.len();
    let title = opts.title.clone().unwrap_or_else(|| {
        let mut t = format!("{} samples", points.len());
        if outside > 0 {
            t.push_str(&format!(" ({outside} outside the plot)"));
        }
        t
    });
    draw_png(path, SCATTER_SIZE, |root| -> DrawResult {
        let mut chart = ChartBuilder::on(root)
            .caption(&title, (SANS, 20))
            .margin(MARGIN)
            .margin_right(MARGIN + 12)
            .x_label_area_size(SCATTER_X_LABEL_AREA)
            .y_label_area_size(SCATTER_Y_LABEL_AREA)
            .build_cartesian_2d(-e..e, -e..e)?;
        chart
            .configure_mesh()
            .x_desc("x")
            .y_desc("y")
            .x_labels(7)
            .y_labels(7)
            .x_label_formatter(&|v| tick_label(*v))
            .y_label_formatter(&|v| tick_label(*v))
            .label_style((SANS, 14))
            .axis_desc_style((SANS, 16))
            .light_line_style(RGBColor(0, 0, 0).mix(0.04))
            .bold_line_style(RGBColor(0, 0, 0).mix(0.12))
            .draw()?;
        let dot = COLOURS[0].mix(0.55).filled();
        chart
            .draw_series(inside.iter().map(|&p| Circle::new(p, 2, dot)))?
            .label("samples")
            .legend(move |(x, y)| Circle::new((x + 10, y), 3, COLOURS[0].filled()));
        if !opts.modes.is_empty() {
            let cross = COLOURS[3].stroke_width(2);
            chart
                .draw_series(opts.modes.iter().map(|m| Cross::new((m[0], m[1]), 6, cross)))?
                .label("modes of the data")
                .legend(move |(x, y)| Cross::new((x + 10, y), 5, cross));
        }
        crate::plot::draw_legend(&mut chart)
    })
}

/// Size of one sequence panel.
const PANEL: (u32, u32) = (300, 190);
/// Height of the title band above the sequence panels.
const PANELS_TITLE: u32 = 36;

/// Sequences (`channels` x `length` per item) as panels with axes, one colour per channel, each
/// panel's y axis fitted to its item.
fn write_sequences(path: &Path, values: &[f64], channels: usize, length: usize, opts: &GridOptions) -> Result<()> {
    let items: Vec<&[f64]> = values.chunks_exact(channels * length).collect();
    let shown = items.len().clamp(1, MAX_SEQUENCE_PANELS);
    let cols = (shown as f64).sqrt().ceil().max(1.0) as usize;
    let rows = shown.div_ceil(cols);
    let names = ["blue", "orange", "green", "red", "purple", "brown"];
    let title = opts.title.clone().unwrap_or_else(|| {
        let mut t = if items.len() > shown { format!("the first {shown} of {} sequences", items.len()) } else { format!("{} sequences", items.len()) };
        if channels > 1 {
            let list: Vec<&str> = (0..channels).map(|c| names[c % names.len()]).collect();
            t.push_str(&format!(", channels {}", list.join(", ")));
        }
        t
    });
    let size = (cols as u32 * PANEL.0, PANELS_TITLE + rows as u32 * PANEL.1);
    draw_png(path, size, |root| -> DrawResult {
        let (top, rest) = root.split_vertically(PANELS_TITLE);
        top.draw(&Text::new(title.as_str(), (MARGIN as i32, 8), (SANS, 20).into_font()))?;
        for (panel, item) in rest.split_evenly((rows, cols)).iter().zip(&items) {
            let (y0, y1) = padded_range(item.iter().copied(), 0.05);
            let mut chart = ChartBuilder::on(panel)
                .margin(6)
                .margin_right(14)
                .x_label_area_size(24)
                .y_label_area_size(48)
                .build_cartesian_2d(0f64..(length.max(2) - 1) as f64, y0..y1)?;
            chart
                .configure_mesh()
                .x_labels(5)
                .y_labels(5)
                .x_label_formatter(&|v| tick_label(*v))
                .y_label_formatter(&|v| tick_label(*v))
                .label_style((SANS, 11))
                .light_line_style(TRANSPARENT)
                .bold_line_style(RGBColor(0, 0, 0).mix(0.08))
                .draw()?;
            for (c, series) in item.chunks(length).enumerate() {
                let style = COLOURS[c % COLOURS.len()].stroke_width(1);
                chart.draw_series(LineSeries::new(series.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(k, &v)| (k as f64, v)), style))?;
            }
        }
        Ok(())
    })
}

/// `trajectory.png` of `ddpm-train sample --trajectory` from the x0 estimates of each step
/// (`frames[step]`, the batch's samples one after another): one row per seed (the first `seeds`),
/// one column per step (`columns` steps evenly spread over the run, the last one included), each
/// tile the x0 estimate the sampler had at that step, so one strip shows how a sample formed.
/// Images only.
pub fn write_trajectory(path: &Path, frames: &[&[f32]], item_shape: &[usize], seeds: usize, columns: usize) -> Result<()> {
    if item_shape.len() != 3 {
        return Err(TrainError::config("--trajectory", format!("trajectory strips are drawn for images [C, H, W]; these samples are {item_shape:?}")));
    }
    let item: usize = item_shape.iter().product();
    let Some(last) = frames.len().checked_sub(1) else { return Ok(()) };
    let cols = columns.clamp(1, frames.len());
    let picked: Vec<&[f32]> = (0..cols).map(|k| frames[if cols == 1 { last } else { k * last / (cols - 1) }]).collect();
    let rows = seeds.min(picked[0].len() / item.max(1)).max(1);
    let mut values = Vec::with_capacity(rows * cols * item);
    for r in 0..rows {
        for f in &picked {
            values.extend(f[r * item..(r + 1) * item].iter().map(|&v| f64::from(v)));
        }
    }
    image_grid(path, &values, item_shape, cols)
}
