//! Hugging Face diffusers interchange against diffusers 0.42.1 itself (fixtures made by
//! `tests/fixtures/diffusers/make_diffusers_fixtures.py`; see the README there): the network, the
//! schedules, diffusers' DDIM loop, export and re-import, google/ddpm-cifar10-32's configuration,
//! and the errors for what cannot be reproduced.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use ddpm_core::prelude::*;
use ddpm_core::{DdimOptions, DdimRun, ddim_sample};
use ddpm_models::ddpm_unet::TimeFrequencies;
use ddpm_models::diffusers::*;
use ddpm_models::weights::{RefTensor, StateDict, read_safetensors};
use ddpm_models::{DdpmUnet, DdpmUnetConfig};
use serde_json::Value;

mod common;
use common::device;

fn fixture(name: &str) -> PathBuf {
    common::fixture_path("diffusers", name)
}

fn checks() -> StateDict {
    read_safetensors(fixture("checks.safetensors")).unwrap()
}

fn tensor<const D: usize>(t: &RefTensor, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device)
}

fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data().try_into_vec_as::<f32>().unwrap()
}

fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths");
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max)
}

fn ints(t: &RefTensor) -> Vec<usize> {
    t.data.iter().map(|&v| v as usize).collect()
}

/// A scratch folder under the target directory, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("diffusers-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    dir
}

fn tiny() -> (DiffusersPipeline, DdpmUnet) {
    let pipe = read_pipeline(fixture("tiny_pipeline")).unwrap_or_else(|e| panic!("{e}"));
    let net = pipe.unet.init(&device()).unwrap_or_else(|e| panic!("{e}"));
    (pipe, net)
}

#[test]
fn tiny_pipeline_maps_and_reproduces_the_network() {
    let (pipe, net) = tiny();
    let expected = DdpmUnetConfig::new()
        .with_resolution(16)
        .with_in_channels(3)
        .with_out_channels(Some(3))
        .with_ch(16)
        .with_ch_mult(vec![1, 2])
        .with_num_res_blocks(1)
        .with_attn_resolutions(vec![8])
        .with_dropout(0.0)
        .with_norm_num_groups(Some(8))
        .with_norm_eps(1e-6)
        .with_time_frequencies(TimeFrequencies::Diffusers);
    assert_eq!(pipe.unet.ddpm_config().unwrap(), expected);
    let c = checks();
    let (x, t) = (tensor::<4>(&c["unet_forward.x"], &device()), tensor::<1>(&c["unet_forward.t"], &device()));
    let want = &c["unet_forward.out"].data;
    let err = max_abs_diff(&values(&net.forward(x.clone(), t.clone())), want);
    assert!(err < 1e-4, "DdpmUnet vs diffusers' UNet2DModel: max |diff| {err:e}");
    // The outputs are not trivially small: the check has something to compare.
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.5, "fixture output scale {scale}");
    // Every layer matters: without the attention weights the output moves far beyond the tolerance.
    let mut broken = pipe.unet.weights.clone();
    for v in &mut broken.get_mut("mid_block.attentions.0.to_v.weight").unwrap().data {
        *v = 0.0;
    }
    let broken = load_unet(pipe.unet.ddpm_config().unwrap().init(&device()).unwrap(), &broken, "broken").unwrap();
    assert!(max_abs_diff(&values(&broken.forward(x, t)), want) > 1e-2);
}

#[test]
fn legacy_bin_with_old_attention_names_loads() {
    let unet = read_unet_folder(fixture("legacy_unet")).unwrap_or_else(|e| panic!("{e}"));
    assert!(unet.weights_file.ends_with(UNET_WEIGHTS_BIN));
    assert!(unet.weights.keys().any(|k| k.ends_with("attentions.0.query.weight")), "the fixture uses the legacy names");
    let net = unet.init(&device()).unwrap_or_else(|e| panic!("{e}"));
    let f = read_safetensors(fixture("legacy_unet_forward.safetensors")).unwrap();
    let out = net.forward(tensor(&f["x"], &device()), tensor(&f["t"], &device()));
    let err = max_abs_diff(&values(&out), &f["out"].data);
    assert!(err < 1e-4, "legacy UNet2DModel: max |diff| {err:e}");
}

