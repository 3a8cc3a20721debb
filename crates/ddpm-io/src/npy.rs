//! NumPy `.npy` arrays: a header reader that checks the header's claim (dtype, shape, data size)
//! against the bytes that hold it before anything is allocated, and float arrays in and out
//! (initial noise, saved samples, vector data sets, features).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use npyz::{TypeChar, WriterBuilder};

use crate::error::{IoError, Result};

fn npy_err(path: &Path, message: impl Into<String>) -> IoError {
    IoError::File { file: path.display().to_string(), message: message.into() }
}

/// An array read from a `.npy` file: C-order values as `f32` and the shape.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads a `.npy` file of a float or integer dtype (float32, float64, uint8, int32, int64) into
/// `f32` (C order; Fortran-ordered arrays are refused with the fix).
///
/// The header's claim (dtype, shape, data size) is checked against the file's size before
/// anything is allocated for the data, so a truncated file or a lying header gets an error that
/// says both, e.g. `x.npy: the header says float32 [1000, 3, 32, 32] = 12,288,000 bytes of data but
/// the file holds 4,096 bytes after its 128-byte header; it is truncated or the header is wrong`.
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let file = File::open(path).map_err(|e| npy_err(path, format!("cannot open: {e}")))?;
    let file_len = file.metadata().map_err(|e| npy_err(path, format!("cannot read its size: {e}")))?.len();
    let mut reader = BufReader::new(file);
    let (claim, raw_header) = read_npy_header(&mut reader, file_len, "the file").map_err(|message| npy_err(path, message))?;
    let dtype = claim.descr.trim_start_matches(['<', '>', '|', '=']).to_owned();
    if !matches!(dtype.as_str(), "f4" | "f8" | "u1" | "i4" | "i8") {
        let fix = if dtype == "f2" { "convert with a.astype(np.float32)" } else { "use float32, float64, uint8, int32 or int64 (a.astype(np.float32))" };
        return Err(npy_err(path, format!("dtype {} (`{}`) is not read; {fix}", claim.dtype_name(), claim.descr)));
    }
    if claim.fortran_order {
        return Err(npy_err(path, "the array is Fortran-ordered; save it with np.save(path, np.ascontiguousarray(a))"));
    }
    let shape = claim.shape.iter().map(|&d| usize::try_from(d)).collect::<std::result::Result<Vec<usize>, _>>();
    let n = usize::try_from(claim.elements);
    let (Ok(shape), Ok(n)) = (shape, n) else {
        return Err(npy_err(path, format!("{} does not fit in this machine's memory", claim.describe())));
    };
    // npyz parses the header again: it was checked above, so the data it reads is what the file holds.
    let npy = npyz::NpyFile::new(std::io::Cursor::new(raw_header).chain(reader)).map_err(|e| npy_err(path, format!("not a .npy file: {e}")))?;
    if npy.shape() != claim.shape.as_slice() {
        return Err(npy_err(path, format!("the header's shape {:?} reads as {:?}; the header is malformed", claim.shape, npy.shape())));
    }
    let data = match dtype.as_str() {
        "f4" => collect(path, npy.data::<f32>(), n, |v| v),
        "f8" => collect(path, npy.data::<f64>(), n, |v| v as f32),
        "u1" => collect(path, npy.data::<u8>(), n, f32::from),
        "i4" => collect(path, npy.data::<i32>(), n, |v| v as f32),
        _ => collect(path, npy.data::<i64>(), n, |v| v as f32),
    }?;
    Ok(NpyArray { shape, data })
}

/// The `n` values of a `.npy` (their count checked against the file's size) as `f32`.
fn collect<T: npyz::Deserialize, R: Read>(
    path: &Path,
    reader: std::result::Result<npyz::NpyReader<T, R>, npyz::DTypeError>,
    n: usize,
    convert: impl Fn(T) -> f32,
) -> Result<Vec<f32>> {
    let reader = reader.map_err(|e| npy_err(path, e.to_string()))?;
    let mut out = Vec::with_capacity(n);
    for (i, value) in reader.enumerate() {
        let value = value.map_err(|e| npy_err(path, format!("the data ends after {i} of the {n} values its header claims: {e}")))?;
        out.push(convert(value));
    }
    Ok(out)
}

