//! Hostile inputs for every loader: `.npy`, `.npz`, `.safetensors`, PyTorch `.pt`, TOML configs and
//! image folders.
//!
//! Two kinds of test:
//!
//! - one per hostile file, checking that the error names the file and says what is wrong (the
//!   header's claim against the file's size, the key and its line, the valid values);
//! - property tests (proptest) feeding random and mutated files to each loader and checking that
//!   it neither panics, nor takes longer than [`TIME_LIMIT`], nor holds more memory at any moment
//!   than a bound proportional to the file (measured by a counting global allocator).
//!
//! The property tests run about 3,500 cases in all (a few seconds; a few tens on a slow machine);
//! `PROPTEST_CASES=N` runs N cases of each for a longer local search.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ddpm_eval::frechet::FeatureStats;
use ddpm_eval::stats::{read_features_npy, read_stats_npz, write_stats_npz};
use ddpm_models::weights::{RefTensor, StateDict, read_pytorch, read_safetensors, write_safetensors};
use ddpm_train::data::images::{FolderOptions, load_folder};
use ddpm_train::npy::{read_npy, write_npy};
use ddpm_train::{TrainError, parse_config};
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------------------------
// Bounds: time and memory of one loader call

/// The longest one loader call on a hostile file may take (debug build, loaded CI machine).
const TIME_LIMIT: Duration = Duration::from_secs(10);

/// The most memory one loader call may hold beyond what was held before it: a fixed allowance
/// plus a multiple of the input's size. A header that claims a trillion elements must not get them.
fn alloc_limit(input_len: usize) -> usize {
    (32 << 20) + 8 * input_len
}