#[test]
fn schedules_match_diffusers() {
    let c = checks();
    let base = read_pipeline(fixture("tiny_pipeline")).unwrap().scheduler;
    for name in ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "linear_zero_snr"] {
        let mut s = base.clone();
        match name {
            "scaled_linear" => (s.beta_schedule, s.beta_start, s.beta_end) = ("scaled_linear".into(), 0.00085, 0.012),
            "linear_zero_snr" => s.rescale_betas_zero_snr = true,
            "linear" => {}
            other => s.beta_schedule = other.into(),
        }
        let want_betas = &c[&format!("schedule.{name}.betas")].data;
        let want_ac = &c[&format!("schedule.{name}.alphas_cumprod")].data;
        let betas = s.betas().unwrap();
        if name == "sigmoid" {
            // torch's vectorised f32 sigmoid is not correctly rounded; the f64 one rounded is.
            let worst = betas.iter().zip(want_betas).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-8, "{name}: betas max |diff| {worst:e}");
        } else if name == "linear_zero_snr" {
            // Neither is torch's f32 sqrt (it differs from IEEE's in about a sixth of the entries),
            // and 1 - abar_t / abar_(t-1) magnifies an ulp of abar near the end: only the
            // cumulative products (below) agree to f32 precision.
            assert_eq!((betas[0], betas[999]), (want_betas[0], 1.0));
        } else {
            assert_eq!(&betas, want_betas, "{name}: betas bit for bit");
            assert_eq!(&s.alphas_cumprod().unwrap(), want_ac, "{name}: f32 alphas_cumprod bit for bit");
        }
        // ddpm-core's f64 tables: diffusers' f32 alphas_cumprod to half an ulp.
        let d = s.diffusion().unwrap_or_else(|e| panic!("{name}: {e}"));
        let worst = d.schedule.alphas_cumprod.iter().zip(want_ac).map(|(a, &b)| (a - f64::from(b)).abs()).fold(0.0, f64::max);
        let limit = if name == "sigmoid" || name == "linear_zero_snr" { 3e-7 } else { 6e-8 };
        assert!(worst <= limit, "{name}: alphas_cumprod max |diff| {worst:e}");
    }
}

#[test]
fn timestep_lists_match_diffusers() {
    let c = checks();
    let base = read_pipeline(fixture("tiny_pipeline")).unwrap().scheduler;
    let ts = |s: &SchedulerConfig| s.ddim_steps(10).unwrap().iter().map(|s| s.t).collect::<Vec<_>>();
    assert_eq!(ts(&base), ints(&c["ddim_S10.timesteps"]));
    let mut s = base.clone();
    s.steps_offset = 1;
    assert_eq!(ts(&s), ints(&c["timesteps.leading_offset"]));
    let mut s = base.clone();
    s.timestep_spacing = "trailing".into();
    assert_eq!(ts(&s), ints(&c["timesteps.trailing"]));
    s.timestep_spacing = "linspace".into();
    assert_eq!(ts(&s), ints(&c["ddim_alt.timesteps"]));
}

