//! The data loaders on small files written here in each official format: CIFAR-10 batches (and
//! their tar.gz archive), MNIST IDX files (raw and gzipped), image folders, vector files; the
//! downloader against a loopback HTTP server; batches with flips.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ddpm_train::config::DataConfig;
use ddpm_train::data::{self, ImageSize, InMemory, Normalize, Storage, cifar, download, mnist};
use ddpm_train::{TrainError, parse_config};
use image::{Rgb, RgbImage, Rgba, RgbaImage};
use md5::Digest;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty folder under the system temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

fn temp_dir(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("ddpm-data-test-{}-{}-{name}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// The `[data]` section of a config, parsed the way a config file is.
fn data_config(data_toml: &str) -> DataConfig {
    let text = format!("[data]\n{data_toml}\n\n[model]\nkind = \"mlp\"\n");
    parse_config(&text, "test.toml", &[]).unwrap_or_else(|e| panic!("{e}\n{text}")).data
}

fn load(data_toml: &str) -> ddpm_train::Result<InMemory> {
    data::load(&data_config(data_toml), 0)
}

fn bytes(d: &InMemory) -> &[u8] {
    match &d.storage {
        Storage::U8(v) => v,
        Storage::F32(_) => panic!("expected byte storage"),
    }
}

fn toml_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "/")
}

fn md5_hex(body: &[u8]) -> String {
    md5::Md5::digest(body).iter().map(|b| format!("{b:02x}")).collect()
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(raw).unwrap();
    enc.finish().unwrap()
}

// ---------- CIFAR-10 ----------

/// Pixel (channel, row, column) of record `k` of batch `b`: distinct enough to catch a wrong
/// layout (HWC instead of CHW, transposed rows) or a wrong record order.
fn cifar_pixel(b: usize, k: usize, c: usize, y: usize, x: usize) -> u8 {
    ((b * 37 + k * 11 + c * 85 + y * 7 + x * 3) % 256) as u8
}

fn cifar_batch(b: usize, records: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for k in 0..records {
        out.push(((b + k) % 10) as u8);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    out.push(cifar_pixel(b, k, c, y, x));
                }
            }
        }
    }
    out
}

/// The five train batches (2 records each) and the test batch (3 records).
fn cifar_files() -> Vec<(&'static str, Vec<u8>)> {
    let mut files: Vec<(&str, Vec<u8>)> = cifar::TRAIN_FILES.iter().enumerate().map(|(b, f)| (*f, cifar_batch(b, 2))).collect();
    files.push((cifar::TEST_FILES[0], cifar_batch(9, 3)));
    files
}

fn check_cifar_train(d: &InMemory) {
    assert_eq!(d.len(), 10);
    assert_eq!(d.item_shape, vec![3, 32, 32]);
    assert_eq!(d.num_classes, 10);
    let labels = d.labels.as_ref().expect("labelled");
    let px = bytes(d);
    for b in 0..5 {
        for k in 0..2 {
            let i = b * 2 + k;
            assert_eq!(labels[i], ((b + k) % 10) as u32);
            for (c, y, x) in [(0, 0, 0), (1, 5, 9), (2, 31, 30), (0, 17, 2)] {
                assert_eq!(px[i * 3072 + c * 1024 + y * 32 + x], cifar_pixel(b, k, c, y, x), "item {i} at ({c}, {y}, {x})");
            }
        }
    }
    // Bytes map to [-1, 1] in batches.
    let batch = d.host_batch(&[3], &[]);
    let v = cifar_pixel(1, 1, 2, 4, 6);
    assert_eq!(batch[2 * 1024 + 4 * 32 + 6], f32::from(v) / 127.5 - 1.0);
}

#[test]
fn cifar10_reads_batches_in_chw_order_with_labels() {
    let root = temp_dir("cifar");
    let dir = root.join(cifar::BATCHES_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in cifar_files() {
        std::fs::write(dir.join(name), body).unwrap();
    }
    let train = load(&format!("kind = \"cifar10\"\nroot = \"{}\"\ndownload = false", toml_path(&root))).unwrap();
    check_cifar_train(&train);
    assert!(train.hflip, "CIFAR-10 flips by default");

    let test = load(&format!("kind = \"cifar10\"\nroot = \"{}\"\ndownload = false\nsplit = \"test\"\nhflip = false", toml_path(&root))).unwrap();
    assert_eq!(test.len(), 3);
    assert!(!test.hflip);
    assert_eq!(test.labels.as_deref(), Some(&[9, 0, 1][..]));
    assert_eq!(bytes(&test)[2 * 3072 + 1024 + 32 + 1], cifar_pixel(9, 2, 1, 1, 1));
}

#[test]
fn cifar10_extracts_the_tar_gz_archive() {
    let root = temp_dir("cifar-archive");
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (name, body) in cifar_files() {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("{}/{name}", cifar::BATCHES_DIR), body.as_slice()).unwrap();
    }
    let archive = tar.into_inner().unwrap().finish().unwrap();
    std::fs::write(root.join(cifar::ARCHIVE), archive).unwrap();

    let train = load(&format!("kind = \"cifar10\"\nroot = \"{}\"\ndownload = false", toml_path(&root))).unwrap();
    check_cifar_train(&train);
    assert!(root.join(cifar::BATCHES_DIR).join("test_batch.bin").is_file(), "the whole archive is extracted");
    assert!(!root.join(".cifar-10-extracting").exists(), "the scratch folder is removed");
}

