//! Downloads that cannot happen (no network here, or no HTTP client in the build) say which file
//! to fetch, its checksum and where to save it; a file already in place with the right checksum
//! is not fetched at all.

use ddpm_io::download::{Checksum, DownloadError, download};

#[test]
fn an_unreachable_file_names_the_url_the_checksum_and_the_destination() {
    let dir = std::env::temp_dir().join(format!("ddpm-io-download-{}", std::process::id()));
    let dest = dir.join("weights.bin");
    let url = "http://127.0.0.1:9/weights.bin";
    let checksum = Checksum::Md5("0123456789abcdef0123456789abcdef".into());
    let err = download(url, &dest, &checksum, "weights").unwrap_err();
    let DownloadError::Network { message, .. } = &err else { panic!("expected a network error, got {err}") };
    let text = err.to_string();
    assert!(text.contains(url) && text.contains("0123456789abcdef") && text.contains(&dest.display().to_string()), "{text}");
    if !cfg!(feature = "download") {
        assert!(message.contains("`download` feature"), "{message}");
    }
    assert!(!dest.exists(), "nothing is left at the destination");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_in_place_with_its_checksum_is_not_fetched() {
    let dir = std::env::temp_dir().join(format!("ddpm-io-in-place-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dest = dir.join("fox.txt");
    std::fs::write(&dest, b"The quick brown fox jumps over the lazy dog").unwrap();
    // MD5 of the pangram; the URL is never contacted.
    let checksum = Checksum::Md5("9e107d9d372bb6826bd81d3542a419d6".into());
    download("http://127.0.0.1:9/fox.txt", &dest, &checksum, "fox").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