/// The system allocator, counting the bytes held now (`LIVE`) and the most held since the last
/// reset (`PEAK`).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn held(more: usize) {
    let now = LIVE.fetch_add(more, Ordering::SeqCst) + more;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract for them; the counters are plain atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller guarantees `layout` has a non-zero size, as `System.alloc` requires.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            held(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            held(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` was allocated by this allocator (hence by `System`)
        // with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `ptr` came from this allocator with `layout` and that
        // `new_size` is non-zero and fits `isize` once rounded to the alignment.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Both blocks may exist during the move: count the new one before freeing the old.
            held(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Tests of this file run one at a time, so that the memory measured is the loader's alone.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `load` on an input of `input_len` bytes and checks that it returned within
/// [`TIME_LIMIT`] and held at most [`alloc_limit`] more bytes at any moment.
fn bounded<T>(what: &str, input_len: usize, load: impl FnOnce() -> T) -> T {
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let start = Instant::now();
    let out = load();
    let elapsed = start.elapsed();
    let peak = PEAK.load(Ordering::SeqCst).saturating_sub(before);
    assert!(elapsed < TIME_LIMIT, "{what}: took {elapsed:?} on {input_len} bytes");
    let limit = alloc_limit(input_len);
    assert!(peak <= limit, "{what}: held {peak} bytes at its peak on a {input_len}-byte input (limit {limit})");
    out
}

/// Proptest settings: `cases` unless `PROPTEST_CASES` says otherwise; failures are reported (with
/// the shrunk input), not written to a regressions file in the source tree.
fn cases(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, max_shrink_iters: 256, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// Files

/// A fresh folder for `name` under Cargo's per-target temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

/// A version 1.0 `.npy`: the header numpy writes for `descr`, `fortran` and `shape`, then `data`.
fn npy_bytes(descr: &str, fortran: bool, shape: &[u64], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let fortran = if fortran { "True" } else { "False" };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A safetensors file: the 8-byte header length, the JSON `header`, then `data`.
fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// CRC-32 (zip's), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// One entry of a zip archive as [`zip_raw`] writes it: `payload` is what the file holds for it,
/// the rest is what its headers declare.
struct ZipEntry<'a> {
    name: &'a str,
    /// 0 stored, 8 deflated.
    method: u16,
    payload: Vec<u8>,
    crc: u32,
    compressed: u32,
    size: u32,
}

/// A zip archive of `entries`, their headers saying whatever the entries say.
fn zip_raw(entries: &[ZipEntry<'_>]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for e in entries {
        let offset = out.len() as u32;
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&20u16.to_le_bytes()); // version needed
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&e.method.to_le_bytes());
            v.extend_from_slice(&[0; 4]); // time, date
            v.extend_from_slice(&e.crc.to_le_bytes());
            v.extend_from_slice(&e.compressed.to_le_bytes());
            v.extend_from_slice(&e.size.to_le_bytes());
            v.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // extra
        };
        out.extend_from_slice(b"PK\x03\x04");
        common(&mut out);
        out.extend_from_slice(e.name.as_bytes());
        out.extend_from_slice(&e.payload);
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&20u16.to_le_bytes()); // version made by
        common(&mut central);
        central.extend_from_slice(&[0; 10]); // comment length, disk, attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(e.name.as_bytes());
    }
    let (cd_offset, cd_len, count) = (out.len() as u32, central.len() as u32, entries.len() as u16);
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&cd_len.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A zip archive of stored (uncompressed) entries; `claimed` replaces an entry's declared size
/// (in both headers) when given, to make it lie.
fn zip_bytes(entries: &[(&str, &[u8], Option<u32>)]) -> Vec<u8> {
    let entries: Vec<ZipEntry<'_>> = entries
        .iter()
        .map(|&(name, data, claimed)| {
            let size = claimed.unwrap_or(data.len() as u32);
            ZipEntry { name, method: 0, payload: data.to_vec(), crc: crc32(data), compressed: size, size }
        })
        .collect();
    zip_raw(&entries)
}

/// The entries of a zip archive of stored entries (what torch.save writes), by its central directory.
fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let u16_at = |i: usize| usize::from(u16::from_le_bytes([bytes[i], bytes[i + 1]]));
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    let end = (0..bytes.len() - 21).rev().find(|&i| bytes[i..].starts_with(b"PK\x05\x06")).unwrap();
    let (count, mut at) = (u16_at(end + 10), u32_at(end + 16));
    let mut out = Vec::new();
    for _ in 0..count {
        assert!(bytes[at..].starts_with(b"PK\x01\x02"));
        assert_eq!(u16_at(at + 10), 0, "stored entries only");
        let (size, name_len, extra_len, comment_len, offset) = (u32_at(at + 20), u16_at(at + 28), u16_at(at + 30), u16_at(at + 32), u32_at(at + 42));
        let name = String::from_utf8(bytes[at + 46..at + 46 + name_len].to_vec()).unwrap();
        let data_start = offset + 30 + u16_at(offset + 26) + u16_at(offset + 28);
        out.push((name, bytes[data_start..data_start + size].to_vec()));
        at += 46 + name_len + extra_len + comment_len;
    }
    out
}

/// Byte edits: set, flip a bit, insert, delete, at positions picked in `[lo, hi)` of the input.
#[derive(Debug, Clone)]
struct Edit {
    at: Index,
    byte: u8,
    op: u8,
}

fn edits(max: usize) -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..4).prop_map(|(at, byte, op)| Edit { at, byte, op }), 1..max)
}

fn mutate(bytes: &[u8], edits: &[Edit], lo: usize, hi: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for e in edits {
        let hi = hi.min(out.len());
        if hi <= lo {
            out.push(e.byte);
            continue;
        }
        let i = lo + e.at.index(hi - lo);
        match e.op {
            0 => out[i] = e.byte,
            1 => out[i] ^= 1 << (e.byte % 8),
            2 => out.insert(i, e.byte),
            _ => {
                out.remove(i);
            }
        }
    }
    out
}

fn message<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<T, E>) -> String {
    result.map(|v| panic!("expected an error, got {v:?}")).unwrap_err().to_string()
}

fn assert_all(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "`{part}` is missing from: {message}");
    }
}

// ---------------------------------------------------------------------------------------------
// .npy

#[test]
fn a_truncated_npy_says_what_the_header_claims_and_what_the_file_holds() {
    let _one = exclusive();
    let dir = scratch("npy-truncated");
    let path = dir.join("x.npy");
    write_npy(&path, &[10, 4], &[0.5; 40]).unwrap();
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 16]).unwrap();
    let m = message(read_npy(&path));
    assert_all(&m, &["x.npy", "the header says float32 [10, 4] = 160 bytes of data", "holds 144 bytes after its 128-byte header", "truncated"]);
    // The features reader of ddpm-eval says the same.
    let m = message(read_features_npy(&path));
    assert_all(&m, &["x.npy", "float32 [10, 4] = 160 bytes", "holds 144 bytes"]);
}

#[test]
fn an_npy_header_claiming_a_trillion_elements_is_refused_before_any_allocation() {
    let _one = exclusive();
    let dir = scratch("npy-trillion");
    let path = write(&dir, "big.npy", &npy_bytes("<f4", false, &[1000, 3, 1_000_000, 1000], &[0; 4096]));
    let m = bounded("read_npy", 4096 + 128, || message(read_npy(&path)));
    assert_all(
        &m,
        &[
            "big.npy",
            "the header says float32 [1000, 3, 1000000, 1000] = 12,000,000,000,000 bytes of data but the file holds 4,096 bytes after its 128-byte header",
        ],
    );
    let m = bounded("read_features_npy", 4096 + 128, || message(read_features_npy(&path)));
    assert!(m.contains("12,000,000,000,000 bytes"), "{m}");
    // A shape whose element count overflows 64 bits.
    let path = write(&dir, "overflow.npy", &npy_bytes("<f8", false, &[u64::MAX / 2, 3], &[]));
    let m = bounded("read_npy", 128, || message(read_npy(&path)));
    assert_all(&m, &["overflow.npy", "more bytes than 64 bits count"]);
    // Even with a zero dimension first (npyz multiplies the dimensions from both ends).
    let path = write(&dir, "zero.npy", &npy_bytes("<f4", false, &[0, u64::MAX / 2, 4], &[]));
    let m = bounded("read_npy", 128, || message(read_npy(&path)));
    assert!(m.contains("64 bits"), "{m}");
}

#[test]
fn an_npy_header_length_past_the_end_of_the_file_is_named() {
    let _one = exclusive();
    let dir = scratch("npy-header-length");
    let mut bytes = npy_bytes("<f4", false, &[2], &[0; 8]);
    bytes[8..10].copy_from_slice(&60_000u16.to_le_bytes());
    let path = write(&dir, "h.npy", &bytes);
    let m = message(read_npy(&path));
    assert_all(&m, &["h.npy", "the preamble says the header text is 60,000 bytes but the file holds 126 bytes after its 10-byte preamble"]);
    // Version 2 headers have a 32-bit length: 4 GB of header text is never allocated.
    let mut bytes = npy_bytes("<f4", false, &[2], &[0; 8]);
    bytes[6] = 2;
    bytes.splice(8..10, u32::MAX.to_le_bytes());
    let path = write(&dir, "h2.npy", &bytes);
    let m = bounded("read_npy", bytes.len(), || message(read_npy(&path)));
    assert_all(&m, &["h2.npy", "the preamble says the header text is 4,294,967,295 bytes"]);
    // Too short for a preamble, and not an npy at all.
    let path = write(&dir, "short.npy", b"\x93NUM");
    assert_all(&message(read_npy(&path)), &["short.npy", "holds 4 bytes, fewer than the 10 bytes of a .npy preamble"]);
    let path = write(&dir, "text.npy", b"hello, world\n");
    assert_all(&message(read_npy(&path)), &["text.npy", "not a numpy .npy file", "`hello, wor`"]);
}

#[test]
fn an_npy_of_a_dtype_that_is_not_read_names_it_and_the_ones_that_are() {
    let _one = exclusive();
    let dir = scratch("npy-dtype");
    for (descr, name) in [("<c8", "complex64"), ("|b1", "bool"), ("<i2", "int16"), ("<U3", "`<U3`"), ("<f2", "float16")] {
        let size = match descr {
            "<c8" => 8,
            "<U3" => 12,
            "<i2" | "<f2" => 2,
            _ => 1,
        };
        let path = write(&dir, "d.npy", &npy_bytes(descr, false, &[3], &vec![0; 3 * size]));
        let m = message(read_npy(&path));
        assert_all(&m, &["d.npy", &format!("dtype {name}"), "not read", "astype(np.float32)"]);
    }
    let path = write(&dir, "o.npy", &npy_bytes("|O", false, &[3], &[0; 24]));
    assert_all(&message(read_npy(&path)), &["o.npy", "pickled Python objects"]);
    // A structured dtype (a list, not a string).
    let mut bytes = npy_bytes("<f4", false, &[3], &[0; 12]);
    let text = String::from_utf8_lossy(&bytes[10..]).replace("'<f4'", "[('a', '<f4')]");
    bytes.truncate(10);
    bytes.extend_from_slice(text.as_bytes());
    let path = write(&dir, "rec.npy", &bytes);
    assert_all(&message(read_npy(&path)), &["rec.npy", "structured (record) dtype"]);
    // The features reader names the dtype too.
    let path = write(&dir, "i.npy", &npy_bytes("<i4", false, &[2, 2], &[0; 16]));
    assert_all(&message(read_features_npy(&path)), &["i.npy", "dtype int32 is not supported; expected float64 or float32"]);
}

#[test]
fn a_fortran_order_npy_is_refused_with_the_fix() {
    let _one = exclusive();
    let dir = scratch("npy-fortran");
    let path = write(&dir, "f.npy", &npy_bytes("<f4", true, &[2, 3], &[0; 24]));
    assert_all(&message(read_npy(&path)), &["f.npy", "Fortran-ordered", "np.ascontiguousarray"]);
}

#[test]
fn an_npy_longer_than_its_header_says_is_refused() {
    let _one = exclusive();
    let dir = scratch("npy-long");
    let path = write(&dir, "l.npy", &npy_bytes("<f4", false, &[2, 3], &[0; 32]));
    assert_all(
        &message(read_npy(&path)),
        &["l.npy", "the header says float32 [2, 3] = 24 bytes of data but the file holds 32 bytes", "8 more than the header accounts for"],
    );
    // Well-formed files still read, big-endian included.
    let data: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
    let path = write(&dir, "be.npy", &npy_bytes(">f4", false, &[2], &data));
    assert_eq!(read_npy(&path).unwrap().data, vec![1.5, -2.0]);
    let path = write(&dir, "u8.npy", &npy_bytes("|u1", false, &[1, 3], &[0, 7, 255]));
    let a = read_npy(&path).unwrap();
    assert_eq!((a.shape, a.data), (vec![1, 3], vec![0.0, 7.0, 255.0]));
    let path = write(&dir, "empty.npy", &npy_bytes("<f8", false, &[0, 5], &[]));
    assert_eq!(read_npy(&path).unwrap().shape, vec![0, 5]);
}

// ---------------------------------------------------------------------------------------------
// .npz

fn small_stats() -> FeatureStats {
    FeatureStats { mu: vec![0.5, -1.0, 2.0], sigma: vec![2.0, 0.1, 0.0, 0.1, 1.0, 0.2, 0.0, 0.2, 3.0], d: 3, n: 7 }
}

#[test]
fn an_npz_array_whose_header_claims_more_than_its_entry_is_named() {
    let _one = exclusive();
    let dir = scratch("npz-claims");
    let mu = npy_bytes("<f8", false, &[1_000_000_000], &[0; 24]);
    let sigma = npy_bytes("<f8", false, &[3, 3], &[0; 72]);
    let bytes = zip_bytes(&[("mu.npy", &mu, None), ("sigma.npy", &sigma, None)]);
    let path = write(&dir, "stats.npz", &bytes);
    let m = bounded("read_stats_npz", bytes.len(), || message(read_stats_npz(&path)));
    assert_all(
        &m,
        &["stats.npz", "array `mu`", "the header says float64 [1000000000] = 8,000,000,000 bytes of data but its zip entry `mu.npy` holds 24 bytes"],
    );
    // An entry whose declared size reaches past the end of the file.
    let bytes = zip_bytes(&[("mu.npy", &mu, Some(4_000_000_000)), ("sigma.npy", &sigma, None)]);
    let path = write(&dir, "lies.npz", &bytes);
    let m = bounded("read_stats_npz", bytes.len(), || message(read_stats_npz(&path)));
    assert_all(&m, &["lies.npz", "array `mu`", "4000000000 bytes", "the file holds"]);
    // A deflated entry may inflate to more than it holds, but what its header claims is not
    // allocated ahead: 800 MB claimed from 1 MiB of compressed bytes (within deflate's ratio).
    let raw = npy_bytes("<f8", false, &[100_000_000], &[0; 64]);
    let mut payload = {
        use std::io::Write;
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&raw).unwrap();
        encoder.finish().unwrap()
    };
    payload.resize(1 << 20, 0);
    let mu = ZipEntry { name: "mu.npy", method: 8, crc: 0, compressed: payload.len() as u32, size: 128 + 800_000_000, payload };
    let sigma = ZipEntry { name: "sigma.npy", method: 0, payload: sigma.clone(), crc: crc32(&sigma), compressed: sigma.len() as u32, size: sigma.len() as u32 };
    let bytes = zip_raw(&[mu, sigma]);
    let path = write(&dir, "inflated.npz", &bytes);
    let m = bounded("read_stats_npz", bytes.len(), || message(read_stats_npz(&path)));
    assert_all(&m, &["inflated.npz", "array `mu`", "the data ends after 8 of the 100000000 values its header claims"]);
    // A truncated archive (no central directory).
    let good = dir.join("good.npz");
    write_stats_npz(&good, &small_stats()).unwrap();
    assert_eq!(read_stats_npz(&good).unwrap(), small_stats());
    let full = std::fs::read(&good).unwrap();
    let path = write(&dir, "cut.npz", &full[..full.len() / 2]);
    assert_all(&message(read_stats_npz(&path)), &["cut.npz", "cannot open as an .npz archive"]);
}

// ---------------------------------------------------------------------------------------------
// .safetensors

fn tensor(shape: &[usize]) -> RefTensor {
    let n = shape.iter().product::<usize>();
    RefTensor { shape: shape.to_vec(), data: (0..n).map(|i| i as f32 * 0.5).collect(), integer: false }
}

fn small_state() -> StateDict {
    StateDict::from([("a.weight".to_owned(), tensor(&[2, 3])), ("a.bias".to_owned(), tensor(&[3])), ("b".to_owned(), tensor(&[1, 1, 2]))])
}

#[test]
fn a_safetensors_header_length_past_the_end_of_the_file_is_named() {
    let _one = exclusive();
    let dir = scratch("st-length");
    let header = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut bytes = safetensors_bytes(header, &[0; 8]);
    bytes[..8].copy_from_slice(&1_000_000u64.to_le_bytes());
    let path = write(&dir, "w.safetensors", &bytes);
    let m = bounded("read_safetensors", bytes.len(), || message(read_safetensors(&path)));
    let after = format!("the first 8 bytes say the JSON header is 1,000,000 bytes but the file holds {} bytes after them", bytes.len() - 8);
    assert_all(&m, &["w.safetensors", &after, "truncated"]);
    let path = write(&dir, "short.safetensors", b"\x05\0\0");
    assert_all(&message(read_safetensors(&path)), &["short.safetensors", "holds 3 bytes, fewer than the 8-byte header length"]);
    // A .pt under the wrong name says so.
    let path = write(&dir, "pt.safetensors", &zip_bytes(&[("archive/data.pkl", b"\x80\x02}q\x00.", None)]));
    assert_all(&message(read_safetensors(&path)), &["pt.safetensors", "a zip archive: a PyTorch .pt?"]);
}

#[test]
fn safetensors_offsets_that_overlap_leave_gaps_or_leave_the_file_are_named() {
    let _one = exclusive();
    let dir = scratch("st-offsets");
    let case = |name: &str, header: &str, data_len: usize| {
        let path = write(&dir, name, &safetensors_bytes(header, &vec![0; data_len]));
        message(read_safetensors(&path))
    };
    let m = case("overlap.safetensors", r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, 12);
    assert_all(&m, &["overlap.safetensors", "tensors `a` and `b` overlap: `b` starts at byte 4, before `a` ends at byte 8"]);
    let m = case("past.safetensors", r#"{"a":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}"#, 16);
    assert_all(&m, &["past.safetensors", "tensor `a`: its data_offsets [0, 4000] reach past the 16 bytes of data the file holds"]);
    let m = case("size.safetensors", r#"{"a":{"dtype":"F64","shape":[3,2],"data_offsets":[0,24]}}"#, 24);
    assert_all(&m, &["size.safetensors", "tensor `a` is F64 [3, 2] = 48 bytes but its data_offsets [0, 24] span 24 bytes"]);
    let m = case("gap.safetensors", r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#, 12);
    assert_all(&m, &["gap.safetensors", "bytes 4..8 of the data belong to no tensor"]);
    let m = case("huge.safetensors", r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#, 4);
    assert_all(&m, &["huge.safetensors", "tensor `a` is F32 [4294967296, 4294967296], more bytes than 64 bits count"]);
    let m = case("trailing.safetensors", r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 10);
    assert_all(&m, &["trailing.safetensors", "the tensors end at byte 4 of the data but the file holds 10 bytes of data"]);
    let m = case("dtype.safetensors", r#"{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#, 4);
    assert_all(&m, &["dtype.safetensors", "tensor `a` has the unknown dtype `F33`"]);
    // What the writer writes reads back.
    let path = dir.join("ok.safetensors");
    write_safetensors(&path, &small_state()).unwrap();
    assert_eq!(read_safetensors(&path).unwrap(), small_state());
}

// ---------------------------------------------------------------------------------------------
// PyTorch

fn trainer_pt() -> Vec<u8> {
    std::fs::read(repo_file("tests/fixtures/models/trainer_model-1.pt")).unwrap()
}

#[test]
fn a_pt_that_is_not_a_zip_is_named() {
    let _one = exclusive();
    let dir = scratch("pt-not-zip");
    let path = write(&dir, "model.pt", b"this is not a checkpoint\n");
    assert_all(&message(read_pytorch(&path)), &["model.pt", "not a PyTorch file: it starts with `this is `", "not a zip archive"]);
    let path = write(&dir, "npy.pt", &npy_bytes("<f4", false, &[1], &[0; 4]));
    assert_all(&message(read_pytorch(&path)), &["npy.pt", "numpy .npy array"]);
    // A torch.save file cut short has no central directory.
    let pt = trainer_pt();
    let path = write(&dir, "cut.pt", &pt[..pt.len() / 2]);
    let m = bounded("read_pytorch", pt.len() / 2, || message(read_pytorch(&path)));
    assert_all(&m, &["cut.pt", "no end-of-central-directory record", "truncated"]);
    // The whole file reads.
    let path = write(&dir, "whole.pt", &pt);
    let state = bounded("read_pytorch", pt.len(), || read_pytorch(&path).unwrap());
    assert!(state.keys().any(|k| k.starts_with("ema.ema_model.model.")), "{:?}", state.keys().take(5).collect::<Vec<_>>());
}

#[test]
fn a_zip_without_data_pkl_or_with_entries_past_its_end_is_named() {
    let _one = exclusive();
    let dir = scratch("pt-zip");
    let path = write(&dir, "notes.pt", &zip_bytes(&[("notes.txt", b"hello", None), ("weights.bin", &[0; 16], None)]));
    assert_all(&message(read_pytorch(&path)), &["notes.pt", "no `data.pkl` entry", "not a torch.save checkpoint", "notes.txt, weights.bin"]);
    let bytes = zip_bytes(&[("archive/data.pkl", b"\x80\x02}q\x00.", None), ("archive/data/0", &[0; 16], Some(3_000_000_000))]);
    let path = write(&dir, "lies.pt", &bytes);
    let m = bounded("read_pytorch", bytes.len(), || message(read_pytorch(&path)));
    assert_all(&m, &["lies.pt", "zip entry `archive/data/0` says 3,000,000,000 bytes", "the file holds"]);
}

// ---------------------------------------------------------------------------------------------
// Config

const CONFIG: &str = "\
[run]
seed = 1

[data]
kind = \"image_folder\"
path = \"images\"
image_size = 32

[model]
kind = \"unet\"
dim = 16

[diffusion]
timesteps = 100

[diffusion.edm]
sigma_data = 0.5

[train]
batch_size = 8
ema.decay = 0.99

[sample]
batch_size = 16
sampler = \"ddim\"
churn = { s_churn = 0.0 }
";

fn config_error(text: &str, overrides: &[&str]) -> (Option<usize>, String, String) {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    match parse_config(text, "c.toml", &overrides) {
        Err(TrainError::Config { origin, line, key, message }) => {
            assert_eq!(origin, "c.toml");
            (line, key, message)
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

/// The 1-based line of the first line of `text` that is exactly `line`.
fn line_no(text: &str, line: &str) -> usize {
    text.lines().position(|l| l == line).unwrap_or_else(|| panic!("no line `{line}`")) + 1
}

#[test]
fn an_unknown_key_in_model_gets_its_line_and_the_valid_keys() {
    let _one = exclusive();
    parse_config(CONFIG, "c.toml", &[]).unwrap();
    let text = CONFIG.replace("dim = 16", "dim = 16\ndimm = 4");
    let (line, key, message) = config_error(&text, &[]);
    assert_eq!((line, key.as_str()), (Some(line_no(&text, "dimm = 4")), "model.dimm"));
    assert_all(&message, &["unknown field `dimm`", "`dim_mults`", "`attn_heads`"]);
    let shown = parse_config(&text, "c.toml", &[]).unwrap_err().to_string();
    assert!(shown.starts_with(&format!("c.toml:{}: `model.dimm`: unknown field", line.unwrap())), "{shown}");
}

#[test]
fn a_wrong_type_in_data_gets_the_line_of_its_key() {
    let _one = exclusive();
    let text = CONFIG.replace("image_size = 32", "image_size = \"big\"");
    let (line, key, message) = config_error(&text, &[]);
    assert_eq!((line, key.as_str()), (Some(line_no(&text, "image_size = \"big\"")), "data.image_size"));
    assert!(message.contains("[height, width]"), "{message}");
    let text = CONFIG.replace("path = \"images\"", "path = 3");
    let (line, key, message) = config_error(&text, &[]);
    assert_eq!((line, key.as_str()), (Some(line_no(&text, "path = 3")), "data.path"));
    assert!(message.contains("invalid type: integer `3`"), "{message}");
    // A key of a model that is not the chosen one.
    let text = CONFIG.replace("dim = 16", "dim = 16\nhidden = 64");
    let (line, key, _) = config_error(&text, &[]);
    assert_eq!((line, key.as_str()), (Some(line_no(&text, "hidden = 64")), "model.hidden"));
    // A missing required key points at its table.
    let text = CONFIG.replace("dim = 16\n", "");
    let (line, key, message) = config_error(&text, &[]);
    assert_eq!((line, key.as_str(), message.as_str()), (Some(line_no(&text, "[model]")), "model", "missing field `dim`"));
}

#[test]
fn unknown_names_list_the_valid_ones_with_their_line() {
    let _one = exclusive();
    let text = CONFIG.replace("sampler = \"ddim\"", "sampler = \"dpm++\"");
    let (line, key, message) = config_error(&text, &[]);
    assert_eq!((line, key.as_str()), (Some(line_no(&text, "sampler = \"dpm++\"")), "sample.sampler"));
    assert_all(&message, &["`dpm++` is not a sampler", "ddim", "euler_ancestral", "dpmpp_2m_sde"]);
    let text = CONFIG.replace("kind = \"unet\"", "kind = \"unet3\"");
    let (line, key, message) = config_error(&text, &[]);
    assert_eq!((line, key.as_str()), (Some(line_no(&text, "kind = \"unet3\"")), "model.kind"));
    assert_all(&message, &["unknown variant `unet3`", "`unet1d`", "`karras_unet`", "`mlp`"]);
    let text = CONFIG.replace("timesteps = 100", "timesteps = 100\nbeta_schedule = \"cosin\"");
    let (line, key, message) = config_error(&text, &[]);
    assert_eq!((line, key.as_str()), (Some(line_no(&text, "beta_schedule = \"cosin\"")), "diffusion.beta_schedule"));
    assert_all(&message, &["cosin", "linear", "cosine", "sigmoid"]);
}

#[test]
fn keys_are_found_by_their_whole_path() {
    let _one = exclusive();
    // `batch_size` is in [train] and in [sample]: each error gets its own line.
    let text = CONFIG.replace("batch_size = 16", "batch_size = -16");
    let (line, key, _) = config_error(&text, &[]);
    assert_eq!((line, key.as_str()), (Some(line_no(&text, "batch_size = -16")), "sample.batch_size"));
    let text = CONFIG.replace("batch_size = 8", "batch_size = \"8\"");
    let (line, key, _) = config_error(&text, &[]);
    assert_eq!((line, key.as_str()), (Some(line_no(&text, "batch_size = \"8\"")), "train.batch_size"));
    // A nested table, a dotted key and an inline table.
    let text = CONFIG.replace("sigma_data = 0.5", "sigma_data = 0.5\nsigma_dat = 1");
    let (line, key, _) = config_error(&text, &[]);
    assert_eq!((line, key.as_str()), (Some(line_no(&text, "sigma_dat = 1")), "diffusion.edm.sigma_dat"));
    let text = CONFIG.replace("ema.decay = 0.99", "ema.decay = \"high\"");
    let (line, key, _) = config_error(&text, &[]);
    assert_eq!((line, key.as_str()), (Some(line_no(&text, "ema.decay = \"high\"")), "train.ema.decay"));
    let text = CONFIG.replace("churn = { s_churn = 0.0 }", "\nchurn = { s_churn = 0.0, s_chrun = 1.0 }");
    let (line, key, _) = config_error(&text, &[]);
    assert_eq!((line, key.as_str()), (Some(line_no(&text, "churn = { s_churn = 0.0, s_chrun = 1.0 }")), "sample.churn.s_chrun"));
    // A key that is only in an override says so, and has no line.
    let (line, key, message) = config_error(CONFIG, &["model.dim=\"wide\""]);
    assert_eq!((line, key.as_str()), (None, "model.dim"));
    assert!(message.contains("(set by --set model.dim=\"wide\")"), "{message}");
    // A syntax error gets the line of the fault, also on the last line.
    let text = format!("{CONFIG}[train");
    let (line, _, _) = config_error(&text, &[]);
    assert_eq!(line, Some(text.lines().count()));
}

/// The shipped configs (`configs/*.toml`), by file name.
fn shipped_configs() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(repo_file("configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    out.sort();
    assert!(out.len() >= 10, "{} configs", out.len());
    out
}

/// The table a line of a config is in (`train.ema` under `[train.ema]`); `None` in an array of
/// tables.
fn table_at(lines: &[&str], i: usize) -> Option<String> {
    let header = lines[..=i].iter().rev().map(|l| l.trim()).find(|l| l.starts_with('['));
    match header {
        None => Some(String::new()),
        Some(h) if h.starts_with("[[") => None,
        Some(h) => Some(h.trim_matches(['[', ']']).trim().to_owned()),
    }
}

#[test]
fn an_unknown_key_anywhere_in_a_shipped_config_gets_its_exact_line() {
    let _one = exclusive();
    let mut checked = 0;
    for (name, text) in shipped_configs() {
        parse_config(&text, &name, &[]).unwrap_or_else(|e| panic!("{e}"));
        let lines: Vec<&str> = text.lines().collect();
        for i in 0..lines.len() {
            let Some(table) = table_at(&lines, i) else { continue };
            // Only right after a header or a key, where the new key is in `table`.
            let l = lines[i].trim();
            if !(l.starts_with('[') || (l.contains('=') && !l.starts_with('#'))) {
                continue;
            }
            let mut edited = lines.clone();
            edited.insert(i + 1, "zz_unknown = 1");
            let edited = edited.join("\n");
            let (line, key, message) = match parse_config(&edited, &name, &[]) {
                Err(TrainError::Config { line, key, message, .. }) => (line, key, message),
                other => panic!("{name}: `zz_unknown` after line {}: expected a config error, got {other:?}", i + 1),
            };
            let expected = if table.is_empty() { "zz_unknown".to_owned() } else { format!("{table}.zz_unknown") };
            assert_eq!((line, key.as_str()), (Some(i + 2), expected.as_str()), "{name} after line {}: {message}", i + 1);
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked} insertions checked");
}

#[test]
fn a_string_for_any_number_of_a_shipped_config_gets_its_exact_line() {
    let _one = exclusive();
    let mut checked = 0;
    for (name, text) in shipped_configs() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let Some((k, v)) = l.split_once('=') else { continue };
            let (k, v) = (k.trim(), v.split('#').next().unwrap().trim());
            if l.trim_start().starts_with('#') || v.parse::<f64>().is_err() || table_at(&lines, i).is_none() {
                continue;
            }
            let mut edited = lines.clone();
            let replaced = format!("{k} = \"zz\"");
            edited[i] = &replaced;
            let edited = edited.join("\n");
            let (line, key, message) = match parse_config(&edited, &name, &[]) {
                Err(TrainError::Config { line, key, message, .. }) => (line, key, message),
                other => panic!("{name}: a string for `{k}` on line {}: expected a config error, got {other:?}", i + 1),
            };
            assert_eq!(line, Some(i + 1), "{name}: `{k}` on line {}: {key}: {message}", i + 1);
            assert!(key.ends_with(k), "{name}: line {}: the key is `{key}`, not `..{k}`", i + 1);
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked} values checked");
}

// ---------------------------------------------------------------------------------------------
// Fuzzing

/// Shapes from tiny to absurd.
fn dims() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(prop_oneof![0u64..5, 1u64..100_000, Just(u64::MAX), Just(1 << 32), any::<u64>()], 0..5)
}

proptest! {
    #![proptest_config(cases(512))]

    /// Well-formed headers with any dtype, order and shape, over any amount of data.
    #[test]
    fn fuzz_npy_headers(
        descr in prop_oneof![
            prop::sample::select(&["<f4", "<f8", "|u1", "<i8", ">f4", "<c16", "|b1", "<U7", "|O", "<M8[ns]"][..]).prop_map(String::from),
            "[<>|]?[a-zA-Z][0-9]{0,3}",
        ],
        fortran in any::<bool>(),
        shape in dims(),
        data_len in 0usize..300,
    ) {
        let _one = exclusive();
        let dir = scratch("fuzz-npy-headers");
        let bytes = npy_bytes(&descr, fortran, &shape, &vec![1; data_len]);
        let path = write(&dir, "h.npy", &bytes);
        if let Ok(a) = bounded("read_npy", bytes.len(), || read_npy(&path)) {
            prop_assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
        }
        if let Ok(f) = bounded("read_features_npy", bytes.len(), || read_features_npy(&path)) {
            prop_assert_eq!(f.values.len(), f.rows * f.dim);
        }
    }

    /// A valid `.npy` with bytes set, flipped, inserted and deleted, mostly in its header.
    #[test]
    fn fuzz_npy_mutations(edits in edits(8), in_header in any::<bool>(), cut in any::<Option<Index>>()) {
        let _one = exclusive();
        let dir = scratch("fuzz-npy-mutations");
        let base = npy_bytes("<f4", false, &[3, 4], &[7; 48]);
        let mut bytes = mutate(&base, &edits, 0, if in_header { 128 } else { base.len() });
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let path = write(&dir, "m.npy", &bytes);
        match bounded("read_npy", bytes.len(), || read_npy(&path)) {
            Ok(a) => prop_assert_eq!(a.data.len(), a.shape.iter().product::<usize>()),
            Err(e) => prop_assert!(e.to_string().contains("m.npy"), "{}", e),
        }
        let _ = bounded("read_features_npy", bytes.len(), || read_features_npy(&path));
    }

    /// Random bytes, with and without the `.npy` magic.
    #[test]
    fn fuzz_npy_random(mut bytes in prop::collection::vec(any::<u8>(), 0..400), magic in any::<bool>()) {
        let _one = exclusive();
        let dir = scratch("fuzz-npy-random");
        if magic {
            bytes.splice(0..0, b"\x93NUMPY".iter().copied());
        }
        let path = write(&dir, "r.npy", &bytes);
        let _ = bounded("read_npy", bytes.len(), || read_npy(&path));
        let _ = bounded("read_features_npy", bytes.len(), || read_features_npy(&path));
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// A valid `.npz` of statistics, mutated.
    #[test]
    fn fuzz_npz_mutations(edits in edits(6), cut in any::<Option<Index>>()) {
        let _one = exclusive();
        let dir = scratch("fuzz-npz");
        let good = dir.join("good.npz");
        write_stats_npz(&good, &small_stats()).unwrap();
        let base = std::fs::read(&good).unwrap();
        let mut bytes = mutate(&base, &edits, 0, base.len());
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let path = write(&dir, "m.npz", &bytes);
        if let Err(e) = bounded("read_stats_npz", bytes.len(), || read_stats_npz(&path)) {
            prop_assert!(e.to_string().contains("m.npz"), "{}", e);
        }
    }

    /// Headers that claim anything, as `.npz` entries.
    #[test]
    fn fuzz_npz_headers(
        shape in dims(),
        descr in prop_oneof![Just("<f8"), Just("<f4"), Just("<i8"), Just("<c8")],
        data_len in 0usize..200,
        deflated_claiming in prop::option::of(prop_oneof![Just(None), any::<u32>().prop_map(Some)]),
    ) {
        let _one = exclusive();
        let dir = scratch("fuzz-npz-headers");
        let mu = npy_bytes(descr, false, &shape, &vec![0; data_len]);
        let sigma = npy_bytes("<f8", false, &[1, 1], &[0; 8]);
        let bytes = match deflated_claiming {
            // `mu` deflated, declaring its true size or any other.
            Some(claimed) => {
                let payload = {
                    use std::io::Write;
                    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                    encoder.write_all(&mu).unwrap();
                    encoder.finish().unwrap()
                };
                let size = claimed.unwrap_or(mu.len() as u32);
                let mu = ZipEntry { name: "mu.npy", method: 8, crc: crc32(&mu), compressed: payload.len() as u32, size, payload };
                let sigma = ZipEntry { name: "sigma.npy", method: 0, crc: crc32(&sigma), compressed: sigma.len() as u32, size: sigma.len() as u32, payload: sigma };
                zip_raw(&[mu, sigma])
            }
            None => zip_bytes(&[("mu.npy", &mu, None), ("sigma.npy", &sigma, None)]),
        };
        let path = write(&dir, "h.npz", &bytes);
        if let Err(e) = bounded("read_stats_npz", bytes.len(), || read_stats_npz(&path)) {
            prop_assert!(e.to_string().contains("h.npz"), "{}", e);
        }
    }

    /// Safetensors headers declaring random tensors over random data.
    #[test]
    fn fuzz_safetensors_headers(
        tensors in prop::collection::vec(
            (prop_oneof![Just("F32"), Just("F16"), Just("I64"), Just("BOOL"), Just("F4"), Just("X")], dims(), any::<u64>() , 0u64..64, any::<bool>()),
            0..4,
        ),
        data_len in 0usize..128,
        length_lies in prop::option::of(any::<u64>()),
    ) {
        let _one = exclusive();
        let dir = scratch("fuzz-st-headers");
        let entries: Vec<String> = tensors
            .iter()
            .enumerate()
            .map(|(i, (dtype, shape, start, len, small))| {
                let start = if *small { start % 64 } else { *start };
                format!(r#""t{i}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{start},{}]}}"#, start.saturating_add(*len))
            })
            .collect();
        let header = format!("{{{}}}", entries.join(","));
        let mut bytes = safetensors_bytes(&header, &vec![0; data_len]);
        if let Some(claimed) = length_lies {
            bytes[..8].copy_from_slice(&claimed.to_le_bytes());
        }
        let path = write(&dir, "h.safetensors", &bytes);
        match bounded("read_safetensors", bytes.len(), || read_safetensors(&path)) {
            Ok(state) => {
                for t in state.values() {
                    prop_assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("h.safetensors"), "{}", e),
        }
        let _ = bounded("data::vectors::read_array", bytes.len(), || ddpm_train::data::vectors::read_array(&path, None));
    }

    /// A valid safetensors file, mutated (mostly in its JSON header).
    #[test]
    fn fuzz_safetensors_mutations(edits in edits(6), in_header in any::<bool>()) {
        let _one = exclusive();
        let dir = scratch("fuzz-st-mutations");
        let good = dir.join("good.safetensors");
        write_safetensors(&good, &small_state()).unwrap();
        let base = std::fs::read(&good).unwrap();
        let header_end = 8 + u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
        let bytes = mutate(&base, &edits, 0, if in_header { header_end } else { base.len() });
        let path = write(&dir, "m.safetensors", &bytes);
        if let Err(e) = bounded("read_safetensors", bytes.len(), || read_safetensors(&path)) {
            prop_assert!(e.to_string().contains("m.safetensors"), "{}", e);
        }
    }
}

proptest! {
    #![proptest_config(cases(96))]

    /// The reference Trainer checkpoint (a torch.save zip), mutated: anywhere, in its central
    /// directory (the last 4 KiB), or in its pickle (`data.pkl`); sometimes cut short.
    #[test]
    fn fuzz_pytorch_mutations(edits in edits(6), region in 0u8..3, cut in prop::option::weighted(0.2, any::<Index>())) {
        let _one = exclusive();
        let dir = scratch("fuzz-pt");
        let base = trainer_pt();
        let pickle = base.windows(8).position(|w| w == b"data.pkl").unwrap_or(0);
        let (lo, hi) = match region {
            0 => (0, base.len()),
            1 => (base.len() - 4096, base.len()),
            _ => (pickle, pickle + 8192),
        };
        let mut bytes = mutate(&base, &edits, lo, hi);
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let path = write(&dir, "m.pt", &bytes);
        match bounded("read_pytorch", bytes.len(), || read_pytorch(&path)) {
            Ok(state) => {
                for t in state.values() {
                    prop_assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("m.pt"), "{}", e),
        }
    }

    /// The reference checkpoint's entries re-zipped with valid checksums after mutating its pickle
    /// (`data.pkl`), so that the pickle parser, not the checksum, meets the damage; sometimes a
    /// tensor's storage is cut short too.
    #[test]
    fn fuzz_pytorch_pickles(edits in edits(6), cut_storage in prop::option::weighted(0.3, (any::<Index>(), any::<Index>()))) {
        let _one = exclusive();
        let dir = scratch("fuzz-pt-pickles");
        let mut entries = unzip(&trainer_pt());
        let pickle = entries.iter().position(|(n, _)| n.ends_with("data.pkl")).unwrap();
        entries[pickle].1 = mutate(&entries[pickle].1, &edits, 0, usize::MAX);
        if let Some((which, len)) = cut_storage {
            let storages: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].0.contains("/data/")).collect();
            let i = *which.get(&storages);
            let keep = len.index(entries[i].1.len() + 1);
            entries[i].1.truncate(keep);
        }
        let refs: Vec<(&str, &[u8], Option<u32>)> = entries.iter().map(|(n, d)| (n.as_str(), d.as_slice(), None)).collect();
        let bytes = zip_bytes(&refs);
        let path = write(&dir, "p.pt", &bytes);
        match bounded("read_pytorch", bytes.len(), || read_pytorch(&path)) {
            Ok(state) => {
                for t in state.values() {
                    prop_assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("p.pt"), "{}", e),
        }
    }

    /// Zip archives of random entries.
    #[test]
    fn fuzz_pytorch_zips(
        entries in prop::collection::vec(
            (prop_oneof![Just("archive/data.pkl".to_owned()), Just("archive/data/0".to_owned()), "[a-z/]{1,12}"], prop::collection::vec(any::<u8>(), 0..64), prop::option::weighted(0.3, any::<u32>())),
            0..4,
        ),
    ) {
        let _one = exclusive();
        let dir = scratch("fuzz-pt-zips");
        let refs: Vec<(&str, &[u8], Option<u32>)> = entries.iter().map(|(n, d, c)| (n.as_str(), d.as_slice(), *c)).collect();
        let bytes = zip_bytes(&refs);
        let path = write(&dir, "z.pt", &bytes);
        if let Err(e) = bounded("read_pytorch", bytes.len(), || read_pytorch(&path)) {
            prop_assert!(e.to_string().contains("z.pt"), "{}", e);
        }
    }
}

/// Values to put where a config has one.
const VALUES: [&str; 14] =
    ["\"x\"", "-1", "0", "1e309", "18446744073709551616", "[1, \"a\"]", "{ a = 1 }", "true", "[]", "{}", "nan", "1979-05-27", "\"\"", "[[[[1]]]]"];

fn mutate_config(text: &str, ops: &[(u8, Index, Index)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for &(op, at, pick) in ops {
        if lines.is_empty() {
            lines.push("[x]".into());
        }
        let i = at.index(lines.len());
        match op {
            0 => {
                lines.remove(i);
            }
            1 => lines.insert(i, lines[i].clone()),
            2 => {
                if let Some((k, _)) = lines[i].split_once('=') {
                    lines[i] = format!("{k}= {}", pick.get(&VALUES));
                }
            }
            3 => lines.insert(i, format!("{} = 1", pick.get(&["zz", "kind", "dim", "ema.decay", "a.b.c", "\"quoted key\""]))),
            4 => lines.insert(i, pick.get(&["[model]", "[data]", "[[data]]", "[train.ema]", "[diffusion.edm]", "[sample.churn]", "[x.y]", "["]).to_string()),
            5 => {
                let chars: Vec<char> = lines[i].chars().collect();
                if !chars.is_empty() {
                    let j = pick.index(chars.len());
                    let c = *pick.get(&['[', ']', '=', '"', '{', '}', '.', '#', ',', 'x', '0', '\'', '\\']);
                    lines[i] = chars[..j].iter().chain([c].iter()).chain(chars[j + 1..].iter()).collect();
                }
            }
            _ => {
                lines.truncate(i);
            }
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(cases(512))]

    /// The shipped configs with lines deleted, duplicated, re-valued, inserted and garbled.
    #[test]
    fn fuzz_config_mutations(which in any::<Index>(), ops in prop::collection::vec((0u8..7, any::<Index>(), any::<Index>()), 1..5)) {
        let _one = exclusive();
        let configs = shipped_configs();
        let (name, text) = which.get(&configs);
        let text = mutate_config(text, &ops);
        let result = bounded("parse_config", text.len(), || parse_config(&text, name, &[]));
        if let Err(e) = result {
            let shown = e.to_string();
            if let TrainError::Config { origin, line, .. } = &e {
                prop_assert_eq!(origin, name);
                if let Some(line) = line {
                    prop_assert!(*line >= 1 && *line <= text.lines().count().max(1), "line {} of {}: {}", line, text.lines().count(), shown);
                }
            }
        }
    }
}

/// How image files start: the magic numbers of the formats read, and nothing.
const IMAGE_MAGIC: [&[u8]; 8] = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"II*\0", b"MM\0*", b"RIFF\x20\0\0\0WEBPVP8 ", b"P6\n", b""];

proptest! {
    #![proptest_config(cases(128))]

    /// A folder of random files named as images, some with a format's magic number.
    #[test]
    fn fuzz_image_folder(
        files in prop::collection::vec((any::<Index>(), prop_oneof![Just("png"), Just("jpg"), Just("bmp"), Just("tif"), Just("webp"), Just("ppm")], prop::collection::vec(any::<u8>(), 0..512)), 1..4),
        skip_corrupt in any::<bool>(),
    ) {
        let _one = exclusive();
        let dir = scratch("fuzz-images");
        let mut total = 0;
        for (i, (magic, ext, body)) in files.iter().enumerate() {
            let mut bytes = magic.get(&IMAGE_MAGIC).to_vec();
            bytes.extend_from_slice(body);
            total += bytes.len();
            write(&dir, &format!("{i}.{ext}"), &bytes);
        }
        let opts = FolderOptions { height: 8, width: 8, channels: 3, square_cut: None, skip_corrupt };
        let result = bounded("load_folder", total, || load_folder(&dir, &opts));
        if let Err(e) = result {
            let shown = e.to_string();
            prop_assert!(shown.contains(".png") || shown.contains(".jpg") || shown.contains(".bmp") || shown.contains(".tif") || shown.contains(".webp") || shown.contains(".ppm") || shown.contains("fuzz-images"), "{}", shown);
        }
    }
}

/// A PNG whose header claims `width` x `height` RGB pixels, with next to no image data.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let body = [kind, data].concat();
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &[&width.to_be_bytes()[..], &height.to_be_bytes(), &[8, 2, 0, 0, 0]].concat());
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x63, 0, 0, 0, 1, 0, 1]);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn a_png_claiming_huge_dimensions_is_refused_without_allocating_them() {
    let _one = exclusive();
    let dir = scratch("png-claims");
    let bytes = png_claiming(10_000, 10_000);
    write(&dir, "a.png", &bytes);
    let opts = FolderOptions { height: 8, width: 8, channels: 3, square_cut: None, skip_corrupt: false };
    let m = bounded("load_folder", bytes.len(), || message(load_folder(&dir, &opts).map(|d| d.len())));
    assert!(m.contains("a.png") && m.contains("10000x10000") && m.contains("66 bytes"), "{m}");
}
