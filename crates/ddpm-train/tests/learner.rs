//! Training through burn-train's `Learner`: a few steps with the EMA updated every optimiser step,
//! the Learner's checkpoints carrying the EMA and the step count, a resume that brings them back
//! intact and goes on from them, and the step-based weights and grids.

use std::path::Path;
use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use burn::train::metric::{IterationSpeedMetric, LearningRateMetric, LossMetric};
use burn::train::renderer::CliMetricsRenderer;
use burn::train::{Learner, LearningResult, SupervisedTraining};
use ddpm_models::{Mlp, MlpConfig};
use ddpm_train::learner::{DiffusionModel, StepOutputs, WarmupSchedule, dataloaders};
use ddpm_train::{TrainConfig, parse_config};

fn config(out: &Path) -> TrainConfig {
    let text = format!(
        r#"
[run]
out_dir = "{}"
seed = 5

[data]
kind = "toy"
name = "gaussian8"
count = 80

[model]
kind = "mlp"
hidden = 32
num_layers = 2

[diffusion]
timesteps = 40
beta_schedule = "cosine"
objective = "pred_noise"

[train]
steps = 100
batch_size = 16
lr = 1e-3
warmup_steps = 2

[train.ema]
decay = 0.8
update_every = 1
update_after_step = 1

[sample]
sampler = "ddim"
steps = 4
"#,
        out.display()
    );
    parse_config(&text, "learner.toml", &[]).unwrap()
}

type Model = DiffusionModel<2, Mlp>;

/// Trains `epochs` epochs (4 optimiser steps each: 64 training items in batches of 16) from a
/// fresh network, or from the Learner's checkpoint of epoch `resume`.
fn fit(cfg: &TrainConfig, epochs: usize, resume: Option<usize>, outputs: bool) -> LearningResult<Model> {
    let device = Device::flex().autodiff();
    device.seed(cfg.run.seed);
    let data = Arc::new(ddpm_train::data::load(&cfg.data, cfg.run.seed).unwrap());
    let net = MlpConfig::new(2).with_hidden(32).with_num_layers(2).init(&device).unwrap();
    let mut model = DiffusionModel::<2, Mlp>::new(net, cfg.build_diffusion().unwrap(), cfg.train.ema.clone(), cfg.run.seed);
    if outputs {
        model = model.with_outputs(StepOutputs {
            dir: cfg.run.out_dir.clone(),
            every: 2,
            keep_last: 2,
            item_shape: data.item_shape.clone(),
            sampler: cfg.sample.sampler().unwrap(),
            seeds: (0..50).collect(),
            clip: None,
        });
    }
    let (train, valid) = dataloaders::<2>(data, 16, 16, None, cfg.run.seed);
    let mut training = SupervisedTraining::new(&cfg.run.out_dir, train, valid)
        .metrics((LossMetric::new(),))
        .metric_train_numeric(LearningRateMetric::new())
        .metric_train_numeric(IterationSpeedMetric::new())
        .with_default_checkpointers()
        .renderer(Box::new(CliMetricsRenderer::new()))
        .num_epochs(epochs);
    if let Some(epoch) = resume {
        training = training.checkpoint(epoch);
    }
    let result = training.launch(Learner::new(model, ddpm_train::trainer::optimizer(cfg), WarmupSchedule::new(cfg.train.clone())));
    assert!(result.error.is_none(), "{:?}", result.error);
    result
}

