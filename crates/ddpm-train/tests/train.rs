//! End to end on tiny configs: train -> checkpoint -> resume -> sample; an interrupted run resumed
//! ends with the same weights as an uninterrupted one; bad configs, truncated checkpoints and a
//! diverging loss give clear errors.

use std::path::{Path, PathBuf};

use ddpm_train::npy::read_npy;
use ddpm_train::sample::{Weights, parse_seeds, shard};
use ddpm_train::sample_job::{SampleJob, run_job};
use ddpm_train::{RunOptions, TrainConfig, parse_config, run};

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

/// Every test here holds this for its whole run: weight initialisation draws from Flex's
/// process-global generator, so networks built by parallel tests would interleave their draws and
/// runs that must start from the same weights would not.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}


/// A sampling job from `checkpoint` for `seeds` into `out_dir`, saving the samples as `npy`.
fn sample_job(checkpoint: &Path, seeds: Vec<u64>, out_dir: PathBuf, npy: Option<PathBuf>) -> SampleJob {
    let batch_size = seeds.len();
    SampleJob { checkpoint: checkpoint.to_path_buf(), weights: Weights::Ema, seeds, batch_size, init_noise: None, from: None, inpaint: None, save_npy: npy, out_dir, progress: false }
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
        let ddpm_train::config::NetworkConfig::Unet(net) = cfg.model.network().unwrap() else { unreachable!() };
        let net = net.init(&device).unwrap();
        ddpm_train::checkpoint::load_weights(dir, net, ema).unwrap().visit(&mut v);
    }
    v.0
}

#[test]
fn train_checkpoint_resume_sample() {
    let _exclusive = one_at_a_time();
    let out = tmp("full");
    let cfg = tiny(&out, 6);
    let summary = run(&cfg, &RunOptions::default()).unwrap();
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
    // A 2x2 grid of 8x8 samples, each enlarged 8x to a 64-pixel tile, 2-pixel gutters.
    assert_eq!((img.width(), img.height()), (2 + 2 * 66, 2 + 2 * 66), "a 2x2 grid of 8x8 samples shown at 64x64");
    // progress.png: the first row of that (only) grid.
    let progress = image::open(out.join("progress.png")).unwrap().to_rgb8();
    assert_eq!((progress.width(), progress.height()), (2 + 2 * 66, 2 + 64 + 2));
    assert_eq!(progress.get_pixel(2 + 5, 2 + 5), img.to_rgb8().get_pixel(2 + 5, 2 + 5), "the bands are the grids' first rows");
    // A checkpoint folder carries the config, and the EMA once more as safetensors.
    assert!(ckpts[1].join("config.toml").is_file());
    {
        use burn::module::{Module, ModuleVisitor, Param};
        use burn::store::{ModuleSnapshot, SafetensorsStore};
        use burn::tensor::Tensor;
        struct Values(Vec<f32>);
        impl ModuleVisitor for Values {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                self.0.extend(p.val().into_data().try_into_vec_as::<f32>().unwrap());
            }
        }
        let mut net = ddpm_models::UnetConfig::new(8)
            .with_dim_mults(vec![1, 2])
            .with_attn_heads(vec![2])
            .with_attn_dim_head(vec![8])
            .init(&burn::tensor::Device::flex())
            .unwrap();
        net.load_from(&mut SafetensorsStore::from_file(ckpts[1].join("ema.safetensors"))).unwrap();
        let mut v = Values(Vec::new());
        net.visit(&mut v);
        let all = weights(&cfg, &ckpts[1]);
        assert_eq!(v.0, all[all.len() / 2..].to_vec(), "ema.safetensors holds the EMA weights");
    }
    // Sampling a checkpoint as `ddpm-train sample` does: one PNG per seed, a grid and a .npy; seeds
    // split over two shards give the same samples as one job.
    let job = |seeds: Vec<u64>, dir: &str| SampleJob {
        checkpoint: ckpts[1].clone(),
        weights: Weights::Ema,
        seeds,
        batch_size: 3,
        init_noise: None,
        from: None,
        inpaint: None,
        save_npy: Some(out.join(format!("{dir}.npy"))),
        out_dir: out.join(dir),
        progress: false,
    };
    let all: Vec<u64> = parse_seeds("10-14").unwrap();
    let report = run_job(&cfg, &job(all.clone(), "whole")).unwrap();
    assert_eq!(report.count, 5);
    for s in 10..15 {
        assert!(out.join(format!("whole/{s:06}.png")).is_file());
    }
    assert!(out.join("whole/grid.png").is_file());
    run_job(&cfg, &job(shard(&all, "0/2").unwrap(), "part0")).unwrap();
    run_job(&cfg, &job(shard(&all, "1/2").unwrap(), "part1")).unwrap();
    let whole = read_npy(&out.join("whole.npy")).unwrap();
    assert_eq!(whole.shape, vec![5, 3, 8, 8]);
    assert!(whole.data.iter().all(|v| (0.0..=1.0).contains(v)), "images are saved in [0, 1]");
    let (p0, p1) = (read_npy(&out.join("part0.npy")).unwrap(), read_npy(&out.join("part1.npy")).unwrap());
    assert_eq!((p0.shape[0], p1.shape[0]), (3, 2));
    assert_eq!([p0.data, p1.data].concat(), whole.data, "a sample depends only on its seed, not on its batch or shard");
    assert_eq!(std::fs::read(out.join("whole/000013.png")).unwrap(), std::fs::read(out.join("part1/000013.png")).unwrap());
    // The likelihood bound of the first data items under the checkpoint: finite, above its prior
    // term, reproducible from its seed; vectors are refused (the decoder term is for pixels).
    let nll = |seed| ddpm_train::nll::nll(&cfg, ckpts[1].clone(), Weights::Ema, 6, seed, false).unwrap();
    let (a, b, c) = (nll(0), nll(0), nll(1));
    assert_eq!(a.items, 6);
    assert!(a.bits_per_dim.is_finite() && a.bits_per_dim > a.prior_bits_per_dim && a.prior_bits_per_dim >= 0.0, "{a:?}");
    assert_eq!(a.bits_per_dim, b.bits_per_dim);
    assert_ne!(a.bits_per_dim, c.bits_per_dim);
    assert!((a.bits_per_dim - c.bits_per_dim).abs() < 0.5 * a.bits_per_dim, "{a:?} vs {c:?}");
    // Recorded in the run: a line of the checkpoint's step in metrics.jsonl, and nll.png drawn.
    let run_dir = ddpm_train::nll::record_in_run(&ckpts[1], &a).unwrap().expect("the checkpoint is in a run folder");
    let log = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    let step = ddpm_train::checkpoint::read_state(&ckpts[1]).unwrap().step;
    assert_eq!((last["step"].as_u64(), last["nll"]["bits_per_dim"].as_f64()), (Some(step as u64), Some(a.bits_per_dim)));
    assert!(run_dir.join("nll.png").is_file());
    assert_eq!(ddpm_train::nll::record_in_run(&out.join("whole.npy"), &a).unwrap(), None, "not a checkpoint of a run");
    // Partial denoising (SDEdit) of those samples: a low strength keeps them, and the count of
    // inputs must match the seeds.
    // (Other seeds than the ones that made the inputs: with the same seeds, strength 1 lifts them
    // to the very noise they came from, and DDIM retraces the same path.)
    let mut partial = job(parse_seeds("20-24").unwrap(), "partial");
    partial.from = Some((out.join("whole.npy"), 0.02));
    run_job(&cfg, &partial).unwrap();
    let kept = read_npy(&out.join("partial.npy")).unwrap();
    let moved = kept.data.iter().zip(&whole.data).map(|(a, b)| (a - b).abs()).sum::<f32>() / kept.data.len() as f32;
    assert!(moved < 0.05, "strength 0.02 moved the images by {moved} on average");
    partial.from = Some((out.join("whole.npy"), 1.0));
    run_job(&cfg, &partial).unwrap();
    let regenerated = read_npy(&out.join("partial.npy")).unwrap();
    let moved_full = regenerated.data.iter().zip(&whole.data).map(|(a, b)| (a - b).abs()).sum::<f32>() / kept.data.len() as f32;
    assert!(moved_full > 4.0 * moved, "strength 1 should move the images more ({moved_full} vs {moved})");
    partial.seeds = vec![1, 2];
    let e = run_job(&cfg, &partial).unwrap_err().to_string();
    assert!(e.contains("whole.npy") && e.contains("5 items") && e.contains("2 seeds"), "{e}");
    // Inpainting (RePaint) of one sample: the left half is kept (white in the mask), the right half
    // filled in; every seed keeps the left half pixel for pixel and fills the right in its own way.
    let mask = image::GrayImage::from_fn(8, 8, |x, _| image::Luma([if x < 4 { 255 } else { 0 }]));
    mask.save(out.join("mask.png")).unwrap();
    let mut inpaint = job(parse_seeds("30-32").unwrap(), "inpaint");
    inpaint.inpaint = Some(ddpm_train::sample_job::Inpaint {
        image: out.join("whole/000010.png"),
        mask: out.join("mask.png"),
        repaint: ddpm_core::RePaint { jump_length: 5, resample: 2 },
    });
    run_job(&cfg, &inpaint).unwrap();
    let source = image::open(out.join("whole/000010.png")).unwrap().to_rgb8();
    let filled: Vec<image::RgbImage> = (30..33).map(|s| image::open(out.join(format!("inpaint/{s:06}.png"))).unwrap().to_rgb8()).collect();
    for img in &filled {
        for (x, y, p) in img.enumerate_pixels() {
            if x < 4 {
                assert_eq!(p, source.get_pixel(x, y), "kept pixel ({x}, {y})");
            }
        }
    }
    let right = |img: &image::RgbImage| img.enumerate_pixels().filter(|(x, _, _)| *x >= 4).map(|(_, _, p)| p.0).collect::<Vec<_>>();
    assert_ne!(right(&filled[0]), right(&filled[1]), "each seed fills the hole its own way");
    inpaint.inpaint.as_mut().unwrap().repaint.resample = 0;
    let e = run_job(&cfg, &inpaint).unwrap_err().to_string();
    assert!(e.contains("resample"), "{e}");

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
    run(&keep, &RunOptions::default()).unwrap();
    let seed_ckpt = keep.run.out_dir.join("checkpoints/step-0000002");
    let resumed_part = run(&cfg2, &RunOptions { resume: Some(seed_ckpt.clone()), stop_after: Some(1), ..Default::default() }).unwrap();
    assert_eq!(resumed_part.steps, 3, "stopped after one more step, as if killed");
    let latest = ddpm_train::checkpoint::latest(&out2);
    assert!(latest.is_err(), "no checkpoint was due at step 3");
    let resumed = run(&cfg2, &RunOptions { resume: Some(seed_ckpt), ..Default::default() }).unwrap();
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
    let err = run(&cfg2, &RunOptions { resume: Some(out2.join("checkpoints/step-0000006")), ..Default::default() }).unwrap_err().to_string();
    assert!(err.contains("model.bpk") && err.contains("truncated"), "{err}");
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&out2).ok();
}