/// Runs ddpm-core's DDIM with the scheduler's steps and semantics from the fixture's noise,
/// returning every step's output.
fn run_ddim(scheduler: &SchedulerConfig, net: &DdpmUnet, ddim: DdimOptions, eta: f64, noise: &mut impl NoiseSource) -> Vec<Vec<f32>> {
    let c = checks();
    let diffusion = scheduler.diffusion().unwrap();
    let steps = scheduler.ddim_steps(10).unwrap();
    let opts = SampleOptions { clip: scheduler.clip().unwrap(), cond: Conditioning::none() };
    let mut trajectory = Vec::new();
    let x_t = tensor::<4>(&c["init_noise"], &device());
    let out = ddim_sample(&diffusion, net, x_t, &DdimRun { steps, eta, options: ddim }, &opts, noise, |s: &StepInfo<'_, 4>| trajectory.push(values(s.x_next)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(trajectory.last().unwrap(), &values(&out));
    trajectory
}

fn step_slices(t: &RefTensor) -> Vec<&[f32]> {
    let per = t.data.len() / t.shape[0];
    t.data.chunks(per).collect()
}

#[test]
fn ddim_steps_match_diffusers_one_by_one() {
    // Each step from diffusers' own input: the formula, the timesteps, the schedule and the
    // network, without the loop's amplification of rounding errors.
    let (pipe, net) = tiny();
    let c = checks();
    let s = &pipe.scheduler;
    let (diffusion, steps) = (s.diffusion().unwrap(), s.ddim_steps(10).unwrap());
    let opts = SampleOptions { clip: s.clip().unwrap(), cond: Conditioning::none() };
    let want = step_slices(&c["ddim_S10.steps"]);
    let shape = c["init_noise"].shape.clone();
    for (i, step) in steps.iter().enumerate() {
        let input = if i == 0 { c["init_noise"].data.clone() } else { want[i - 1].to_vec() };
        let x = Tensor::<4>::from_data(TensorData::new(input, shape.clone()), &device());
        let out = ddim_sample(&diffusion, &net, x, &DdimRun { steps: vec![*step], eta: 0.0, options: s.ddim_options() }, &opts, &mut HostNoise::new(0), no_callback).unwrap();
        let err = max_abs_diff(&values(&out), want[i]);
        assert!(err < 2e-5, "DDIM step {i} (t = {}): max |diff| {err:e}", step.t);
    }
}

#[test]
fn ddim_loop_matches_diffusers() {
    let (pipe, net) = tiny();
    let c = checks();
    assert_eq!(pipe.scheduler.clip().unwrap(), X0Clip::Static);
    assert_eq!(pipe.scheduler.ddim_options(), DdimOptions { rederive_noise: false, final_alpha_one: true });
    let ours = run_ddim(&pipe.scheduler, &net, pipe.scheduler.ddim_options(), 0.0, &mut HostNoise::new(0));
    let (want, want64) = (step_slices(&c["ddim_S10.steps"]), step_slices(&c["ddim_S10.steps_f64"]));
    assert_eq!(ours.len(), want.len());
    // The fixture network is briefly trained, so DDIM contracts rather than amplifies float32
    // rounding (diffusers' own float32 and float64 runs agree to ~3e-6 at every step): the whole
    // run must match diffusers' float32 loop within 1e-4 at every step.
    for (i, ((got, want), want64)) in ours.iter().zip(&want).zip(&want64).enumerate() {
        let (err, floor) = (max_abs_diff(got, want), max_abs_diff(want, want64));
        assert!(err < 1e-4, "DDIM step {i}: max |diff| {err:e} (diffusers float32 vs float64: {floor:e})");
    }
    let err = max_abs_diff(ours.last().unwrap(), &c["ddim_S10"].data);
    eprintln!("diffusers' DDIM loop (10 steps): max |difference| {err:e}");
    assert!(err < 1e-4, "final: {err:e}");
    // The reference's semantics (eps re-derived from the clipped x0) give another result here.
    let reference = run_ddim(&pipe.scheduler, &net, DdimOptions::default(), 0.0, &mut HostNoise::new(0));
    assert!(max_abs_diff(reference.last().unwrap(), &c["ddim_S10"].data) > 1e-2);
}

#[test]
fn ddim_with_linspace_final_alpha_and_eta_matches_diffusers() {
    let (pipe, net) = tiny();
    let c = checks();
    let mut s = pipe.scheduler.clone();
    (s.timestep_spacing, s.set_alpha_to_one, s.steps_offset) = ("linspace".into(), Some(false), 1);
    let steps = s.ddim_steps(10).unwrap();
    // diffusers steps to t - T div S, which linspace does not list.
    assert_eq!(steps[0], DdimStep { t: 999, prev: Some(899) });
    assert_eq!(steps[8], DdimStep { t: 111, prev: Some(11) });
    assert_eq!(steps[9], DdimStep { t: 0, prev: None });
    let noise = &c["ddim_alt.noise"];
    let per = noise.data.len() / noise.shape[0];
    let mut replay = ReplayNoise::new(noise.data.chunks(per).map(|d| TensorData::new(d.to_vec(), noise.shape[1..].to_vec())));
    let ours = run_ddim(&s, &net, s.ddim_options(), 0.5, &mut replay);
    for (i, (got, want)) in ours.iter().zip(step_slices(&c["ddim_alt.steps"])).enumerate() {
        let err = max_abs_diff(got, want);
        assert!(err < 1e-4, "DDIM (linspace, set_alpha_to_one false, eta 0.5) step {i}: max |diff| {err:e}");
    }
    // The last step (t = 0 to abar_0) has sigma = 0: diffusers draws and multiplies by zero, we do not draw.
    assert_eq!(replay.remaining(), 1);
}

#[test]
fn export_and_reimport_give_back_the_same_model() {
    let (pipe, net) = tiny();
    let config = pipe.unet.ddpm_config().unwrap();
    let dir = scratch("tiny_export");
    write_pipeline(&dir, &net, &config, &pipe.scheduler).unwrap_or_else(|e| panic!("{e}"));
    let back = read_pipeline(&dir).unwrap_or_else(|e| panic!("{e}"));
    // The state dict: the same keys, shapes and values as diffusers' own file.
    let original = &pipe.unet.weights;
    assert_eq!(back.unet.weights.keys().collect::<Vec<_>>(), original.keys().collect::<Vec<_>>());
    for (k, t) in original {
        assert_eq!(back.unet.weights[k].shape, t.shape, "{k}: shape");
        assert_eq!(back.unet.weights[k].data, t.data, "{k}: values");
    }
    assert_eq!(unet_state_dict(&net), *original);
    // The configurations: the same network and scheduler.
    assert_eq!(back.unet.ddpm_config().unwrap(), config);
    let strip = |mut s: SchedulerConfig| {
        s.source = None;
        s
    };
    assert_eq!(strip(back.scheduler.clone()), strip(pipe.scheduler.clone()));
    assert_eq!(back.class_name, "DDPMPipeline");
    // unet/config.json holds what diffusers itself wrote, key for key.
    let json = |p: &Path| -> Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let (ours, theirs) = (json(&dir.join("unet/config.json")), json(&fixture("tiny_pipeline/unet/config.json")));
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&ours), keys(&theirs));
    for k in keys(&theirs) {
        assert_eq!(ours[&k], theirs[&k], "unet/config.json `{k}`");
    }
    // The re-imported network computes the same.
    let again = back.unet.init(&device()).unwrap();
    let c = checks();
    let (x, t) = (tensor::<4>(&c["unet_forward.x"], &device()), tensor::<1>(&c["unet_forward.t"], &device()));
    assert_eq!(values(&again.forward(x.clone(), t.clone())), values(&net.forward(x, t)));
    // For the Python side: `make_diffusers_fixtures.py --check-export DIR`.
    if let Ok(out) = std::env::var("DDPM_DIFFUSERS_EXPORT") {
        let _ = std::fs::remove_dir_all(&out);
        write_pipeline(&out, &net, &config, &pipe.scheduler).unwrap();
    }
    // The configuration must describe the network.
    let other = config.clone().with_num_res_blocks(2);
    let wrong = scratch("wrong_config");
    let e = write_pipeline(&wrong, &net, &other, &pipe.scheduler).unwrap_err().to_string();
    assert_names(&e, &["down level 0 has 1 ResNet blocks", "the configuration 2"]);
    // Nothing is left behind: neither the folder nor the temporary one.
    let leftovers =
        std::fs::read_dir(wrong.parent().unwrap()).unwrap().filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().contains("wrong_config"));
    assert!(!leftovers);
    // Nothing is overwritten.
    let e = write_pipeline(&dir, &net, &config, &pipe.scheduler).unwrap_err().to_string();
    assert!(e.contains("not empty") && e.contains("tiny_export"), "{e}");
}

