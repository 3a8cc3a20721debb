//! Data set files in a cache folder, fetched over HTTP(S) with an MD5 check.
//!
//! A download streams into `<dest>.part` while the MD5 is computed, and is renamed into place only
//! when the checksum matches, so an interrupted or corrupted download never looks like a good
//! file. When the network is unreachable the error says which file to fetch from where and the
//! exact path to save it as.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};

use crate::error::{Result, TrainError};

/// Environment variable: the folder under which each data set gets its own cache folder
/// (`$DDPM_DATA_DIR/<name>`), in place of `$XDG_CACHE_HOME/ddpm-rs/datasets`.
pub const ENV_DATA_DIR: &str = "DDPM_DATA_DIR";
/// Environment variable: a base URL that serves the data set files by their official names, used
/// in place of the official addresses when a config gives no `mirror`.
pub const ENV_MIRROR: &str = "DDPM_DATA_MIRROR";

/// The default cache folder of the data set `name`: `$DDPM_DATA_DIR/<name>`, else
/// `$XDG_CACHE_HOME/ddpm-rs/datasets/<name>`, else `$HOME/.cache/ddpm-rs/datasets/<name>`.
pub fn cache_root(name: &str) -> Result<PathBuf> {
    cache_root_from(name, std::env::var_os(ENV_DATA_DIR), std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

/// [`cache_root`] with the three environment variables given.
pub fn cache_root_from(name: &str, data_dir: Option<OsString>, xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Result<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(data_dir) {
        return Ok(dir.join(name));
    }
    // The XDG spec says a relative XDG_CACHE_HOME is invalid and to be ignored.
    if let Some(dir) = set(xdg_cache_home).filter(|d| d.is_absolute()) {
        return Ok(dir.join("ddpm-rs").join("datasets").join(name));
    }
    if let Some(home) = set(home) {
        return Ok(home.join(".cache").join("ddpm-rs").join("datasets").join(name));
    }
    Err(TrainError::config(
        "data.root",
        format!("no cache folder for {name}: none of {ENV_DATA_DIR}, XDG_CACHE_HOME and HOME is set; set data.root to the folder that holds (or is to hold) its files"),
    ))
}

/// Where a data set's files come from and whether they may be fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetch {
    /// Whether missing files may be downloaded.
    pub download: bool,
    /// The base URL, ending with `/`; a file's URL is the base plus its name.
    pub base_url: String,
    /// Expected MD5 (lower-case hex) of each file, by name.
    pub md5: BTreeMap<String, String>,
}

impl Fetch {
    /// The base URL is `mirror`, else `$DDPM_DATA_MIRROR`, else `official_base`. `overrides`
    /// (the config's `md5`) replaces official checksums; each key must name an official file and
    /// each value be 32 hex digits.
    pub fn new(download: bool, mirror: Option<&str>, official_base: &str, official_md5: &[(&str, &str)], overrides: &BTreeMap<String, String>) -> Result<Self> {
        let mut md5: BTreeMap<String, String> = official_md5.iter().map(|(f, m)| (f.to_string(), m.to_string())).collect();
        for (file, sum) in overrides {
            if !md5.contains_key(file) {
                let names: Vec<&str> = official_md5.iter().map(|(f, _)| *f).collect();
                return Err(TrainError::config(format!("data.md5.{file}"), format!("`{file}` is not a file of this data set; use one of {}", names.join(", "))));
            }
            if sum.len() != 32 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(TrainError::config(format!("data.md5.{file}"), format!("`{sum}` is not an MD5 checksum (32 hex digits)")));
            }
            md5.insert(file.clone(), sum.to_ascii_lowercase());
        }
        let env_mirror = std::env::var(ENV_MIRROR).ok().filter(|m| !m.trim().is_empty());
        let mut base_url = mirror.map(str::to_string).or(env_mirror).unwrap_or_else(|| official_base.to_string());
        if !base_url.ends_with('/') {
            base_url.push('/');
        }
        Ok(Self { download, base_url, md5 })
    }

    pub fn url(&self, file: &str) -> String {
        format!("{}{file}", self.base_url)
    }

    /// The expected MD5 of `file`; empty for a name the data set does not have.
    pub fn md5_of(&self, file: &str) -> &str {
        self.md5.get(file).map(String::as_str).unwrap_or("")
    }

    /// Downloads `file` into `dir` (skipped when it is there with the right checksum).
    pub fn fetch(&self, file: &str, dir: &Path, what: &str) -> Result<PathBuf> {
        let dest = dir.join(file);
        download(&self.url(file), &dest, self.md5_of(file), what)?;
        Ok(dest)
    }

    /// What to fetch by hand: each file's URL, checksum and destination.
    pub fn manual_steps(&self, files: &[&str], dir: &Path) -> String {
        files.iter().map(|f| format!("download {} (md5 {}) and save it as {}", self.url(f), self.md5_of(f), dir.join(f).display())).collect::<Vec<_>>().join("; ")
    }
}

