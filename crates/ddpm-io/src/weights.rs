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

use crate::error::{IoError, Result, panic_text};

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
///
/// The header's claims are checked against the file before they are trusted: the 8-byte header
/// length against the file's size, and each tensor's dtype, shape and `data_offsets` against the
/// data the file holds (in range, no overlaps or gaps, sizes that match). Errors name the file,
/// the tensor and the numbers, e.g. `w.safetensors: the first 8 bytes say the JSON header is
/// 1,000,000 bytes but the file holds 96 bytes after them; the file is truncated or not a
/// safetensors file`. Nothing larger than the file is allocated.
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<StateDict> {
    let path = path.as_ref();
    let file_err = |message: String| IoError::File { file: path.display().to_string(), message };
    let bytes = std::fs::read(path).map_err(|e| file_err(format!("cannot read: {e}")))?;
    let header_len = safetensors_header_len(&bytes).map_err(&file_err)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        // The header is valid JSON (else `e` says where it is not); say which tensor is wrong.
        let problems = std::str::from_utf8(&bytes[8..8 + header_len]).ok().map(|h| safetensors_problems(h, bytes.len() - 8 - header_len));
        match problems {
            Some(problems) if !problems.is_empty() => file_err(format!("not a valid safetensors file: {}", problems.join("; "))),
            _ => file_err(format!("not a valid safetensors file: {e}")),
        }
    })?;
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

/// The length of a safetensors file's JSON header (its first 8 bytes, little-endian), checked
/// against the file's size and safetensors' 100 MB limit; the message says what the file holds.
fn safetensors_header_len(bytes: &[u8]) -> std::result::Result<usize, String> {
    let hint = if bytes.starts_with(b"PK\x03\x04") {
        " (it is a zip archive: a PyTorch .pt?)"
    } else if bytes.starts_with(b"\x93NUMPY") {
        " (it is a numpy .npy array)"
    } else {
        ""
    };
    let Some(len_bytes) = bytes.first_chunk::<8>() else {
        return Err(format!(
            "the file holds {} bytes, fewer than the 8-byte header length that starts a safetensors file; it is truncated or not a safetensors file",
            bytes.len()
        ));
    };
    let claimed = u64::from_le_bytes(*len_bytes);
    let after = (bytes.len() - 8) as u64;
    if claimed > after {
        return Err(format!(
            "the first 8 bytes say the JSON header is {} bytes but the file holds {} bytes after them; the file is truncated or not a safetensors file{hint}",
            thousands(claimed),
            thousands(after)
        ));
    }
    if claimed > 100_000_000 {
        return Err(format!("the first 8 bytes say the JSON header is {} bytes, over safetensors' 100 MB limit; the file is corrupt", thousands(claimed)));
    }
    if bytes.get(8) != Some(&b'{') {
        return Err(format!(
            "the {claimed}-byte header is not a JSON object (it does not start with `{{`); the file is corrupt or not a safetensors file{hint}"
        ));
    }
    Ok(claimed as usize)
}