#[test]
fn a_ddpm_rs_process_exports_as_a_scheduler() {
    // ddpm-core's settings -> DDPMScheduler -> ddpm-core: the same process to f32 precision.
    for (schedule, objective, variance, clip) in [
        (BetaSchedule::linear(), Objective::PredNoise, ModelVariance::FixedLarge, X0Clip::Static),
        (BetaSchedule::cosine(), Objective::PredV, ModelVariance::FixedSmall, X0Clip::None),
        (BetaSchedule::sigmoid(), Objective::PredX0, ModelVariance::LearnedRange, X0Clip::Dynamic { percentile: 0.99 }),
    ] {
        let ours = GaussianDiffusionConfig::new().with_beta_schedule(schedule.clone()).with_objective(objective).with_variance(variance);
        let s = SchedulerConfig::from_diffusion(&ours, clip).unwrap();
        let s = SchedulerConfig::from_json(&s.to_json().unwrap(), "exported/scheduler_config.json").unwrap();
        assert_eq!(s.clip().unwrap(), clip, "{schedule}");
        let back = s.diffusion_config().unwrap();
        assert_eq!((back.objective, back.variance, back.timesteps), (objective, variance, 1000));
        let (a, b) = (ours.init().unwrap(), s.diffusion().unwrap());
        // diffusers' f32 betas against ddpm-core's f64 ones.
        let worst = a.schedule.alphas_cumprod.iter().zip(&b.schedule.alphas_cumprod).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-6, "{schedule}: alphas_cumprod max |diff| {worst:e}");
    }
    let e = SchedulerConfig::from_diffusion(&GaussianDiffusionConfig::new().with_objective(Objective::Mean), X0Clip::Static).unwrap_err();
    assert!(e.to_string().contains("objective"), "{e}");
}

