//! The FID Inception-v3 against pytorch-fid 0.3.0 (fixtures from
//! `tests/fixtures/make_inception_fixtures.py`): the resize, each block type, a whole narrow
//! network with random weights loaded from a PyTorch `.pth`, and, when `DDPM_INCEPTION_WEIGHTS`
//! names the real weights, pytorch-fid's own features of a folder of PNGs.

use std::path::{Path, PathBuf};

use burn::module::Module;
use ddpm_eval::progress::ProgressMode;
use burn::tensor::{Device, Tensor, TensorData};
use ddpm_eval::inception::{
    EPool, FidBlock, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE, InceptionV3, folder_features, image_paths, paths_features, preprocess,
    read_image, resize_bilinear,
};
use ddpm_io::weights::{ReferenceKeys, StateDict, load_reference, read_pytorch, read_safetensors, strip_prefix, write_safetensors};

/// `DDPM_DEVICE` (e.g. `wgpu:cpu`) or Flex.
fn device() -> Device {
    match std::env::var("DDPM_DEVICE") {
        Ok(name) if !name.is_empty() => ddpm_io::device::parse_device(&name).unwrap_or_else(|e| panic!("{e}")),
        _ => Device::flex(),
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inception").join(name)
}

fn read_fixture(name: &str) -> StateDict {
    read_safetensors(fixture(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn tensor<const D: usize>(state: &StateDict, key: &str, device: &Device) -> Tensor<D> {
    let t = state.get(key).unwrap_or_else(|| panic!("fixture has no `{key}`"));
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().expect("f32 values")
}

/// max |got - want| / max |want|.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    assert!(scale > 0.0, "an all-zero reference tests nothing");
    got.iter().zip(want).map(|(g, w)| (g - w).abs() as f64).fold(0.0, f64::max) / scale
}

fn assert_close<const D: usize>(what: &str, got: Tensor<D>, want: &ddpm_io::weights::RefTensor, tolerance: f64) {
    assert_eq!(got.dims().to_vec(), want.shape, "{what}: shape");
    let err = rel_err(&values(got), &want.data);
    eprintln!("{what}: relative error {err:.2e}");
    assert!(err < tolerance, "{what}: relative error {err:e} >= {tolerance:e}");
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-eval-inception-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn resize_is_pytorchs_bilinear_without_align_corners() {
    let device = device();
    let file = read_fixture("resize.safetensors");
    let x: Tensor<4> = tensor(&file, "input", &device);
    // The taps are those of PyTorch's CUDA kernel (f32 `src - floor(src)`); the CPU kernel that
    // made the fixture computes them by a normalised triangle filter and rounds differently, up
    // to ~2e-6 of the range. A half-pixel or align_corners mistake is off by more than 1e-2.
    let tolerance = 5e-6;
    assert_close("resize 37x53 -> 61x47", resize_bilinear(x.clone(), [61, 47]), &file["up61x47"], tolerance);
    assert_close("resize 37x53 -> 19x31", resize_bilinear(x.clone(), [19, 31]), &file["down19x31"], tolerance);
    // The fixture keeps every 4th row and column of the 299x299 result.
    let up = resize_bilinear(x.clone(), [299, 299]);
    let [b, c, _, _] = up.dims();
    let every_4th = Tensor::<1, burn::tensor::Int>::arange_step(0..299, 4, &device);
    let sub = up.select(2, every_4th.clone()).select(3, every_4th);
    assert_eq!(sub.dims(), [b, c, 75, 75]);
    assert_close("resize 37x53 -> 299x299", sub, &file["up299"], tolerance);
    // The network input: the same resize, then 2x - 1; a 299x299 image is not resampled.
    let pre = values(preprocess(x.clone()));
    let up = values(resize_bilinear(x, [299, 299]));
    assert!(pre.iter().zip(&up).all(|(p, u)| *p == 2.0 * u - 1.0));
    let full = Tensor::<4>::random([1, 3, 299, 299], burn::tensor::Distribution::Uniform(0.0, 1.0), &device);
    assert_eq!(values(resize_bilinear(full.clone(), [299, 299])), values(full));
}

fn load_block<M: Module + ReferenceKeys>(block: M, file: &StateDict, name: &str) -> M {
    let weights: StateDict = strip_prefix(file, &format!("{name}.")).into_iter().filter(|(k, _)| k != "input" && k != "output").collect();
    load_reference(block, &weights, name).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn each_block_type_matches_pytorch_fid() {
    let device = device();
    let file = read_fixture("blocks.safetensors");
    // Built as the fixture builds them: the reference's channel counts with every width / 16.
    let input = |name: &str| tensor::<4>(&file, &format!("{name}.input"), &device);
    let want = |name: &str| &file[&format!("{name}.output")];
    let a = load_block(InceptionA::new(288, 64, 16, &device), &file, "a");
    assert_close("FIDInceptionA", a.forward(input("a")), want("a"), 1e-4);
    let b = load_block(InceptionB::new(288, 16, &device), &file, "b");
    assert_close("InceptionB", b.forward(input("b")), want("b"), 1e-4);
    let c = load_block(InceptionC::new(768, 160, 16, &device), &file, "c");
    assert_close("FIDInceptionC", c.forward(input("c")), want("c"), 1e-4);
    let d = load_block(InceptionD::new(768, 16, &device), &file, "d");
    assert_close("InceptionD", d.forward(input("d")), want("d"), 1e-4);
    let e1 = load_block(InceptionE::new(1280, EPool::Average, 16, &device), &file, "e1");
    assert_close("FIDInceptionE_1", e1.forward(input("e1")), want("e1"), 1e-4);
    let e2 = load_block(InceptionE::new(2048, EPool::Max, 16, &device), &file, "e2");
    assert_close("FIDInceptionE_2", e2.forward(input("e2")), want("e2"), 1e-4);
    // The pool branches are what the FID blocks change: with the other pool they must differ.
    let swapped = load_block(InceptionE::new(2048, EPool::Average, 16, &device), &file, "e2");
    assert!(rel_err(&values(swapped.forward(input("e2"))), &want("e2").data) > 1e-2, "E_2's max pool branch is not exercised");
}

fn narrow16(device: &Device) -> InceptionV3 {
    InceptionV3::narrow(16, device).unwrap().load_file(fixture("narrow16.pth")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn whole_narrow_network_from_a_pth_matches_pytorch_fid_block_by_block() {
    let device = device();
    let model = narrow16(&device);
    let file = read_fixture("narrow16.safetensors");
    let images: Tensor<4> = tensor(&file, "input", &device);
    assert_eq!(images.dims(), [2, 3, 64, 80]);
    let maps = model.block_maps(preprocess(images.clone()), FidBlock::FinalAvgPool);
    assert_eq!(maps.len(), 4);
    for (i, map) in maps.into_iter().enumerate() {
        assert_close(&format!("narrow network block {i}"), map, &file[&format!("block{i}")], 1e-4);
    }
    assert_eq!(model.feature_dim(), 128);
    let features = model.features(images.clone());
    assert_eq!(features.dims(), [2, 128]);
    assert!(rel_err(&values(features), &file["block3"].data) < 1e-4);
    // `--dims 768`: the pre-aux map averaged over its pixels.
    let pre_aux = values(model.block_features(images, FidBlock::PreAuxClassifier));
    let map = &file["block2"];
    let hw = map.shape[2] * map.shape[3];
    let averaged: Vec<f32> = map.data.chunks(hw).map(|c| c.iter().sum::<f32>() / hw as f32).collect();
    assert!(rel_err(&pre_aux, &averaged) < 1e-4);
}

#[test]
fn weights_that_do_not_fit_are_reported_by_key_and_file() {
    let device = device();
    let state = read_pytorch(fixture("narrow16.pth")).unwrap();
    // The .pth holds what pytorch-fid's does beyond the network: fc.* and the BN step counters.
    assert!(state.contains_key("fc.weight") && state.contains_key("Mixed_7c.branch_pool.bn.num_batches_tracked"));
    let dir = temp_dir("weights");

    let missing_key = "Mixed_6c.branch7x7dbl_3.bn.running_var";
    let mut missing = state.clone();
    missing.remove(missing_key);
    let path = dir.join("missing.safetensors");
    write_safetensors(&path, &missing).unwrap();
    let err = InceptionV3::narrow(16, &device).unwrap().load_file(&path).unwrap_err().to_string();
    assert!(err.contains(missing_key) && err.contains(&path.display().to_string()), "{err}");

    let mut misshaped = state.clone();
    let bad = misshaped.get_mut("Conv2d_2a_3x3.conv.weight").unwrap();
    bad.shape = vec![bad.shape[0], bad.shape[1] * 9, 1, 1];
    let path = dir.join("misshaped.safetensors");
    write_safetensors(&path, &misshaped).unwrap();
    let err = InceptionV3::narrow(16, &device).unwrap().load_file(&path).unwrap_err().to_string();
    assert!(err.contains("Conv2d_2a_3x3.conv.weight") && err.contains("[2, 18, 1, 1]"), "{err}");

    // pytorch-fid's wrapper names (`blocks.0.0.conv.weight`) are not the network's keys.
    let wrapped: StateDict = state.iter().map(|(k, v)| (format!("blocks.0.{k}"), v.clone())).collect();
    let err = InceptionV3::narrow(16, &device).unwrap().load_state_dict(&wrapped, "wrapped").unwrap_err().to_string();
    assert!(err.contains("missing `Conv2d_1a_3x3.conv.weight`") && err.contains("not used"), "{err}");

    // The full-width network does not take the narrow weights.
    let err = InceptionV3::new(&device).load_file(fixture("narrow16.pth")).unwrap_err().to_string();
    assert!(err.contains("Mixed_5b.branch1x1.conv.weight"), "{err}");

    let err = InceptionV3::narrow(16, &device).unwrap().load_file(dir.join("absent.pth")).unwrap_err().to_string();
    assert!(err.contains("pt_inception-2015-12-05-6726825d.pth") && err.contains("https://github.com/mseitzer/pytorch-fid"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn folder_features_are_the_batched_features_in_path_order() {
    let device = device();
    let model = narrow16(&device);
    let folder = fixture("images32");
    let paths = image_paths(&folder).unwrap();
    let names: Vec<_> = paths.iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(names, ["sample_0.png", "sample_1.png", "sample_2.png"]);
    // All three images in one batch, straight from the decoded pixels.
    let mut pixels = Vec::new();
    for p in &paths {
        let (chw, size) = read_image(p).unwrap();
        assert_eq!(size, [32, 32]);
        assert!(chw.iter().all(|v| (0.0..=1.0).contains(v) && (v * 255.0 - (v * 255.0).round()).abs() < 1e-4));
        pixels.extend(chw);
    }
    let images = Tensor::<4>::from_data(TensorData::new(pixels, [3, 3, 32, 32]), &device);
    let want = values(model.features(images));
    // Batches of 2: an uneven last batch.
    let (got, n) = folder_features(&model, &folder, 2, &device, ProgressMode::Quiet).unwrap();
    assert_eq!(n, 3);
    assert!(rel_err(&got, &want) < 1e-5, "{:e}", rel_err(&got, &want));
    // Different sizes in one batch: each run of equal sizes is resized on its own.
    let mixed = vec![paths[0].clone(), fixture("images64/sample_0.png"), paths[1].clone()];
    let (got, n) = paths_features(&model, &mixed, 3, FidBlock::FinalAvgPool, &device, ProgressMode::Quiet).unwrap();
    assert_eq!(n, 3);
    let (one_by_one, _) = paths_features(&model, &mixed, 1, FidBlock::FinalAvgPool, &device, ProgressMode::Quiet).unwrap();
    assert!(rel_err(&got, &one_by_one) < 1e-5);
    assert!(rel_err(&got[..128], &want[..128]) < 1e-5 && rel_err(&got[256..], &want[128..256]) < 1e-5);
    assert!(paths_features(&model, &mixed, 0, FidBlock::FinalAvgPool, &device, ProgressMode::Quiet).is_err());
}

#[test]
fn image_folders_are_listed_as_pytorch_fid_globs_them() {
    let dir = temp_dir("listing");
    let pixel = image::RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30]));
    for name in ["b.png", "a.jpg", "UPPER.PNG", "c.bmp"] {
        pixel
            .save_with_format(
                dir.join(name),
                if name.ends_with("jpg") {
                    image::ImageFormat::Jpeg
                } else if name.ends_with("bmp") {
                    image::ImageFormat::Bmp
                } else {
                    image::ImageFormat::Png
                },
            )
            .unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
    std::fs::create_dir(dir.join("nested.png")).unwrap();
    let names: Vec<_> = image_paths(&dir).unwrap().iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(names, ["a.jpg", "b.png", "c.bmp"]);
    // Grey and RGBA images become RGB the way PIL's convert('RGB') makes them.
    image::GrayImage::from_pixel(2, 3, image::Luma([51])).save(dir.join("grey.png")).unwrap();
    image::RgbaImage::from_pixel(2, 3, image::Rgba([255, 0, 102, 7])).save(dir.join("rgba.png")).unwrap();
    let (grey, size) = read_image(&dir.join("grey.png")).unwrap();
    assert_eq!(size, [3, 2]);
    assert!(grey.iter().all(|&v| v == 51.0 / 255.0));
    let (rgba, _) = read_image(&dir.join("rgba.png")).unwrap();
    assert_eq!(&rgba[..6], &[1.0; 6]);
    assert!(rgba[6..12].iter().all(|&v| v == 0.0) && rgba[12..].iter().all(|&v| v == 102.0 / 255.0));
    // Netpbm files count for pytorch-fid, and are read: a 2x1 colour PPM and a 1x1 grey PGM.
    std::fs::write(dir.join("d.ppm"), "P3\n2 1\n255\n255 0 51  0 0 0\n").unwrap();
    std::fs::write(dir.join("e.pgm"), "P2\n1 1\n255\n102\n").unwrap();
    let names: Vec<_> = image_paths(&dir).unwrap().iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(names, ["a.jpg", "b.png", "c.bmp", "d.ppm", "e.pgm", "grey.png", "rgba.png"]);
    let (ppm, size) = read_image(&dir.join("d.ppm")).unwrap();
    assert_eq!(size, [1, 2]);
    assert_eq!(ppm, [1.0, 0.0, 0.0, 0.0, 51.0 / 255.0, 0.0]);
    let (pgm, _) = read_image(&dir.join("e.pgm")).unwrap();
    assert_eq!(pgm, [102.0 / 255.0; 3]);
    let empty = temp_dir("empty");
    assert!(image_paths(&empty).unwrap_err().to_string().contains("no images"));
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(empty).ok();
}

#[test]
fn feature_dims_and_width_divisors() {
    assert_eq!(FidBlock::ALL.map(FidBlock::dims), [64, 192, 768, 2048]);
    assert_eq!(FidBlock::from_dims(768).unwrap(), FidBlock::PreAuxClassifier);
    assert!(FidBlock::from_dims(1000).is_err());
    let device = device();
    assert!(InceptionV3::narrow(3, &device).is_err() && InceptionV3::narrow(0, &device).is_err());
    let model = InceptionV3::new(&device);
    assert_eq!(model.feature_dim(), 2048);
    // The weights file: 21,820,000 values in 94 BasicConv2d (a conv weight and 4 BN tensors each).
    assert_eq!(model.num_params(), 21_820_000);
}

/// The real weights (`DDPM_INCEPTION_WEIGHTS=/path/pt_inception-2015-12-05.safetensors` or the
/// `.pth`) against pytorch-fid's `get_activations` on the fixture PNGs.
#[test]
fn real_weights_match_pytorch_fid_on_image_folders() {
    let Some(weights) = std::env::var_os("DDPM_INCEPTION_WEIGHTS").filter(|v| !v.is_empty()) else {
        eprintln!(
            "SKIPPED real_weights_match_pytorch_fid_on_image_folders: set DDPM_INCEPTION_WEIGHTS to pt_inception-2015-12-05.safetensors (or pytorch-fid's .pth) to run it"
        );
        return;
    };
    let device = device();
    let model = InceptionV3::from_file(Path::new(&weights), &device).unwrap_or_else(|e| panic!("{e}"));
    let file = read_fixture("real_features.safetensors");
    for size in [32, 64] {
        let folder = fixture(&format!("images{size}"));
        let (got, n) = folder_features(&model, &folder, 2, &device, ProgressMode::Quiet).unwrap();
        assert_eq!(n, 3);
        let want = &file[&format!("images{size}.dims2048")];
        let err = rel_err(&got, &want.data);
        eprintln!("real weights, {size}x{size} PNGs, 2048-d features: relative error {err:.2e}");
        assert!(err < 1e-4, "{size}x{size}: relative error {err:e}");
        let paths = image_paths(&folder).unwrap();
        for block in [FidBlock::FirstMaxPool, FidBlock::SecondMaxPool, FidBlock::PreAuxClassifier] {
            let (got, _) = paths_features(&model, &paths, 3, block, &device, ProgressMode::Quiet).unwrap();
            let err = rel_err(&got, &file[&format!("images{size}.dims{}", block.dims())].data);
            eprintln!("real weights, {size}x{size} PNGs, {}-d features: relative error {err:.2e}", block.dims());
            assert!(err < 1e-4, "{size}x{size} dims {}: relative error {err:e}", block.dims());
        }
    }
}
