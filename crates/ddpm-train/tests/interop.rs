//! Weights that travel: `ddpm-train sample` on a diffusers pipeline folder (no config) equals
//! diffusers' own DDIM loop from the same noise; `export --to diffusers` and `import` round-trip it.
//! Fixtures from `tests/fixtures/diffusers/make_diffusers_fixtures.py` (diffusers 0.42.1, torch 2.14.1).

use std::path::{Path, PathBuf};
use std::process::Command;

use ddpm_models::weights::read_safetensors;
use ddpm_train::npy::{read_npy, write_npy};
use ddpm_train::pipeline::{ExportFormat, Pipeline, SampleOptions, Source, StartFrom};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/diffusers"))
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ddpm-train"))
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ddpm-train-interop-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

/// The fixture's initial noise written as a `.npy`, and diffusers' DDIM result from it (10 steps,
/// eta 0, before the pipeline's `/ 2 + 0.5`).
fn noise_and_expected(dir: &Path) -> (PathBuf, Vec<f32>) {
    let checks = read_safetensors(fixtures().join("checks.safetensors")).unwrap();
    let noise = &checks["init_noise"];
    let path = dir.join("noise.npy");
    write_npy(&path, &noise.shape, &noise.data).unwrap();
    (path, checks["ddim_S10"].data.clone())
}

