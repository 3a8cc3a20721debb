//! End to end on tiny configs: train -> checkpoint -> resume -> sample; an interrupted run resumed
//! ends with the same weights as an uninterrupted one; bad configs, truncated checkpoints and a
//! diverging loss give clear errors.

use std::path::{Path, PathBuf};

use ddpm_train::{RunOptions, TrainConfig, parse_config};

fn tiny(out: &Path, steps: usize) -> TrainConfig {
    let text = format!(
        r#"
[run]
out_dir = "{}"
seed = 3

[data]
kind = "shapes"
image_size = 8
count = 64

[model]
kind = "unet"
dim = 8
dim_mults = [1, 2]
attn_heads = 2
attn_dim_head = 8

[diffusion]
timesteps = 50
beta_schedule = "cosine"
objective = "pred_noise"

[train]
steps = {steps}
batch_size = 8
lr = 1e-3
checkpoint_every = 2
keep_last = 2
sample_every = 0
num_samples = 4
log_every = 1

[train.ema]
decay = 0.9
update_every = 1
update_after_step = 1

[sample]
sampler = "ddim"
steps = 5
"#,
        out.display()
    );
    parse_config(&text, "tiny.toml", &[]).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ddpm-train-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// Every parameter value of the checkpoint's model and EMA, in module order.
fn weights(cfg: &TrainConfig, dir: &Path) -> Vec<f32> {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct Values(Vec<f32>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.extend(p.val().into_data().try_into_vec_as::<f32>().unwrap());
        }
    }
    let device = burn::tensor::Device::flex();
    let mut v = Values(Vec::new());
    for ema in [false, true] {
        let ddpm_train::config::ModelConfig::Unet { dim, dim_mults, attn_heads, attn_dim_head, .. } = &cfg.model else { unreachable!() };
        let net = ddpm_models::UnetConfig::new(*dim)
            .with_dim_mults(dim_mults.clone())
            .with_attn_heads(vec![*attn_heads])
            .with_attn_dim_head(vec![*attn_dim_head])
            .init(&device)
            .unwrap();
        ddpm_train::checkpoint::load_weights(dir, net, ema).unwrap().visit(&mut v);
    }
    v.0
}

#[test]
fn train_checkpoint_resume_sample() {
    let out = tmp("full");
    let cfg = tiny(&out, 6);
    let summary = ddpm_train::run(&cfg, &RunOptions::default()).unwrap();
    assert_eq!(summary.steps, 6);
    assert!(summary.final_loss.is_finite() && summary.final_loss > 0.0);
    let ckpts = ddpm_train::checkpoint::list(&out).unwrap();
    assert_eq!(ckpts.iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect::<Vec<_>>(), ["step-0000004", "step-0000006"], "keep_last = 2");
    assert!(out.join("config.toml").is_file() && out.join("metrics.jsonl").is_file() && out.join("loss.png").is_file());
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 6, "one metrics line per step");
    assert!(lines.lines().all(|l| l.contains("\"loss\"") && l.contains("\"grad_norm\"") && l.contains("\"images_per_s\"")));
    let grid = out.join("samples/step-0000006.png");
    let img = image::open(&grid).unwrap();
    assert_eq!((img.width(), img.height()), (2 + 2 * 10, 2 + 2 * 10), "a 2x2 grid of 8x8 samples");
    // Sampling a checkpoint from the CLI's library entry point.
    let png = out.join("from-checkpoint.png");
    ddpm_train::sample_checkpoint(&cfg, &ckpts[1], true, &png).unwrap();
    assert!(png.is_file());

    // Interrupted after 3 steps (the last checkpoint is at step 2), resumed to 6: the same weights as
    // the uninterrupted run. Both start from the uninterrupted run's step-2 checkpoint, so the test
    // does not depend on two runs in one process initialising identically (Flex's generator is
    // process-global; the CLI test checks separate processes from scratch).
    let out2 = tmp("interrupted");
    let cfg2 = tiny(&out2, 6);
    let full_cfg = tiny(&out, 6);
    let mut keep = full_cfg.clone();
    keep.run.out_dir = tmp("keep");
    keep.train.keep_last = 10;
    ddpm_train::run(&keep, &RunOptions::default()).unwrap();
    let seed_ckpt = keep.run.out_dir.join("checkpoints/step-0000002");
    let resumed_part = ddpm_train::run(&cfg2, &RunOptions { resume: Some(seed_ckpt.clone()), stop_after: Some(1), ..Default::default() }).unwrap();
    assert_eq!(resumed_part.steps, 3, "stopped after one more step, as if killed");
    let latest = ddpm_train::checkpoint::latest(&out2);
    assert!(latest.is_err(), "no checkpoint was due at step 3");
    let resumed = ddpm_train::run(&cfg2, &RunOptions { resume: Some(seed_ckpt), ..Default::default() }).unwrap();
    assert_eq!(resumed.steps, 6);
    let (a, b) = (weights(&cfg, &keep.run.out_dir.join("checkpoints/step-0000006")), weights(&cfg2, &out2.join("checkpoints/step-0000006")));
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff == 0.0, "the resumed run ends with other weights (max difference {diff})");
    std::fs::remove_dir_all(&keep.run.out_dir).ok();

    // A truncated checkpoint is refused with the file named.
    let bad = out2.join("checkpoints/step-0000006/model.bpk");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let err = ddpm_train::run(&cfg2, &RunOptions { resume: Some(out2.join("checkpoints/step-0000006")), ..Default::default() }).unwrap_err().to_string();
    assert!(err.contains("model.bpk") && err.contains("truncated"), "{err}");
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&out2).ok();
}