/// Writes `data` as a little-endian float32 `.npy` of `shape`, through a temporary file and a rename.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let expected: usize = shape.iter().product();
    if expected != data.len() {
        return Err(npy_err(path, format!("{} values do not fill the shape {shape:?}", data.len())));
    }
    let tmp = path.with_extension("npy.tmp");
    let write = || -> std::io::Result<()> {
        let file = std::io::BufWriter::new(File::create(&tmp)?);
        let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(file).begin_nd()?;
        w.extend(data.iter().copied())?;
        w.finish()
    };
    write().map_err(|e| npy_err(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| npy_err(path, format!("cannot rename into place: {e}")))
}

/// The largest `.npy` header text read. numpy writes a few hundred bytes and by default refuses
/// headers over 10,000 bytes; anything much longer is corrupt, and is not allocated.
const MAX_NPY_HEADER_TEXT: u64 = 1 << 20;

/// What the header of a `.npy` array claims, read by [`read_npy_header`] and checked against the
/// bytes that follow it before anything is allocated for the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyClaim {
    /// The dtype string as written (`<f4`, `|u1`, ...).
    pub descr: String,
    /// Column-major (Fortran) order.
    pub fortran_order: bool,
    /// The shape.
    pub shape: Vec<u64>,
    /// Number of elements (the product of the shape).
    pub elements: u64,
    /// Bytes of one element.
    pub item_size: u64,
    /// Bytes before the data: the preamble (magic, version, header length) and the header text.
    pub header_len: u64,
    /// Bytes of data the header accounts for: elements x item size.
    pub data_len: u64,
}

impl NpyClaim {
    /// The numpy name of the dtype (`float32` for `<f4`), with the string as written when it has
    /// none.
    pub fn dtype_name(&self) -> String {
        let bits = self.item_size * 8;
        match self.kind_and_size().map(|(kind, _)| kind) {
            Some(TypeChar::Float) => format!("float{bits}"),
            Some(TypeChar::Int) => format!("int{bits}"),
            Some(TypeChar::Uint) => format!("uint{bits}"),
            Some(TypeChar::Complex) => format!("complex{bits}"),
            Some(TypeChar::Bool) => "bool".to_owned(),
            _ => format!("`{}`", self.descr),
        }
    }

    /// What the header claims, for messages: `float32 [1000, 3, 32, 32] = 12,288,000 bytes`.
    pub fn describe(&self) -> String {
        format!("{} {:?} = {} bytes", self.dtype_name(), self.shape, grouped(self.data_len))
    }

    /// Whether the data is little-endian (or single bytes) — the only byte order read.
    pub fn little_endian(&self) -> bool {
        !self.descr.starts_with('>')
    }

    /// The numeric kind and element size of a plain dtype; `None` for strings, objects, records
    /// and the like.
    pub fn kind_and_size(&self) -> Option<(TypeChar, u64)> {
        let body = self.descr.trim_start_matches(['<', '>', '|', '=']);
        let kind = match body.chars().next()? {
            'f' => TypeChar::Float,
            'i' => TypeChar::Int,
            'u' => TypeChar::Uint,
            'c' => TypeChar::Complex,
            'b' => TypeChar::Bool,
            _ => return None,
        };
        Some((kind, self.item_size))
    }
}