#[test]
fn cifar10_rejects_a_batch_that_is_not_whole_records() {
    let root = temp_dir("cifar-truncated");
    let dir = root.join(cifar::BATCHES_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, mut body) in cifar_files() {
        if name == "data_batch_3.bin" {
            body.truncate(3073 + 100);
        }
        std::fs::write(dir.join(name), body).unwrap();
    }
    let err = load(&format!("kind = \"cifar10\"\nroot = \"{}\"\ndownload = false", toml_path(&root))).unwrap_err().to_string();
    assert!(err.contains("data_batch_3.bin") && err.contains("3173 bytes") && err.contains("3073"), "{err}");

    let mut bad_label = cifar_batch(0, 1);
    bad_label[0] = 12;
    let path = dir.join("bad.bin");
    std::fs::write(&path, bad_label).unwrap();
    let err = cifar::read_batch(&path).unwrap_err().to_string();
    assert!(err.contains("bad.bin") && err.contains("label 12"), "{err}");
}

#[test]
fn cifar10_missing_without_download_says_what_to_put_where() {
    let root = temp_dir("cifar-missing");
    let err = load(&format!("kind = \"cifar10\"\nroot = \"{}\"\ndownload = false", toml_path(&root))).unwrap_err().to_string();
    assert!(err.contains("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"), "{err}");
    assert!(err.contains(&root.join(cifar::ARCHIVE).display().to_string()), "{err}");
    assert!(err.contains(cifar::ARCHIVE_MD5) && err.contains("data.download = true"), "{err}");
}

// ---------- MNIST ----------

fn idx_images(count: usize, side: usize, pixel: impl Fn(usize, usize, usize) -> u8) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [mnist::IMAGES_MAGIC, count as u32, side as u32, side as u32] {
        out.extend(v.to_be_bytes());
    }
    for i in 0..count {
        for y in 0..side {
            for x in 0..side {
                out.push(pixel(i, y, x));
            }
        }
    }
    out
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(mnist::LABELS_MAGIC.to_be_bytes());
    out.extend((labels.len() as u32).to_be_bytes());
    out.extend(labels);
    out
}

fn digit_pixel(i: usize, y: usize, x: usize) -> u8 {
    ((i * 50 + y * 9 + x) % 256) as u8
}

#[test]
fn mnist_reads_raw_and_gzipped_idx_files() {
    let root = temp_dir("mnist");
    std::fs::write(root.join("train-images-idx3-ubyte"), idx_images(4, 28, digit_pixel)).unwrap();
    std::fs::write(root.join("train-labels-idx1-ubyte.gz"), gzip(&idx_labels(&[7, 0, 3, 9]))).unwrap();
    std::fs::write(root.join("t10k-images-idx3-ubyte.gz"), gzip(&idx_images(2, 28, |i, y, x| digit_pixel(i + 10, y, x)))).unwrap();
    std::fs::write(root.join("t10k-labels-idx1-ubyte"), idx_labels(&[1, 2])).unwrap();

    let d = load(&format!("kind = \"mnist\"\nroot = \"{}\"\ndownload = false", toml_path(&root))).unwrap();
    assert_eq!((d.len(), d.item_shape.clone(), d.num_classes, d.hflip), (4, vec![1, 28, 28], 10, false));
    assert_eq!(d.labels.as_deref(), Some(&[7, 0, 3, 9][..]));
    for (i, y, x) in [(0, 0, 0), (2, 13, 27), (3, 27, 4)] {
        assert_eq!(bytes(&d)[i * 784 + y * 28 + x], digit_pixel(i, y, x));
    }

    // Test split, padded to 32: a 2-pixel black border, the digit unchanged inside.
    let t = load(&format!("kind = \"mnist\"\nroot = \"{}\"\ndownload = false\nsplit = \"test\"\nimage_size = 32", toml_path(&root))).unwrap();
    assert_eq!((t.len(), t.item_shape.clone()), (2, vec![1, 32, 32]));
    assert_eq!(t.labels.as_deref(), Some(&[1, 2][..]));
    let px = bytes(&t);
    assert_eq!(px[32 * 32 + 2 * 32 + 2], digit_pixel(11, 0, 0));
    assert_eq!(px[32 * 32 + 29 * 32 + 29], digit_pixel(11, 27, 27));
    assert!(px[..32 * 2].iter().all(|&v| v == 0) && px[30 * 32..32 * 32].iter().all(|&v| v == 0));
    assert!((0..32).all(|y| px[y * 32] == 0 && px[y * 32 + 1] == 0 && px[y * 32 + 30] == 0 && px[y * 32 + 31] == 0));

    // Smaller sizes resize: a constant image stays constant.
    std::fs::write(root.join("t10k-images-idx3-ubyte.gz"), gzip(&idx_images(2, 28, |_, _, _| 200))).unwrap();
    let s = load(&format!("kind = \"mnist\"\nroot = \"{}\"\ndownload = false\nsplit = \"test\"\nimage_size = 14", toml_path(&root))).unwrap();
    assert_eq!(s.item_shape, vec![1, 14, 14]);
    assert!(bytes(&s).iter().all(|&v| v == 200));
}

#[test]
fn idx_errors_name_the_file() {
    let root = temp_dir("idx-bad");
    let labels = root.join("train-labels-idx1-ubyte");
    std::fs::write(&labels, idx_labels(&[1, 2, 3])).unwrap();
    let err = mnist::read_idx_images(&labels).unwrap_err().to_string();
    assert!(err.contains("train-labels-idx1-ubyte") && err.contains("0x00000801") && err.contains("0x00000803"), "{err}");

    let mut truncated = idx_images(3, 28, digit_pixel);
    truncated.truncate(16 + 2 * 784 + 10);
    let images = root.join("train-images-idx3-ubyte.gz");
    std::fs::write(&images, gzip(&truncated)).unwrap();
    let err = mnist::read_idx_images(&images).unwrap_err().to_string();
    assert!(err.contains("train-images-idx3-ubyte.gz") && err.contains("truncated") && err.contains("3 images of 28x28"), "{err}");

    let mut bad_label = idx_labels(&[1, 2, 3]);
    bad_label[9] = 10;
    std::fs::write(&labels, bad_label).unwrap();
    let err = mnist::read_idx_labels(&labels).unwrap_err().to_string();
    assert!(err.contains("train-labels-idx1-ubyte") && err.contains("label 1 is 10"), "{err}");

    // Counts that disagree between the two files.
    std::fs::write(&images, gzip(&idx_images(3, 28, digit_pixel))).unwrap();
    std::fs::write(&labels, idx_labels(&[1, 2])).unwrap();
    let err = load(&format!("kind = \"mnist\"\nroot = \"{}\"\ndownload = false", toml_path(&root))).unwrap_err().to_string();
    assert!(err.contains("2 labels for the 3 images"), "{err}");

    // Missing files without download: which files, from where, to where.
    let empty = temp_dir("idx-missing");
    let err = load(&format!("kind = \"mnist\"\nvariant = \"fashion\"\nroot = \"{}\"\ndownload = false", toml_path(&empty))).unwrap_err().to_string();
    assert!(err.contains("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz"), "{err}");
    assert!(err.contains("8d4fb7e6c68d591d4c3dfef9ec88bf0d") && err.contains(&empty.join("train-labels-idx1-ubyte.gz").display().to_string()), "{err}");
}

