//! The FID Inception-v3 of pytorch-fid 0.3.0: the TensorFlow `inception-2015-12-05` graph that
//! TTUR's FID code uses, with pytorch-fid's key names and input convention.
//!
//! - [`InceptionV3`]: the network; [`InceptionV3::features`] gives the 2048-d pool3 features
//!   FID is computed on, [`InceptionV3::block_features`] pytorch-fid's `--dims 64/192/768`.
//! - [`InceptionV3::from_file`]: weights from pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`
//!   ([`FID_WEIGHTS_URL`]) or a `.safetensors` with the same keys; [`WeightsLookup`] finds the file
//!   (or downloads it once into a cache, checking its SHA-256 as `torch.hub` does).
//! - [`preprocess`]: the bilinear resize to 299x299 (PyTorch's half-pixel taps) and `2x - 1`.
//! - [`folder_features`]: the features of every image in a folder, read as pytorch-fid reads them.

mod blocks;
mod folder;
mod resize;
mod weights_file;

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use ddpm_io::weights::{ReferenceKeys, StateDict, load_reference, read_pytorch, read_safetensors};

use crate::error::{EvalError, Result};

pub use blocks::{
    BATCH_NORM_EPS, BasicConv2d, ConvWeight, EPool, FrozenBatchNorm, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE, avg_pool_3x3_valid,
    max_pool_3x3,
};
pub use folder::{IMAGE_EXTENSIONS, folder_features, image_paths, paths_features, read_image};
pub use resize::{INPUT_SIZE, bilinear_matrix, preprocess, resize_bilinear};

pub use weights_file::{ENV_WEIGHTS, ENV_WEIGHTS_URL, FID_WEIGHTS_FILE, FID_WEIGHTS_SHA256_PREFIX, FID_WEIGHTS_URL, WeightsLookup};

/// The length of the pool3 features FID uses.
pub const FEATURE_DIM: usize = 2048;

/// The largest width divisor: every channel count of the network is a multiple of 16.
pub const MAX_WIDTH_DIVISOR: usize = 16;

/// The four outputs pytorch-fid's `InceptionV3` can return (`output_blocks` 0..3, its `--dims`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FidBlock {
    /// After the stem's first max pool: 64 channels at 73x73.
    FirstMaxPool,
    /// After the second max pool: 192 channels at 35x35.
    SecondMaxPool,
    /// After Mixed_6e, what the auxiliary classifier reads: 768 channels at 17x17.
    PreAuxClassifier,
    /// The global average pool after Mixed_7c: the 2048-d FID features.
    FinalAvgPool,
}

impl FidBlock {
    pub const ALL: [FidBlock; 4] = [Self::FirstMaxPool, Self::SecondMaxPool, Self::PreAuxClassifier, Self::FinalAvgPool];

    /// pytorch-fid's `--dims` value of this block (the full-width network's channel count).
    pub fn dims(self) -> usize {
        match self {
            Self::FirstMaxPool => 64,
            Self::SecondMaxPool => 192,
            Self::PreAuxClassifier => 768,
            Self::FinalAvgPool => FEATURE_DIM,
        }
    }

    /// The block for a `--dims` value (64, 192, 768 or 2048).
    pub fn from_dims(dims: usize) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|b| b.dims() == dims)
            .ok_or_else(|| EvalError::Input(format!("pytorch-fid's Inception has features of 64, 192, 768 or 2048 dimensions, not {dims}")))
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// pytorch-fid's FID Inception-v3 (`fid_inception_v3()` inside `InceptionV3`), in inference:
/// the stem `Conv2d_1a_3x3` (3x3/2) `2a` (3x3) `2b` (3x3 pad 1) max-pool(3/2) `3b` (1x1) `4a` (3x3)
/// max-pool(3/2), then Mixed_5b-5d ([`InceptionA`]), 6a ([`InceptionB`]), 6b-6e ([`InceptionC`]),
/// 7a ([`InceptionD`]), 7b and 7c ([`InceptionE`] with average and max pool branches) and a global
/// average pool. Parameter paths are the reference keys with a lower-case first letter
/// (`conv2d_1a_3x3.conv.weight` is `Conv2d_1a_3x3.conv.weight`).
#[derive(Module, Debug)]
pub struct InceptionV3 {
    pub conv2d_1a_3x3: BasicConv2d,
    pub conv2d_2a_3x3: BasicConv2d,
    pub conv2d_2b_3x3: BasicConv2d,
    pub conv2d_3b_1x1: BasicConv2d,
    pub conv2d_4a_3x3: BasicConv2d,
    pub mixed_5b: InceptionA,
    pub mixed_5c: InceptionA,
    pub mixed_5d: InceptionA,
    pub mixed_6a: InceptionB,
    pub mixed_6b: InceptionC,
    pub mixed_6c: InceptionC,
    pub mixed_6d: InceptionC,
    pub mixed_6e: InceptionC,
    pub mixed_7a: InceptionD,
    pub mixed_7b: InceptionE,
    pub mixed_7c: InceptionE,
    /// 1 for the real network; see [`InceptionV3::narrow`].
    #[module(skip)]
    pub width_divisor: usize,
}