/// `12288000` -> `12,288,000`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Reads the preamble and header of a `.npy` array from `reader`, which holds `available` bytes
/// in all (a file's size, or an `.npz` entry's), and checks its claim: the magic and version, the
/// header length against `available`, the header (a Python dict with `descr`, `fortran_order` and
/// `shape`, parsed here without recursion), the element count against 64 bits, and the data size
/// (elements x item size) against the bytes after the header — exactly, so a file that is
/// truncated, or longer than its header says, is refused.
///
/// Nothing larger than the header text (at most 1 MiB, and never more than `available`) is
/// allocated. Returns the claim and the header's raw bytes, to hand to npyz followed by the
/// data. `container` names what holds the array in messages (`the file`); the message does not
/// name the file itself.
pub fn read_npy_header<R: Read>(reader: &mut R, available: u64, container: &str) -> std::result::Result<(NpyClaim, Vec<u8>), String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    let read_err = |e: io::Error| format!("cannot read the .npy header: {e}");
    if available < 10 {
        return Err(format!(
            "not a numpy .npy file: {container} holds {available} bytes, fewer than the 10 bytes of a .npy preamble \
             (magic, version, header length); it is truncated or not a .npy array"
        ));
    }
    let mut raw = vec![0u8; 10];
    reader.read_exact(&mut raw).map_err(read_err)?;
    if &raw[..6] != MAGIC {
        let start: String = raw.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '.' }).collect();
        let hint = if raw.starts_with(b"PK") { " (it is a zip archive: an .npz?)" } else { "" };
        return Err(format!("not a numpy .npy file: {container} does not start with the .npy magic \\x93NUMPY but `{start}`{hint}"));
    }
    let (major, minor) = (raw[6], raw[7]);
    let text_len = match major {
        1 => u64::from(u16::from_le_bytes([raw[8], raw[9]])),
        2 | 3 => {
            if available < 12 {
                return Err(format!("{container} holds {available} bytes, fewer than the 12-byte preamble of a version {major} .npy; it is truncated"));
            }
            raw.resize(12, 0);
            reader.read_exact(&mut raw[10..]).map_err(read_err)?;
            u64::from(u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]))
        }
        _ => return Err(format!("unknown .npy format version {major}.{minor} (numpy writes 1.0, 2.0 and 3.0); the file is corrupt or from a newer numpy")),
    };
    let preamble = raw.len() as u64;
    if text_len > available - preamble {
        return Err(format!(
            "the preamble says the header text is {} bytes but {container} holds {} bytes after its {preamble}-byte preamble; \
             it is truncated or the header is wrong",
            grouped(text_len),
            grouped(available - preamble)
        ));
    }
    if text_len > MAX_NPY_HEADER_TEXT {
        return Err(format!(
            "the preamble says the header text is {} bytes; numpy headers are a few hundred bytes (numpy refuses more than 10,000), \
             so this one is corrupt",
            grouped(text_len)
        ));
    }
    raw.resize((preamble + text_len) as usize, 0);
    reader.read_exact(&mut raw[preamble as usize..]).map_err(read_err)?;
    let text = std::str::from_utf8(&raw[preamble as usize..]).map_err(|_| "the .npy header text is not ASCII/UTF-8; the header is corrupt".to_owned())?;
    let (descr, fortran_order, shape) = parse_npy_dict(text).map_err(|e| format!("the .npy header `{}` is malformed: {e}", text.trim_end()))?;
    let item_size = npy_item_size(&descr)?;
    let overflow = || format!("the header's shape {shape:?} of {descr} holds more bytes than 64 bits count; the header is corrupt");
    // Dimensions multiplied in any order (npyz computes strides from both ends) must not
    // overflow: check the product of the non-zero ones.
    let nonzero = shape.iter().filter(|&&d| d != 0).try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(overflow)?;
    let elements = if shape.contains(&0) { 0 } else { nonzero };
    nonzero.checked_mul(item_size).ok_or_else(overflow)?;
    let data_len = elements * item_size;
    let header_len = preamble + text_len;
    let claim = NpyClaim { descr, fortran_order, shape, elements, item_size, header_len, data_len };
    let holds = available - header_len;
    if data_len > holds {
        return Err(format!(
            "the header says {} of data but {container} holds {} bytes after its {header_len}-byte header; \
             it is truncated or the header is wrong",
            claim.describe(),
            grouped(holds)
        ));
    }
    if data_len < holds {
        return Err(format!(
            "the header says {} of data but {container} holds {} bytes after its {header_len}-byte header, {} more than the header \
             accounts for; the header's shape or dtype is wrong",
            claim.describe(),
            grouped(holds),
            grouped(holds - data_len)
        ));
    }
    Ok((claim, raw))
}

/// The element size of a dtype string (`<f4` -> 4, `<U5` -> 20, `<M8[ns]` -> 8); objects and
/// records have none that can be read.
fn npy_item_size(descr: &str) -> std::result::Result<u64, String> {
    let body = descr.trim_start_matches(['<', '>', '|', '=']);
    let mut chars = body.chars();
    let kind = chars.next().ok_or_else(|| "the header's dtype is empty".to_owned())?;
    let digits = chars.as_str().split('[').next().unwrap_or("");
    if kind == 'O' {
        return Err(format!("dtype `{descr}` holds pickled Python objects, which are not read; save a numeric array"));
    }
    let n: u64 = digits.parse().map_err(|_| format!("dtype `{descr}` is not a numpy dtype string"))?;
    match kind {
        'U' => n.checked_mul(4).ok_or_else(|| format!("dtype `{descr}` is too large")),
        'b' | 'i' | 'u' | 'f' | 'c' | 'S' | 'a' | 'V' | 'M' | 'm' => Ok(n),
        _ => Err(format!("dtype `{descr}` is not a numpy dtype string")),
    }
}