// ---------- Loopback HTTP server and the downloader ----------

/// Serves `files` (path -> body) on 127.0.0.1 with Content-Length; 404 for anything else.
/// Returns the base URL. The thread lives as long as the test process.
fn serve(files: HashMap<String, Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request);
            let path = text.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
            let (status, body) = match files.get(&path) {
                Some(body) => ("200 OK", body.clone()),
                None => ("404 Not Found", b"not found".to_vec()),
            };
            let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&body));
        }
    });
    base
}

const FOX: &[u8] = b"The quick brown fox jumps over the lazy dog";
const FOX_MD5: &str = "9e107d9d372bb6826bd81d3542a419d6";

#[test]
fn download_checks_the_md5_and_renames_into_place() {
    let base = serve(HashMap::from([("fox.txt".to_string(), FOX.to_vec())]));
    let dir = temp_dir("download");
    let dest = dir.join("sub").join("fox.txt");
    download::download(&format!("{base}fox.txt"), &dest, &FOX_MD5.to_uppercase(), "fox").unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), FOX);
    assert!(!dir.join("sub").join("fox.txt.part").exists());
    assert_eq!(download::md5_file(&dest).unwrap(), FOX_MD5);

    // Present with the right checksum: nothing is fetched (this URL does not exist).
    download::download(&format!("{base}gone.txt"), &dest, FOX_MD5, "fox").unwrap();

    // Present with another checksum: fetched again.
    std::fs::write(&dest, b"stale").unwrap();
    download::download(&format!("{base}fox.txt"), &dest, FOX_MD5, "fox").unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), FOX);
}

#[test]
fn download_with_a_wrong_md5_fails_and_leaves_nothing() {
    let base = serve(HashMap::from([("fox.txt".to_string(), FOX.to_vec())]));
    let dir = temp_dir("download-mismatch");
    let dest = dir.join("fox.txt");
    let wrong = "00112233445566778899aabbccddeeff";
    let url = format!("{base}fox.txt");
    let err = download::download(&url, &dest, wrong, "fox").unwrap_err();
    assert!(matches!(err, TrainError::Download { .. }));
    let err = err.to_string();
    assert!(err.contains(&url) && err.contains(wrong) && err.contains(FOX_MD5), "{err}");
    assert!(!dest.exists() && !dir.join("fox.txt.part").exists());

    let err = download::download(&format!("{base}missing.bin"), &dest, wrong, "missing").unwrap_err().to_string();
    assert!(err.contains("404"), "{err}");
    assert!(!dest.exists());
}

#[test]
fn inception_weights_are_found_in_the_caches_or_downloaded_once_with_their_sha256() {
    use ddpm_eval::download::Checksum;
    use ddpm_eval::inception::{FID_WEIGHTS_FILE, WeightsLookup};
    const FOX_SHA256: &str = "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592";
    let base = serve(HashMap::from([("weights.pth".to_string(), FOX.to_vec())]));
    let dir = temp_dir("inception-weights");
    let (hub, cache) = (dir.join("torch-hub"), dir.join("cache"));
    let cached = cache.join(FID_WEIGHTS_FILE);
    let off = WeightsLookup {
        given: None,
        env_weights: None,
        torch_hub_dir: Some(hub.clone()),
        cache_dir: Some(cache.clone()),
        url: format!("{base}weights.pth"),
        checksum: Checksum::Sha256Prefix(FOX_SHA256[..8].to_uppercase()),
        download: false,
    };
    // Nowhere and no downloading: the error says what to fetch, its checksum and where to put it.
    let err = off.resolve().unwrap_err().to_string();
    assert!(
        err.contains(&off.url)
            && err.contains("sha256 d7a8fbb3")
            && err.contains(&cached.display().to_string()),
        "{err}"
    );

    // Downloaded once into our cache, then found there.
    let on = WeightsLookup {
        download: true,
        ..off.clone()
    };
    assert_eq!(on.resolve().unwrap(), cached);
    assert_eq!(std::fs::read(&cached).unwrap(), FOX);
    assert_eq!(off.resolve().unwrap(), cached);

    // PyTorch hub's copy (pytorch-fid's download) comes first; a given path or the variable before it.
    std::fs::create_dir_all(&hub).unwrap();
    std::fs::write(hub.join(FID_WEIGHTS_FILE), FOX).unwrap();
    assert_eq!(off.resolve().unwrap(), hub.join(FID_WEIGHTS_FILE));
    let env = WeightsLookup {
        env_weights: Some(cached.clone()),
        ..off.clone()
    };
    assert_eq!(env.resolve().unwrap(), cached);
    let given = WeightsLookup {
        given: Some(dir.join("missing.safetensors")),
        ..env
    };
    let err = given.resolve().unwrap_err().to_string();
    assert!(
        err.contains("missing.safetensors") && err.contains("no such Inception weights file"),
        "{err}"
    );

    // Served bytes with another SHA-256: refused, and nothing is left in the cache.
    std::fs::remove_dir_all(&*dir).unwrap();
    let wrong = WeightsLookup {
        checksum: Checksum::Sha256Prefix("6726825d".into()),
        ..on
    };
    let err = wrong.resolve().unwrap_err().to_string();
    assert!(
        err.contains("checksum mismatch")
            && err.contains("sha256 6726825d")
            && err.contains(&FOX_SHA256[..16]),
        "{err}"
    );
    assert!(!cached.exists() && !cache.join(format!("{FID_WEIGHTS_FILE}.part")).exists());
}

