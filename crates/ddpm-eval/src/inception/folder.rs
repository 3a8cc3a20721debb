//! The features of a folder of images, read the way pytorch-fid's `ImagePathDataset` reads them:
//! the files with the listed extensions directly in the folder, sorted by path, each converted to
//! RGB (grey replicated, alpha dropped) and to [0, 1] floats as `ToTensor` does (`u8 / 255`).

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use burn::tensor::{Device, Tensor, TensorData};
use crate::progress::{Progress, ProgressMode};
use rayon::prelude::*;

use super::{FidBlock, InceptionV3, preprocess};
use crate::error::{EvalError, Result};

/// The extensions read, pytorch-fid's `IMAGE_EXTENSIONS`: lower case only, so `IMG.PNG` is
/// skipped by both.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp",
];

/// The image files directly in `dir` (not in sub-folders), sorted by path as pytorch-fid sorts
/// them. An error if `dir` cannot be listed or holds no image.
pub fn image_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let file_err = |message: String| EvalError::File { path: dir.to_path_buf(), message };
    let entries = std::fs::read_dir(dir).map_err(|e| file_err(format!("cannot list the image folder: {e}")))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| file_err(format!("cannot list the image folder: {e}")))?.path();
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else { continue };
        if IMAGE_EXTENSIONS.contains(&ext) && path.is_file() {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(file_err(format!("no images (extensions {}, lower case as pytorch-fid matches them)", IMAGE_EXTENSIONS.join(", "))));
    }
    paths.sort();
    Ok(paths)
}

/// One image as `[3, H, W]` floats in [0, 1] (`u8 / 255`, channel-major) with its `[H, W]`.
pub fn read_image(path: &Path) -> Result<(Vec<f32>, [usize; 2])> {
    let img = image::open(path).map_err(|e| EvalError::File { path: path.to_path_buf(), message: format!("cannot read the image: {e}") })?;
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let mut chw = vec![0f32; 3 * h * w];
    for (i, pixel) in rgb.pixels().enumerate() {
        for c in 0..3 {
            chw[c * h * w + i] = f32::from(pixel[c]) / 255.0;
        }
    }
    Ok((chw, [h, w]))
}

/// The features of images `[B, 3, H, W]` whose sizes may differ, in order: each run of same-size
/// images is resized together.
fn batch_features(model: &InceptionV3, images: Vec<(Vec<f32>, [usize; 2])>, block: FidBlock, device: &Device) -> Tensor<2> {
    let mut inputs = Vec::new();
    let mut run: Vec<f32> = Vec::new();
    let mut run_len = 0;
    let mut run_size = None;
    let mut flush = |run: &mut Vec<f32>, run_len: &mut usize, size: [usize; 2]| {
        let data = TensorData::new(std::mem::take(run), [*run_len, 3, size[0], size[1]]);
        inputs.push(preprocess(Tensor::<4>::from_data(data, device)));
        *run_len = 0;
    };
    for (chw, size) in images {
        if run_size.is_some_and(|s| s != size) {
            flush(&mut run, &mut run_len, run_size.expect("checked"));
        }
        run_size = Some(size);
        run.extend_from_slice(&chw);
        run_len += 1;
    }
    if let Some(size) = run_size {
        flush(&mut run, &mut run_len, size);
    }
    let x = Tensor::cat(inputs, 0);
    let map = model.block_maps(x, block).pop().expect("one map per block");
    let [b, c, h, w] = map.dims();
    map.reshape([b, c, h * w]).mean_dim(2).reshape([b, c])
}

/// The features of `paths` in order, `batch_size` images at a time (the next batch is decoded
/// while the network runs), as a row-major `N x dims` buffer and `N`; `block` picks pytorch-fid's
/// `--dims` (2048: [`FidBlock::FinalAvgPool`]). Progress as `progress` says, on stderr.
pub fn paths_features(
    model: &InceptionV3,
    paths: &[PathBuf],
    batch_size: usize,
    block: FidBlock,
    device: &Device,
    progress: ProgressMode,
) -> Result<(Vec<f32>, usize)> {
    if batch_size == 0 {
        return Err(EvalError::Input("batch size 0: use at least 1 (pytorch-fid's default is 50)".into()));
    }
    let bar = Progress::new("Inception features", paths.len() as u64, 0, 1.0, "images", progress).on_stderr();
    let mut features = Vec::with_capacity(paths.len() * model.feature_dim());
    std::thread::scope(|scope| -> Result<()> {
        // One decoded batch waits while the network runs on the previous one.
        let (send, receive) = mpsc::sync_channel::<Result<Vec<(Vec<f32>, [usize; 2])>>>(1);
        scope.spawn(move || {
            for chunk in paths.chunks(batch_size) {
                let batch = chunk.par_iter().map(|p| read_image(p)).collect::<Result<Vec<_>>>();
                let failed = batch.is_err();
                if send.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        for batch in receive {
            let batch = batch?;
            let n = batch.len();
            let out = batch_features(model, batch, block, device);
            let values = out.try_into_vec_as::<f32>().map_err(|e| EvalError::Input(format!("cannot read the features back: {e:?}")))?;
            features.extend_from_slice(&values);
            bar.inc(n as u64);
        }
        Ok(())
    })?;
    bar.finish();
    Ok((features, paths.len()))
}

/// The 2048-d FID features of every image in `dir` (see [`image_paths`], [`read_image`]):
/// a row-major `N x 2048` buffer and `N`. pytorch-fid's batch size is 50; the batch size changes
/// only the summation order, not the features.
pub fn folder_features(model: &InceptionV3, dir: &Path, batch_size: usize, device: &Device, progress: ProgressMode) -> Result<(Vec<f32>, usize)> {
    paths_features(model, &image_paths(dir)?, batch_size, FidBlock::FinalAvgPool, device, progress)
}
