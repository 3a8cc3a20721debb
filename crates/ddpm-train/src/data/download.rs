//! Data set files in a cache folder, fetched over HTTP(S) with an MD5 check by
//! [`ddpm_io::download`] (`.part` file, renamed into place only when the checksum matches; offline,
//! the error says which file to fetch from where and the exact path to save it as).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use ddpm_io::download::{Checksum, DownloadError, cache_dir_from};

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
    if let Some(dir) = cache_dir_from("datasets", xdg_cache_home, home) {
        return Ok(dir.join(name));
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
    Ok(Checksum::Md5(String::new()).digest_file(path)?)
}

/// Downloads `url` to `dest` and checks its MD5 (`md5_hex`, any case) with
/// [`ddpm_io::download::download`]; nothing is done when `dest` already has that checksum.
/// `what` names the file on the progress bar (e.g. "CIFAR-10").
pub fn download(url: &str, dest: &Path, md5_hex: &str, what: &str) -> Result<()> {
    ddpm_io::download::download(url, dest, &Checksum::Md5(md5_hex.to_string()), what).map_err(|e| match e {
        DownloadError::Mismatch { url, message } => {
            TrainError::Download { url, message: format!("{message}. If this mirror serves other files on purpose, give their checksums in data.md5") }
        }
        other => other.into(),
    })
}