#[test]
fn download_refused_says_where_to_put_the_file() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = temp_dir("download-refused");
    let dest = dir.join("cifar-10-binary.tar.gz");
    let url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
    let err = download::download(&url, &dest, cifar::ARCHIVE_MD5, "CIFAR-10").unwrap_err().to_string();
    assert!(err.contains(&url) && err.contains(&dest.display().to_string()) && err.contains(cifar::ARCHIVE_MD5), "{err}");
    assert!(!dest.exists());
}

#[test]
fn mnist_downloads_from_a_mirror_end_to_end() {
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("train-images-idx3-ubyte.gz", gzip(&idx_images(5, 28, digit_pixel))),
        ("train-labels-idx1-ubyte.gz", gzip(&idx_labels(&[4, 3, 2, 1, 0]))),
    ];
    let md5_lines: String = files.iter().map(|(n, b)| format!("\"{n}\" = \"{}\"\n", md5_hex(b))).collect();
    let base = serve(files.iter().map(|(n, b)| (format!("mnist/{n}"), b.clone())).collect());
    let root = temp_dir("mnist-download");
    let config = format!("kind = \"mnist\"\nroot = \"{}\"\nmirror = \"{base}mnist\"\n[data.md5]\n{md5_lines}", toml_path(&root));
    let d = load(&config).unwrap();
    assert_eq!(d.len(), 5);
    assert_eq!(d.labels.as_deref(), Some(&[4, 3, 2, 1, 0][..]));
    assert_eq!(bytes(&d)[4 * 784 + 20 * 28 + 3], digit_pixel(4, 20, 3));
    assert!(root.join("train-images-idx3-ubyte.gz").is_file() && root.join("train-labels-idx1-ubyte.gz").is_file());
    assert!(!root.join("t10k-images-idx3-ubyte.gz").exists(), "only the split's files are fetched");

    // Without the overrides, the official checksums reject the mirror's files.
    let other_root = temp_dir("mnist-download-official-md5");
    let err = load(&format!("kind = \"mnist\"\nroot = \"{}\"\nmirror = \"{base}mnist/\"", toml_path(&other_root))).unwrap_err().to_string();
    assert!(err.contains("checksum mismatch") && err.contains("f68b3c2dcbeaaa9fbdd348bbdeb94873"), "{err}");
    assert!(!other_root.join("train-images-idx3-ubyte.gz").exists());

    // An override must name a file of the set and be an MD5.
    let err = load(&format!("kind = \"mnist\"\nroot = \"{}\"\n[data.md5]\n\"train.gz\" = \"{FOX_MD5}\"", toml_path(&root))).unwrap_err().to_string();
    assert!(err.contains("train.gz") && err.contains("train-images-idx3-ubyte.gz"), "{err}");
    let err = load(&format!("kind = \"mnist\"\nroot = \"{}\"\n[data.md5]\n\"train-images-idx3-ubyte.gz\" = \"abc\"", toml_path(&root))).unwrap_err().to_string();
    assert!(err.contains("32 hex digits"), "{err}");
}

#[test]
fn mnist_offline_lists_every_file_of_the_split() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let root = temp_dir("mnist-offline");
    let err = load(&format!("kind = \"mnist\"\nsplit = \"test\"\nroot = \"{}\"\nmirror = \"http://127.0.0.1:{port}/\"", toml_path(&root))).unwrap_err().to_string();
    for file in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        assert!(err.contains(&format!("http://127.0.0.1:{port}/{file}")) && err.contains(&root.join(file).display().to_string()), "{err}");
    }
    assert!(err.contains("9fb629c4189551a2d022fa330f9573f3") && err.contains("ec29112dd5afa0611ce80d1b7f02629c"), "{err}");
}

#[test]
fn cache_root_precedence() {
    let os = |s: &str| Some(std::ffi::OsString::from(s));
    assert_eq!(download::cache_root_from("mnist", os("/data"), os("/xdg"), os("/home/u")).unwrap(), PathBuf::from("/data/mnist"));
    assert_eq!(download::cache_root_from("mnist", None, os("/xdg"), os("/home/u")).unwrap(), PathBuf::from("/xdg/ddpm-rs/datasets/mnist"));
    assert_eq!(download::cache_root_from("mnist", os(""), os("relative"), os("/home/u")).unwrap(), PathBuf::from("/home/u/.cache/ddpm-rs/datasets/mnist"));
    let err = download::cache_root_from("cifar10", None, None, None).unwrap_err().to_string();
    assert!(err.contains("data.root"), "{err}");
}

// ---------- Image folders ----------

fn solid(w: u32, h: u32, c: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb(c))
}

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];
const BLUE: [u8; 3] = [0, 0, 255];

/// Channel `c` at (y, x) of item `i` of `[C, H, W]` byte items.
fn at(d: &InMemory, i: usize, c: usize, y: usize, x: usize) -> u8 {
    let (h, w) = (d.item_shape[1], d.item_shape[2]);
    bytes(d)[i * d.item_len() + c * h * w + y * w + x]
}