#[test]
fn cifar10_config_is_the_ddpm_paper_network() {
    let unet = UNet2DModelConfig::read(fixture("cifar10/unet_config.json")).unwrap();
    let config = unet.to_ddpm_unet().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config,
        DdpmUnetConfig::new()
            .with_out_channels(Some(3))
            .with_dropout(0.0)
            .with_norm_num_groups(Some(32))
            .with_time_frequencies(TimeFrequencies::Diffusers)
    );
    // Our default (the paper's CIFAR-10 network) writes the same network-defining keys.
    let ours = UNet2DModelConfig::from_ddpm_unet(&DdpmUnetConfig::new()).unwrap();
    assert_eq!(
        (&ours.block_out_channels, &ours.down_block_types, &ours.up_block_types, ours.layers_per_block, ours.norm_num_groups, ours.sample_size),
        (&unet.block_out_channels, &unet.down_block_types, &unet.up_block_types, unet.layers_per_block, unet.norm_num_groups, unet.sample_size)
    );
    // Its parameters map one-to-one onto diffusers' keys and shapes.
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(fixture("cifar10/state_dict_manifest.json")).unwrap()).unwrap();
    let net = config.init(&Device::flex()).unwrap();
    let state = unet_state_dict(&net);
    let want = manifest["shapes"].as_object().unwrap();
    assert_eq!(state.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (k, t) in &state {
        let shape: Vec<usize> = want[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape, shape, "{k}");
    }
    let n: usize = state.values().map(|t| t.data.len()).sum();
    assert_eq!(n as u64, manifest["parameters"].as_u64().unwrap());
    assert_eq!(n, 35_746_307);
    // Every key maps back to its Burn path and forth again.
    for k in want.keys() {
        let path = burn_path(k).unwrap_or_else(|| panic!("no Burn path for {k}"));
        assert_eq!(diffusers_key(&path).as_deref(), Some(k.as_str()));
    }
    // The scheduler: DDPM's linear betas, eps, fixed-large, clipping; DDIM leading 900..0.
    let s = SchedulerConfig::read(fixture("cifar10/scheduler_config.json")).unwrap();
    let d = s.diffusion_config().unwrap();
    assert_eq!((d.timesteps, d.objective, d.variance), (1000, Objective::PredNoise, ModelVariance::FixedLarge));
    assert_eq!(s.clip().unwrap(), X0Clip::Static);
    assert_eq!(s.ddim_steps(10).unwrap().iter().map(|s| s.t).collect::<Vec<_>>(), (0..10).rev().map(|i| i * 100).collect::<Vec<_>>());
}

#[test]
fn unknown_paths_and_keys_have_no_counterpart() {
    assert_eq!(burn_path("down_blocks.0.resnets.0.foo.weight"), None);
    assert_eq!(burn_path("down_blocks.0.attentions.0.query.weight"), None);
    assert_eq!(burn_path("up_blocks.0.downsamplers.0.conv.weight"), None);
    assert_eq!(diffusers_key("class_emb.embedding.weight"), None);
    assert_eq!(diffusers_key("up.1.resample.weight").as_deref(), Some("up_blocks.1.upsamplers.0.conv.weight"));
    assert_eq!(diffusers_key("norm_out.gamma").as_deref(), Some("conv_norm_out.weight"));
    assert_eq!(diffusers_key("mid_attn.proj_out.bias").as_deref(), Some("mid_block.attentions.0.to_out.0.bias"));
}