/// Every parameter of a checkpoint's online model, flattened.
fn model_weights(cfg: &TrainConfig, dir: &Path) -> Vec<f32> {
    let w = weights(cfg, dir);
    w[..w.len() / 2].to_vec()
}

#[test]
fn gradient_accumulation_equals_one_large_batch() {
    let _exclusive = one_at_a_time();
    // Two batches of 4 with their gradients summed (each loss halved) take the same step as one
    // batch of 8: the same items, timesteps and noise in the same order, the same mean loss.
    let (a_dir, b_dir) = (tmp("accum-large"), tmp("accum-small"));
    let mut large = tiny(&a_dir, 3);
    large.train.checkpoint_every = 3;
    let mut small = large.clone();
    small.run.out_dir = b_dir.clone();
    small.train.batch_size = 4;
    small.train.grad_accum = 2;
    run(&large, &RunOptions::default()).unwrap();
    run(&small, &RunOptions::default()).unwrap();
    let (a, b) = (model_weights(&large, &a_dir.join("checkpoints/step-0000003")), model_weights(&small, &b_dir.join("checkpoints/step-0000003")));
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    // Adam divides by the root of tiny second moments, which magnifies summation-order rounding
    // (observed 1.6e-5 after three steps, against 6e-3 for a run that sees half the data).
    assert!(diff < 1e-4, "accumulated and large-batch steps differ by {diff}");
    // ...and differ from a run that saw only half the data per step.
    let c_dir = tmp("accum-half");
    let mut half = small.clone();
    half.run.out_dir = c_dir.clone();
    half.train.grad_accum = 1;
    run(&half, &RunOptions::default()).unwrap();
    let c = model_weights(&half, &c_dir.join("checkpoints/step-0000003"));
    let diff = a.iter().zip(&c).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff > 1e-3, "half the batch should change the weights (max difference {diff})");
    // Data-parallel over two devices (here both Flex: the split, the per-device copies and the
    // gradient transfer run, the arithmetic is that of two accumulated micro-batches).
    let d_dir = tmp("accum-devices");
    let mut parallel = large.clone();
    parallel.run.out_dir = d_dir.clone();
    parallel.run.devices = vec!["flex".into(), "cpu".into()];
    run(&parallel, &RunOptions::default()).unwrap();
    let d = model_weights(&parallel, &d_dir.join("checkpoints/step-0000003"));
    assert_eq!(d, b, "two devices compute what two accumulated micro-batches compute");
    let mut odd = parallel.clone();
    odd.train.batch_size = 7;
    let e = run(&odd, &RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("train.batch_size") && e.contains("2 devices"), "{e}");
    for d in [a_dir, b_dir, c_dir, d_dir] {
        std::fs::remove_dir_all(d).ok();
    }
}