#[test]
fn image_folder_reads_nested_files_of_every_format_and_size() {
    let root = temp_dir("folder");
    std::fs::create_dir_all(root.join("a/deeper")).unwrap();
    std::fs::create_dir_all(root.join("b")).unwrap();
    solid(10, 12, RED).save(root.join("a/one.png")).unwrap();
    solid(20, 9, GREEN).save(root.join("a/deeper/two.jpg")).unwrap();
    solid(8, 8, BLUE).save(root.join("b/three.bmp")).unwrap();
    solid(30, 17, RED).save(root.join("b/four.tiff")).unwrap();
    solid(9, 11, GREEN).save(root.join("five.webp")).unwrap();
    solid(8, 8, BLUE).save_with_format(root.join("b/SIX.PNG"), image::ImageFormat::Png).unwrap();
    std::fs::write(root.join("notes.txt"), "not an image").unwrap();
    std::fs::write(root.join(".hidden.png"), "hidden, not read").unwrap();

    let d = load(&format!("kind = \"image_folder\"\npath = \"{}\"\nimage_size = 8", toml_path(&root))).unwrap();
    assert_eq!((d.len(), d.item_shape.clone()), (6, vec![3, 8, 8]));
    assert!(d.hflip && d.labels.is_none() && d.num_classes == 0);
    // Sorted path order: a/deeper/two.jpg, a/one.png, b/SIX.PNG, b/four.tiff, b/three.bmp, five.webp.
    let expected = [GREEN, RED, BLUE, RED, BLUE, GREEN];
    for (i, colour) in expected.iter().enumerate() {
        for (c, &want) in colour.iter().enumerate() {
            let v = at(&d, i, c, 4, 4);
            // JPEG is lossy; the others are exact.
            assert!(v.abs_diff(want) <= 3, "item {i} channel {c}: {v} vs {want}");
        }
    }
}

#[test]
fn image_folder_converts_channels() {
    let root = temp_dir("folder-channels");
    solid(6, 6, RED).save(root.join("red.png")).unwrap();
    RgbaImage::from_pixel(6, 6, Rgba([10, 20, 30, 128])).save(root.join("alpha.png")).unwrap();

    let gray = load(&format!("kind = \"image_folder\"\npath = \"{}\"\nimage_size = 4\nchannels = 1", toml_path(&root))).unwrap();
    assert_eq!(gray.item_shape, vec![1, 4, 4]);
    // PIL's convert("L"): (R*19595 + G*38470 + B*7471 + 32768) >> 16.
    assert_eq!(at(&gray, 1, 0, 0, 0), 76, "red");
    assert_eq!(at(&gray, 0, 0, 2, 2), ((10 * 19595 + 20 * 38470 + 30 * 7471 + 32768) >> 16) as u8);

    let rgba = load(&format!("kind = \"image_folder\"\npath = \"{}\"\nimage_size = 4\nchannels = 4", toml_path(&root))).unwrap();
    assert_eq!(rgba.item_shape, vec![4, 4, 4]);
    assert_eq!([0, 1, 2, 3].map(|c| at(&rgba, 0, c, 1, 3)), [10, 20, 30, 128]);
    assert_eq!(at(&rgba, 1, 3, 0, 0), 255, "opaque images get alpha 255");

    let err = load(&format!("kind = \"image_folder\"\npath = \"{}\"\nimage_size = 4\nchannels = 2", toml_path(&root))).unwrap_err().to_string();
    assert!(err.contains("data.channels") && err.contains("1 (grayscale), 3 (RGB) or 4 (RGBA)"), "{err}");
}

#[test]
fn image_folder_center_crops_to_square_and_non_square_sizes() {
    let root = temp_dir("folder-crop");
    // Three vertical bands of 4 columns: the middle 4x4 is all green.
    let bands = RgbImage::from_fn(12, 4, |x, _| Rgb([RED, GREEN, BLUE][x as usize / 4]));
    bands.save(root.join("a-bands.png")).unwrap();
    let d = load(&format!("kind = \"image_folder\"\npath = \"{}\"\nimage_size = 4", toml_path(&root))).unwrap();
    for y in 0..4 {
        for x in 0..4 {
            assert_eq!([0, 1, 2].map(|c| at(&d, 0, c, y, x)), GREEN, "({y}, {x})");
        }
    }

    // Downscaled to cover 4x4 (16x8 -> 8x4), then the middle 4 columns: red on the left, blue on
    // the right.
    std::fs::remove_file(root.join("a-bands.png")).unwrap();
    RgbImage::from_fn(16, 8, |x, _| Rgb(if x < 8 { RED } else { BLUE })).save(root.join("halves.png")).unwrap();
    let d = load(&format!("kind = \"image_folder\"\npath = \"{}\"\nimage_size = 4", toml_path(&root))).unwrap();
    assert_eq!([0, 1, 2].map(|c| at(&d, 0, c, 2, 0)), RED);
    assert_eq!([0, 1, 2].map(|c| at(&d, 0, c, 2, 3)), BLUE);

    // [height, width] = [4, 8] from 8x8 horizontal stripes: the middle four rows.
    std::fs::remove_file(root.join("halves.png")).unwrap();
    RgbImage::from_fn(8, 8, |_, y| Rgb(match y {
        0..2 => RED,
        2..6 => GREEN,
        _ => BLUE,
    }))
    .save(root.join("stripes.png"))
    .unwrap();
    let d = load(&format!("kind = \"image_folder\"\npath = \"{}\"\nimage_size = [4, 8]", toml_path(&root))).unwrap();
    assert_eq!(d.item_shape, vec![3, 4, 8]);
    assert!((0..4).all(|y| (0..8).all(|x| [0, 1, 2].map(|c| at(&d, 0, c, y, x)) == GREEN)));
}