/// The tiny pipeline's `unet/config.json` with `key` set to `value` (`null` removes nothing: it
/// sets JSON null), mapped; the error text.
fn unet_error(key: &str, value: Value) -> String {
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(fixture("tiny_pipeline/unet/config.json")).unwrap()).unwrap();
    json[key] = value;
    match UNet2DModelConfig::from_json(&json.to_string(), "model/unet/config.json").and_then(|c| c.to_ddpm_unet()) {
        Ok(c) => panic!("`{key}` accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_names(e: &str, parts: &[&str]) {
    for p in parts {
        assert!(e.contains(p), "error lacks `{p}`: {e}");
    }
}

#[test]
fn unsupported_unet_settings_are_refused_with_the_key_and_the_fix() {
    use serde_json::json;
    let f = "model/unet/config.json";
    assert_names(
        &unet_error("down_block_types", json!(["DownBlock2D", "CrossAttnDownBlock2D"])),
        &[f, "down_block_types[1]", "CrossAttnDownBlock2D", "AttnDownBlock2D"],
    );
    assert_names(
        &unet_error("up_block_types", json!(["UpBlock2D", "AttnUpBlock2D"])),
        &[f, "up_block_types[0]", "mirrors down block 1", "AttnUpBlock2D"],
    );
    assert_names(&unet_error("up_block_types", json!(["AttnUpBlock2D"])), &[f, "down_block_types", "one block type per level"]);
    assert_names(&unet_error("flip_sin_to_cos", json!(true)), &[f, "`flip_sin_to_cos` = true", "use false"]);
    assert_names(&unet_error("freq_shift", json!(0)), &[f, "`freq_shift` = 0", "freq_shift = 1"]);
    assert_names(&unet_error("time_embedding_type", json!("fourier")), &[f, "time_embedding_type", "fourier", "positional"]);
    assert_names(&unet_error("act_fn", json!("gelu")), &[f, "act_fn", "gelu", "silu"]);
    assert_names(&unet_error("attention_head_dim", json!(8)), &[f, "`attention_head_dim` = 8", "one head", "null"]);
    assert_names(&unet_error("resnet_time_scale_shift", json!("scale_shift")), &[f, "resnet_time_scale_shift", "scale_shift", "default"]);
    assert_names(&unet_error("center_input_sample", json!(true)), &[f, "center_input_sample", "use false"]);
    assert_names(&unet_error("add_attention", json!(false)), &[f, "add_attention", "use true"]);
    assert_names(&unet_error("class_embed_type", json!("timestep")), &[f, "class_embed_type", "timestep", "null"]);
    assert_names(&unet_error("num_class_embeds", json!(10)), &[f, "num_class_embeds", "10"]);
    assert_names(&unet_error("downsample_padding", json!(1)), &[f, "`downsample_padding` = 1", "use 0"]);
    assert_names(&unet_error("mid_block_type", Value::Null), &[f, "mid_block_type", "None", "UNetMidBlock2D"]);
    assert_names(&unet_error("norm_num_groups", json!(5)), &[f, "`norm_num_groups` = 5", "16"]);
    assert_names(&unet_error("attn_norm_num_groups", json!(4)), &[f, "attn_norm_num_groups", "null"]);
    assert_names(&unet_error("block_out_channels", json!([16, 24])), &[f, "block_out_channels", "24", "multiples"]);
    assert_names(&unet_error("sample_size", json!([16, 8])), &[f, "sample_size", "[16, 8]", "square"]);
    assert_names(&unet_error("sample_size", json!(15)), &[f, "sample_size", "15", "multiple"]);
    assert_names(&unet_error("time_embedding_dim", json!(128)), &[f, "time_embedding_dim", "128", "64"]);
    assert_names(&unet_error("_class_name", json!("UNet2DConditionModel")), &[f, "_class_name", "UNet2DConditionModel", "UNet2DModel"]);
    assert_names(&unet_error("downsample_type", json!("resnet")), &[f, "downsample_type", "resnet", "conv"]);
    // A value of the wrong type is reported with its key.
    assert_names(&unet_error("layers_per_block", json!("two")), &[f, "`layers_per_block` = \"two\"", "not a valid"]);
    // Missing keys take diffusers' defaults (flip_sin_to_cos = true, ...), which are not DDPM's.
    let e = UNet2DModelConfig::from_json("{\"sample_size\": 32}", f).unwrap().to_ddpm_unet().unwrap_err().to_string();
    assert_names(&e, &[f, "flip_sin_to_cos"]);
    // Unknown keys are tolerated and kept.
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(fixture("tiny_pipeline/unet/config.json")).unwrap()).unwrap();
    json["some_future_key"] = serde_json::json!(7);
    let c = UNet2DModelConfig::from_json(&json.to_string(), f).unwrap();
    assert!(c.to_ddpm_unet().is_ok());
    assert!(c.to_json().unwrap().contains("some_future_key"));
}