/// What is wrong with the tensors a safetensors header (valid JSON) declares, against the
/// `data_len` bytes of data after it: unknown dtypes, shapes whose size differs from their
/// `data_offsets`, offsets out of range, overlapping, or leaving bytes to no tensor.
fn safetensors_problems(header: &str, data_len: usize) -> Vec<String> {
    // Not JSON: safetensors' own error says where.
    let Ok(serde_json::Value::Object(entries)) = serde_json::from_str::<serde_json::Value>(header) else { return Vec::new() };
    let mut problems = Vec::new();
    let mut spans: Vec<(u64, u64, &str)> = Vec::new();
    for (name, info) in entries.iter().filter(|(name, _)| *name != "__metadata__") {
        let numbers =
            |key: &str| info.get(key).and_then(serde_json::Value::as_array).and_then(|a| a.iter().map(serde_json::Value::as_u64).collect::<Option<Vec<u64>>>());
        let (Some(dtype), Some(shape), Some(offsets)) = (info.get("dtype").and_then(serde_json::Value::as_str), numbers("shape"), numbers("data_offsets"))
        else {
            problems.push(format!("tensor `{name}` lacks a dtype, or a shape and data_offsets of non-negative integers"));
            continue;
        };
        let &[start, end] = &offsets[..] else {
            problems.push(format!("tensor `{name}` has {} data_offsets; it needs two, [start, end]", offsets.len()));
            continue;
        };
        let bits: u64 = match dtype {
            "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
            "I16" | "U16" | "F16" | "BF16" => 16,
            "I32" | "U32" | "F32" => 32,
            "I64" | "U64" | "F64" | "C64" => 64,
            "F4" => 4,
            "F6_E2M3" | "F6_E3M2" => 6,
            other => {
                problems.push(format!("tensor `{name}` has the unknown dtype `{other}`"));
                continue;
            }
        };
        let claim = format!("{dtype} {shape:?}");
        match shape.iter().try_fold(bits, |acc, &d| acc.checked_mul(d)).map(|b| b.div_ceil(8)) {
            None => problems.push(format!("tensor `{name}` is {claim}, more bytes than 64 bits count")),
            Some(need) if end < start => {
                problems.push(format!("tensor `{name}` ({claim} = {} bytes): its data_offsets [{start}, {end}] end before they start", thousands(need)))
            }
            Some(need) if end - start != need => problems.push(format!(
                "tensor `{name}` is {claim} = {} bytes but its data_offsets [{start}, {end}] span {} bytes",
                thousands(need),
                thousands(end - start)
            )),
            Some(_) => {}
        }
        if end > data_len as u64 {
            problems.push(format!(
                "tensor `{name}`: its data_offsets [{start}, {end}] reach past the {} bytes of data the file holds after its header; the file is truncated or the header is wrong",
                thousands(data_len as u64)
            ));
        }
        spans.push((start, end, name));
    }
    spans.sort();
    let mut reached: (u64, &str) = (0, "");
    for &(start, end, name) in &spans {
        if start < reached.0 {
            problems.push(format!(
                "tensors `{}` and `{name}` overlap: `{name}` starts at byte {start}, before `{}` ends at byte {}",
                reached.1, reached.1, reached.0
            ));
        } else if start > reached.0 {
            let before = if reached.1.is_empty() { "the first tensor".to_owned() } else { format!("`{}` (ending at {}) and `{name}`", reached.1, reached.0) };
            problems.push(format!("bytes {}..{start} of the data belong to no tensor (a gap before {before}); the header is wrong", reached.0));
        }
        if end >= reached.0 {
            reached = (end, name);
        }
    }
    if reached.0 < data_len as u64 && problems.is_empty() {
        problems.push(format!(
            "the tensors end at byte {} of the data but the file holds {} bytes of data after its header; the header is wrong or the file has trailing bytes",
            thousands(reached.0),
            thousands(data_len as u64)
        ));
    }
    problems.truncate(8);
    problems
}

/// `12288000` -> `12,288,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Writes a state dict as `.safetensors` (f32), through a temporary file and a rename so that an
/// interrupted write never leaves a broken file.
pub fn write_safetensors(path: impl AsRef<Path>, state: &StateDict) -> Result<()> {
    let path = path.as_ref();
    let file_err = |message: String| IoError::File { file: path.display().to_string(), message };
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
    // The module is its own key map: the original answers the names while a clone is mapped.
    load_with_keys(module.clone(), &module, state, file)
}

/// [`load_reference`] with a separate key map `keys` (e.g. another library's names for the same
/// network, as ddpm-models' `diffusers` module does).
pub fn load_with_keys<M: Module, K: ReferenceKeys + ?Sized>(module: M, keys: &K, state: &StateDict, file: &str) -> Result<M> {
    let mut loader = Loader { keys, state, at: PathStack::default(), used: BTreeSet::new(), problems: Vec::new() };
    let loaded = module.map(&mut loader);
    let mut problems = loader.problems;
    for key in state.iter().filter(|(k, t)| !t.integer && !loader.used.contains(*k)).map(|(k, _)| k) {
        problems.push(format!("`{key}` in the file is not used by the network; check {}", keys.config_hint(key)));
    }
    if problems.is_empty() { Ok(loaded) } else { Err(IoError::Weights { file: file.to_string(), problems }) }
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
    state_dict_with_keys(module, module)
}

/// [`reference_state_dict`] with a separate key map `keys`.
pub fn state_dict_with_keys<M: Module, K: ReferenceKeys + ?Sized>(module: &M, keys: &K) -> StateDict {
    let mut exporter = Exporter { keys, at: PathStack::default(), out: StateDict::new() };
    module.visit(&mut exporter);
    exporter.out
}