#[test]
fn a_diverging_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let out = tmp("nan");
    let mut cfg = tiny(&out, 50);
    cfg.train.lr = 1e30;
    cfg.train.grad_clip = 0.0;
    let err = ddpm_train::run(&cfg, &RunOptions::default()).unwrap_err().to_string();
    assert!(err.contains("the loss became") && err.contains("train.lr"), "{err}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn bad_configs_name_the_file_line_and_key() {
    let out = tmp("cfg");
    let good = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/quickstart.toml")).unwrap();
    parse_config(&good, "quickstart.toml", &[]).unwrap();
    let typo = good.replace("batch_size = 32", "batch_sise = 32");
    let e = parse_config(&typo, "quickstart.toml", &[]).unwrap_err().to_string();
    assert!(e.contains("quickstart.toml:") && e.contains("batch_sise"), "{e}");
    let wrong_type = good.replace("steps = 1500", "steps = \"many\"");
    let e = parse_config(&wrong_type, "quickstart.toml", &[]).unwrap_err().to_string();
    assert!(e.contains("train.steps") && e.contains("quickstart.toml"), "{e}");
    let broken = good.replace("[train]", "[train");
    let e = parse_config(&broken, "quickstart.toml", &[]).unwrap_err().to_string();
    assert!(e.starts_with("quickstart.toml:"), "{e}");
    let cfg = parse_config(&good, "q", &["train.lr=5e-4".into(), "model.dim=32".into(), "diffusion.beta_schedule=linear".into()]).unwrap();
    assert_eq!(cfg.train.lr, 5e-4);
    let e = parse_config(&good, "q", &["train.lr".into()]).unwrap_err().to_string();
    assert!(e.contains("key=value"), "{e}");
    // A model that does not fit the data is refused before training.
    let toy = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/toy-gaussian8.toml")).unwrap();
    let cfg = parse_config(&toy, "toy.toml", &["model.kind=\"ddpm_unet\"".into(), format!("run.out_dir=\"{}\"", out.display())]).unwrap();
    let e = ddpm_train::run(&cfg, &RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("model.kind") && e.contains("ddpm_unet") && e.contains("mlp for vectors"), "{e}");
    // Fields of another network are unknown keys.
    let e = parse_config(&good, "q", &["model.kind=\"mlp\"".into()]).unwrap_err().to_string();
    assert!(e.contains("`model`") && e.contains("unknown field"), "{e}");
}