fn scheduler_error(edit: impl FnOnce(&mut SchedulerConfig), what: impl Fn(&SchedulerConfig) -> Result<(), ddpm_models::ModelError>) -> String {
    let mut s = SchedulerConfig::read(fixture("tiny_pipeline/scheduler/scheduler_config.json")).unwrap();
    edit(&mut s);
    what(&s).unwrap_err().to_string()
}

#[test]
fn unsupported_scheduler_settings_are_refused_with_the_key_and_the_fix() {
    let f = "scheduler_config.json";
    let d = |s: &SchedulerConfig| s.diffusion().map(|_| ());
    assert_names(&scheduler_error(|s| s.beta_schedule = "cosine".into(), d), &[f, "beta_schedule", "cosine", "squaredcos_cap_v2"]);
    assert_names(&scheduler_error(|s| s.prediction_type = "x0".into(), d), &[f, "prediction_type", "x0", "v_prediction"]);
    assert_names(&scheduler_error(|s| s.variance_type = "learned".into(), d), &[f, "variance_type", "learned", "learned_range"]);
    assert_names(&scheduler_error(|s| s.variance_type = "fixed_large_log".into(), d), &[f, "variance_type", "NaN", "fixed_large"]);
    assert_names(&scheduler_error(|s| s.trained_betas = Some(vec![0.1; 10]), d), &[f, "trained_betas", "10 values", "1000"]);
    assert_names(&scheduler_error(|s| s.class_name = "PNDMScheduler".into(), d), &[f, "_class_name", "PNDMScheduler", "DDIMScheduler"]);
    let clip = |s: &SchedulerConfig| s.clip().map(|_| ());
    assert_names(&scheduler_error(|s| s.clip_sample_range = 2.0, clip), &[f, "`clip_sample_range` = 2", "use 1.0"]);
    assert_names(&scheduler_error(|s| (s.thresholding, s.sample_max_value) = (true, 1.5), clip), &[f, "`sample_max_value` = 1.5", "no upper bound"]);
    let steps = |n: usize| move |s: &SchedulerConfig| s.ddim_steps(n).map(|_| ());
    assert_names(&scheduler_error(|s| s.timestep_spacing = "uniform".into(), steps(10)), &[f, "timestep_spacing", "uniform", "trailing"]);
    // diffusers' own trailing spacing makes S + 1 timesteps ending at -1 here (numpy rounding).
    assert_names(&scheduler_error(|s| s.timestep_spacing = "trailing".into(), steps(61)), &[f, "steps", "-1", "another number of steps"]);
    assert_names(&scheduler_error(|s| s.steps_offset = 200, steps(10)), &[f, "1100", "steps_offset"]);
    // Thresholding with diffusers' default cap (1) is plain clipping; uncapped is dynamic.
    let mut s = SchedulerConfig::read(fixture("tiny_pipeline/scheduler/scheduler_config.json")).unwrap();
    s.thresholding = true;
    assert_eq!(s.clip().unwrap(), X0Clip::Static);
    s.sample_max_value = f64::from(f32::MAX);
    assert_eq!(s.clip().unwrap(), X0Clip::Dynamic { percentile: 0.995 });
    // A wrong type names its key.
    let e = SchedulerConfig::from_json("{\"num_train_timesteps\": \"many\"}", "s/scheduler_config.json").unwrap_err().to_string();
    assert_names(&e, &["s/scheduler_config.json", "`num_train_timesteps` = \"many\""]);
}