/// Parses numpy's header dict (`{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`)
/// with a flat scanner (no recursion, so no nesting can exhaust the stack): each of the three
/// keys exactly once, nothing else.
fn parse_npy_dict(text: &str) -> std::result::Result<(String, bool, Vec<u64>), String> {
    let mut p = Scanner { s: text.as_bytes(), i: 0 };
    p.skip_ws();
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.skip_ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.skip_ws();
        p.expect(b':')?;
        p.skip_ws();
        let duplicate = || format!("the key '{key}' appears twice");
        match key.as_str() {
            "descr" => {
                let value = match p.peek() {
                    Some(b'\'' | b'"') => p.string()?,
                    Some(b'[') => return Err("a structured (record) dtype; only plain numeric arrays are read".to_owned()),
                    _ => return Err("'descr' is not a dtype string".to_owned()),
                };
                if descr.replace(value).is_some() {
                    return Err(duplicate());
                }
            }
            "fortran_order" => {
                let value = match p.word() {
                    "True" => true,
                    "False" => false,
                    other => return Err(format!("'fortran_order' is `{other}`, not True or False")),
                };
                if fortran.replace(value).is_some() {
                    return Err(duplicate());
                }
            }
            "shape" => {
                let value = p.dims()?;
                if shape.replace(value).is_some() {
                    return Err(duplicate());
                }
            }
            other => return Err(format!("unknown key '{other}' (a .npy header holds descr, fortran_order and shape)")),
        }
        p.skip_ws();
        if !p.eat(b',') {
            p.skip_ws();
            p.expect(b'}')?;
            break;
        }
    }
    if p.s[p.i..].iter().any(|b| !b.is_ascii_whitespace() && *b != 0) {
        return Err(format!("text after the dict at byte {}", p.i));
    }
    match (descr, fortran, shape) {
        (Some(d), Some(f), Some(s)) => Ok((d, f, s)),
        (None, ..) => Err("no 'descr' (dtype)".to_owned()),
        (_, None, _) => Err("no 'fortran_order'".to_owned()),
        (.., None) => Err("no 'shape'".to_owned()),
    }
}

/// A cursor over a Python literal.
struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        if found {
            self.i += 1;
        }
        found
    }

    fn expect(&mut self, b: u8) -> std::result::Result<(), String> {
        if self.eat(b) { Ok(()) } else { Err(format!("expected `{}` at byte {}", char::from(b), self.i)) }
    }

    /// A quoted string (`'...'` or `"..."`, backslash escapes kept as written).
    fn string(&mut self) -> std::result::Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a quoted string at byte {}", self.i)),
        };
        let start = self.i + 1;
        let mut j = start;
        while let Some(&b) = self.s.get(j) {
            if b == quote {
                self.i = j + 1;
                return Ok(String::from_utf8_lossy(&self.s[start..j]).into_owned());
            }
            j += if b == b'\\' { 2 } else { 1 };
        }
        Err(format!("unterminated string at byte {}", start - 1))
    }

    /// A run of letters and digits (`True`).
    fn word(&mut self) -> &str {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or("")
    }

    /// A tuple or list of non-negative integers (Python 2's `3L` too), at most 64 of them.
    fn dims(&mut self) -> std::result::Result<Vec<u64>, String> {
        let close = match self.peek() {
            Some(b'(') => b')',
            Some(b'[') => b']',
            _ => return Err("'shape' is not a tuple of integers".to_owned()),
        };
        self.i += 1;
        let mut dims = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(close) {
                return Ok(dims);
            }
            if self.peek() == Some(b'-') {
                return Err("'shape' has a negative dimension".to_owned());
            }
            let start = self.i;
            let mut value: u64 = 0;
            while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
                value = value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(d - b'0')))
                    .ok_or_else(|| "a dimension of 'shape' does not fit in 64 bits".to_owned())?;
                self.i += 1;
            }
            if self.i == start {
                return Err(format!("'shape' holds something other than integers at byte {}", self.i));
            }
            self.eat(b'L');
            dims.push(value);
            if dims.len() > 64 {
                return Err("'shape' has more than 64 dimensions (numpy's limit)".to_owned());
            }
            self.skip_ws();
            if !self.eat(b',') {
                self.skip_ws();
                self.expect(close)?;
                return Ok(dims);
            }
        }
    }
}
