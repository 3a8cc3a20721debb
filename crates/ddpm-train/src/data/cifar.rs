//! CIFAR-10, binary version: `data_batch_1.bin` .. `data_batch_5.bin` (train) and
//! `test_batch.bin` (test) in `cifar-10-batches-bin/`, each a run of 3073-byte records: the label
//! byte (0..=9), then the 32x32 RGB image as 1024 red, 1024 green and 1024 blue bytes (rows top
//! to bottom), which is already the `[3, 32, 32]` layout the models take.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::Path;

use flate2::read::GzDecoder;

use super::download::Fetch;
use super::{InMemory, Split};
use crate::error::{Result, TrainError};

/// Name of the default cache folder.
pub const CACHE_NAME: &str = "cifar10";
/// The official address of the archive's folder.
pub const BASE_URL: &str = "https://www.cs.toronto.edu/~kriz/";
/// The archive: a gzipped tar holding `cifar-10-batches-bin/`.
pub const ARCHIVE: &str = "cifar-10-binary.tar.gz";
/// MD5 of the official archive (as published on the CIFAR page and used by torchvision).
pub const ARCHIVE_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// The folder the archive unpacks to.
pub const BATCHES_DIR: &str = "cifar-10-batches-bin";
pub const TRAIN_FILES: [&str; 5] = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
pub const TEST_FILES: [&str; 1] = ["test_batch.bin"];
pub const NUM_CLASSES: usize = 10;
/// Bytes of one image.
pub const IMAGE_LEN: usize = 3 * 32 * 32;
/// Bytes of one record: the label and the image.
pub const RECORD_LEN: usize = 1 + IMAGE_LEN;

/// The files a download may fetch, with their official checksums.
pub fn official_md5() -> [(&'static str, &'static str); 1] {
    [(ARCHIVE, ARCHIVE_MD5)]
}

/// The batch files of a split.
pub fn split_files(split: Split) -> &'static [&'static str] {
    match split {
        Split::Train => &TRAIN_FILES,
        Split::Test => &TEST_FILES,
    }
}

/// One batch file: its images (`[n, 3, 32, 32]` bytes) and labels.
pub fn read_batch(path: &Path) -> Result<(Vec<u8>, Vec<u32>)> {
    let bytes = fs::read(path).map_err(|e| data_err(path, format!("cannot read: {e}")))?;
    if bytes.is_empty() || bytes.len() % RECORD_LEN != 0 {
        return Err(data_err(
            path,
            format!(
                "{} bytes is not a whole number of CIFAR-10 records ({RECORD_LEN} bytes each: a label byte and {IMAGE_LEN} pixel bytes); the file is truncated or not from the binary version ({ARCHIVE}). Delete it to fetch it again",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / RECORD_LEN;
    let mut pixels = Vec::with_capacity(n * IMAGE_LEN);
    let mut labels = Vec::with_capacity(n);
    for (i, record) in bytes.chunks_exact(RECORD_LEN).enumerate() {
        if usize::from(record[0]) >= NUM_CLASSES {
            return Err(data_err(path, format!("record {i} has label {}, but CIFAR-10 labels are 0..=9; the file is not CIFAR-10 binary", record[0])));
        }
        labels.push(u32::from(record[0]));
        pixels.extend_from_slice(&record[1..]);
    }
    Ok((pixels, labels))
}

/// The split read from an extracted `cifar-10-batches-bin` folder.
pub fn read_split(batches_dir: &Path, split: Split) -> Result<InMemory> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for file in split_files(split) {
        let (p, l) = read_batch(&batches_dir.join(file))?;
        pixels.extend(p);
        labels.extend(l);
    }
    Ok(InMemory::from_u8(pixels, vec![3, 32, 32]).with_labels(labels, NUM_CLASSES))
}

/// Unpacks `archive` (gzipped tar) so that `root/cifar-10-batches-bin/` holds its batch files.
/// The archive goes into a scratch folder first, so a broken archive leaves no half-written batch
/// under the real name.
pub fn extract_archive(archive: &Path, root: &Path) -> Result<()> {
    let scratch = root.join(".cifar-10-extracting");
    if scratch.exists() {
        fs::remove_dir_all(&scratch).map_err(|e| data_err(&scratch, format!("cannot remove the leftover of an earlier extraction: {e}")))?;
    }
    fs::create_dir_all(&scratch).map_err(|e| data_err(&scratch, format!("cannot create: {e}")))?;
    let file = File::open(archive).map_err(|e| data_err(archive, format!("cannot open: {e}")))?;
    tar::Archive::new(GzDecoder::new(BufReader::new(file)))
        .unpack(&scratch)
        .map_err(|e| data_err(archive, format!("cannot extract: {e}; the archive is damaged or not {ARCHIVE}; delete it to fetch it again")))?;
    let unpacked = scratch.join(BATCHES_DIR);
    if !unpacked.is_dir() {
        let _ = fs::remove_dir_all(&scratch);
        return Err(data_err(archive, format!("the archive holds no {BATCHES_DIR}/ folder; it is not {ARCHIVE}")));
    }
    let dest = root.join(BATCHES_DIR);
    fs::create_dir_all(&dest).map_err(|e| data_err(&dest, format!("cannot create: {e}")))?;
    for entry in fs::read_dir(&unpacked).map_err(|e| data_err(&unpacked, e.to_string()))? {
        let entry = entry.map_err(|e| data_err(&unpacked, e.to_string()))?;
        let target = dest.join(entry.file_name());
        fs::rename(entry.path(), &target).map_err(|e| data_err(&target, format!("cannot move the extracted file into place: {e}")))?;
    }
    fs::remove_dir_all(&scratch).map_err(|e| data_err(&scratch, format!("cannot remove: {e}")))
}

/// The split from `root`: read from `root/cifar-10-batches-bin/`, else extracted from
/// `root/cifar-10-binary.tar.gz`, else (when `fetch.download`) downloaded first.
pub fn load(root: &Path, split: Split, fetch: &Fetch) -> Result<InMemory> {
    let dir = root.join(BATCHES_DIR);
    let files = split_files(split);
    let missing = |files: &[&str]| files.iter().filter(|f| !dir.join(f).is_file()).map(|f| f.to_string()).collect::<Vec<_>>();
    if missing(files).is_empty() {
        return read_split(&dir, split);
    }
    let archive = root.join(ARCHIVE);
    if fetch.download {
        fetch.fetch(ARCHIVE, root, "CIFAR-10")?;
    } else if !archive.is_file() {
        return Err(data_err(
            &dir,
            format!(
                "CIFAR-10 is missing ({} not found) and data.download is false: {}, or put its extracted {BATCHES_DIR}/ folder in {}, or set data.download = true",
                missing(files).join(", "),
                fetch.manual_steps(&[ARCHIVE], root),
                root.display()
            ),
        ));
    }
    extract_archive(&archive, root)?;
    let still_missing = missing(files);
    if !still_missing.is_empty() {
        return Err(data_err(&archive, format!("the archive does not hold {BATCHES_DIR}/{}; it is not {ARCHIVE}", still_missing.join(", "))));
    }
    read_split(&dir, split)
}

fn data_err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Data { path: path.to_path_buf(), message: message.into() }
}