#[test]
fn image_folder_corrupt_files_fail_or_are_skipped() {
    let root = temp_dir("folder-corrupt");
    solid(5, 5, RED).save(root.join("good1.png")).unwrap();
    solid(5, 5, BLUE).save(root.join("good2.jpg")).unwrap();
    std::fs::write(root.join("broken.png"), b"\x89PNG\r\n\x1a\n but then nothing").unwrap();

    let err = load(&format!("kind = \"image_folder\"\npath = \"{}\"\nimage_size = 4", toml_path(&root))).unwrap_err().to_string();
    assert!(err.contains("broken.png") && err.contains("set data.skip_corrupt = true"), "{err}");

    let d = load(&format!("kind = \"image_folder\"\npath = \"{}\"\nimage_size = 4\nskip_corrupt = true", toml_path(&root))).unwrap();
    assert_eq!(d.len(), 2);
    // The survivors keep their order: good1 (red) then good2 (blue).
    assert_eq!(at(&d, 0, 0, 1, 1), 255);
    assert!(at(&d, 1, 2, 1, 1) > 250);

    let all_bad = temp_dir("folder-all-corrupt");
    std::fs::write(all_bad.join("x.jpg"), b"nope").unwrap();
    std::fs::write(all_bad.join("y.webp"), b"nope").unwrap();
    let err = load(&format!("kind = \"image_folder\"\npath = \"{}\"\nimage_size = 4\nskip_corrupt = true", toml_path(&all_bad))).unwrap_err().to_string();
    assert!(err.starts_with(&all_bad.display().to_string()) && err.contains("none of its 2 images"), "{err}");
}

#[test]
fn image_folder_without_images_is_an_error_naming_it() {
    let root = temp_dir("folder-empty");
    std::fs::create_dir_all(root.join("nested")).unwrap();
    std::fs::write(root.join("nested/readme.md"), "no images here").unwrap();
    let err = load(&format!("kind = \"image_folder\"\npath = \"{}\"\nimage_size = 4", toml_path(&root))).unwrap_err().to_string();
    assert!(err.contains(&root.display().to_string()) && err.contains("holds no images"), "{err}");

    let missing = root.join("does-not-exist");
    let err = load(&format!("kind = \"image_folder\"\npath = \"{}\"\nimage_size = 4", toml_path(&missing))).unwrap_err().to_string();
    assert!(err.contains("does-not-exist") && err.contains("no such folder"), "{err}");
}

#[test]
fn celeba_cuts_the_face_square_then_resizes() {
    let root = temp_dir("celeba");
    // An aligned-CelebA-sized image: the centered 148x148 square (rows 35..183, columns 15..163)
    // is green, the rest red.
    let img = RgbImage::from_fn(178, 218, |x, y| Rgb(if (15..163).contains(&x) && (35..183).contains(&y) { GREEN } else { RED }));
    img.save(root.join("000001.jpg")).unwrap();
    img.save(root.join("000002.png")).unwrap();

    let d = load(&format!("kind = \"celeba\"\npath = \"{}\"\nimage_size = 8", toml_path(&root))).unwrap();
    assert_eq!((d.len(), d.item_shape.clone(), d.hflip), (2, vec![3, 8, 8], true));
    // The lossless one is exactly green everywhere.
    assert!((0..8).all(|y| (0..8).all(|x| [0, 1, 2].map(|c| at(&d, 1, c, y, x)) == GREEN)));

    // tqch/ddpm-torch's cut starts at row 40: the bottom 5 rows of the cut are red.
    let lower = load(&format!("kind = \"celeba\"\npath = \"{}\"\nimage_size = 8\ncrop_top = 40", toml_path(&root))).unwrap();
    assert!(at(&lower, 1, 0, 7, 4) > 20, "red at the bottom: {}", at(&lower, 1, 0, 7, 4));
    assert_eq!([0, 1, 2].map(|c| at(&lower, 1, c, 0, 4)), GREEN);

    let err = load(&format!("kind = \"celeba\"\npath = \"{}\"\ncrop = 200", toml_path(&root))).unwrap_err().to_string();
    assert!(err.contains("000001.jpg") && err.contains("178x218") && err.contains("data.crop"), "{err}");
}

// ---------- Vectors ----------