#[test]
fn learning_rate_warms_up_then_follows_the_schedule() {
    let _exclusive = one_at_a_time();
    use ddpm_train::config::LrSchedule;
    let mut t = tiny(&tmp("lr"), 110).train;
    t.lr = 1.0;
    t.warmup_steps = 10;
    assert_eq!(t.lr_at(5), 0.5);
    assert_eq!(t.lr_at(10), 1.0);
    assert_eq!(t.lr_at(110), 1.0, "constant by default, as the reference");
    t.lr_schedule = LrSchedule::Cosine;
    assert!((t.lr_at(60) - 0.5).abs() < 1e-12, "half way down the cosine");
    assert!(t.lr_at(110).abs() < 1e-12);
    t.lr_schedule = LrSchedule::Linear;
    assert!((t.lr_at(35) - 0.75).abs() < 1e-12);
}

#[test]
fn seeds_and_shards_parse_like_edm() {
    let _exclusive = one_at_a_time();
    assert_eq!(parse_seeds("0-3,7").unwrap(), vec![0, 1, 2, 3, 7]);
    let e = parse_seeds("5-2").unwrap_err().to_string();
    assert!(e.contains("--seeds") && e.contains("5-2"), "{e}");
    let all: Vec<u64> = (0..10).collect();
    let parts: Vec<Vec<u64>> = (0..3).map(|i| shard(&all, &format!("{i}/3")).unwrap()).collect();
    assert_eq!(parts.concat(), all, "the shards cover every seed once, in order");
    let e = shard(&all, "3/3").unwrap_err().to_string();
    assert!(e.contains("--shard") && e.contains("3/3"), "{e}");
}

#[test]
fn a_diverging_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let _exclusive = one_at_a_time();
    let out = tmp("nan");
    let mut cfg = tiny(&out, 50);
    cfg.train.lr = 1e30;
    cfg.train.grad_clip = 0.0;
    cfg.train.checkpoint_every = 1;
    let err = run(&cfg, &RunOptions::default()).unwrap_err().to_string();
    assert!(err.contains("the loss became") && err.contains("train.lr"), "{err}");
    // The message names the folder of the last good checkpoint, which is there, whole, from the
    // step before the loss broke, with finite weights.
    let checkpoints = out.join("checkpoints");
    assert!(err.contains(&checkpoints.display().to_string()), "{err}");
    let newest = std::fs::read_dir(&checkpoints).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("step-")).max().expect("a checkpoint before the loss broke");
    let state = ddpm_train::checkpoint::read_state(&newest).unwrap();
    assert!(err.contains(&format!("at step {}", state.step + 1)), "the run stopped at the step after the checkpoint: {err}");
    assert!(state.loss.is_finite(), "{state:?}");
    let weights = ddpm_models::weights::read_safetensors(newest.join("ema.safetensors")).unwrap();
    assert!(weights.values().all(|t| t.data.iter().all(|v| v.is_finite())));
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn bad_configs_name_the_file_line_and_key() {
    let _exclusive = one_at_a_time();
    let out = tmp("cfg");
    let good = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/quickstart.toml")).unwrap();
    parse_config(&good, "quickstart.toml", &[]).unwrap();
    let typo = good.replace("batch_size = 16", "batch_sise = 16");
    let e = parse_config(&typo, "quickstart.toml", &[]).unwrap_err().to_string();
    let line_of = |text: &str, line: &str| text.lines().position(|l| l == line).unwrap() + 1;
    assert!(e.starts_with(&format!("quickstart.toml:{}: `train.batch_sise`: unknown field", line_of(&typo, "batch_sise = 16"))), "{e}");
    let wrong_type = good.replace("steps = 1500", "steps = \"many\"");
    let e = parse_config(&wrong_type, "quickstart.toml", &[]).unwrap_err().to_string();
    assert!(e.starts_with(&format!("quickstart.toml:{}: `train.steps`: invalid type", line_of(&wrong_type, "steps = \"many\""))), "{e}");
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
    let e = run(&cfg, &RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("model.kind") && e.contains("ddpm_unet") && e.contains("mlp for vectors"), "{e}");
    // Fields of another network are unknown keys.
    let e = parse_config(&good, "q", &["model.kind=\"mlp\"".into()]).unwrap_err().to_string();
    assert!(e.starts_with("q:") && e.contains(": `model.") && e.contains("unknown field") && e.contains("`hidden`"), "{e}");
}