#[test]
fn mismatched_weights_are_refused_with_the_key_and_the_fix() {
    let (pipe, _) = tiny();
    let config = pipe.unet.ddpm_config().unwrap();
    let load = |state: &StateDict| match load_unet(config.init(&device()).unwrap(), state, "w.safetensors") {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    let good = &pipe.unet.weights;
    // A tensor the network does not have.
    let mut state = good.clone();
    state.insert("down_blocks.0.resnets.0.foo.weight".into(), good["conv_in.bias"].clone());
    assert_names(&load(&state), &["w.safetensors", "`down_blocks.0.resnets.0.foo.weight`", "not used", "layers_per_block"]);
    // A missing tensor.
    let mut state = good.clone();
    state.remove("down_blocks.1.attentions.0.to_q.weight");
    assert_names(&load(&state), &["w.safetensors", "missing `down_blocks.1.attentions.0.to_q.weight`", "down_block_types"]);
    // A wrong shape.
    let mut state = good.clone();
    let t = state.get_mut("conv_in.weight").unwrap();
    t.shape = vec![16, 1, 3, 9];
    assert_names(&load(&state), &["w.safetensors", "`conv_in.weight` has shape [16, 1, 3, 9]", "[16, 3, 3, 3]", "in_channels"]);
    // Legacy and current names for one tensor.
    let mut state = good.clone();
    state.insert("mid_block.attentions.0.query.weight".into(), good["mid_block.attentions.0.to_q.weight"].clone());
    assert_names(&load(&state), &["w.safetensors", "mid_block.attentions.0.query.weight", "legacy", "to_q"]);
    // Weights of another configuration: every difference is listed.
    let deeper = config.clone().with_num_res_blocks(2).init(&device()).unwrap();
    let e = load_unet(deeper, good, "w.safetensors").unwrap_err().to_string();
    assert_names(&e, &["missing `down_blocks.0.resnets.1.conv1.weight`", "missing `up_blocks.1.resnets.2.conv1.weight`"]);
    // A folder without weights says what it found.
    let dir = scratch("no_weights");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("tiny_pipeline/unet/config.json"), dir.join("config.json")).unwrap();
    assert_names(&read_unet_folder(&dir).unwrap_err().to_string(), &["no_weights", UNET_WEIGHTS, "found: config.json"]);
    // A folder that is not a pipeline.
    assert_names(&read_pipeline(&dir).unwrap_err().to_string(), &["model_index.json", "cannot read"]);
}

#[test]
fn ddpm_unet_norm_and_time_settings() {
    // A width the group count does not divide is an error (Burn's GroupNorm would panic).
    let e =
        DdpmUnetConfig::new().with_ch(48).with_ch_mult(vec![1]).with_resolution(8).with_attn_resolutions(vec![]).init(&Device::flex()).unwrap_err();
    assert!(e.to_string().contains("norm_num_groups") && e.to_string().contains("48"), "{e}");
    let e = DdpmUnetConfig::new().with_ch(16).with_norm_num_groups(Some(3)).init(&Device::flex()).unwrap_err();
    assert!(e.to_string().contains("`norm_num_groups` = 3"), "{e}");
    // The two roundings of exp(-ln(10000) i / (h - 1)): both within 2e-6 of the exact value, not equal.
    let (tf, hf) = (TimeFrequencies::Tensorflow.frequencies(128), TimeFrequencies::Diffusers.frequencies(128));
    let exact: Vec<f64> = (0..64).map(|i| (-(10000f64.ln()) * i as f64 / 63.0).exp()).collect();
    for (f, name) in [(&tf, "tensorflow"), (&hf, "diffusers")] {
        let worst = f.iter().zip(&exact).map(|(a, b)| ((f64::from(*a) - b) / b).abs()).fold(0.0, f64::max);
        assert!(worst < 2e-6, "{name}: {worst:e}");
    }
    assert_ne!(tf, hf);
    // diffusers' own rounding of the small network's 8 frequencies.
    let neg_ln = -(10000f64.ln()) as f32;
    assert_eq!(TimeFrequencies::Diffusers.frequencies(16), (0..8).map(|i| (neg_ln * i as f32 / 7.0).exp()).collect::<Vec<f32>>());
}
