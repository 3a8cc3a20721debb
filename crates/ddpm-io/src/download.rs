//! Files fetched once over HTTP(S) into a cache folder, with a checksum.
//!
//! A download streams into `<dest>.part` while its hash is computed, and is renamed into place only
//! when the checksum matches, so an interrupted or corrupted download never looks like a good file.
//! When the network is unreachable the error says which file to fetch from where, its checksum, and
//! the exact path to save it as; so does a build without the `download` feature (no HTTP client).
//! ddpm-eval fetches Inception's weights and ddpm-train its data sets with the same function.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
#[cfg(feature = "download")]
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
#[cfg(feature = "download")]
use std::time::Duration;

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// What a downloaded file must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// The whole MD5, hex (any case): how torchvision publishes its data set sums.
    Md5(String),
    /// A hex prefix of the SHA-256 (any case): what `torch.hub` checks, the digits after the last
    /// `-` of a checkpoint's name (`pt_inception-2015-12-05-6726825d.pth`).
    Sha256Prefix(String),
}

impl Checksum {
    fn expected(&self) -> String {
        match self {
            Checksum::Md5(h) | Checksum::Sha256Prefix(h) => h.to_ascii_lowercase(),
        }
    }

    /// Whether the hex digest `actual` (of this checksum's kind) matches.
    fn accepts(&self, actual: &str) -> bool {
        match self {
            Checksum::Md5(_) => actual == self.expected(),
            Checksum::Sha256Prefix(_) => actual.starts_with(&self.expected()),
        }
    }

    /// The checksum as people read it: `md5 9e10...` or `sha256 6726825d...`.
    pub fn describe(&self) -> String {
        match self {
            Checksum::Md5(_) => format!("md5 {}", self.expected()),
            Checksum::Sha256Prefix(_) => format!("sha256 {}...", self.expected()),
        }
    }

    /// The hex digest of `file` of this checksum's kind.
    pub fn digest_file(&self, path: &Path) -> Result<String, DownloadError> {
        let mut file = File::open(path).map_err(|e| DownloadError::io(path, e))?;
        let mut hasher = Hasher::new(self);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| DownloadError::io(path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher.hex())
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
}

impl Hasher {
    fn new(kind: &Checksum) -> Self {
        match kind {
            Checksum::Md5(_) => Hasher::Md5(md5::Digest::new()),
            Checksum::Sha256Prefix(_) => Hasher::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Md5(h) => md5::Digest::update(h, bytes),
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Md5(h) => md5::Digest::finalize(h).to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Why a download failed; each says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadError {
    /// The server could not be reached or the transfer broke off.
    Network { url: String, message: String },
    /// The bytes served do not have the expected checksum (the download was deleted).
    Mismatch { url: String, message: String },
    /// The file or its folder cannot be read or written.
    Io { path: PathBuf, message: String },
}

impl DownloadError {
    fn io(path: &Path, e: std::io::Error) -> Self {
        DownloadError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

impl fmt::Display for DownloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownloadError::Network { url, message } | DownloadError::Mismatch { url, message } => {
                write!(f, "downloading {url}: {message}")
            }
            DownloadError::Io { path, message } => write!(f, "{}: {message}", path.display()),
        }
    }
}

impl std::error::Error for DownloadError {}

/// `$XDG_CACHE_HOME/ddpm-rs/<sub>`, else `$HOME/.cache/ddpm-rs/<sub>`; `None` when neither is set
/// (a relative `XDG_CACHE_HOME` is ignored, as the XDG spec says).
pub fn cache_dir(sub: &str) -> Option<PathBuf> {
    cache_dir_from(
        sub,
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`cache_dir`] with the two environment variables given.
pub fn cache_dir_from(
    sub: &str,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(xdg_cache_home).filter(|d| d.is_absolute()) {
        return Some(dir.join("ddpm-rs").join(sub));
    }
    set(home).map(|h| h.join(".cache").join("ddpm-rs").join(sub))
}

/// Downloads `url` to `dest` and checks it against `checksum`. Nothing is fetched when `dest`
/// already passes. `what` names the file on the progress bar (e.g. "CIFAR-10").
///
/// The body streams into `dest` + `.part`; on a checksum mismatch that file is deleted and the
/// error names the URL, the expected and the actual digest. A network failure says which file to
/// fetch by hand, its checksum and where to save it.
pub fn download(
    url: &str,
    dest: &Path,
    checksum: &Checksum,
    what: &str,
) -> Result<(), DownloadError> {
    if dest.is_file() {
        let actual = checksum.digest_file(dest)?;
        if checksum.accepts(&actual) {
            return Ok(());
        }
        tracing::warn!(
            "{}: {actual} is not the expected {checksum}; downloading it again from {url}",
            dest.display()
        );
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| DownloadError::io(dir, e))?;
    }
    let mut part_name = dest.file_name().map(OsString::from).unwrap_or_default();
    part_name.push(".part");
    let part = dest.with_file_name(part_name);
    let manual = || {
        format!(
            "without network access, download {url} by other means ({checksum}) and save it as {}",
            dest.display()
        )
    };
    let network = |message: String| DownloadError::Network {
        url: url.to_string(),
        message,
    };

    #[cfg(not(feature = "download"))]
    {
        let _ = (&part, what);
        Err(network(format!("this build has no HTTP client (ddpm-io's `download` feature is off); {}", manual())))
    }
    #[cfg(feature = "download")]
    {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            // A stall, not a slow link, is what fails: no limit on the whole transfer.
            .timeout_per_read(Some(Duration::from_secs(60)))
            // The checksum is of the bytes as served: no transparent decompression.
            .accept_encoding("identity")
            .build()
            .into();
        let mut response = agent
            .get(url)
            .call()
            .map_err(|e| network(format!("{e}; {}", manual())))?;
        let total = response.body().content_length();
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n).with_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} ETA {eta}",
                )
                .expect("template")
                .progress_chars("=> "),
            ),
            None => indicatif::ProgressBar::new_spinner().with_style(
                indicatif::ProgressStyle::with_template("{msg} {bytes} {bytes_per_sec}")
                    .expect("template"),
            ),
        }
        .with_message(format!("downloading {what}"));

        let streamed = (|| -> Result<String, DownloadError> {
            let disk = |what: &str, e: std::io::Error| DownloadError::Io {
                path: part.clone(),
                message: format!("cannot {what}: {e}"),
            };
            let file = File::create(&part).map_err(|e| disk("create", e))?;
            let mut out = BufWriter::new(file);
            let mut reader = response.body_mut().as_reader();
            let mut hasher = Hasher::new(checksum);
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = reader
                    .read(&mut buf)
                    .map_err(|e| network(format!("the transfer broke off: {e}; {}", manual())))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(|e| disk("write", e))?;
                bar.inc(n as u64);
            }
            out.flush().map_err(|e| disk("write", e))?;
            Ok(hasher.hex())
        })();
        bar.finish_and_clear();
        let actual = streamed.inspect_err(|_| {
            let _ = fs::remove_file(&part);
        })?;
        if !checksum.accepts(&actual) {
            let _ = fs::remove_file(&part);
            return Err(DownloadError::Mismatch {
                url: url.to_string(),
                message: format!(
                    "checksum mismatch: expected {checksum}, got {actual}; the download was deleted"
                ),
            });
        }
        fs::rename(&part, dest).map_err(|e| DownloadError::io(dest, e))
    }
}