impl InceptionV3 {
    /// The network with random weights (convs N(0, 2 / fan_in), identity batch norms): load the
    /// FID weights with [`InceptionV3::load_file`] or build with [`InceptionV3::from_file`].
    pub fn new(device: &Device) -> Self {
        Self::build(1, device)
    }

    /// The same wiring with every channel count divided by `width_divisor` (1, 2, 4, 8 or 16);
    /// the 3 input channels stay. Small networks for tests: with 16 the features have 128
    /// dimensions and the weights 85k values.
    pub fn narrow(width_divisor: usize, device: &Device) -> Result<Self> {
        if width_divisor == 0 || !MAX_WIDTH_DIVISOR.is_multiple_of(width_divisor) {
            return Err(EvalError::Input(format!("width divisor {width_divisor}: it must divide 16, the largest common factor of the network's widths")));
        }
        Ok(Self::build(width_divisor, device))
    }

    fn build(d: usize, device: &Device) -> Self {
        let stem = |c_in: usize, c_out: usize, k: usize, stride: usize, padding: usize| {
            let c_in = if c_in == 3 { 3 } else { c_in / d };
            BasicConv2d::new(c_in, c_out / d, [k, k], [stride, stride], [padding, padding], device)
        };
        Self {
            conv2d_1a_3x3: stem(3, 32, 3, 2, 0),
            conv2d_2a_3x3: stem(32, 32, 3, 1, 0),
            conv2d_2b_3x3: stem(32, 64, 3, 1, 1),
            conv2d_3b_1x1: stem(64, 80, 1, 1, 0),
            conv2d_4a_3x3: stem(80, 192, 3, 1, 0),
            mixed_5b: InceptionA::new(192, 32, d, device),
            mixed_5c: InceptionA::new(256, 64, d, device),
            mixed_5d: InceptionA::new(288, 64, d, device),
            mixed_6a: InceptionB::new(288, d, device),
            mixed_6b: InceptionC::new(768, 128, d, device),
            mixed_6c: InceptionC::new(768, 160, d, device),
            mixed_6d: InceptionC::new(768, 160, d, device),
            mixed_6e: InceptionC::new(768, 192, d, device),
            mixed_7a: InceptionD::new(768, d, device),
            mixed_7b: InceptionE::new(1280, EPool::Average, d, device),
            mixed_7c: InceptionE::new(2048, EPool::Max, d, device),
            width_divisor: d,
        }
    }

    /// The FID network with weights from `path`: pytorch-fid's `.pth` (a plain state dict; its
    /// `fc.*` classifier and `num_batches_tracked` counters are ignored) or a `.safetensors` with
    /// the same keys.
    pub fn from_file(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::new(device).load_file(path)
    }

