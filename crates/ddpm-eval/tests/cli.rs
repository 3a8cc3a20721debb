//! The `ddpm-eval` binary as a user runs it on image folders: a clear error without the Inception
//! weights, and, with them (`DDPM_INCEPTION_WEIGHTS`), an FID between two folders equal to the
//! Frechet distance of pytorch-fid's own features of those folders.

use std::path::PathBuf;
use std::process::Command;

use ddpm_eval::frechet::{FeatureStats, frechet_distance};
use ddpm_io::weights::read_safetensors;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ddpm-eval"))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn image_folders_without_weights_say_where_to_get_them() {
    let home = std::env::temp_dir().join(format!("ddpm-eval-cli-home-{}", std::process::id()));
    let out = bin()
        .args(["fid", "--no-download", "--real"])
        .arg(fixture("inception/images32"))
        .arg("--fake")
        .arg(fixture("inception/images64"))
        .env_remove("DDPM_INCEPTION_WEIGHTS")
        .env("TORCH_HOME", home.join("torch"))
        .env("XDG_CACHE_HOME", &home)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let cached = home.join("ddpm-rs/weights/pt_inception-2015-12-05-6726825d.pth");
    assert!(err.contains("--weights") && err.contains(&cached.display().to_string()) && err.contains("sha256 6726825d"), "{err}");
    assert!(err.contains("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"), "{err}");
    let help = String::from_utf8_lossy(&bin().args(["fid", "--help"]).output().unwrap().stdout).to_string();
    assert!(help.contains("--weights") && help.contains("--no-download") && help.contains("[default: 50]") && help.contains("DIR"), "{help}");
}

/// Writes `n` grey `size`x`size` PNGs of class `class` (0: a horizontal bar, 1: a vertical bar)
/// with seeded positions and noise into `dir`.
fn write_bars(dir: &std::path::Path, class: usize, n: usize, size: u32, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    for i in 0..n {
        let at = 4 + next() % (size - 8);
        let img = image::GrayImage::from_fn(size, size, |x, y| {
            let on = if class == 0 {
                y.abs_diff(at) <= 1
            } else {
                x.abs_diff(at) <= 1
            };
            image::Luma([if on {
                200 + (next() % 56) as u8
            } else {
                (next() % 40) as u8
            }])
        });
        img.save(dir.join(format!("{i:04}.png"))).unwrap();
    }
}

#[test]
fn fld_trains_its_classifier_once_and_scores_folders() {
    let root = std::env::temp_dir().join(format!("ddpm-eval-cli-fld-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for class in 0..2 {
        write_bars(
            &root.join("real").join(format!("class{class}")),
            class,
            200,
            28,
            class as u64,
        );
        write_bars(
            &root.join("fresh").join(format!("class{class}")),
            class,
            200,
            28,
            100 + class as u64,
        );
    }
    // Only horizontal bars: a set that misses a class.
    write_bars(&root.join("one_class"), 0, 400, 28, 7);
    let classifier = root.join("lenet.safetensors");
    let run = |fake: &str| {
        let out = bin()
            .args([
                "--json",
                "fld",
                "--epochs",
                "3",
                "--train-batch",
                "16",
                "--real",
            ])
            .arg(root.join("real"))
            .arg("--fake")
            .arg(root.join(fake))
            .arg("--classifier")
            .arg(&classifier)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (report, String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (same, log) = run("real");
    assert!(
        log.contains("trained LeNet-5") && classifier.is_file(),
        "{log}"
    );
    assert_eq!(
        same["classifier"]["channels"], 1,
        "grey images train a one-channel classifier"
    );
    assert!(
        same["classifier"]["heldout_accuracy"].as_f64().unwrap() > 0.9,
        "{same}"
    );
    // Zero up to the rounding of the matrix square root (relative to the traces it cancels).
    assert!(
        same["fld"].as_f64().unwrap().abs() < 1e-6 * same["terms"]["trace_a"].as_f64().unwrap(),
        "{same}"
    );
    let (fresh, log) = run("fresh");
    assert!(
        !log.contains("trained"),
        "the saved classifier is reused: {log}"
    );
    let (shifted, _) = run("one_class");
    let (fresh, shifted) = (
        fresh["fld"].as_f64().unwrap(),
        shifted["fld"].as_f64().unwrap(),
    );
    eprintln!("FLD: same set 0, fresh draws {fresh:.4}, one class only {shifted:.4}");
    assert!(
        shifted > 3.0 * fresh && shifted > 0.0,
        "fresh {fresh} vs one class {shifted}"
    );

    // Unlabelled training images: the error says how to lay them out.
    let out = bin()
        .args(["fld", "--real"])
        .arg(root.join("one_class"))
        .arg("--fake")
        .arg(root.join("one_class"))
        .arg("--classifier")
        .arg(root.join("new.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("sub-folder per class") && err.contains("one_class"),
        "{err}"
    );
    std::fs::remove_dir_all(root).ok();
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
