//! A run folder holds one run, whatever happens to it: a second run never mixes into it or prunes
//! its checkpoints, `--overwrite` moves it aside, a kill at any moment leaves a folder that resumes
//! to the weights of an uninterrupted run with each step logged once, and `--dry-run` writes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rand::{RngExt, SeedableRng};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ddpm-train"))
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ddpm-train-runs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A toy config whose run folder is `dir/run`; `extra` is appended (more sections).
fn write_config(dir: &Path, steps: usize, checkpoint_every: usize, keep_last: usize, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[run]
out_dir = "{}"
seed = 5

[data]
kind = "toy"
name = "gaussian8"
count = 256

[model]
kind = "mlp"
hidden = 32
num_layers = 2

[diffusion]
timesteps = 20
beta_schedule = "cosine"

[train]
steps = {steps}
batch_size = 32
lr = 1e-3
checkpoint_every = {checkpoint_every}
keep_last = {keep_last}
sample_every = 0
num_samples = 16
log_every = 1

[sample]
sampler = "ddim"
steps = 4
{extra}
"#,
        dir.join("run").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str], config: &Path) -> Output {
    bin().args(args).arg("--config").arg(config).output().unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).map(|e| e.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    v.sort();
    v
}

/// Every file below `dir` with its size and modification time.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.filter_map(|e| e.ok()) {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            }
            out.insert(e.path(), (meta.len(), meta.modified().unwrap()));
        }
    }
    out
}

/// The steps of the training lines of a metrics log, in order.
fn logged_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("a metrics line is not JSON ({e}): {l}")))
        .filter(|v| v.get("loss").is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect()
}

/// The steps of a scalar in the run's TensorBoard event files (all of them, oldest first).
fn tensorboard_steps(run: &Path, tag: &str) -> Vec<u64> {
    let mut steps = Vec::new();
    for file in ddpm_train::tensorboard::event_files(run) {
        for e in ddpm_train::tensorboard::read_events(&file).unwrap() {
            if e.scalars.iter().any(|(t, _)| t == tag) {
                steps.push(e.step);
            }
        }
    }
    steps
}

/// The model and EMA parameter values of a checkpoint folder.
fn weights(dir: &Path) -> Vec<f32> {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct Values(Vec<f32>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.extend(p.val().into_data().try_into_vec_as::<f32>().unwrap());
        }
    }
    let mut v = Values(Vec::new());
    for ema in [false, true] {
        let net = ddpm_models::MlpConfig::new(2).with_hidden(32).with_num_layers(2).init(&burn::tensor::Device::flex()).unwrap();
        ddpm_train::checkpoint::load_weights(dir, net, ema).unwrap().visit(&mut v);
    }
    v.0
}