#[test]
fn sampling_a_diffusers_pipeline_folder_equals_diffusers_ddim() {
    let dir = tmp("cli");
    let (noise, expected) = noise_and_expected(&dir);
    let pipeline = fixtures().join("tiny_pipeline");
    let out = bin()
        .args(["sample", "--checkpoint"])
        .arg(&pipeline)
        .args(["--sampler", "ddim", "--steps", "10", "--eta", "0", "--num", "2", "--init-noise"])
        .arg(&noise)
        .arg("--save-npy")
        .arg(dir.join("ours.npy"))
        .arg("--out")
        .arg(dir.join("png"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("diffusers pipeline"), "the command says what it found: {err}");
    let ours: Vec<f32> = read_npy(&dir.join("ours.npy")).unwrap().data.iter().map(|v| v * 2.0 - 1.0).collect();
    let diff = max_diff(&ours, &expected);
    eprintln!("ddpm-train sample vs diffusers' DDIM loop: max |difference| {diff:e}");
    assert!(diff < 1e-4, "max difference to diffusers' DDIM: {diff}");
    assert!(dir.join("png/000000.png").is_file() && dir.join("png/grid.png").is_file());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_diffusers_pipeline_exports_and_imports_back_to_the_same_model() {
    let dir = tmp("roundtrip");
    let (noise, expected) = noise_and_expected(&dir);
    let noise = read_npy(&noise).unwrap().data;
    let original = fixtures().join("tiny_pipeline");
    let pipe = Pipeline::load(&original).unwrap();
    assert!(matches!(pipe.source(), Source::DiffusersPipeline(_)));
    let draw = |p: &Pipeline| p.sample_with(&SampleOptions { steps: Some(10), start: StartFrom::InitialNoise(noise.clone()), ..SampleOptions::seeds(0..2) }).unwrap().values;
    let ours = draw(&pipe);
    assert!(max_diff(&ours, &expected) < 1e-4);

    // Export: the same weights under the same names, a scheduler that gives the same process.
    let exported = dir.join("exported");
    pipe.export(ExportFormat::Diffusers, &exported).unwrap();
    for file in ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"] {
        assert!(exported.join(file).is_file(), "{file} missing");
    }
    let a = read_safetensors(original.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let b = read_safetensors(exported.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    assert_eq!(a, b, "the exported weights differ from the pipeline's");
    let again = Pipeline::load(&exported).unwrap();
    assert_eq!(draw(&again), ours, "the exported pipeline samples differently");

    // Import into a ddpm-train checkpoint folder (config translated), then sample it from the CLI's
    // library path like any checkpoint.
    let ckpt = dir.join("imported");
    let out = bin().args(["import", "--from"]).arg(&original).arg("--out").arg(&ckpt).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(ckpt.join("config.toml")).unwrap();
    assert!(text.contains("kind = \"ddpm_unet\"") && text.contains("diffusers_ddim") && text.contains("kind = \"none\""), "{text}");
    let again = bin().args(["import", "--from"]).arg(&original).arg("--out").arg(&ckpt).output().unwrap();
    let e = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && e.contains("imported") && e.contains("not empty"), "import must not replace a folder: {e}");
    let imported = Pipeline::load(&ckpt).unwrap();
    assert!(matches!(imported.source(), Source::Checkpoint(_)));
    assert_eq!(draw(&imported), ours, "the imported checkpoint samples differently");
    // A refused overwrite: export never writes into a folder that holds something.
    let e = pipe.export(ExportFormat::Diffusers, &exported).unwrap_err().to_string();
    assert!(e.contains("not empty"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bare_unet_folder_and_the_cifar10_configuration_are_read() {
    // A UNet2DModel folder with legacy attention names (query/key/value/proj_attn, a .bin) samples
    // with DDPMScheduler's defaults.
    let pipe = Pipeline::load(fixtures().join("legacy_unet")).unwrap();
    assert!(matches!(pipe.source(), Source::DiffusersUnet(_)), "{:?}", pipe.source());
    let s = pipe.sample_with(&SampleOptions { steps: Some(3), ..SampleOptions::seeds(0..1) }).unwrap();
    assert!(s.values.iter().all(|v| v.is_finite()));
    // google/ddpm-cifar10-32's JSON files translate to the DDPM paper's CIFAR-10 network.
    let dir = tmp("cifar");
    std::fs::create_dir_all(dir.join("unet")).unwrap();
    std::fs::create_dir_all(dir.join("scheduler")).unwrap();
    std::fs::copy(fixtures().join("cifar10/model_index.json"), dir.join("model_index.json")).unwrap();
    std::fs::copy(fixtures().join("cifar10/unet_config.json"), dir.join("unet/config.json")).unwrap();
    std::fs::copy(fixtures().join("cifar10/scheduler_config.json"), dir.join("scheduler/scheduler_config.json")).unwrap();
    let cfg = ddpm_train::interop::diffusers_config(&dir).unwrap();
    let Ok(ddpm_train::config::NetworkConfig::DdpmUnet(c)) = cfg.model.network() else { panic!("{:?}", cfg.model) };
    assert_eq!((c.ch, c.ch_mult.clone(), c.num_res_blocks, c.attn_resolutions.clone()), (128, vec![1, 2, 2, 2], 2, vec![16]));
    assert_eq!(ddpm_train::data::item_shape(&cfg.data).unwrap(), [3, 32, 32]);
    assert_eq!(cfg.diffusion.gaussian.timesteps, 1000);
    // Without weights the folder is refused with the file names it looked for.
    let e = Pipeline::load(&dir).err().unwrap().to_string();
    assert!(e.contains("diffusion_pytorch_model"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `hashed_uniform` of the fixture generator: splitmix64 of `(index << 32 | j)`, top 53 bits, in
/// [-0.5, 0.5); integer arithmetic, so both sides compute the same weights bit for bit.
fn hashed_uniform(index: u64, count: usize) -> impl Iterator<Item = f64> {
    (0..count as u64).map(move |j| {
        let mut z = ((index << 32) | j).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 * 2f64.powi(-53) - 0.5
    })
}

/// The generator's `hashed_state`: the 35.7 M weights of google/ddpm-cifar10-32's configuration,
/// recomputed here instead of kept in the repository.
fn hashed_weights(manifest: &Path) -> ddpm_models::weights::StateDict {
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    let shapes: std::collections::BTreeMap<String, Vec<usize>> = serde_json::from_value(m["shapes"].clone()).unwrap();
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, (key, shape))| {
            let n: usize = shape.iter().product();
            let u = hashed_uniform(i as u64, n);
            let data: Vec<f32> = if shape.len() >= 2 {
                let fan_in: usize = shape[1..].iter().product();
                u.map(|u| (u * 2.0 * (3.0 / fan_in as f64).sqrt()) as f32).collect()
            } else if key.contains("norm") && key.ends_with("weight") {
                u.map(|u| (1.0 + 0.1 * u) as f32).collect()
            } else {
                u.map(|u| (0.1 * u) as f32).collect()
            };
            (key, ddpm_models::weights::RefTensor { shape, data, integer: false })
        })
        .collect()
}

/// google/ddpm-cifar10-32's whole network (its configuration, weights from a hash both sides
/// compute): the same forward pass as diffusers, and `Pipeline` sampling from the pipeline folder
/// equals diffusers' DDIM loop from the same noise.
#[test]
fn the_ddpm_cifar10_32_network_computes_what_diffusers_computes() {
    use burn::tensor::{Device, Int, Tensor, TensorData};
    let cifar = fixtures().join("cifar10");
    let numbers = read_safetensors(cifar.join("numbers.safetensors")).unwrap();
    let dir = tmp("cifar10-numbers");
    std::fs::create_dir_all(dir.join("unet")).unwrap();
    std::fs::create_dir_all(dir.join("scheduler")).unwrap();
    std::fs::copy(cifar.join("model_index.json"), dir.join("model_index.json")).unwrap();
    std::fs::copy(cifar.join("unet_config.json"), dir.join("unet/config.json")).unwrap();
    std::fs::copy(cifar.join("scheduler_config.json"), dir.join("scheduler/scheduler_config.json")).unwrap();
    ddpm_models::weights::write_safetensors(dir.join("unet/diffusion_pytorch_model.safetensors"), &hashed_weights(&cifar.join("state_dict_manifest.json"))).unwrap();

    let device = Device::flex();
    let net = ddpm_models::diffusers::read_pipeline(&dir).unwrap().unet.init(&device).unwrap();
    let (x, t) = (&numbers["x"], &numbers["t"]);
    let x = Tensor::<4>::from_data(TensorData::new(x.data.clone(), x.shape.clone()), &device);
    let t = Tensor::<1, Int>::from_data(TensorData::new(t.data.iter().map(|&v| v as i64).collect::<Vec<_>>(), t.shape.clone()), &device).float();
    let out = net.forward(x, t).into_data().try_to_vec::<f32>().unwrap();
    let err = max_diff(&out, &numbers["forward"].data);
    eprintln!("cifar10 network: max |difference| to diffusers' forward {err:e}");
    assert!(err < 1e-4, "the network's output differs from diffusers' by {err}");

    let pipe = Pipeline::load(&dir).unwrap();
    let noise = numbers["init_noise"].data.clone();
    let ours = pipe.sample_with(&SampleOptions { steps: Some(10), start: StartFrom::InitialNoise(noise), ..SampleOptions::seeds(0..1) }).unwrap().values;
    // An untrained network lets DDIM amplify float32 rounding (diffusers' own float32 loop ends
    // 7.1e-5 from its float64 loop): compare with the float64 loop, the exact result.
    let steps64 = &numbers["ddim_S10.steps_f64"];
    let exact = &steps64.data[steps64.data.len() - ours.len()..];
    let (err, err32) = (max_diff(&ours, exact), max_diff(&ours, &numbers["ddim_S10"].data));
    eprintln!("cifar10 DDIM-10: max |difference| {err:e} to diffusers' float64 loop, {err32:e} to its float32 loop");
    assert!(err < 1e-4, "DDIM differs from diffusers' (float64) loop by {err}");
    std::fs::remove_dir_all(&dir).ok();
}
