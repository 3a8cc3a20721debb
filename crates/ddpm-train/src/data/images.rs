//! Folders of images: a recursive walk in sorted path order, decoding in parallel (rayon) with a
//! progress bar, each image converted to the configured channels and fitted to the configured size.
//!
//! Fitting follows the reference's `Resize(size)` + `CenterCrop(size)`: the image is scaled,
//! aspect ratio kept, until it covers the target (for a square target: its shorter side matches),
//! then the middle is cut out. The filter is Catmull-Rom, which is PIL's BICUBIC (Keys' cubic with
//! a = -0.5) and, like PIL's, widens its support when downscaling so it averages over every
//! source pixel instead of aliasing; the reference's torchvision default is bilinear, which is a
//! little softer.
//!
//! Grayscale is PIL's `convert("L")` (ITU-R 601-2 luma), RGB drops an alpha channel.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView, GrayImage, Luma};
use rayon::prelude::*;

use super::InMemory;
use crate::error::{Result, TrainError};

/// File extensions read (in any case).
pub const EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "tiff", "tif", "webp", "bmp", "ppm", "pgm",
];

/// A square cut from each image before it is fitted (CelebA's face crop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SquareCut {
    /// Side of the square.
    pub side: usize,
    /// Its top row; `None` centers it vertically. It is always centered horizontally.
    pub top: Option<usize>,
}

/// How the images of a folder are read.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderOptions {
    /// Height of the items.
    pub height: usize,
    /// Width of the items.
    pub width: usize,
    /// 1 (grayscale), 3 (RGB) or 4 (RGBA).
    pub channels: usize,
    /// A square cut before fitting, if any.
    pub square_cut: Option<SquareCut>,
    /// Leave out files that cannot be read (counted on stderr) instead of failing.
    pub skip_corrupt: bool,
}

fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The image files under `dir`, recursively, sorted by path. Hidden files and folders (`.name`,
/// such as the `._x.jpg` companions macOS writes into archives) are left out; a folder reached
/// twice through links is walked once.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        let message = if dir.exists() { "is not a folder; set data.path to the folder that holds the images" } else { "no such folder; set data.path to the folder that holds the images" };
        return Err(TrainError::Data { path: dir.to_path_buf(), message: message.into() });
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    walk(dir, &mut out, &mut seen)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, seen: &mut HashSet<PathBuf>) -> Result<()> {
    let err = |e: std::io::Error| TrainError::Data { path: dir.to_path_buf(), message: format!("cannot list the folder: {e}") };
    if !seen.insert(fs::canonicalize(dir).map_err(err)?) {
        return Ok(());
    }
    for entry in fs::read_dir(dir).map_err(err)? {
        let path = entry.map_err(err)?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        // `metadata` follows links, so linked folders are walked and linked files read.
        match fs::metadata(&path) {
            Ok(m) if m.is_dir() => walk(&path, out, seen)?,
            // A dangling link with an image name is kept, to be reported as unreadable.
            _ if is_image(&path) => out.push(path),
            _ => {}
        }
    }
    Ok(())
}

fn to_gray(img: &DynamicImage) -> GrayImage {
    if !img.color().has_color() {
        return img.to_luma8();
    }
    let rgb = img.to_rgb8();
    // PIL's fixed-point ITU-R 601-2 luma, so grayscale data matches the reference's convert("L").
    GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0.map(u32::from);
        Luma([((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8])
    })
}

/// Decodes one image and fits it: `[channels, height, width]` bytes. The error says what is wrong
/// (without the path).
pub fn load_image(path: &Path, opts: &FolderOptions) -> std::result::Result<Vec<u8>, String> {
    use image::ImageDecoder;
    let file_len = std::fs::metadata(path).map_err(|e| format!("cannot open: {e}"))?.len();
    let decoder = image::ImageReader::open(path)
        .map_err(|e| format!("cannot open: {e}"))?
        // By content, not by name: a mis-named file still decodes.
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?
        .into_decoder()
        .map_err(|e| format!("cannot decode: {e}"))?;
    // The header's size is checked against the file before the pixels are allocated: no image
    // format compresses beyond MAX_EXPANSION (deflate's limit is about 1032:1, a flat JPEG's
    // stays below that), so a larger claim is a corrupt or hostile header.
    let claimed = decoder.total_bytes();
    if claimed > MAX_EXPANSION * file_len + EXPANSION_SLACK {
        let (w, h) = decoder.dimensions();
        return Err(format!(
            "the header says {w}x{h} pixels ({claimed} bytes decoded), more than a file of {file_len} bytes can hold; the file is corrupt or not an image"
        ));
    }
    let img = DynamicImage::from_decoder(decoder).map_err(|e| format!("cannot decode: {e}"))?;
    let img = match opts.channels {
        1 => DynamicImage::ImageLuma8(to_gray(&img)),
        3 => DynamicImage::ImageRgb8(img.to_rgb8()),
        4 => DynamicImage::ImageRgba8(img.to_rgba8()),
        c => return Err(format!("{c} channels cannot be made; use 1, 3 or 4")),
    };
    let img = match opts.square_cut {
        None => img,
        Some(SquareCut { side, top }) => {
            let (w, h) = img.dimensions();
            let side32 = side as u32;
            if side32 > w || side32 > h {
                return Err(format!("the image is {w}x{h}, smaller than the {side}x{side} cut (data.crop)"));
            }
            let top = top.map_or((h - side32) / 2, |t| t as u32);
            if top + side32 > h {
                return Err(format!("the {side}x{side} cut from row {top} (data.crop_top) reaches past the image's {h} rows"));
            }
            img.crop_imm((w - side32) / 2, top, side32, side32)
        }
    };
    let img = img.resize_to_fill(opts.width as u32, opts.height as u32, FilterType::CatmullRom);
    let (c, plane) = (opts.channels, opts.width * opts.height);
    let interleaved = img.as_bytes();
    let mut chw = vec![0u8; c * plane];
    for (i, px) in interleaved.chunks_exact(c).enumerate() {
        for (ch, &v) in px.iter().enumerate() {
            chw[ch * plane + i] = v;
        }
    }
    Ok(chw)
}

