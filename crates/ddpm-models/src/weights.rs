//! Weights in and out with the reference's (PyTorch) key names.
//!
//! A network says how each of its Burn parameter paths is called in the reference
//! ([`ReferenceKeys`]); loading walks the module, looks every parameter up under that name, and
//! reports every missing, mismatched or unused key at once. The only layout changes are Burn's
//! `Linear` weight (`[in, out]`, PyTorch's is `[out, in]`) and unit dimensions (a 1D network's
//! `[out, in, k]` convolution is `[out, in, 1, k]` here).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorCreationOptions, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};

/// A tensor of a reference state dict, in f32.
#[derive(Debug, Clone, PartialEq)]
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    /// Stored as integers in the file (labels, step counters): never a weight.
    pub integer: bool,
}

/// A reference state dict: PyTorch key -> tensor.
pub type StateDict = BTreeMap<String, RefTensor>;

/// How a network's parameters are named (and shaped) in the reference implementation.
pub trait ReferenceKeys {
    /// The reference key of the Burn parameter at `path` (e.g. `downs.0.block1.mlp.weight` ->
    /// `downs.0.0.mlp.1.weight`).
    fn reference_key(&self, path: &str) -> String;

    /// The reference shape of a parameter with Burn shape `shape` (for export).
    fn reference_shape(&self, _path: &str, shape: &[usize]) -> Vec<usize> {
        shape.to_vec()
    }

    /// The configuration fields to check when the parameter behind `key` does not fit.
    fn config_hint(&self, key: &str) -> &'static str;
}

/// Reads every tensor of a `.safetensors` file (f32, f64, f16 and bf16 become f32).
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<StateDict> {
    let path = path.as_ref();
    let file_err = |message: String| ModelError::File { file: path.display().to_string(), message };
    let bytes = std::fs::read(path).map_err(|e| file_err(format!("cannot read: {e}")))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| file_err(format!("not a valid safetensors file: {e}")))?;
    let mut out = StateDict::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F64 => raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|b| burn::tensor::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|b| burn::tensor::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::I64 => raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
            Dtype::I32 => raw.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32).collect(),
            Dtype::BOOL | Dtype::U8 => raw.iter().map(|&b| f32::from(b)).collect(),
            other => return Err(file_err(format!("tensor `{name}` has dtype {other:?}, which ddpm-rs does not read"))),
        };
        let integer = !matches!(view.dtype(), Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16);
        out.insert(name, RefTensor { shape: view.shape().to_vec(), data, integer });
    }
    Ok(out)
}

/// Writes a state dict as `.safetensors` (f32), through a temporary file and a rename so that an
/// interrupted write never leaves a broken file.
pub fn write_safetensors(path: impl AsRef<Path>, state: &StateDict) -> Result<()> {
    let path = path.as_ref();
    let file_err = |message: String| ModelError::File { file: path.display().to_string(), message };
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = state
        .iter()
        .map(|(k, t)| (k.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape.clone()))
        .collect();
    let views = bytes
        .iter()
        .map(|(k, b, s)| safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).map(|v| (k.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| file_err(format!("cannot encode: {e}")))?;
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, None, &tmp).map_err(|e| file_err(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| file_err(format!("cannot rename {} into place: {e}", tmp.display())))
}

/// The entries of `state` whose key starts with `prefix`, with the prefix removed (e.g. `model.` or
/// `ema_model.` in the reference trainer's checkpoints).
pub fn strip_prefix(state: &StateDict, prefix: &str) -> StateDict {
    state.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone()))).collect()
}

/// `[rows, cols]` row-major -> `[cols, rows]` row-major.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = data[r * cols + c];
        }
    }
    t
}

/// The module path a `ModuleMapper` / `ModuleVisitor` is at, and the container types around it.
#[derive(Default)]
struct PathStack {
    path: Vec<String>,
    containers: Vec<String>,
}

impl PathStack {
    fn enter(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit(&mut self) {
        self.path.pop();
        self.containers.pop();
    }

    fn joined(&self) -> String {
        self.path.join(".")
    }

    /// Whether the current parameter is the weight of a Burn `Linear` (stored `[in, out]`).
    fn is_linear_weight(&self) -> bool {
        self.containers.last().is_some_and(|c| c == "Struct:Linear") && self.path.last().is_some_and(|p| p == "weight")
    }
}

fn squeeze_units(shape: &[usize]) -> Vec<usize> {
    shape.iter().copied().filter(|&d| d != 1).collect()
}

struct Loader<'a, K: ?Sized> {
    keys: &'a K,
    state: &'a StateDict,
    at: PathStack,
    used: BTreeSet<String>,
    problems: Vec<String>,
}

impl<K: ReferenceKeys + ?Sized> ModuleMapper for Loader<'_, K> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.at.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.at.joined();
        let key = self.keys.reference_key(&path);
        let target = param.val().dims();
        let Some(src) = self.state.get(&key) else {
            self.problems.push(format!(
                "missing `{key}` (for `{path}`, shape {target:?}); check {}",
                self.keys.config_hint(&key)
            ));
            return param;
        };
        self.used.insert(key.clone());
        let linear_weight = self.at.is_linear_weight();
        let (shape, data) = if linear_weight && src.shape.len() == 2 {
            let (o, i) = (src.shape[0], src.shape[1]);
            (vec![i, o], transpose(&src.data, o, i))
        } else {
            (src.shape.clone(), src.data.clone())
        };
        if squeeze_units(&shape) != squeeze_units(&target) {
            self.problems.push(format!(
                "`{key}` has shape {:?} in the file but the network needs {:?}{}; check {}",
                src.shape,
                target,
                if linear_weight { " (transposed)" } else { "" },
                self.keys.config_hint(&key)
            ));
            return param;
        }
        param.map(|old| {
            let options = TensorCreationOptions::new(old.device()).with_dtype(old.dtype());
            let new = Tensor::from_data(TensorData::new(data, target), options);
            if old.is_require_grad() { new.require_grad() } else { new }
        })
    }
}