/// The MD5 of a file, as lower-case hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| io_err(path, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Downloads `url` to `dest` and checks its MD5 (`md5_hex`, any case). Nothing is done when `dest`
/// already has that checksum. `what` names the file on the progress bar (e.g. "CIFAR-10").
///
/// The body streams into `dest` + `.part`; on a checksum mismatch that file is deleted and the
/// error names the URL, the expected and the actual MD5. A network failure says which file to
/// fetch by hand and where to save it.
pub fn download(url: &str, dest: &Path, md5_hex: &str, what: &str) -> Result<()> {
    let expected = md5_hex.to_ascii_lowercase();
    if dest.is_file() {
        let actual = md5_file(dest)?;
        if actual == expected {
            return Ok(());
        }
        eprintln!("{}: md5 {actual} is not the expected {expected}; downloading it again from {url}", dest.display());
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let mut part_name = dest.file_name().map(OsString::from).unwrap_or_default();
    part_name.push(".part");
    let part = dest.with_file_name(part_name);
    let manual = || format!("without network access, download {url} by other means (md5 {expected}) and save it as {}", dest.display());

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        // A stall, not a slow link, is what fails: no limit on the whole transfer.
        .timeout_per_read(Some(Duration::from_secs(60)))
        // The checksum is of the bytes as served: no transparent decompression.
        .accept_encoding("identity")
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| TrainError::Download { url: url.to_string(), message: format!("{e}; {}", manual()) })?;
    let total = response.body().content_length();
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template("{msg} {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} ETA {eta}").expect("template").progress_chars("=> "),
        ),
        None => indicatif::ProgressBar::new_spinner()
            .with_style(indicatif::ProgressStyle::with_template("{msg} {bytes} {bytes_per_sec}").expect("template")),
    }
    .with_message(format!("downloading {what}"));

    let streamed = (|| -> std::result::Result<String, StreamError> {
        let file = File::create(&part).map_err(|e| StreamError::Disk(format!("cannot create: {e}")))?;
        let mut out = BufWriter::new(file);
        let mut reader = response.body_mut().as_reader();
        let mut hasher = Md5::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf).map_err(|e| StreamError::Network(e.to_string()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| StreamError::Disk(format!("cannot write: {e}")))?;
            bar.inc(n as u64);
        }
        out.flush().map_err(|e| StreamError::Disk(format!("cannot write: {e}")))?;
        Ok(hex(&hasher.finalize()))
    })();
    bar.finish_and_clear();
    let actual = match streamed {
        Ok(sum) => sum,
        Err(e) => {
            let _ = fs::remove_file(&part);
            return Err(match e {
                StreamError::Network(message) => {
                    TrainError::Download { url: url.to_string(), message: format!("the transfer broke off: {message}; {}", manual()) }
                }
                StreamError::Disk(message) => TrainError::Io { path: part, message },
            });
        }
    };
    if actual != expected {
        let _ = fs::remove_file(&part);
        return Err(TrainError::Download {
            url: url.to_string(),
            message: format!(
                "checksum mismatch: expected md5 {expected}, got {actual}; the download was deleted. If this mirror serves other files on purpose, give their checksums in data.md5"
            ),
        });
    }
    fs::rename(&part, dest).map_err(|e| io_err(dest, e))
}

enum StreamError {
    Network(String),
    Disk(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn io_err(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Io { path: path.to_path_buf(), message: e.to_string() }
}