fn check_options(opts: &FolderOptions) -> Result<()> {
    if opts.height == 0 || opts.width == 0 {
        return Err(TrainError::config("data.image_size", "sides must be at least 1"));
    }
    if ![1, 3, 4].contains(&opts.channels) {
        return Err(TrainError::config("data.channels", format!("{} is not a channel count; use 1 (grayscale), 3 (RGB) or 4 (RGBA)", opts.channels)));
    }
    Ok(())
}

/// The most an image's decoded bytes may exceed its file's size by (see [`load_image`]).
const MAX_EXPANSION: u64 = 2048;
/// Decoded bytes any file may claim whatever its size (tiny images, headers).
const EXPANSION_SLACK: u64 = 1 << 20;

/// All images under `dir` as `[channels, height, width]` bytes, unlabelled, not flipped.
pub fn load_folder(dir: &Path, opts: &FolderOptions) -> Result<InMemory> {
    check_options(opts)?;
    let paths = list_images(dir)?;
    if paths.is_empty() {
        return Err(TrainError::Data {
            path: dir.to_path_buf(),
            message: format!("holds no images ({}; searched recursively); set data.path to the folder that holds them", EXTENSIONS.join(", ")),
        });
    }
    let item_len = opts.channels * opts.height * opts.width;
    let mut pixels = vec![0u8; paths.len() * item_len];
    let bar = indicatif::ProgressBar::new(paths.len() as u64)
        .with_style(indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}").expect("template").progress_chars("=> "))
        .with_message(format!("reading {}", dir.display()));
    // Without skip_corrupt the first failure (in path order) ends the load: items after the
    // earliest failure seen so far are not decoded, items before it still are, so the reported
    // file does not depend on thread timing.
    let earliest_failure = AtomicUsize::new(usize::MAX);
    let failures: Vec<Option<String>> = pixels
        .par_chunks_mut(item_len)
        .zip(paths.par_iter())
        .enumerate()
        .map(|(i, (slot, path))| {
            if i > earliest_failure.load(Ordering::Relaxed) {
                return None;
            }
            let result = load_image(path, opts);
            bar.inc(1);
            match result {
                Ok(chw) => {
                    slot.copy_from_slice(&chw);
                    None
                }
                Err(e) => {
                    if !opts.skip_corrupt {
                        earliest_failure.fetch_min(i, Ordering::Relaxed);
                    }
                    Some(e)
                }
            }
        })
        .collect();
    bar.finish_and_clear();
    let failed: Vec<(usize, &String)> = failures.iter().enumerate().filter_map(|(i, f)| f.as_ref().map(|m| (i, m))).collect();
    let Some(&(first, first_message)) = failed.first() else {
        return Ok(InMemory::from_u8(pixels, vec![opts.channels, opts.height, opts.width]));
    };
    if !opts.skip_corrupt {
        return Err(TrainError::Data { path: paths[first].clone(), message: format!("{first_message}; set data.skip_corrupt = true to skip unreadable files") });
    }
    if failed.len() == paths.len() {
        return Err(TrainError::Data {
            path: dir.to_path_buf(),
            message: format!("none of its {} images could be read; the first, {}: {first_message}", paths.len(), paths[first].display()),
        });
    }
    let mut kept = 0;
    for (i, failure) in failures.iter().enumerate() {
        if failure.is_none() {
            pixels.copy_within(i * item_len..(i + 1) * item_len, kept * item_len);
            kept += 1;
        }
    }
    pixels.truncate(kept * item_len);
    tracing::warn!("{}: skipped {} unreadable of {} images (the first, {}: {first_message})", dir.display(), failed.len(), paths.len(), paths[first].display());
    Ok(InMemory::from_u8(pixels, vec![opts.channels, opts.height, opts.width]))
}
