//! MNIST and Fashion-MNIST in the IDX format, raw or gzipped (read transparently).
//!
//! Images: magic `0x00000803`, then big-endian u32 count, rows and columns, then the pixels (one
//! byte each, row after row, 0 = background). Labels: magic `0x00000801`, a u32 count, then one
//! byte per label.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use image::imageops::FilterType;

use super::download::Fetch;
use super::{InMemory, MnistVariant, Split};
use crate::error::{Result, TrainError};

pub const IMAGES_MAGIC: u32 = 0x0000_0803;
pub const LABELS_MAGIC: u32 = 0x0000_0801;
pub const NUM_CLASSES: usize = 10;
/// Side of the images in the files.
pub const SIDE: usize = 28;
/// torchvision's mirror of LeCun's files.
pub const MNIST_URL: &str = "https://ossci-datasets.s3.amazonaws.com/mnist/";
/// Zalando's own bucket.
pub const FASHION_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";

/// Name of the default cache folder.
pub fn cache_name(variant: MnistVariant) -> &'static str {
    match variant {
        MnistVariant::Mnist => "mnist",
        MnistVariant::Fashion => "fashion-mnist",
    }
}

/// The official base URL.
pub fn base_url(variant: MnistVariant) -> &'static str {
    match variant {
        MnistVariant::Mnist => MNIST_URL,
        MnistVariant::Fashion => FASHION_URL,
    }
}

/// The downloadable (`.gz`) files with their official checksums (torchvision's table).
pub fn official_md5(variant: MnistVariant) -> [(&'static str, &'static str); 4] {
    match variant {
        MnistVariant::Mnist => [
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ],
        MnistVariant::Fashion => [
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ],
    }
}

/// The (images, labels) file names of a split, without `.gz`.
pub fn split_files(split: Split) -> [&'static str; 2] {
    match split {
        Split::Train => ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
        Split::Test => ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    }
}

/// Images of an IDX file.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    /// `count * rows * cols` bytes, image after image, row after row.
    pub pixels: Vec<u8>,
}