#[test]
fn a_second_run_never_mixes_into_a_finished_one() {
    let dir = tmp("two-runs");
    let first = write_config(&dir, 6, 2, 2, "");
    let out = run(&[], &first);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run_dir = dir.join("run");
    assert_eq!(names(&run_dir.join("checkpoints")), ["step-0000004", "step-0000006"]);
    let before = tree(&run_dir);

    // A fresh run of 2 steps into the same folder stops before writing anything, and says why.
    let second = write_config(&dir, 2, 2, 2, "");
    let out = run(&[], &second);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second run went ahead: {err}");
    assert!(err.contains("already holds a run") && err.contains("--resume") && err.contains("--overwrite") && err.contains("step-0000006"), "{err}");
    assert_eq!(tree(&run_dir), before, "the refused run changed the folder");

    // --overwrite moves the old run aside, whole, and starts a new one.
    let out = run(&["--overwrite"], &second);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let aside: Vec<String> = names(&dir).into_iter().filter(|n| n.starts_with("run.replaced-")).collect();
    assert_eq!(aside.len(), 1, "{:?}", names(&dir));
    assert_eq!(names(&dir.join(&aside[0]).join("checkpoints")), ["step-0000004", "step-0000006"], "the old run's checkpoints are kept");
    assert_eq!(logged_steps(&dir.join(&aside[0])), (1..=6).collect::<Vec<_>>());
    assert_eq!(names(&run_dir.join("checkpoints")), ["step-0000002"]);
    assert_eq!(logged_steps(&run_dir), [1, 2]);
    assert!(std::fs::read_to_string(run_dir.join("config.toml")).unwrap().contains("steps = 2"));

    // Pruning removes only the run's own checkpoints: one of another run (another run id) stays.
    let foreign = run_dir.join("checkpoints/step-0000001");
    copy_dir(&run_dir.join("checkpoints/step-0000002"), &foreign);
    let state = foreign.join("state.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    v["run_id"] = "another-run".into();
    v["step"] = 1.into();
    std::fs::write(&state, v.to_string()).unwrap();
    let out = run(&["--resume", "--set", "train.steps=8"], &second);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(names(&run_dir.join("checkpoints")), ["step-0000001", "step-0000006", "step-0000008"]);
    assert_eq!(logged_steps(&run_dir), (1..=8).collect::<Vec<_>>());
    std::fs::remove_dir_all(&dir).ok();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().filter_map(|e| e.ok()) {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn resuming_from_an_older_checkpoint_than_the_newest_is_refused() {
    let dir = tmp("older");
    let cfg = write_config(&dir, 6, 2, 5, "");
    assert!(run(&[], &cfg).status.success());
    let out = run(&["--resume", dir.join("run/checkpoints/step-0000002").to_str().unwrap()], &cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("newer than step 2") && err.contains("step-0000006"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_run_killed_at_random_moments_resumes_to_the_uninterrupted_weights() {
    let steps = 300;
    // Evaluation keeps a best checkpoint (replaced in place), checkpoints are written and pruned
    // every step: every kind of write is under way at some moment.
    let extra = "[eval]\nevery = 25\nnum_samples = 64\nkeep_best = true\n";
    let full = tmp("kill-full");
    let cfg = write_config(&full, steps, 1, 2, extra);
    assert!(bin().arg("--config").arg(&cfg).stderr(Stdio::null()).status().unwrap().success());

    let killed = tmp("kill-many");
    let cfg = write_config(&killed, steps, 1, 2, extra);
    let run_dir = killed.join("run");
    let log_lines = || std::fs::read(run_dir.join("metrics.jsonl")).map(|b| b.iter().filter(|&&c| c == b'\n').count()).unwrap_or(0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (mut interrupted, mut attempts) = (0, 0);
    while attempts < 200 && interrupted < 25 {
        attempts += 1;
        let mut cmd = bin();
        cmd.arg("--config").arg(&cfg).stderr(Stdio::null()).stdout(Stdio::null());
        if run_dir.join("config.toml").exists() {
            cmd.arg("--resume");
        }
        // Kills are paced by the run's own progress, not by the clock, so every attempt is cut
        // short whatever the machine's speed: once 1 to 12 more steps are logged (then 0 to 4 ms
        // later, landing in a checkpoint write, a prune, a best-copy or a log write), or, one time in
        // six, 0 to 50 ms after the start (during start-up and the resume's own recovery).
        let early = rng.random_range(0..6) == 0;
        let (target, extra_wait) = (log_lines() + rng.random_range(1..=12), Duration::from_micros(rng.random_range(0..4000)));
        let early_wait = Duration::from_millis(rng.random_range(0..50));
        let mut child = cmd.spawn().unwrap();
        let start = Instant::now();
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if (early && start.elapsed() >= early_wait) || (!early && log_lines() >= target) {
                std::thread::sleep(if early { Duration::ZERO } else { extra_wait });
                break None;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "attempt {attempts} made no progress in 120 s");
            std::thread::sleep(Duration::from_micros(200));
        };
        match finished {
            Some(status) => {
                assert!(status.success(), "attempt {attempts}: a resumed run failed on its own");
                if run_dir.join(format!("checkpoints/step-{steps:07}")).exists() {
                    break;
                }
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                interrupted += 1;
            }
        }
    }
    eprintln!("{interrupted} of {attempts} attempts were killed mid-run");
    assert!(interrupted >= 5, "only {interrupted} of {attempts} attempts were killed mid-run; the test proves little");
    let out = bin().arg("--config").arg(&cfg).arg("--resume").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last = format!("checkpoints/step-{steps:07}");
    let (a, b) = (weights(&full.join("run").join(&last)), weights(&run_dir.join(&last)));
    assert_eq!(a, b, "after {interrupted} kills the resumed run ends with other weights");
    assert_eq!(logged_steps(&run_dir), (1..=steps as u64).collect::<Vec<_>>(), "each step logged once, in order");
    assert_eq!(tensorboard_steps(&run_dir, "train/loss"), (1..=steps as u64).collect::<Vec<_>>(), "each step once in TensorBoard's files too");
    let leftovers: Vec<String> = names(&run_dir.join("checkpoints")).into_iter().filter(|n| n.ends_with(".tmp") || n.ends_with(".old") || n.ends_with(".trash")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(run_dir.join("checkpoints/best/state.json").is_file());
    std::fs::remove_dir_all(&full).ok();
    std::fs::remove_dir_all(&killed).ok();
}

#[test]
fn a_dry_run_writes_nothing_and_reports_what_it_checked() {
    let dir = tmp("dry");
    let cfg = write_config(&dir, 10, 2, 2, "");
    let before = tree(&dir);
    let out = run(&["--dry-run"], &cfg);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for needle in ["[train]", "batch_size = 32", "data: 256 items of shape [2]", "parameters", "one training step:", "peak memory", "start a fresh run in"] {
        assert!(text.contains(needle), "the dry run does not say `{needle}`:\n{text}");
    }
    assert_eq!(tree(&dir), before, "the dry run wrote into the file system");
    assert!(!dir.join("run").exists());

    // Unreadable files of an image folder are counted, and the plan says what a real run would do.
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..3 {
        image::RgbImage::from_pixel(8, 8, image::Rgb([i * 80, 10, 200])).save(images.join(format!("{i}.png"))).unwrap();
    }
    std::fs::write(images.join("broken.png"), b"not a png").unwrap();
    let folder_cfg = dir.join("images.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("kind = \"toy\"\nname = \"gaussian8\"\ncount = 256", &format!("kind = \"image_folder\"\npath = \"{}\"\nimage_size = 8", images.display()))
        .replace("kind = \"mlp\"\nhidden = 32\nnum_layers = 2", "kind = \"unet\"\ndim = 8\ndim_mults = [1, 2]\nattn_heads = 1\nattn_dim_head = 8")
        .replace("batch_size = 32", "batch_size = 2");
    std::fs::write(&folder_cfg, text).unwrap();
    let before = tree(&dir);
    let out = run(&["--dry-run"], &folder_cfg);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("3 items") && text.contains("1 unreadable") && text.contains("skip_corrupt"), "{text}");
    assert_eq!(tree(&dir), before, "the dry run wrote into the file system");

    // Over an existing run, the plan names the refusal and `--overwrite`.
    assert!(run(&[], &cfg).status.success());
    let out = run(&["--dry-run"], &cfg);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--overwrite"));
    let out = run(&["--dry-run", "--overwrite"], &cfg);
    assert!(String::from_utf8_lossy(&out.stdout).contains("aside"), "{}", String::from_utf8_lossy(&out.stdout));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn config_print_shows_every_default() {
    let dir = tmp("print");
    let cfg = write_config(&dir, 10, 2, 2, "");
    let out = run(&["config", "--print"], &cfg);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // Keys the file does not set appear with their defaults, and the output parses back.
    for needle in ["grad_clip", "adam_betas", "[sample]", "cond_scale = 1.0", "sigma_max = 80.0", "[eval]"] {
        assert!(text.contains(needle), "config --print lacks `{needle}`:\n{text}");
    }
    ddpm_train::parse_config(&text, "printed", &[]).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_pipeline_loads_a_run_its_checkpoint_and_its_safetensors_alike() {
    use ddpm_train::pipeline::{LoadOptions, Pipeline, SampleOptions, Source};
    let dir = tmp("pipeline");
    let cfg = write_config(&dir, 4, 2, 2, "");
    assert!(run(&[], &cfg).status.success());
    let run_dir = dir.join("run");
    let ckpt = run_dir.join("checkpoints/step-0000004");
    let from_run = Pipeline::load(&run_dir).unwrap();
    assert!(matches!(from_run.source(), Source::Run { checkpoint, .. } if checkpoint == &ckpt), "{:?}", from_run.source());
    let a = from_run.sample(8).unwrap();
    assert_eq!((a.seeds.len(), a.item_shape.clone(), a.values.len()), (8, vec![2], 16));
    assert!(a.images().is_empty(), "points are not images");
    let b = Pipeline::load(&ckpt).unwrap().sample(8).unwrap();
    let c = Pipeline::load(ckpt.join("ema.safetensors")).unwrap();
    assert!(c.describe().contains("Burn parameter paths"), "{}", c.describe());
    assert_eq!(a.values, b.values);
    assert_eq!(a.values, c.sample(8).unwrap().values);
    // The online weights differ from the EMA's; other samplers and seeds work through the options.
    let online = Pipeline::load_with(&ckpt, &LoadOptions { weights: Some(ddpm_train::sample::Weights::Model), ..Default::default() }).unwrap();
    assert_ne!(online.sample(8).unwrap().values, a.values);
    let euler = from_run.sample_with(&SampleOptions { sampler: Some("euler".into()), steps: Some(6), ..SampleOptions::seeds(3..5) }).unwrap();
    assert_eq!(euler.seeds, [3, 4]);
    assert!(euler.values.iter().all(|v| v.is_finite()));
    let e = from_run.sample_with(&SampleOptions { sampler: Some("dpm++".into()), ..SampleOptions::seeds(0..2) }).err().unwrap().to_string();
    assert!(e.contains("dpm++") && e.contains("dpmpp_2m"), "{e}");
    // What is not weights is refused with the path and the forms that are read.
    std::fs::write(dir.join("notes.txt"), "hello").unwrap();
    let e = Source::detect(dir.join("notes.txt")).unwrap_err().to_string();
    assert!(e.contains("notes.txt") && e.contains(".safetensors"), "{e}");
    let e = Source::detect(dir.join("missing")).unwrap_err().to_string();
    assert!(e.contains("missing") && e.contains("does not exist"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tensorboard_reads_the_runs_scalars() {
    let dir = tmp("tensorboard");
    let cfg = write_config(&dir, 12, 4, 2, "[eval]\nevery = 6\nnum_samples = 64\n");
    assert!(run(&[], &cfg).status.success());
    let run_dir = dir.join("run");
    let files = ddpm_train::tensorboard::event_files(&run_dir);
    assert_eq!(files.len(), 1);
    let events = ddpm_train::tensorboard::read_events(&files[0]).unwrap();
    let losses: Vec<(u64, f32)> = events.iter().flat_map(|e| e.scalars.iter().filter(|(t, _)| t == "train/loss").map(move |(_, v)| (e.step, *v))).collect();
    let jsonl: Vec<(u64, f32)> = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap() as f32))
        .collect();
    assert_eq!(losses, jsonl, "the event file holds metrics.jsonl's losses");
    assert_eq!(tensorboard_steps(&run_dir, "eval/energy_distance"), [6, 12]);
    for tag in ["train/lr", "train/grad_norm", "train/images_per_s", "train/loss_ema"] {
        assert_eq!(tensorboard_steps(&run_dir, tag).len(), 12, "{tag}");
    }
    // TensorBoard's own reader, where Python's tensorboard package is installed.
    let python = std::env::var("DDPM_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import sys, json\nfrom tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
                  acc = EventAccumulator(sys.argv[1]); acc.Reload()\n\
                  print(json.dumps({t: [[s.step, s.value] for s in acc.Scalars(t)] for t in acc.Tags()['scalars']}))";
    match Command::new(&python).args(["-c", script]).arg(&run_dir).output() {
        Ok(out) if out.status.success() => {
            let tags: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let read: Vec<(u64, f32)> = tags["train/loss"].as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap() as f32)).collect();
            assert_eq!(read, jsonl, "TensorBoard reads other losses");
            assert_eq!(tags["eval/energy_distance"].as_array().unwrap().len(), 2);
        }
        Ok(out) => eprintln!("skipped TensorBoard's own reader: `{python}` has no tensorboard package ({})", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")),
        Err(e) => eprintln!("skipped TensorBoard's own reader: no `{python}` ({e})"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn event_files_sort_in_the_order_they_were_made_within_one_second() {
    use ddpm_train::tensorboard::{EventWriter, event_files, read_events};
    let dir = tmp("tensorboard-order");
    // A file named for a later second than ours (a clock set back, or a run stopped and resumed
    // within one second by a process with a higher id): a new file must still sort after it.
    let ahead = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 100;
    let old = dir.join(format!("events.out.tfevents.{ahead}.ddpm-rs.99999999"));
    std::fs::write(&old, b"").unwrap();
    for step in [1, 2] {
        EventWriter::create(&dir).unwrap().scalars(step, &[("train/loss", 1.0)]).unwrap();
    }
    let files = event_files(&dir);
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(files[0], old, "{files:?}");
    let steps: Vec<Vec<u64>> = files[1..].iter().map(|f| read_events(f).unwrap().iter().filter(|e| !e.scalars.is_empty()).map(|e| e.step).collect()).collect();
    assert_eq!(steps, [vec![1], vec![2]]);
    std::fs::remove_dir_all(&dir).ok();
}