/// Loads a reference state dict into `module`. Every parameter must be found with a fitting shape
/// and every float tensor of the file must be used; otherwise the error lists each problem with
/// the key, the shapes and the configuration fields to check. `file` names the source in messages.
pub fn load_reference<M: Module + ReferenceKeys>(module: M, state: &StateDict, file: &str) -> Result<M> {
    let mut loader = Loader { keys: &module, state, at: PathStack::default(), used: BTreeSet::new(), problems: Vec::new() };
    // The loader borrows the module for its key map while mapping a clone.
    let loaded = module.clone().map(&mut loader);
    let mut problems = loader.problems;
    for key in state.iter().filter(|(k, t)| !t.integer && !loader.used.contains(*k)).map(|(k, _)| k) {
        problems.push(format!("`{key}` in the file is not used by the network; check {}", module.config_hint(key)));
    }
    if problems.is_empty() { Ok(loaded) } else { Err(ModelError::Weights { file: file.to_string(), problems }) }
}

struct Exporter<'a, K: ?Sized> {
    keys: &'a K,
    at: PathStack,
    out: StateDict,
}

impl<K: ReferenceKeys + ?Sized> ModuleVisitor for Exporter<'_, K> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.at.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.at.joined();
        let value = param.val();
        let mut shape = value.dims().to_vec();
        let mut data: Vec<f32> = value.into_data().try_into_vec_as::<f32>().expect("float parameters convert to f32");
        if self.at.is_linear_weight() && shape.len() == 2 {
            let (i, o) = (shape[0], shape[1]);
            data = transpose(&data, i, o);
            shape = vec![o, i];
        }
        let shape = self.keys.reference_shape(&path, &shape);
        self.out.insert(self.keys.reference_key(&path), RefTensor { shape, data, integer: false });
    }
}

/// The network's parameters as a reference state dict (PyTorch names, layouts and shapes).
pub fn reference_state_dict<M: Module + ReferenceKeys>(module: &M) -> StateDict {
    let mut exporter = Exporter { keys: module, at: PathStack::default(), out: StateDict::new() };
    module.visit(&mut exporter);
    exporter.out
}

/// Reads every tensor of a PyTorch file (`torch.save` zip or legacy pickle) without running any
/// pickle code; nested dicts are flattened with dots (`model.model.downs.0.0.block1.proj.weight`).
pub fn read_pytorch(path: impl AsRef<Path>) -> Result<StateDict> {
    use burn::store::pytorch_reader::{DType as PtDType, PytorchReader};
    let path = path.as_ref();
    let file_err = |message: String| ModelError::File { file: path.display().to_string(), message };
    let reader = PytorchReader::new(path).map_err(|e| file_err(format!("not a readable PyTorch file: {e}")))?;
    let mut out = StateDict::new();
    for (name, t) in reader.into_tensors() {
        let raw = t.read().map_err(|e| file_err(format!("cannot read tensor `{name}`: {e}")))?;
        let (data, integer): (Vec<f32>, bool) = match t.dtype() {
            PtDType::F32 => (raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(), false),
            PtDType::F64 => (raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(), false),
            PtDType::F16 => (raw.chunks_exact(2).map(|b| burn::tensor::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(), false),
            PtDType::BF16 => (raw.chunks_exact(2).map(|b| burn::tensor::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(), false),
            PtDType::I64 => (raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(), true),
            PtDType::I32 => (raw.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32).collect(), true),
            PtDType::Bool | PtDType::U8 => (raw.iter().map(|&b| f32::from(b)).collect(), true),
            // Other integer widths never hold weights.
            _ => continue,
        };
        out.insert(name, RefTensor { shape: t.shape().to_vec(), data, integer });
    }
    Ok(out)
}

/// Which network of a reference `Trainer` checkpoint to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainerWeights {
    /// The exponential moving average (`ema.ema_model.model.*`), what the reference samples with.
    Ema,
    /// The online network (`model.model.*`).
    Model,
}

/// The network weights inside a denoising-diffusion-pytorch `Trainer` checkpoint (`model-N.pt`,
/// read by [`read_pytorch`]): its `model` entry is the `GaussianDiffusion` state dict with the
/// network under `model.`, its `ema` entry the EMA wrapper with the averaged copy under `ema_model.`.
/// The diffusion's own buffers (betas and the like) are left out: ddpm-core recomputes them.
pub fn trainer_checkpoint_weights(state: &StateDict, which: TrainerWeights, file: &str) -> Result<StateDict> {
    let prefix = match which {
        TrainerWeights::Ema => "ema.ema_model.model.",
        TrainerWeights::Model => "model.model.",
    };
    let weights = strip_prefix(state, prefix);
    if weights.is_empty() {
        let mut tops: Vec<&str> = state.keys().filter_map(|k| k.split('.').next()).collect();
        tops.dedup();
        return Err(ModelError::File {
            file: file.to_string(),
            message: format!(
                "no `{prefix}*` tensors: this is not a denoising-diffusion-pytorch Trainer checkpoint (top-level entries: {})",
                tops.join(", ")
            ),
        });
    }
    Ok(weights)
}