#[test]
fn every_shipped_config_parses_and_its_network_fits_its_data() {
    let _exclusive = one_at_a_time();
    use burn::tensor::Device;
    use ddpm_train::{TrainModel, WithModel};
    struct Build;
    impl WithModel for Build {
        type Output = usize;
        fn images<M: TrainModel<4>>(self, init: &dyn Fn(&Device) -> ddpm_train::Result<M>) -> ddpm_train::Result<usize> {
            Ok(burn::module::Module::num_params(&init(&Device::flex())?))
        }
        fn sequences<M: TrainModel<3>>(self, init: &dyn Fn(&Device) -> ddpm_train::Result<M>) -> ddpm_train::Result<usize> {
            Ok(burn::module::Module::num_params(&init(&Device::flex())?))
        }
        fn vectors<M: TrainModel<2>>(self, init: &dyn Fn(&Device) -> ddpm_train::Result<M>) -> ddpm_train::Result<usize> {
            Ok(burn::module::Module::num_params(&init(&Device::flex())?))
        }
    }
    let dir = tmp("configs");
    std::fs::create_dir_all(&dir).unwrap();
    // The file-backed configs get small files of the right shape.
    let seq = dir.join("seq.npy");
    ddpm_train::npy::write_npy(&seq, &[4, 2, 64], &vec![0.5f32; 4 * 2 * 64]).unwrap();
    let emb = dir.join("emb.npy");
    ddpm_train::npy::write_npy(&emb, &[4, 16], &(0..64).map(|v| v as f32).collect::<Vec<_>>()).unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let set = match name.as_str() {
            "seq1d.toml" => vec![format!("data.path=\"{}\"", seq.display())],
            "embeddings.toml" => vec![format!("data.path=\"{}\"", emb.display())],
            _ => vec![],
        };
        let cfg = ddpm_train::load_config(&path, &set).unwrap_or_else(|e| panic!("{name}: {e}"));
        cfg.build_diffusion().unwrap_or_else(|e| panic!("{name}: {e}"));
        cfg.sample.sampler().unwrap_or_else(|e| panic!("{name}: {e}"));
        let shape = ddpm_train::data::item_shape(&cfg.data).unwrap_or_else(|e| panic!("{name}: {e}"));
        let params = ddpm_train::with_model(&cfg, &shape, Build).unwrap_or_else(|e| panic!("{name}: {e}"));
        if name == "cifar10.toml" {
            assert_eq!(params, 35_746_307, "the DDPM paper's CIFAR-10 network");
        }
        seen.push(name);
    }
    seen.sort();
    let expected = [
        "celeba64.toml",
        "cifar10.toml",
        "embeddings.toml",
        "image-folder.toml",
        "mnist.toml",
        "quickstart.toml",
        "seq1d.toml",
        "simple-diffusion.toml",
        "toy-gaussian25.toml",
        "toy-gaussian8-edm.toml",
        "toy-gaussian8.toml",
        "toy-swissroll.toml",
    ];
    assert_eq!(seen, expected);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn classifier_free_guidance_moves_samples_toward_their_class() {
    let _exclusive = one_at_a_time();
    let out = tmp("guidance");
    let text = format!(
        r#"
[run]
out_dir = "{}"
seed = 1

[data]
kind = "toy"
name = "gaussian8"
count = 4000

[model]
kind = "mlp"
hidden = 64
num_layers = 2
num_classes = 8

[diffusion]
timesteps = 100
beta_schedule = "cosine"
objective = "pred_noise"

[train]
steps = 1500
batch_size = 128
lr = 2e-3
cond_drop_prob = 0.2
checkpoint_every = 100000
sample_every = 0
log_every = 500

[train.ema]
decay = 0.99
update_every = 1
update_after_step = 100

[sample]
sampler = "ddpm"
class = 0
"#,
        out.display()
    );
    // (Ancestral sampling: unclipped DDIM from the last cosine step, where abar ~ 0, multiplies
    // the eps error of a small network into outliers.)
    let cfg = parse_config(&text, "guidance.toml", &[]).unwrap();
    let summary = run(&cfg, &RunOptions::default()).unwrap();
    let ckpt = summary.last_checkpoint.unwrap();
    // For 400 samples of class 0 (mode (1, 0)): the share within 3 sigma of the mode, the share
    // nearer to it than to any other mode, and the median projection on its direction.
    let stats_with = |scale: f64, cfg_pp: bool| {
        let mut c = cfg.clone();
        c.sample.cond_scale = scale;
        if cfg_pp {
            c.sample.cfg_pp = true;
            c.sample.sampler = "euler_ancestral".into();
        }
        let npy = out.join(format!("scale-{scale}-{cfg_pp}.npy"));
        let job = sample_job(&ckpt, (0..400).collect(), out.join(format!("scale-{scale}-{cfg_pp}")), Some(npy.clone()));
        run_job(&c, &job).unwrap();
        let p = read_npy(&npy).unwrap().data;
        let near = p.chunks(2).filter(|q| ((q[0] - 1.0).powi(2) + q[1].powi(2)).sqrt() < 0.15).count() as f64 / 400.0;
        let toward = p.chunks(2).filter(|q| q[1].atan2(q[0]).abs() < std::f32::consts::PI / 8.0).count() as f64 / 400.0;
        // The median, as a few samples from the first steps (abar ~ 0, unclipped) land far out.
        let mut xs: Vec<f64> = p.chunks(2).map(|q| q[0] as f64).collect();
        xs.sort_by(f64::total_cmp);
        let along = xs[200];
        eprintln!("scale {scale} (cfg++ {cfg_pp}): within 3 sigma {near}, nearest to the mode {toward}, median projection {along:.3}");
        (near, toward, along)
    };
    let stats_at = |scale: f64| stats_with(scale, false);
    let (unconditional, conditional, guided) = (stats_at(0.0), stats_at(1.0), stats_at(3.0));
    assert!(unconditional.1 < 0.25, "the null class samples every mode: {unconditional:?}");
    assert!(conditional.0 > 0.6 && conditional.1 > 0.85, "class 0 samples its mode: {conditional:?}");
    // Guidance w > 1 samples p(x|c)^w p(x)^(1-w) at every noise level, which pushes samples along
    // the class direction, past the mode and away from the other classes (Chidambaram et al. 2024,
    // "What does guidance do?"): most stay nearest to their mode, their projection grows.
    assert!(guided.1 > 0.85, "guided samples stay with their class: {guided:?}");
    assert!(guided.2 > conditional.2 + 0.05, "guidance pushes along the class direction: {guided:?} vs {conditional:?}");
    // CFG++ (lambda 0.6, Euler ancestral): samples of class 0 land on their mode.
    let cfg_pp = stats_with(0.6, true);
    assert!(cfg_pp.0 > 0.6 && cfg_pp.1 > 0.85, "CFG++ samples its class: {cfg_pp:?}");
    let mut outside = cfg.clone();
    outside.sample.cfg_pp = true;
    outside.sample.cond_scale = 3.0;
    let e = ddpm_train::sample::Guidance::from_config(&outside).unwrap_err().to_string();
    assert!(e.contains("sample.cond_scale") && e.contains("lambda"), "{e}");
    // A class the model does not have, and labels the data lacks, are refused.
    let mut bad = cfg.clone();
    bad.sample.class = Some(8);
    let e = ddpm_train::sample::Guidance::from_config(&bad).unwrap_err().to_string();
    assert!(e.contains("sample.class") && e.contains("0 to 7"), "{e}");
    let mut unlabelled = cfg.clone();
    unlabelled.data = ddpm_train::config::DataConfig::Toy { name: "swissroll".into(), count: 512 };
    let e = run(&unlabelled, &RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("model.num_classes") && e.contains("no labels"), "{e}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn evaluation_during_training_logs_scores_and_keeps_the_best_checkpoint() {
    let _exclusive = one_at_a_time();
    let out = tmp("eval");
    let text = format!(
        r#"
[run]
out_dir = "{}"

[data]
kind = "toy"
name = "gaussian8"
count = 2000

[model]
kind = "mlp"
hidden = 64
num_layers = 2

[diffusion]
timesteps = 100
beta_schedule = "cosine"
objective = "pred_v"

[train]
steps = 300
batch_size = 128
lr = 2e-3
checkpoint_every = 100
sample_every = 0
log_every = 100

[train.ema]
decay = 0.9
update_every = 1
update_after_step = 10

[eval]
every = 100
num_samples = 300
sampler = "dpmpp_2m"
steps = 10
"#,
        out.display()
    );
    let cfg = parse_config(&text, "eval.toml", &[]).unwrap();
    run(&cfg, &RunOptions::default()).unwrap();
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let scores: Vec<(u64, f64)> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("eval").is_some())
        .map(|v| {
            assert_eq!(v["eval"]["metric"], "energy_distance");
            assert!(v["eval"]["details"]["near_mode_share"].as_f64().is_some());
            (v["step"].as_u64().unwrap(), v["eval"]["value"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(scores.iter().map(|s| s.0).collect::<Vec<_>>(), vec![100, 200, 300]);
    assert!(scores[2].1 < scores[0].1, "training improves the score: {scores:?}");
    let best = scores.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("checkpoints/best/state.json")).unwrap()).unwrap();
    assert_eq!(state["best_eval"].as_f64().unwrap(), best);
    let best_step = scores.iter().find(|s| s.1 == best).unwrap().0;
    assert_eq!(state["step"].as_u64().unwrap(), best_step);
    // The best checkpoint is not a resume candidate; the newest step is.
    assert!(ddpm_train::checkpoint::latest(&out).unwrap().ends_with("step-0000300"));
    // FID needs images and Inception weights, and says so.
    let mut fid = cfg.clone();
    fid.eval.metric = Some(ddpm_train::evaluate::EvalMetric::Fid);
    let e = run(&fid, &RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("eval.metric") && e.contains("images"), "{e}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn fid_during_training_with_the_real_inception_weights() {
    let _exclusive = one_at_a_time();
    if std::env::var_os("DDPM_INCEPTION_WEIGHTS").is_none_or(|v| v.is_empty()) {
        eprintln!("SKIPPED fid_during_training_...: set DDPM_INCEPTION_WEIGHTS to pt_inception-2015-12-05.safetensors to run it");
        return;
    }
    let out = tmp("eval-fid");
    let mut cfg = tiny(&out, 2);
    cfg.eval.every = 2;
    cfg.eval.num_samples = 8;
    cfg.eval.reference_items = 16;
    cfg.eval.steps = 4;
    run(&cfg, &RunOptions::default()).unwrap();
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let eval: Vec<serde_json::Value> = lines.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter(|v| v.get("eval").is_some()).collect();
    assert_eq!(eval.len(), 1);
    assert_eq!(eval[0]["eval"]["metric"], "fid");
    let fid = eval[0]["eval"]["value"].as_f64().unwrap();
    assert!(fid.is_finite() && fid > 0.0, "{fid}");
    // The data's statistics are cached for the next evaluation.
    let stats = ddpm_eval::stats::read_stats_npz(&out.join("eval/reference.npz")).unwrap();
    assert_eq!(stats.d, 2048);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn fld_during_training_trains_its_classifier_once_on_the_labelled_data() {
    let _exclusive = one_at_a_time();
    let out = tmp("eval-fld");
    let mut cfg = tiny(&out, 2);
    cfg.eval.every = 2;
    cfg.eval.metric = Some(ddpm_train::evaluate::EvalMetric::Fld);
    cfg.eval.num_samples = 8;
    cfg.eval.reference_items = 32;
    cfg.eval.steps = 4;
    cfg.eval.classifier_epochs = 2;
    run(&cfg, &RunOptions::default()).unwrap();
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let eval: Vec<serde_json::Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("eval").is_some())
        .collect();
    assert_eq!(eval.len(), 1);
    assert_eq!(eval[0]["eval"]["metric"], "fld");
    let fld = eval[0]["eval"]["value"].as_f64().unwrap();
    assert!(fld.is_finite() && fld > 0.0, "{fld}");
    // The classifier (3 shape classes, RGB) and the data's LeNet statistics are kept for reuse.
    let lenet = ddpm_eval::fld::load_lenet(
        &out.join("eval/lenet.safetensors"),
        &burn::tensor::Device::flex(),
    )
    .unwrap();
    assert_eq!((lenet.config.channels, lenet.config.num_classes), (3, 3));
    let stats = ddpm_eval::stats::read_stats_npz(&out.join("eval/reference-fld.npz")).unwrap();
    assert_eq!((stats.d, stats.n), (84, 32));
    // A 2-D set has no images to classify: the error names the key.
    let mut toy = cfg.clone();
    toy.data = ddpm_train::config::DataConfig::Toy {
        name: "gaussian8".into(),
        count: 64,
    };
    toy.model = ddpm_train::config::ModelConfig::new(ddpm_train::config::ModelKind::Mlp).with("hidden", 16i64).with("num_layers", 1i64);
    toy.run.out_dir = out.join("toy");
    let e = run(&toy, &RunOptions::default()).unwrap_err().to_string();
    assert!(
        e.contains("eval.metric") && e.contains("labelled images"),
        "{e}"
    );
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn edm_trains_and_samples_through_the_same_trainer() {
    let _exclusive = one_at_a_time();
    let out = tmp("edm");
    let text = format!(
        r#"
[run]
out_dir = "{}"
seed = 2

[data]
kind = "toy"
name = "gaussian8"
count = 4000

[model]
kind = "mlp"
hidden = 64
num_layers = 2

[diffusion]
kind = "edm"

[diffusion.edm]
sigma_data = 0.7

[train]
steps = 1500
batch_size = 128
lr = 2e-3
checkpoint_every = 100000
sample_every = 0
log_every = 500

[train.ema]
decay = 0.99
update_every = 1
update_after_step = 100

[sample]
sampler = "heun"
steps = 12
"#,
        out.display()
    );
    let cfg = parse_config(&text, "edm.toml", &[]).unwrap();
    assert!(matches!(cfg.build_diffusion().unwrap(), ddpm_core::Process::Edm { .. }));
    let summary = run(&cfg, &RunOptions::default()).unwrap();
    assert!(summary.final_loss.is_finite());
    let ckpt = summary.last_checkpoint.unwrap();
    let job = |c: &TrainConfig, name: &str, from: Option<(PathBuf, f64)>| {
        let npy = out.join(format!("{name}.npy"));
        let j = SampleJob { from, ..sample_job(&ckpt, (0..400).collect(), out.join(name), Some(npy.clone())) };
        run_job(c, &j).map(|_| read_npy(&npy).unwrap().data)
    };
    let modes = ddpm_eval::toy::ModeSet::gaussian8();
    // Heun with 12 levels (23 network calls) on EDM's grid, and DPM-Solver++(2M) with 20.
    for (sampler, steps) in [("heun", 12), ("dpmpp_2m", 20)] {
        let mut c = cfg.clone();
        c.sample.sampler = sampler.into();
        c.sample.steps = steps;
        let p = job(&c, sampler, None).unwrap();
        let cov = ddpm_eval::toy::mode_coverage(&p, &modes, None).unwrap();
        eprintln!("edm {sampler} {steps}: {cov:?}");
        assert_eq!(cov.modes_hit, 8, "{sampler}: every mode is sampled: {cov:?}");
        assert!(cov.near_mode_share > 0.7, "{sampler}: samples land on the modes: {cov:?}");
    }
    // SDEdit at a small strength (sigma 0.04 on EDM's ramp) keeps points near where they
    // started, full strength (sigma 80) forgets them; DDIM needs discrete timesteps and says so.
    let start: Vec<f32> = (0..400).flat_map(|i| if i % 2 == 0 { [1.0f32, 0.0] } else { [0.0, -1.0] }).collect();
    let from = out.join("from.npy");
    ddpm_train::npy::write_npy(&from, &[400, 2], &start).unwrap();
    let kept = |strength: f64| {
        let p = job(&cfg, &format!("sdedit-{strength}"), Some((from.clone(), strength))).unwrap();
        p.chunks(2).zip(start.chunks(2)).filter(|(a, b)| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt() < 0.3).count()
    };
    let (low, full) = (kept(0.15), kept(1.0));
    assert!(low > 380, "strength 0.15 keeps {low}/400 points near their start");
    assert!(full < 200, "strength 1 keeps only {full}/400 (a mode in 8 by chance, about 100)");
    let mut ddim = cfg.clone();
    ddim.sample.sampler = "ddim".into();
    let e = job(&ddim, "ddim", None).unwrap_err().to_string();
    assert!(e.contains("sigma-space solvers") && e.contains("heun"), "{e}");
    let mut learned = cfg.clone();
    learned.diffusion.gaussian.variance = ddpm_core::ModelVariance::LearnedRange;
    let e = learned.build_diffusion().unwrap_err().to_string();
    assert!(e.contains("diffusion.variance"), "{e}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn class_conditional_unet_trains_and_samples_a_chosen_class() {
    let _exclusive = one_at_a_time();
    let out = tmp("unet-classes");
    let mut cfg = tiny(&out, 2);
    assert_eq!(cfg.model.kind, ddpm_train::config::ModelKind::Unet);
    cfg.model = cfg.model.clone().with("num_classes", 3i64);
    cfg.sample.class = Some(2);
    cfg.sample.cond_scale = 2.0;
    let summary = run(&cfg, &RunOptions::default()).unwrap();
    let job = sample_job(&summary.last_checkpoint.unwrap(), vec![0, 1], out.join("samples-class-2"), None);
    run_job(&cfg, &job).unwrap();
    assert!(out.join("samples-class-2/grid.png").exists());
    // Four classes are more than the shapes set has.
    assert_eq!(cfg.model.kind, ddpm_train::config::ModelKind::Unet);
    cfg.model = cfg.model.clone().with("num_classes", 4i64);
    let e = run(&cfg, &RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("model.num_classes") && e.contains("3 classes"), "{e}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn continuous_time_diffusion_trains_and_samples_with_every_sampler_family() {
    let _exclusive = one_at_a_time();
    let out = tmp("continuous");
    let text = format!(
        r#"
[run]
out_dir = "{}"
seed = 4

[data]
kind = "toy"
name = "gaussian8"
count = 4000

[model]
kind = "mlp"
hidden = 128
num_layers = 3

[diffusion]
kind = "continuous"
objective = "pred_v"

[diffusion.continuous]
schedule = "cosine"
num_sample_steps = 100

[train]
steps = 4000
batch_size = 128
lr = 2e-3
checkpoint_every = 100000
sample_every = 0
log_every = 500

[train.ema]
decay = 0.995
update_every = 1
update_after_step = 100
"#,
        out.display()
    );
    let cfg = parse_config(&text, "continuous.toml", &[]).unwrap();
    let summary = run(&cfg, &RunOptions::default()).unwrap();
    let ckpt = summary.last_checkpoint.unwrap();
    let modes = ddpm_eval::toy::ModeSet::gaussian8();
    let draw = |c: &TrainConfig, name: &str, from: Option<(PathBuf, f64)>| {
        let npy = out.join(format!("{name}.npy"));
        let job = SampleJob { from, ..sample_job(&ckpt, (0..400).collect(), out.join(name), Some(npy.clone())) };
        run_job(c, &job).map(|_| read_npy(&npy).unwrap().data)
    };
    // The reference's ancestral sampler (100 steps), DDIM and DPM-Solver++ at 20.
    for (sampler, steps) in [("ddpm", 0), ("ddim", 20), ("dpmpp_2m", 20)] {
        let mut c = cfg.clone();
        c.sample.sampler = sampler.into();
        c.sample.steps = steps.max(1);
        let p = draw(&c, sampler, None).unwrap();
        let cov = ddpm_eval::toy::mode_coverage(&p, &modes, None).unwrap();
        eprintln!("continuous {sampler}: {cov:?}");
        assert_eq!(cov.modes_hit, 8, "{sampler}: every mode is sampled: {cov:?}");
        assert!(cov.near_mode_share > 0.7, "{sampler}: samples land on the modes: {cov:?}");
    }
    // SDEdit from the modes at a small strength stays there.
    let start: Vec<f32> = (0..400).flat_map(|i| if i % 2 == 0 { [1.0f32, 0.0] } else { [0.0, -1.0] }).collect();
    let from = out.join("from.npy");
    ddpm_train::npy::write_npy(&from, &[400, 2], &start).unwrap();
    let mut ddim = cfg.clone();
    ddim.sample.sampler = "ddim".into();
    ddim.sample.steps = 20;
    let p = draw(&ddim, "sdedit", Some((from, 0.05))).unwrap();
    let kept = p.chunks(2).zip(start.chunks(2)).filter(|(a, b)| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt() < 0.3).count();
    assert!(kept > 380, "strength 0.05 (sigma 0.09) keeps {kept}/400 points near their start");
    let mut bad = cfg.clone();
    bad.diffusion.continuous.schedule = "quadratic".into();
    let e = bad.build_diffusion().unwrap_err().to_string();
    assert!(e.contains("diffusion.continuous.schedule") && e.contains("linear, cosine or logsnr_cosine"), "{e}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn the_weighted_objective_trains_and_samples_with_ddim_and_ddpm() {
    let _exclusive = one_at_a_time();
    let out = tmp("weighted");
    let mut cfg = tiny(&out, 2);
    cfg.diffusion.gaussian.objective = ddpm_core::Objective::Weighted;
    let summary = run(&cfg, &RunOptions::default()).unwrap();
    assert!(summary.final_loss.is_finite());
    for sampler in ["ddim", "ddpm", "dpmpp_2m"] {
        let mut c = cfg.clone();
        c.sample.sampler = sampler.into();
        let job = sample_job(summary.last_checkpoint.as_ref().unwrap(), vec![0, 1], out.join(sampler), Some(out.join(format!("{sampler}.npy"))));
        run_job(&c, &job).unwrap();
        let p = read_npy(&out.join(format!("{sampler}.npy"))).unwrap();
        assert_eq!(p.shape, [2, 3, 8, 8], "{sampler}: images of the data's shape, not the network's 8 channels");
        assert!(p.data.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)), "{sampler}");
    }
    let mut kl = cfg.clone();
    kl.diffusion.gaussian.loss_type = ddpm_core::LossType::Kl;
    let e = kl.build_diffusion().unwrap_err().to_string();
    assert!(e.contains("weighted") && e.contains("l2"), "{e}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn simple_diffusion_schedules_shift_by_the_image_size() {
    let text = r#"
[data]
kind = "shapes"
image_size = 16

[model]
kind = "unet"
dim = 8

[diffusion]
kind = "continuous"
objective = "pred_v"
min_snr_gamma = 5

[diffusion.continuous]
schedule = "logsnr_cosine"
noise_d = 8
snr_weighted = true
"#;
    let cfg = parse_config(text, "simple.toml", &[]).unwrap();
    let ddpm_core::Process::Continuous(d) = cfg.build_diffusion().unwrap() else { panic!("continuous") };
    // The cosine log-SNR is 0 at t = 1/2; the shift is 2 ln(8 / 16).
    assert!((d.log_snr(0.5) - 2.0 * 0.5f64.ln()).abs() < 1e-12, "{}", d.log_snr(0.5));
    assert!(d.config.snr_weighted && d.config.min_snr_gamma == Some(5.0));
    let mixed = parse_config(text, "simple.toml", &["diffusion.continuous.noise_d_low=4".into()]).unwrap();
    let e = mixed.build_diffusion().unwrap_err().to_string();
    assert!(e.contains("noise_d_low and noise_d_high"), "{e}");
}

#[test]
fn simple_diffusion_with_the_uvit_trains_and_samples() {
    let _exclusive = one_at_a_time();
    let out = tmp("uvit");
    let overrides: Vec<String> = [
        "model.kind=\"uvit\"",
        "model.dim=8",
        "model.dim_mults=[1, 2]",
        "model.vit_depth=1",
        "model.attn_heads=2",
        "model.attn_dim_head=8",
        "diffusion.kind=\"continuous\"",
        "diffusion.objective=\"pred_v\"",
        "diffusion.min_snr_gamma=5",
        "diffusion.continuous.schedule=\"logsnr_cosine\"",
        "diffusion.continuous.noise_d=4",
        "diffusion.continuous.snr_weighted=true",
        "diffusion.continuous.num_sample_steps=5",
        "sample.sampler=\"ddpm\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // `tiny` with its Unet keys dropped (the U-ViT has its own).
    let base = tiny(&out, 2);
    let mut doc: toml::Table = toml::from_str(&toml::to_string(&base).unwrap()).unwrap();
    doc.insert("model".into(), toml::Value::Table(toml::Table::new()));
    let cfg = parse_config(&toml::to_string(&doc).unwrap(), "uvit.toml", &overrides).unwrap();
    assert_eq!(cfg.model.kind(), "uvit");
    let summary = run(&cfg, &RunOptions::default()).unwrap();
    assert!(summary.final_loss.is_finite());
    assert!(out.join("samples/step-0000002.png").is_file());
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn the_karras_unet_trains_with_edm_for_images_and_sequences() {
    let _exclusive = one_at_a_time();
    let out = tmp("karras");
    let karras = [
        "model.kind=\"karras_unet\"",
        "model.dim=16",
        "model.dim_max=32",
        "model.num_downsamples=1",
        "model.num_blocks_per_stage=1",
        "model.attn_res=[4]",
        "model.attn_dim_head=8",
        "diffusion.kind=\"edm\"",
        "sample.sampler=\"heun\"",
        "sample.steps=3",
    ];
    let base = tiny(&out, 2);
    let mut doc: toml::Table = toml::from_str(&toml::to_string(&base).unwrap()).unwrap();
    doc.insert("model".into(), toml::Value::Table(toml::Table::new()));
    let text = toml::to_string(&doc).unwrap();
    let mut set: Vec<String> = karras.iter().map(|s| s.to_string()).collect();
    set.extend(["model.num_classes=3".to_string(), "sample.class=1".into(), "sample.cond_scale=2.0".into()]);
    let cfg = parse_config(&text, "karras.toml", &set).unwrap();
    let summary = run(&cfg, &RunOptions::default()).unwrap();
    assert!(summary.final_loss.is_finite());
    assert!(out.join("samples/step-0000002.png").is_file(), "a guided grid of class 1");
    // Sequences take the 1-D network.
    let seq = out.join("seq.npy");
    ddpm_train::npy::write_npy(&seq, &[16, 2, 16], &(0..512).map(|v| ((v % 7) as f32 - 3.0) / 3.0).collect::<Vec<_>>()).unwrap();
    let mut set: Vec<String> = karras.iter().map(|s| s.to_string()).collect();
    set.extend([
        "data.kind=\"sequences\"".to_string(),
        format!("data.path=\"{}\"", seq.display()),
        format!("run.out_dir=\"{}\"", out.join("seq").display()),
        "model.attn_res=[8]".into(),
    ]);
    let mut seq_doc = doc.clone();
    seq_doc.insert("data".into(), toml::Value::Table(toml::Table::new()));
    let cfg = parse_config(&toml::to_string(&seq_doc).unwrap(), "karras-seq.toml", &set).unwrap();
    let summary = run(&cfg, &RunOptions::default()).unwrap();
    assert!(summary.final_loss.is_finite());
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn classifier_guidance_steers_an_unconditional_model_to_a_class() {
    let _exclusive = one_at_a_time();
    let out = tmp("classifier-guidance");
    let text = format!(
        r#"
[run]
out_dir = "{}"
seed = 6

[data]
kind = "toy"
name = "gaussian8"
count = 4000

[model]
kind = "mlp"
hidden = 64
num_layers = 2

[diffusion]
timesteps = 100
beta_schedule = "cosine"
objective = "pred_noise"

[train]
steps = 1500
batch_size = 128
lr = 2e-3
checkpoint_every = 100000
sample_every = 0
log_every = 500

[train.ema]
decay = 0.99
update_every = 1
update_after_step = 100

[classifier]
steps = 600
batch_size = 128
width = 64

[sample]
sampler = "ddpm"
class = 0
"#,
        out.display()
    );
    let cfg = parse_config(&text, "classifier.toml", &[]).unwrap();
    // Without a trained classifier, guidance says how to get one.
    let mut early = cfg.clone();
    early.sample.classifier_scale = 2.0;
    let e = ddpm_train::sample::ClassifierGuide::from_config(&early, &[2], &burn::tensor::Device::flex()).err().unwrap().to_string();
    assert!(e.contains("ddpm-train classifier"), "{e}");
    let summary = run(&cfg, &RunOptions::default()).unwrap();
    let (folder, info) = ddpm_train::classifier::train_classifier(&cfg, false).unwrap();
    eprintln!("classifier accuracy by timestep: {:?}", info.accuracy);
    assert_eq!(info.num_classes, 8);
    assert!(info.accuracy[0].1 > 0.9, "clean points are classified: {:?}", info.accuracy);
    assert!(folder.join("classifier.bpk").is_file());
    let toward_mode_0 = |scale: f64| {
        let mut c = cfg.clone();
        c.sample.classifier_scale = scale;
        let npy = out.join(format!("scale-{scale}.npy"));
        let job = sample_job(summary.last_checkpoint.as_ref().unwrap(), (0..400).collect(), out.join(format!("scale-{scale}")), Some(npy.clone()));
        run_job(&c, &job).unwrap();
        let p = read_npy(&npy).unwrap().data;
        p.chunks(2).filter(|q| q[1].atan2(q[0]).abs() < std::f32::consts::PI / 8.0).count() as f64 / 400.0
    };
    let (plain, guided) = (toward_mode_0(0.0), toward_mode_0(4.0));
    eprintln!("share of samples at class 0's mode: unguided {plain}, classifier scale 4 {guided}");
    assert!(plain < 0.25, "the unconditional model samples every mode: {plain}");
    assert!(guided > 0.6, "classifier guidance moves samples to class 0: {guided}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn a_learned_log_snr_schedule_trains_with_the_network_and_samples() {
    let _exclusive = one_at_a_time();
    let out = tmp("learned-schedule");
    let text = format!(
        r#"
[run]
out_dir = "{}"
seed = 8

[data]
kind = "toy"
name = "gaussian8"
count = 4000

[model]
kind = "mlp"
hidden = 64
num_layers = 2

[diffusion]
kind = "continuous"
objective = "pred_v"

[diffusion.continuous]
schedule = "learned"
learned_hidden_dim = 16
num_sample_steps = 50

[train]
steps = 1000
batch_size = 128
lr = 2e-3
checkpoint_every = 100000
sample_every = 0
log_every = 500

[train.ema]
decay = 0.99
update_every = 1
update_after_step = 100
"#,
        out.display()
    );
    let cfg = parse_config(&text, "learned.toml", &[]).unwrap();
    let summary = run(&cfg, &RunOptions::default()).unwrap();
    let ckpt = summary.last_checkpoint.unwrap();
    // The checkpoint holds the network and its schedule; the schedule keeps the linear end points
    // and decreases in between.
    let device = burn::tensor::Device::flex();
    let model = ddpm_core::LearnedScheduleModel {
        net: ddpm_models::MlpConfig::new(2).with_hidden(64).with_num_layers(2).init(&device).unwrap(),
        schedule: ddpm_core::LearnedLogSnrConfig::new().with_hidden_dim(16).init(&device),
    };
    let model = ddpm_train::checkpoint::load_weights(&ckpt, model, true).unwrap();
    let ts: Vec<f32> = (0..=10).map(|i| i as f32 / 10.0).collect();
    let l: Vec<f32> = model.schedule.forward(burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(ts, [11]), &device)).into_data().try_into_vec_as::<f32>().unwrap();
    assert!((l[0] - 9.2103).abs() < 1e-3 && (l[10] + 10.0).abs() < 1e-3, "{l:?}");
    assert!(l.windows(2).all(|w| w[1] < w[0]), "decreasing: {l:?}");
    for sampler in ["ddpm", "dpmpp_2m"] {
        let mut c = cfg.clone();
        c.sample.sampler = sampler.into();
        c.sample.steps = 20;
        let npy = out.join(format!("{sampler}.npy"));
        let job = sample_job(&ckpt, (0..400).collect(), out.join(sampler), Some(npy.clone()));
        run_job(&c, &job).unwrap();
        let p = read_npy(&npy).unwrap().data;
        let cov = ddpm_eval::toy::mode_coverage(&p, &ddpm_eval::toy::ModeSet::gaussian8(), None).unwrap();
        eprintln!("learned schedule, {sampler}: {cov:?}");
        assert_eq!(cov.modes_hit, 8, "{sampler}: {cov:?}");
    }
    std::fs::remove_dir_all(&out).ok();
}

/// The enums that carry the configured network ([`ddpm_train::network`]) add no name to the
/// parameter paths: through them a network has the bare network's paths, so checkpoints written
/// before them load, and with a learned schedule the paths are `net.*` and `schedule.*`. They hand
/// the forward pass to the network unchanged.
#[test]
fn network_enums_keep_the_networks_parameter_paths_and_outputs() {
    use burn::store::ModuleSnapshot;
    use burn::tensor::{Device, Distribution, Tensor};
    use ddpm_core::{Conditioning, Denoiser, LearnedLogSnrConfig, LearnedScheduleModel};
    use ddpm_train::{ImageNetwork, Network};
    fn paths(m: &impl ModuleSnapshot) -> Vec<String> {
        m.collect(None, None, false).into_iter().map(|t| t.name).collect()
    }
    let device = Device::flex();
    let unet = ddpm_models::UnetConfig::new(8)
        .with_dim_mults(vec![1, 2])
        .with_channels(3)
        .with_attn_heads(vec![2])
        .with_attn_dim_head(vec![8])
        .init(&device)
        .unwrap();
    let schedule = LearnedLogSnrConfig::new().with_hidden_dim(8).init(&device);
    let schedule_params = burn::module::Module::num_params(&schedule);
    let bare = paths(&unet);
    assert!(bare.iter().any(|p| p.starts_with("downs.")), "{bare:?}");
    let fixed = Network::Fixed(ImageNetwork::Unet(unet.clone()));
    assert_eq!(paths(&fixed), bare);
    let learned = Network::LearnedSchedule(LearnedScheduleModel { net: ImageNetwork::Unet(unet.clone()), schedule: schedule.clone() });
    let expected = paths(&LearnedScheduleModel { net: unet.clone(), schedule });
    assert!(expected.iter().any(|p| p.starts_with("net.downs.")) && expected.iter().any(|p| p.starts_with("schedule.")));
    assert_eq!(paths(&learned), expected);
    assert_eq!(burn::module::Module::num_params(&learned), burn::module::Module::num_params(&unet) + schedule_params);
    assert_eq!(format!("{fixed}"), format!("{unet}"));

    let x = Tensor::<4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let t = Tensor::<1>::from_floats([3.0, 700.0], &device);
    let cond = Conditioning::none();
    let want = unet.denoise(x.clone(), t.clone(), &cond).into_data().try_to_vec::<f32>().unwrap();
    for net in [&fixed, &learned] {
        assert_eq!(net.denoise(x.clone(), t.clone(), &cond).into_data().try_to_vec::<f32>().unwrap(), want);
    }
    assert!(fixed.learned_log_snr(t.clone()).is_none() && learned.learned_log_snr(t).is_some());
}
