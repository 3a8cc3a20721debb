//! The `ddpm-eval` binary as a user runs it on image folders: a clear error without the Inception
//! weights, and, with them (`DDPM_INCEPTION_WEIGHTS`), an FID between two folders equal to the
//! Frechet distance of pytorch-fid's own features of those folders.

use std::path::PathBuf;
use std::process::Command;

use ddpm_eval::frechet::{FeatureStats, frechet_distance};
use ddpm_models::weights::read_safetensors;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ddpm-eval"))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn image_folders_without_weights_say_where_to_get_them() {
    let out = bin()
        .args(["fid", "--real"])
        .arg(fixture("inception/images32"))
        .arg("--fake")
        .arg(fixture("inception/images64"))
        .env_remove("DDPM_INCEPTION_WEIGHTS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("images32") && err.contains("--weights") && err.contains("pt_inception-2015-12-05"), "{err}");
    let help = String::from_utf8_lossy(&bin().args(["fid", "--help"]).output().unwrap().stdout).to_string();
    assert!(help.contains("--weights") && help.contains("[default: 50]") && help.contains("DIR"), "{help}");
}

#[test]
fn fid_of_two_image_folders_equals_the_distance_of_pytorch_fids_features() {
    let Some(weights) = std::env::var_os("DDPM_INCEPTION_WEIGHTS").filter(|v| !v.is_empty()) else {
        eprintln!("SKIPPED fid_of_two_image_folders_...: set DDPM_INCEPTION_WEIGHTS to pt_inception-2015-12-05.safetensors to run it");
        return;
    };
    let out = bin()
        .args(["--json", "fid", "--real"])
        .arg(fixture("inception/images32"))
        .arg("--fake")
        .arg(fixture("inception/images64"))
        .arg("--weights")
        .arg(&weights)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = report["fid"].as_f64().unwrap();
    // The same distance from the features pytorch-fid computed for these folders.
    let file = read_safetensors(fixture("inception/real_features.safetensors")).unwrap();
    let stats = |key: &str| FeatureStats::from_features(&file[key].data, 3, 2048).unwrap();
    let want = frechet_distance(&stats("images32.dims2048"), &stats("images64.dims2048")).unwrap();
    eprintln!("FID from the folders {ours}, from pytorch-fid's features {want}");
    assert!((ours - want).abs() <= 1e-4 * want.abs().max(1.0), "{ours} vs {want}");
}