/// Reads every tensor of a PyTorch file (`torch.save` zip or legacy pickle) without running any
/// pickle code; nested dicts are flattened with dots (`model.model.downs.0.0.block1.proj.weight`).
///
/// Before burn's reader parses it, the file's kind is checked by its first bytes, and for a zip
/// archive (what `torch.save` writes) the central directory: that it has a `data.pkl`, and that
/// every entry's sizes fit in the file. Each tensor's bytes are checked against its dtype and
/// shape. Errors name the file and what is wrong.
pub fn read_pytorch(path: impl AsRef<Path>) -> Result<StateDict> {
    use burn::store::pytorch_reader::{DType as PtDType, PytorchReader};
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let path = path.as_ref();
    let file_err = |message: String| IoError::File { file: path.display().to_string(), message };
    check_pytorch_container(path).map_err(&file_err)?;
    // burn's PytorchReader parses the pickle program and the zip structure of a file that may be
    // hostile. It is hardened (sizes, nesting and memo copies are bounded), but a panic on some
    // malformed input it missed must not unwind into the caller: it is caught here and reported
    // as an unreadable file naming this path. Nothing is shared across the boundary except the
    // path, so no state is left half-updated.
    let reader = catch_unwind(AssertUnwindSafe(|| PytorchReader::new(path)))
        .map_err(|panic| file_err(format!("not a readable PyTorch file: the reader failed on it ({})", panic_text(&*panic))))?
        .map_err(|e| file_err(format!("not a readable PyTorch file: {e}")))?;
    let mut out = StateDict::new();
    for (name, t) in reader.into_tensors() {
        let (dtype, shape) = (t.dtype(), t.shape().to_vec());
        // Contained for the same reason as the parse above: the tensor's bytes come from the file.
        let raw = catch_unwind(AssertUnwindSafe(|| t.read()))
            .map_err(|panic| file_err(format!("cannot read tensor `{name}`: the reader failed on it ({})", panic_text(&*panic))))?
            .map_err(|e| file_err(format!("cannot read tensor `{name}`: {e}")))?;
        let expected = shape.iter().try_fold(dtype.size(), |n, &d| n.checked_mul(d));
        if expected != Some(raw.len()) {
            return Err(file_err(format!(
                "tensor `{name}` is {dtype:?} {shape:?} = {} bytes but the file gave {} bytes for it; the file is corrupt",
                expected.map_or_else(|| "more than 64 bits count".to_owned(), |n| thousands(n as u64)),
                thousands(raw.len() as u64)
            )));
        }
        let (data, integer): (Vec<f32>, bool) = match dtype {
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
        out.insert(name, RefTensor { shape, data, integer });
    }
    Ok(out)
}

/// Checks a PyTorch file's kind by its first bytes and, for a zip archive, its central directory
/// against the file: a `data.pkl` entry, and every entry's data inside the file with sizes that
/// its compression can give. Reads the first bytes, the last 64 KiB and the central directory
/// (which must lie inside the file), nothing else.
fn check_pytorch_container(path: &Path) -> std::result::Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = file.metadata().map_err(|e| format!("cannot read its size: {e}"))?.len();
    let mut head = Vec::new();
    (&mut file).take(262).read_to_end(&mut head).map_err(|e| format!("cannot read: {e}"))?;
    let is_zip = head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06");
    if !is_zip {
        let tar = head.get(257..262) == Some(b"ustar");
        // Legacy (torch < 1.6) files start with a pickled magic number; plain pickles with an opcode.
        let pickle = matches!(head.first(), Some(0x80 | b'(' | b'}' | b']' | b'c'));
        if tar || pickle {
            return Ok(());
        }
        let start: String = head.iter().take(8).map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '.' }).collect();
        let hint = if head.starts_with(b"\x93NUMPY") {
            " (it is a numpy .npy array)"
        } else if head.len() > 8 && head[8] == b'{' {
            " (it looks like a .safetensors file: give it that extension)"
        } else {
            ""
        };
        return Err(format!(
            "not a PyTorch file: it starts with `{start}`{hint}, not a zip archive (`PK`, what torch.save writes) nor a pickle; \
             the file is corrupt or of another kind"
        ));
    }
    // The end-of-central-directory record: in the last 22 + 65535 bytes (its comment is at most
    // 65535 bytes long).
    let tail_len = len.min(22 + 65_535);
    let mut tail = vec![0u8; tail_len as usize];
    file.seek(SeekFrom::Start(len - tail_len)).and_then(|_| file.read_exact(&mut tail)).map_err(|e| format!("cannot read: {e}"))?;
    let u16_at = |b: &[u8], i: usize| u64::from(u16::from_le_bytes([b[i], b[i + 1]]));
    let u32_at = |b: &[u8], i: usize| u64::from(u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let Some(eocd) = (0..tail.len().saturating_sub(21)).rev().find(|&i| tail[i..].starts_with(b"PK\x05\x06")) else {
        return Err(format!(
            "the zip archive has no end-of-central-directory record in its last {} bytes; the file is truncated (it holds {} bytes)",
            thousands(tail_len),
            thousands(len)
        ));
    };
    let (mut entries, mut cd_size, mut cd_offset) = (u16_at(&tail, eocd + 10), u32_at(&tail, eocd + 12), u32_at(&tail, eocd + 16));
    if entries == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        // Zip64: the locator, 20 bytes before the record, points at the zip64 record.
        let locator = eocd.checked_sub(20).filter(|&i| tail[i..].starts_with(b"PK\x06\x07")).map(|i| u64_at(&tail, i + 8));
        let mut record = [0u8; 56];
        let read = locator
            .filter(|&at| at.checked_add(56).is_some_and(|end| end <= len))
            .map(|at| file.seek(SeekFrom::Start(at)).and_then(|_| file.read_exact(&mut record)).is_ok() && record.starts_with(b"PK\x06\x06"));
        if read != Some(true) {
            return Err("the zip64 archive's end-of-central-directory locator or record is missing or lies outside the file; the file is corrupt".into());
        }
        (entries, cd_size, cd_offset) = (u64_at(&record, 32), u64_at(&record, 40), u64_at(&record, 48));
    }
    if cd_offset.checked_add(cd_size).is_none_or(|end| end > len) {
        return Err(format!(
            "the zip's central directory says it lies at bytes {}..{} but the file holds {} bytes; the file is truncated or corrupt",
            thousands(cd_offset),
            thousands(cd_offset.saturating_add(cd_size)),
            thousands(len)
        ));
    }
    let mut cd = vec![0u8; cd_size as usize];
    file.seek(SeekFrom::Start(cd_offset)).and_then(|_| file.read_exact(&mut cd)).map_err(|e| format!("cannot read: {e}"))?;
    let mut names = Vec::new();
    let mut at = 0usize;
    while names.len() as u64 != entries && at + 46 <= cd.len() && cd[at..].starts_with(b"PK\x01\x02") {
        let (method, mut stored, mut size) = (u16_at(&cd, at + 10), u32_at(&cd, at + 20), u32_at(&cd, at + 24));
        let (name_len, extra_len, comment_len) = (u16_at(&cd, at + 28) as usize, u16_at(&cd, at + 30) as usize, u16_at(&cd, at + 32) as usize);
        let mut offset = u32_at(&cd, at + 42);
        let end = at + 46 + name_len + extra_len + comment_len;
        if end > cd.len() {
            break;
        }
        let name = String::from_utf8_lossy(&cd[at + 46..at + 46 + name_len]).into_owned();
        // Zip64 sizes and offset live in extra field 0x0001, each present only when its 32-bit
        // field is saturated.
        let mut extra = &cd[at + 46 + name_len..at + 46 + name_len + extra_len];
        while extra.len() >= 4 {
            let (id, field_len) = (u16_at(extra, 0), u16_at(extra, 2) as usize);
            let field = &extra[4..extra.len().min(4 + field_len)];
            if id == 1 {
                let mut values = field.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                for value in [&mut size, &mut stored, &mut offset] {
                    if *value == 0xFFFF_FFFF {
                        *value = values.next().unwrap_or(*value);
                    }
                }
            }
            extra = &extra[extra.len().min(4 + field_len)..];
        }
        // A local header (30 bytes and the name) precedes the data.
        if offset.checked_add(30 + name_len as u64).and_then(|o| o.checked_add(stored)).is_none_or(|end| end > len) {
            return Err(format!(
                "zip entry `{name}` says {} bytes start near byte {} but the file holds {} bytes; the file is truncated or corrupt",
                thousands(stored),
                thousands(offset),
                thousands(len)
            ));
        }
        match method {
            0 if stored != size => {
                return Err(format!(
                    "zip entry `{name}` is stored uncompressed but declares {} bytes in {} stored bytes; the archive is corrupt",
                    thousands(size),
                    thousands(stored)
                ));
            }
            8 if size > stored.saturating_mul(1032).saturating_add(1024) => {
                return Err(format!(
                    "zip entry `{name}` declares {} bytes once inflated from {} compressed bytes, more than deflate can expand; the archive is corrupt",
                    thousands(size),
                    thousands(stored)
                ));
            }
            _ => {}
        }
        names.push(name);
        at = end;
    }
    if names.is_empty() && entries > 0 {
        return Err(format!(
            "the zip's end record says its central directory of {entries} entries starts at byte {}, but no entry is there; \
             the file is corrupt (bytes inserted or removed?)",
            thousands(cd_offset)
        ));
    }
    if (names.len() as u64) < entries {
        return Err(format!(
            "the zip's central directory lists {entries} entries but only {} can be read from its {} bytes; the file is corrupt",
            names.len(),
            thousands(cd_size)
        ));
    }
    if !names.iter().any(|n| n == "data.pkl" || n.ends_with("/data.pkl")) {
        let shown: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
        return Err(format!(
            "the zip archive has no `data.pkl` entry, so it is not a torch.save checkpoint (it holds {}: {}{})",
            names.len(),
            if shown.is_empty() { "nothing".to_owned() } else { shown.join(", ") },
            if names.len() > shown.len() { ", ..." } else { "" }
        ));
    }
    Ok(())
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
        return Err(IoError::File {
            file: file.to_string(),
            message: format!(
                "no `{prefix}*` tensors: this is not a denoising-diffusion-pytorch Trainer checkpoint (top-level entries: {})",
                tops.join(", ")
            ),
        });
    }
    Ok(weights)
}