#[test]
fn embeddings_from_npy_with_normalisation() {
    let dir = temp_dir("vectors-npy");
    let path = dir.join("emb.npy");
    // Feature 0 spans [2, 6], feature 1 is constant, feature 2 spans [-1, 1].
    let values = [2.0, 5.0, -1.0, 4.0, 5.0, 0.0, 6.0, 5.0, 1.0];
    ddpm_train::npy::write_npy(&path, &[3, 3], &values).unwrap();
    let p = toml_path(&path);

    let d = load(&format!("kind = \"embeddings\"\npath = \"{p}\"")).unwrap();
    assert_eq!((d.len(), d.item_shape.clone(), d.hflip), (3, vec![3], false));
    assert_eq!(d.host_batch(&[2, 0], &[]), vec![6.0, 5.0, 1.0, 2.0, 5.0, -1.0]);

    let m = load(&format!("kind = \"embeddings\"\npath = \"{p}\"\nnormalize = \"minmax\"")).unwrap();
    assert_eq!(m.host_batch(&[0, 1, 2], &[]), vec![-1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]);

    let s = load(&format!("kind = \"embeddings\"\npath = \"{p}\"\nnormalize = \"standardize\"")).unwrap();
    let v = s.host_batch(&[0, 1, 2], &[]);
    let sd = (8.0f32 / 3.0).sqrt();
    for (got, want) in v.iter().zip([-2.0 / sd, 0.0, -1.0 / (2.0f32 / 3.0).sqrt(), 0.0, 0.0, 0.0, 2.0 / sd, 0.0, 1.0 / (2.0f32 / 3.0).sqrt()]) {
        assert!((got - want).abs() < 1e-5, "{v:?}");
    }

    ddpm_train::npy::write_npy(&path, &[2, 2], &[1.0, 2.0, f32::NAN, 0.0]).unwrap();
    let err = load(&format!("kind = \"embeddings\"\npath = \"{p}\"")).unwrap_err().to_string();
    assert!(err.contains("emb.npy") && err.contains("row 1") && err.contains("NaN"), "{err}");

    ddpm_train::npy::write_npy(&path, &[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let err = load(&format!("kind = \"embeddings\"\npath = \"{p}\"")).unwrap_err().to_string();
    assert!(err.contains("[N, D]") && err.contains("[4]"), "{err}");
}

#[test]
fn sequences_from_npy_and_csv() {
    let dir = temp_dir("vectors-seq");
    let npy = dir.join("seq.npy");
    let values: Vec<f32> = (0..12).map(|v| v as f32).collect();
    ddpm_train::npy::write_npy(&npy, &[2, 2, 3], &values).unwrap();
    let d = load(&format!("kind = \"sequences\"\npath = \"{}\"", toml_path(&npy))).unwrap();
    assert_eq!((d.len(), d.item_shape.clone()), (2, vec![2, 3]));
    // Per-channel minmax: channel 0 holds {0,1,2,6,7,8}, channel 1 {3,4,5,9,10,11}.
    let m = load(&format!("kind = \"sequences\"\npath = \"{}\"\nnormalize = \"minmax\"", toml_path(&npy))).unwrap();
    let b = m.host_batch(&[0], &[]);
    assert!((b[0] + 1.0).abs() < 1e-6 && (b[3] + 1.0).abs() < 1e-6 && (b[2] - (2.0 * 2.0 / 8.0 - 1.0)).abs() < 1e-6, "{b:?}");

    ddpm_train::npy::write_npy(&npy, &[3, 4], &values).unwrap();
    let d = load(&format!("kind = \"sequences\"\npath = \"{}\"", toml_path(&npy))).unwrap();
    assert_eq!((d.len(), d.item_shape.clone()), (3, vec![1, 4]));

    // CSV with a header row, and without.
    let csv = dir.join("seq.csv");
    std::fs::write(&csv, "t0,t1,t2\n0.5, -0.25, 1\n-1,0,0.75\n").unwrap();
    let d = load(&format!("kind = \"sequences\"\npath = \"{}\"", toml_path(&csv))).unwrap();
    assert_eq!((d.len(), d.item_shape.clone()), (2, vec![1, 3]));
    assert_eq!(d.host_batch(&[0, 1], &[]), vec![0.5, -0.25, 1.0, -1.0, 0.0, 0.75]);
    std::fs::write(&csv, "1,2\n3,4\n5,6\n").unwrap();
    let d = load(&format!("kind = \"embeddings\"\npath = \"{}\"", toml_path(&csv))).unwrap();
    assert_eq!((d.len(), d.item_shape.clone()), (3, vec![2]));

    std::fs::write(&csv, "a,b\n1,2\n3,x\n").unwrap();
    let err = load(&format!("kind = \"embeddings\"\npath = \"{}\"", toml_path(&csv))).unwrap_err().to_string();
    assert!(err.contains("seq.csv") && err.contains("line 3, column 2") && err.contains("`x`"), "{err}");
    std::fs::write(&csv, "1,2\nNaN,4\n").unwrap();
    let err = load(&format!("kind = \"embeddings\"\npath = \"{}\"", toml_path(&csv))).unwrap_err().to_string();
    assert!(err.contains("line 2, column 1") && err.contains("NaN"), "{err}");
    std::fs::write(&csv, "1,2\n3\n").unwrap();
    assert!(load(&format!("kind = \"embeddings\"\npath = \"{}\"", toml_path(&csv))).is_err());
}

#[test]
fn embeddings_from_safetensors_by_key_and_dtype() {
    use safetensors::Dtype;
    use safetensors::tensor::TensorView;
    let dir = temp_dir("vectors-st");
    let f32s: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let f64s: Vec<u8> = [0.5f64, -0.5].iter().flat_map(|v| v.to_le_bytes()).collect();
    let f16s: Vec<u8> = [0.25f32, -2.0, 1.5, 3.0].iter().flat_map(|&v| burn::tensor::f16::from_f32(v).to_le_bytes()).collect();
    let bf16s: Vec<u8> = [1.0f32, -8.0].iter().flat_map(|&v| burn::tensor::bf16::from_f32(v).to_le_bytes()).collect();
    let tensors = vec![
        ("emb", TensorView::new(Dtype::F32, vec![3, 2], &f32s).unwrap()),
        ("wide", TensorView::new(Dtype::F64, vec![1, 2], &f64s).unwrap()),
        ("half", TensorView::new(Dtype::F16, vec![2, 2], &f16s).unwrap()),
        ("brain", TensorView::new(Dtype::BF16, vec![1, 2], &bf16s).unwrap()),
    ];
    let path = dir.join("many.safetensors");
    std::fs::write(&path, safetensors::serialize(tensors, None).unwrap()).unwrap();
    let p = toml_path(&path);

    let err = load(&format!("kind = \"embeddings\"\npath = \"{p}\"")).unwrap_err().to_string();
    assert!(err.contains("many.safetensors") && err.contains("brain, emb, half, wide") && err.contains("data.key"), "{err}");
    let err = load(&format!("kind = \"embeddings\"\npath = \"{p}\"\nkey = \"nope\"")).unwrap_err().to_string();
    assert!(err.contains("no tensor `nope`") && err.contains("emb"), "{err}");

    let d = load(&format!("kind = \"embeddings\"\npath = \"{p}\"\nkey = \"emb\"")).unwrap();
    assert_eq!((d.len(), d.host_batch(&[1], &[])), (3, vec![3.0, 4.0]));
    assert_eq!(load(&format!("kind = \"embeddings\"\npath = \"{p}\"\nkey = \"wide\"")).unwrap().host_batch(&[0], &[]), vec![0.5, -0.5]);
    assert_eq!(load(&format!("kind = \"embeddings\"\npath = \"{p}\"\nkey = \"half\"")).unwrap().host_batch(&[0, 1], &[]), vec![0.25, -2.0, 1.5, 3.0]);
    assert_eq!(load(&format!("kind = \"embeddings\"\npath = \"{p}\"\nkey = \"brain\"")).unwrap().host_batch(&[0], &[]), vec![1.0, -8.0]);

    // One tensor: no key needed.
    let single = dir.join("one.safetensors");
    std::fs::write(&single, safetensors::serialize(vec![("x", TensorView::new(Dtype::F32, vec![3, 2], &f32s).unwrap())], None).unwrap()).unwrap();
    assert_eq!(load(&format!("kind = \"embeddings\"\npath = \"{}\"", toml_path(&single))).unwrap().len(), 3);

    // A key for a file without named tensors is a mistake worth saying.
    let npy = dir.join("plain.npy");
    ddpm_train::npy::write_npy(&npy, &[1, 2], &[0.0, 1.0]).unwrap();
    let err = load(&format!("kind = \"embeddings\"\npath = \"{}\"\nkey = \"emb\"", toml_path(&npy))).unwrap_err().to_string();
    assert!(err.contains("data.key"), "{err}");
}

// ---------- Batches and config ----------

#[test]
fn host_batch_maps_bytes_and_flips_along_the_last_axis() {
    // Two 1x2x3 images.
    let d = InMemory::from_u8(vec![0, 51, 255, 10, 20, 30, 1, 2, 3, 4, 5, 6], vec![1, 2, 3]);
    let m = |v: u8| f32::from(v) / 127.5 - 1.0;
    assert_eq!(d.host_batch(&[0], &[]), [0, 51, 255, 10, 20, 30].map(m).to_vec());
    assert_eq!(d.host_batch(&[0], &[])[0], -1.0);
    assert_eq!(d.host_batch(&[0], &[])[2], 1.0);
    assert_eq!(d.host_batch(&[1, 0], &[true, false]), [3, 2, 1, 6, 5, 4, 0, 51, 255, 10, 20, 30].map(m).to_vec());
    assert_eq!(d.host_batch(&[0, 0], &[false, true]), [0, 51, 255, 10, 20, 30, 255, 51, 0, 30, 20, 10].map(m).to_vec());

    let v = InMemory::from_f32(vec![0.5, -0.5, 0.25, 1.0], vec![2]);
    assert_eq!(v.host_batch(&[1, 0], &[]), vec![0.25, 1.0, 0.5, -0.5]);
    assert_eq!(v.len(), 2);

    // The tensor batch is the host batch without flips.
    let device = ddpm_io::device::parse_device("flex").unwrap();
    let t: burn::tensor::Tensor<3> = InMemory::from_u8(vec![0, 255, 127, 128], vec![2, 1]).batch(&[1, 0], &device);
    assert_eq!(t.dims(), [2, 2, 1]);
    assert_eq!(t.into_data().try_to_vec::<f32>().unwrap(), [127, 128, 0, 255].map(m).to_vec());
}

#[test]
fn data_configs_parse_with_defaults_and_round_trip() {
    let folder = data_config("kind = \"image_folder\"\npath = \"imgs\"\nimage_size = [48, 64]");
    assert_eq!(
        folder,
        DataConfig::ImageFolder { path: "imgs".into(), image_size: ImageSize::HeightWidth([48, 64]), channels: 3, hflip: true, skip_corrupt: false }
    );
    let cifar = data_config("kind = \"cifar10\"");
    assert_eq!(cifar, DataConfig::Cifar10 { root: None, download: true, split: data::Split::Train, hflip: true, mirror: None, md5: BTreeMap::new() });
    let celeba = data_config("kind = \"celeba\"\npath = \"img_align_celeba\"");
    assert_eq!(celeba, DataConfig::Celeba { path: "img_align_celeba".into(), image_size: 64, crop: 148, crop_top: None, hflip: true, skip_corrupt: false });
    let mnist = data_config("kind = \"mnist\"\nvariant = \"fashion\"\nsplit = \"test\"");
    assert!(matches!(mnist, DataConfig::Mnist { variant: data::MnistVariant::Fashion, split: data::Split::Test, image_size: 28, download: true, .. }));
    let emb = data_config("kind = \"embeddings\"\npath = \"e.npy\"");
    assert_eq!(emb, DataConfig::Embeddings { path: "e.npy".into(), key: None, normalize: Normalize::None });

    // The trainer writes the config it ran with into the run folder: it must read back the same.
    for cfg in [folder, cifar, celeba, mnist, emb, data_config("kind = \"image_folder\"\npath = \"x\"\nimage_size = 32")] {
        let mut full = parse_config("[data]\nkind = \"toy\"\nname = \"moons\"\n\n[model]\nkind = \"mlp\"\n", "base", &[]).unwrap();
        full.data = cfg.clone();
        let text = toml::to_string(&full).unwrap();
        assert_eq!(parse_config(&text, "round-trip", &[]).unwrap().data, cfg, "{text}");
    }

    let text = "[data]\nkind = \"image_folder\"\npath = \"x\"\nimage_size = \"big\"\n\n[model]\nkind = \"mlp\"\n";
    let err = parse_config(text, "bad.toml", &[]).unwrap_err().to_string();
    assert!(err.contains("bad.toml") && err.contains("[height, width]"), "{err}");
    let text = "[data]\nkind = \"cifar10\"\nsplit = \"valid\"\n\n[model]\nkind = \"mlp\"\n";
    let err = parse_config(text, "bad.toml", &[]).unwrap_err().to_string();
    assert!(err.contains("valid") && err.contains("train") && err.contains("test"), "{err}");
    let text = "[data]\nkind = \"mnist\"\nflip = true\n\n[model]\nkind = \"mlp\"\n";
    assert!(parse_config(text, "bad.toml", &[]).unwrap_err().to_string().contains("flip"));
}