    /// Loads weights from a `.pth` / `.pt` / `.safetensors` file into this network (see
    /// [`InceptionV3::from_file`]). Every missing, mis-shaped or unused key is reported.
    pub fn load_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(EvalError::File {
                path: path.to_path_buf(),
                message: format!(
                    "no such weights file. FID needs pytorch-fid's Inception weights: download {FID_WEIGHTS_URL} \
                     (pt_inception-2015-12-05-6726825d.pth, about 96 MB) and pass its path, or a .safetensors with the same keys"
                ),
            });
        }
        let state = if path.extension().is_some_and(|e| e == "safetensors") { read_safetensors(path)? } else { read_pytorch(path)? };
        self.load_state_dict(&state, &path.display().to_string())
    }

    /// Loads a pytorch-fid state dict (`Conv2d_1a_3x3.conv.weight`, ...); `fc.*` is dropped, and
    /// `file` names the source in error messages.
    pub fn load_state_dict(self, state: &StateDict, file: &str) -> Result<Self> {
        let state: StateDict = state.iter().filter(|(k, _)| !k.starts_with("fc.")).map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok(load_reference(self, &state, file)?)
    }

    /// The length of the final features: 2048 for the real network.
    pub fn feature_dim(&self) -> usize {
        FEATURE_DIM / self.width_divisor
    }

    /// pytorch-fid's `InceptionV3.forward` without its preprocessing: the maps of every block up
    /// to `last`, from a network input `[B, 3, 299, 299]` in [-1, 1] (see [`preprocess`]). The
    /// final block's map is the global average pool, `[B, 2048, 1, 1]`.
    pub fn block_maps(&self, x: Tensor<4>, last: FidBlock) -> Vec<Tensor<4>> {
        let mut maps = Vec::with_capacity(last.index() + 1);
        let x = self.conv2d_2b_3x3.forward(self.conv2d_2a_3x3.forward(self.conv2d_1a_3x3.forward(x)));
        let x = max_pool_3x3(x, 2, 0);
        maps.push(x.clone());
        if last == FidBlock::FirstMaxPool {
            return maps;
        }
        let x = max_pool_3x3(self.conv2d_4a_3x3.forward(self.conv2d_3b_1x1.forward(x)), 2, 0);
        maps.push(x.clone());
        if last == FidBlock::SecondMaxPool {
            return maps;
        }
        let x = self.mixed_5d.forward(self.mixed_5c.forward(self.mixed_5b.forward(x)));
        let x = self.mixed_6a.forward(x);
        let x = self.mixed_6e.forward(self.mixed_6d.forward(self.mixed_6c.forward(self.mixed_6b.forward(x))));
        maps.push(x.clone());
        if last == FidBlock::PreAuxClassifier {
            return maps;
        }
        let x = self.mixed_7c.forward(self.mixed_7b.forward(self.mixed_7a.forward(x)));
        maps.push(global_average(x));
        maps
    }

    /// The 2048-d FID features `[B, 2048]` of images `[B, 3, H, W]` in [0, 1]: resized to 299x299
    /// (PyTorch's bilinear, align_corners=False), mapped to [-1, 1], through the network.
    ///
    /// # Panics
    /// If the images do not have 3 channels.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.block_features(images, FidBlock::FinalAvgPool)
    }

    /// The features pytorch-fid computes for `--dims block.dims()`: the block's map, averaged over
    /// its pixels unless it is the final pool, `[B, dims]`, from images in [0, 1].
    ///
    /// # Panics
    /// If the images do not have 3 channels.
    pub fn block_features(&self, images: Tensor<4>, block: FidBlock) -> Tensor<2> {
        let [_, channels, _, _] = images.dims();
        assert_eq!(channels, 3, "the FID Inception takes RGB images [B, 3, H, W], got {channels} channels");
        let map = self.block_maps(preprocess(images), block).pop().expect("one map per block");
        let [b, c, _, _] = map.dims();
        global_average(map).reshape([b, c])
    }
}

/// PyTorch's `adaptive_avg_pool2d(x, (1, 1))`: the mean over each channel's pixels, `[B, C, 1, 1]`.
fn global_average(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h * w]).mean_dim(2).reshape([b, c, 1, 1])
}

impl ReferenceKeys for InceptionV3 {
    /// The module names are pytorch-fid's with a lower-case first letter.
    fn reference_key(&self, path: &str) -> String {
        let mut chars = path.chars();
        match chars.next() {
            Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
            None => String::new(),
        }
    }

    fn config_hint(&self, _key: &str) -> &'static str {
        "that the file is pytorch-fid's FID Inception state dict (pt_inception-2015-12-05: keys like \
         `Conv2d_1a_3x3.conv.weight`, `Mixed_7c.branch_pool.bn.running_var`), not torchvision's ImageNet \
         Inception or the `blocks.*` names of pytorch-fid's wrapper"
    }
}