fn values<M: Module>(m: &M) -> Vec<f32> {
    struct All(Vec<f32>);
    impl ModuleVisitor for All {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.extend(p.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }
    let mut all = All(Vec::new());
    m.visit(&mut all);
    all.0
}

#[test]
fn the_learner_trains_with_an_ema_that_its_checkpoints_keep_and_resume_restores() {
    let dir = tempfile_dir("learner");
    let cfg = config(&dir);
    let first = fit(&cfg, 2, None, true).model;
    assert_eq!(first.steps(), 8, "two epochs of four optimiser steps");
    let (net, ema) = (values(&first.net), values(&first.ema));
    assert!(net.iter().chain(&ema).all(|v| v.is_finite()));
    // The EMA trails the network: it moved (decay 0 at step 1 copies, then averages) but is not it.
    let gap = net.iter().zip(&ema).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(gap > 1e-5, "the EMA is a copy of the network (gap {gap})");

    // The Learner's checkpoint of epoch 2 holds the EMA and the step count: resuming with nothing
    // left to train gives them back exactly, on a network built with other random weights.
    let back = fit(&cfg, 2, Some(2), false).model;
    assert_eq!(back.steps(), 8);
    assert_eq!(values(&back.net), net, "the network comes back from the checkpoint");
    assert_eq!(values(&back.ema), ema, "the EMA comes back from the checkpoint");

    // Resuming for one more epoch continues from that EMA.
    let more = fit(&cfg, 3, Some(2), false).model;
    assert_eq!(more.steps(), 12);
    let moved = values(&more.ema).iter().zip(&ema).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(moved > 0.0 && moved.is_finite(), "the resumed EMA was updated (moved {moved})");

    // Step outputs of the first run: weights every 2 steps (the newest 2 kept) and a grid each time.
    let steps: Vec<String> = sorted_names(&dir.join("steps"));
    assert_eq!(steps, ["step-0000006.bpk", "step-0000008.bpk"]);
    let samples = sorted_names(&dir.join("samples"));
    assert_eq!(samples, ["step-0000002.png", "step-0000004.png", "step-0000006.png", "step-0000008.png"]);
    // The step-8 weights are the EMA the run ended with.
    let device = Device::flex();
    let template = DiffusionModel::<2, Mlp>::new(MlpConfig::new(2).with_hidden(32).with_num_layers(2).init(&device).unwrap(), cfg.build_diffusion().unwrap(), cfg.train.ema.clone(), 0);
    let loaded = template.load_file(dir.join("steps/step-0000008.bpk"));
    assert_eq!(values(&loaded.ema), ema);
    assert_eq!(loaded.steps(), 8);
    // burn-train's own logs: the loss metric of each epoch.
    assert!(dir.join("train/epoch-1/Loss.log").is_file(), "{:?}", sorted_names(&dir.join("train/epoch-1")));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn burn_trains_the_model_on_several_devices_with_the_ema_on_the_main_one() {
    use burn::train::{ExecutionStrategy, MultiDeviceOptim};
    let dir = tempfile_dir("learner-multi");
    let cfg = config(&dir);
    let device = Device::flex().autodiff();
    device.seed(cfg.run.seed);
    let data = Arc::new(ddpm_train::data::load(&cfg.data, cfg.run.seed).unwrap());
    let net = MlpConfig::new(2).with_hidden(32).with_num_layers(2).init(&device).unwrap();
    let model = DiffusionModel::<2, Mlp>::new(net, cfg.build_diffusion().unwrap(), cfg.train.ema.clone(), cfg.run.seed);
    let start = values(&model.ema);
    let (train, valid) = dataloaders::<2>(data, 16, 16, None, cfg.run.seed);
    // Two Flex devices: each takes one batch per iteration, and their gradients make one optimiser
    // step (burn-train's `optimize_multi`), so 4 batches are 2 steps.
    let strategy = ExecutionStrategy::MultiDevice(vec![Device::flex(), Device::flex()], MultiDeviceOptim::OptimMainDevice);
    let result = SupervisedTraining::new(&dir, train, valid)
        .metrics((LossMetric::new(),))
        .renderer(Box::new(CliMetricsRenderer::new()))
        .with_training_strategy(strategy.into())
        .num_epochs(1)
        .launch(Learner::new(model, ddpm_train::trainer::optimizer(&cfg), WarmupSchedule::new(cfg.train.clone())));
    assert!(result.error.is_none(), "{:?}", result.error);
    let model = result.model;
    assert_eq!(model.steps(), 2);
    let ema = values(&model.ema);
    assert!(ema.iter().all(|v| v.is_finite()));
    assert_ne!(ema, start, "the EMA followed the trained network");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_learner_trains_every_process_kind() {
    // The same step for EDM (preconditioned, sigma-space sampling) and continuous time (log-SNR),
    // with step outputs drawn by each process's own sampler.
    for (name, diffusion, sampler) in [
        ("edm", "kind = \"edm\"\n[diffusion.edm]\nsigma_data = 0.7", "sampler = \"heun\"\nsteps = 4"),
        ("continuous", "kind = \"continuous\"\nobjective = \"pred_v\"\n[diffusion.continuous]\nschedule = \"cosine\"\nnum_sample_steps = 8", "sampler = \"ddpm\""),
    ] {
        let dir = tempfile_dir(&format!("learner-{name}"));
        let cfg = ddpm_train::parse_config(
            &format!(
                "[run]\nout_dir = \"{}\"\nseed = 5\n[data]\nkind = \"toy\"\nname = \"gaussian8\"\ncount = 80\n[model]\nkind = \"mlp\"\nhidden = 32\nnum_layers = 2\n[diffusion]\n{diffusion}\n[train]\nsteps = 100\nbatch_size = 16\n[train.ema]\ndecay = 0.8\nupdate_every = 1\nupdate_after_step = 1\n[sample]\n{sampler}\n",
                dir.display()
            ),
            "process.toml",
            &[],
        )
        .unwrap();
        let device = Device::flex().autodiff();
        let data = Arc::new(ddpm_train::data::load(&cfg.data, cfg.run.seed).unwrap());
        let net = MlpConfig::new(2).with_hidden(32).with_num_layers(2).init(&device).unwrap();
        let model = DiffusionModel::<2, Mlp>::new(net, cfg.build_diffusion().unwrap(), cfg.train.ema.clone(), cfg.run.seed).with_outputs(StepOutputs {
            dir: dir.clone(),
            every: 4,
            keep_last: 1,
            item_shape: data.item_shape.clone(),
            sampler: cfg.sample.sampler().unwrap(),
            seeds: (0..20).collect(),
            clip: None,
        });
        let (train, valid) = dataloaders::<2>(data, 16, 16, None, cfg.run.seed);
        let result = SupervisedTraining::new(&dir, train, valid)
            .metrics((LossMetric::new(),))
            .renderer(Box::new(CliMetricsRenderer::new()))
            .num_epochs(1)
            .launch(Learner::new(model, ddpm_train::trainer::optimizer(&cfg), WarmupSchedule::new(cfg.train.clone())));
        assert!(result.error.is_none(), "{name}: {:?}", result.error);
        assert_eq!(result.model.steps(), 4, "{name}");
        assert!(values(&result.model.ema).iter().all(|v| v.is_finite()), "{name}");
        assert_eq!(sorted_names(&dir.join("samples")), ["step-0000004.png"], "{name}: the step output was drawn");
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn without_a_terminal_the_learner_prints_plain_lines() {
    use burn::train::logger::TrainingProgressLogger;
    use burn::train::metric::{Metric, MetricDefinition, MetricEntry, MetricId, NumericEntry, SerializedEntry};
    use burn::train::renderer::{MetricState, MetricsRenderer, MetricsRendererTraining};
    let mut r = ddpm_train::learner::PlainRenderer::new(30.0);
    let loss = LossMetric::new();
    let id = MetricId::new(std::sync::Arc::new("loss-id".to_string()));
    r.register_metric(MetricDefinition::new(id.clone(), &loss));
    r.start(12, 3, None, None);
    r.start_split("train", 1984);
    r.update_train(MetricState::Numeric(MetricEntry::new(id.clone(), SerializedEntry::new("x".into(), "0.5".into())), Some(NumericEntry::Value(0.5))));
    r.update_split(512);
    assert_eq!(r.status(), format!("learner train: epoch 3/12, 512/1984 items, {} 0.5000", loss.name()));
    r.update_epoch(3);
    r.start_split("valid", 64);
    assert_eq!(r.status(), "learner valid: epoch 4/12, 0/64 items, ", "the split's own metrics only");
}

fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