/// A file's bytes, gunzipped when it starts with the gzip magic (whatever its name).
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).map_err(|e| data_err(path, format!("cannot read: {e}")))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| data_err(path, format!("the gzip stream is damaged ({e}); delete the file to fetch it again")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> usize {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
}

/// The magic number first, so a swapped or foreign file is named as such rather than as too short.
fn check_magic(path: &Path, bytes: &[u8], expected: u32, what: &str, (other, other_what): (u32, &str)) -> Result<()> {
    if bytes.len() < 4 {
        return Err(data_err(path, format!("{} bytes is too short for an IDX file", bytes.len())));
    }
    let magic = be_u32(bytes, 0) as u32;
    if magic != expected {
        let hint = if magic == other { format!(" (this is {other_what})") } else { String::new() };
        return Err(data_err(path, format!("magic number 0x{magic:08x} is not that of IDX {what} (0x{expected:08x}){hint}")));
    }
    Ok(())
}

fn check_size(path: &Path, len: usize, header: usize, body: usize, what: &str) -> Result<()> {
    match len.cmp(&(header + body)) {
        std::cmp::Ordering::Less => Err(data_err(
            path,
            format!("truncated: the header announces {what} ({body} bytes after the {header}-byte header) but only {} bytes follow; delete the file to fetch it again", len - header),
        )),
        std::cmp::Ordering::Greater => Err(data_err(path, format!("{} bytes follow the {what} the header announces; the file is not a valid IDX file", len - header - body))),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Reads an IDX image file (`*-images-idx3-ubyte`, optionally gzipped).
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    let bytes = read_bytes(path)?;
    check_magic(path, &bytes, IMAGES_MAGIC, "images", (LABELS_MAGIC, "a labels file"))?;
    if bytes.len() < 16 {
        return Err(data_err(path, format!("{} bytes is too short for an IDX image header (16 bytes)", bytes.len())));
    }
    let (count, rows, cols) = (be_u32(&bytes, 4), be_u32(&bytes, 8), be_u32(&bytes, 12));
    let body = count.checked_mul(rows).and_then(|v| v.checked_mul(cols)).ok_or_else(|| data_err(path, "the header's sizes overflow"))?;
    check_size(path, bytes.len(), 16, body, &format!("{count} images of {rows}x{cols}"))?;
    Ok(IdxImages { count, rows, cols, pixels: bytes[16..].to_vec() })
}

/// Reads an IDX label file (`*-labels-idx1-ubyte`, optionally gzipped); labels must be 0..=9.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_bytes(path)?;
    check_magic(path, &bytes, LABELS_MAGIC, "labels", (IMAGES_MAGIC, "an images file"))?;
    if bytes.len() < 8 {
        return Err(data_err(path, format!("{} bytes is too short for an IDX label header (8 bytes)", bytes.len())));
    }
    let count = be_u32(&bytes, 4);
    check_size(path, bytes.len(), 8, count, &format!("{count} labels"))?;
    let labels = bytes[8..].to_vec();
    if let Some(i) = labels.iter().position(|&l| usize::from(l) >= NUM_CLASSES) {
        return Err(data_err(path, format!("label {i} is {}, but labels are 0..=9", labels[i])));
    }
    Ok(labels)
}

/// Brings `[count, side, side]` images to `size`: kept at `side`, padded with background (0) all
/// round when larger (the usual 28 -> 32 for U-Nets that halve the size several times: the
/// digits stay pixel-exact), resized with Catmull-Rom when smaller.
pub fn fit_size(pixels: Vec<u8>, count: usize, side: usize, size: usize) -> Vec<u8> {
    if size == side {
        return pixels;
    }
    let mut out = Vec::with_capacity(count * size * size);
    for img in pixels.chunks_exact(side * side) {
        if size > side {
            let before = (size - side) / 2;
            let mut padded = vec![0u8; size * size];
            for (y, row) in img.chunks_exact(side).enumerate() {
                let at = (y + before) * size + before;
                padded[at..at + side].copy_from_slice(row);
            }
            out.extend(padded);
        } else {
            let buf = image::GrayImage::from_raw(side as u32, side as u32, img.to_vec()).expect("side * side bytes");
            out.extend(image::imageops::resize(&buf, size as u32, size as u32, FilterType::CatmullRom).into_raw());
        }
    }
    out
}

/// Where a split's file is: the raw file, else the gzipped one, else `None`.
fn find(root: &Path, name: &str) -> Option<PathBuf> {
    [root.join(name), root.join(format!("{name}.gz"))].into_iter().find(|p| p.is_file())
}

/// The split from `root` (raw or `.gz` IDX files; missing ones are downloaded when
/// `fetch.download`), as `[1, image_size, image_size]` images with labels.
pub fn load(root: &Path, split: Split, image_size: usize, fetch: &Fetch) -> Result<InMemory> {
    if image_size == 0 {
        return Err(TrainError::config("data.image_size", "must be at least 1 (28 keeps the images as they are, 32 pads them)"));
    }
    let names = split_files(split);
    let missing: Vec<String> = names.iter().filter(|n| find(root, n).is_none()).map(|n| format!("{n}.gz")).collect();
    let missing_refs: Vec<&str> = missing.iter().map(String::as_str).collect();
    if !missing.is_empty() && !fetch.download {
        return Err(data_err(
            root,
            format!("missing {} and data.download is false: {} (or gunzipped, without .gz), or set data.download = true", missing.join(", "), fetch.manual_steps(&missing_refs, root)),
        ));
    }
    for file in &missing_refs {
        fetch.fetch(file, root, file).map_err(|e| match e {
            // Offline, one file at a time would be a slow way to learn the list.
            TrainError::Download { url, message } if missing.len() > 1 => {
                TrainError::Download { url, message: format!("{message}. The split needs all of these: {}", fetch.manual_steps(&missing_refs, root)) }
            }
            other => other,
        })?;
    }
    let paths: Vec<PathBuf> = names.iter().map(|n| find(root, n).ok_or_else(|| data_err(&root.join(n), "missing after the download"))).collect::<Result<_>>()?;
    let images = read_idx_images(&paths[0])?;
    let labels = read_idx_labels(&paths[1])?;
    if images.count != labels.len() {
        return Err(data_err(&paths[1], format!("{} labels for the {} images of {}; the files belong to different sets", labels.len(), images.count, paths[0].display())));
    }
    if images.rows != SIDE || images.cols != SIDE {
        return Err(data_err(&paths[0], format!("images are {}x{}, but MNIST and Fashion-MNIST images are {SIDE}x{SIDE}", images.rows, images.cols)));
    }
    if images.count == 0 {
        return Err(data_err(&paths[0], "holds no images"));
    }
    let pixels = fit_size(images.pixels, images.count, SIDE, image_size);
    Ok(InMemory::from_u8(pixels, vec![1, image_size, image_size]).with_labels(labels.into_iter().map(u32::from).collect(), NUM_CLASSES))
}

fn data_err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Data { path: path.to_path_buf(), message: message.into() }
}
