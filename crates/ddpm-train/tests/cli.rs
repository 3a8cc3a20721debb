//! The `ddpm-train` binary as a user runs it: help, a clear error for a bad config, and a run
//! killed with SIGKILL mid-training that, resumed, ends with the weights of an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ddpm-train"))
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ddpm-train-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn write_config(dir: &Path, steps: usize) -> PathBuf {
    let text = format!(
        r#"
[run]
out_dir = "{}"
seed = 11

[data]
kind = "toy"
name = "gaussian8"
count = 512

[model]
kind = "mlp"
hidden = 32
num_layers = 2

[diffusion]
timesteps = 50
beta_schedule = "cosine"
objective = "pred_noise"

[train]
steps = {steps}
batch_size = 64
lr = 1e-3
checkpoint_every = 25
keep_last = 50
sample_every = 0
log_every = 25
"#,
        dir.join("run").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn help_names_the_commands_and_defaults() {
    let out = bin().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("--config") && text.contains("--resume") && text.contains("--dry-run") && text.contains("sample"), "{text}");
    let out = bin().args(["sample", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--checkpoint") && text.contains("[default: ema]"), "{text}");
    for flag in ["--seeds", "--shard", "--init-noise", "--save-npy", "--out"] {
        assert!(text.contains(flag), "sample --help lacks {flag}: {text}");
    }
    let out = bin().args(["bench", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--iters") && text.contains("[default: 5]"), "{text}");
}

#[test]
fn bench_prints_json_measurements() {
    let dir = tmp("bench");
    let path = write_config(&dir, 10);
    let out = bin().args(["bench", "--warmup", "1", "--iters", "3", "--config"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["model"], "mlp");
    assert_eq!(report["batch_size"], 64);
    assert_eq!(report["iters"], 3);
    assert!(report["parameters"].as_u64().unwrap() > 1000);
    for key in ["train_step_s", "forward_s", "samples_per_s"] {
        let v = report[key].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.0, "{key} = {v}");
    }
    assert!(report["peak_host_bytes"].as_u64().unwrap() > 1 << 20);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_config_is_reported_with_its_line() {
    let dir = tmp("bad");
    let path = write_config(&dir, 10);
    let text = std::fs::read_to_string(&path).unwrap().replace("lr = 1e-3", "lr = \"fast\"");
    std::fs::write(&path, text).unwrap();
    let out = bin().arg("--config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("config.toml") && err.contains("train.lr"), "{err}");
    let out = bin().args(["--config", "/nonexistent/x.toml"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.toml"));
    std::fs::remove_dir_all(&dir).ok();
}

/// The final checkpoint's model and EMA parameter values.
fn final_weights(run: &Path) -> Vec<f32> {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct Values(Vec<f32>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.extend(p.val().into_data().try_into_vec_as::<f32>().unwrap());
        }
    }
    let dir = run.join("checkpoints/step-0000200");
    let mut v = Values(Vec::new());
    for ema in [false, true] {
        let net = ddpm_models::MlpConfig::new(2).with_hidden(32).with_num_layers(2).init(&burn::tensor::Device::flex()).unwrap();
        ddpm_train::checkpoint::load_weights(&dir, net, ema).unwrap().visit(&mut v);
    }
    v.0
}

#[test]
fn a_killed_run_resumes_to_the_same_weights() {
    let full = tmp("full");
    let cfg = write_config(&full, 200);
    assert!(bin().arg("--config").arg(&cfg).stderr(Stdio::null()).status().unwrap().success());

    let killed = tmp("killed");
    let cfg = write_config(&killed, 200);
    let mut child = bin().arg("--config").arg(&cfg).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    // Kill it once a checkpoint or two exist, well before the end.
    while !killed.join("run/checkpoints/step-0000050").exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.join("run/checkpoints/step-0000200").exists(), "the kill came after the end; the test proves nothing");
    let resumed = bin().arg("--config").arg(&cfg).arg("--resume").stderr(Stdio::null()).status().unwrap();
    assert!(resumed.success());
    let (a, b) = (final_weights(&full.join("run")), final_weights(&killed.join("run")));
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff == 0.0, "the resumed run ends with other weights (max difference {diff})");
    std::fs::remove_dir_all(&full).ok();
    std::fs::remove_dir_all(&killed).ok();
}

#[test]
fn without_a_terminal_long_commands_print_plain_progress_lines() {
    let dir = tmp("plain");
    let cfg = write_config(&dir, 10);
    // stderr is a pipe here, as under nohup, CI or a cluster's job log.
    let out = bin().args(["--set", "run.progress_seconds=0", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("train: ")).collect();
    assert_eq!(lines.len(), 10, "one line per step at progress_seconds = 0:\n{err}");
    assert!(lines[0].starts_with("train: 1/10 (10.0%)") && lines[9].starts_with("train: 10/10 (100.0%)"), "{err}");
    assert!(lines.iter().all(|l| l.contains("images/s") && l.contains("ETA") && l.contains("loss")), "{err}");
    let done = err.lines().position(|l| l.starts_with("done:")).expect("a closing line");
    assert!(err.lines().position(|l| l.starts_with("train: ")).unwrap() < done);
    // At the default interval (30 s) a short run prints its first and last line only.
    let out = bin().args(["--overwrite", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().filter(|l| l.starts_with("train: ")).count(), 2, "{err}");
    // --quiet prints none; sampling follows the same rule.
    let out = bin().args(["--overwrite", "--quiet", "--config"]).arg(&cfg).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("train: "));
    let ckpt = dir.join("run/checkpoints/step-0000010");
    let out = bin().args(["sample", "--num", "6", "--batch", "2", "--checkpoint"]).arg(&ckpt).arg("--out").arg(dir.join("s")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("sampling: 2/6") && err.contains("sampling: 6/6 (100.0%)") && err.contains("samples/s"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
