//! `cargo xtask ci` runs what CI runs, part by part, and prints how long each part took.
//!
//! - `cargo xtask test`: the README's test command (`cargo test --workspace`, Flex).
//! - `cargo xtask vulkan`: the tests of ddpm-core and ddpm-models on WGPU over Vulkan (lavapipe on
//!   a CPU-only machine: install `mesa-vulkan-drivers libvulkan1`).
//! - `cargo xtask cuda-check`: type-checks the CUDA backend offline (`DOCS_RS=1` skips the LLVM
//!   download in cubecl's build scripts; the result cannot be linked).
//! - `cargo xtask lean`: type-checks ddpm-train as an embedder takes it, without default features
//!   (no ddpm-eval, no HTTP client), on Flex.
//! - `cargo xtask ci`: all four, in that order.
//! - `cargo xtask bench-vs-torch [--iters N] [--rounds R]`: `examples/bench_unet.rs` and the
//!   PyTorch reference (`bench/time_reference.py`, denoising-diffusion-pytorch 2.3.4 on torch) back
//!   to back on this machine, case by case and each in a process of its own, and the table of their
//!   ratios: train step, no-grad forward and the process's peak resident memory. With `--rounds R`
//!   the two sides take turns R times per case and each keeps its best time (and largest peak), so
//!   a slow spell of a shared machine falls on both sides instead of on one. The reference runs in
//!   `DDPM_BENCH_PYTHON` (default `.venv/bin/python`, then `python3`); without torch there it says
//!   how to install it and skips.
//! - `cargo xtask gpu-bench [--iters N] [--rounds R] [--device vulkan]`: the same cases on a GPU: ours built with
//!   the `vulkan` feature (CubeCL's SPIR-V compiler, tensor cores where the driver offers them) on
//!   `--device` (default `vulkan`), and PyTorch CUDA eager (`PEER_DEVICE=cuda`) when the reference
//!   Python has a CUDA torch; without one it prints our side alone.

use std::process::{Command, ExitCode};
use std::time::Instant;

fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

fn part(name: &str, mut cmd: Command) -> Result<f64, String> {
    eprintln!("==> {name}: {cmd:?}");
    let start = Instant::now();
    let status = cmd.status().map_err(|e| format!("{name}: could not start cargo: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!("==> {name}: {} in {secs:.0} s", if status.success() { "ok" } else { "FAILED" });
    if status.success() { Ok(secs) } else { Err(format!("{name} failed ({status})")) }
}

fn vulkan_icd_present() -> bool {
    ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d"]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".json"))
}

fn run(task: &str) -> Result<Vec<(String, f64)>, String> {
    let test = || part("test (README)", cargo(&["test", "--workspace"], &[]));
    let vulkan = || {
        // Without a Vulkan driver wgpu would silently fall back to GL and crash; refuse instead.
        if !vulkan_icd_present() {
            return Err("no Vulkan driver found (no ICD json under /usr/share/vulkan/icd.d); \
                        install mesa-vulkan-drivers and libvulkan1"
                .into());
        }
        // The `wgpu` feature (WGSL through naga) rather than `vulkan`: with `vulkan`, CubeCL compiles
        // to SPIR-V itself, and Debian 12's lavapipe (Mesa 22.3) segfaults creating some of those
        // compute pipelines (every U-Net forward pass); the WGSL path runs on the same Vulkan driver.
        part(
            "ddpm-core and ddpm-models on WGPU (Vulkan, lavapipe)",
            cargo(
                &["test", "--no-fail-fast", "-p", "ddpm-core", "-p", "ddpm-models", "--features", "ddpm-io/wgpu"],
                &[("DDPM_DEVICE", "wgpu:cpu"), ("CUBECL_AUTOTUNE_LEVEL", "minimal")],
            ),
        )
    };
    let cuda = || part("cuda type-check", cargo(&["check", "--workspace", "--features", "cuda"], &[("DOCS_RS", "1")]));
    let lean = || part("ddpm-train without default features", cargo(&["check", "-p", "ddpm-train", "--lib", "--no-default-features", "--features", "flex"], &[]));
    let mut times = Vec::new();
    match task {
        "test" => times.push(("test".into(), test()?)),
        "vulkan" => times.push(("vulkan".into(), vulkan()?)),
        "cuda-check" => times.push(("cuda-check".into(), cuda()?)),
        "lean" => times.push(("lean".into(), lean()?)),
        "ci" => {
            times.push(("test".into(), test()?));
            times.push(("vulkan".into(), vulkan()?));
            times.push(("cuda-check".into(), cuda()?));
            times.push(("lean".into(), lean()?));
        }
        "bench-vs-torch" => times.push(("bench-vs-torch".into(), bench_vs_torch(Target::Cpu)?)),
        "gpu-bench" => times.push(("gpu-bench".into(), bench_vs_torch(Target::Gpu)?)),
        other => return Err(format!("unknown task `{other}`; use ci, test, vulkan, cuda-check, lean, bench-vs-torch or gpu-bench")),
    }
    Ok(times)
}

/// Where the side-by-side comparison runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Flex (our kernels) against PyTorch on the CPU, the same number of threads each side.
    Cpu,
    /// Our `vulkan` build against PyTorch CUDA eager.
    Gpu,
}

/// The value after `--name` on the command line.
fn flag(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

/// The Python that has torch and denoising-diffusion-pytorch, or why there is none.
fn reference_python() -> Result<String, String> {
    let candidates: Vec<String> = match std::env::var("DDPM_BENCH_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec![".venv/bin/python".into(), "python3".into()],
    };
    let probe = "import torch, denoising_diffusion_pytorch.version as v; print(torch.__version__, v.__version__)";
    for python in &candidates {
        if let Ok(out) = Command::new(python).args(["-c", probe]).output()
            && out.status.success()
        {
            eprintln!("==> reference: {python} (torch, denoising-diffusion-pytorch: {})", String::from_utf8_lossy(&out.stdout).trim());
            return Ok(python.clone());
        }
    }
    Err(format!(
        "no Python with torch and denoising-diffusion-pytorch (tried {}). Make one with\n  \
         python3 -m venv .venv && .venv/bin/pip install torch==2.14.1 denoising-diffusion-pytorch==2.3.4\n\
         (or point DDPM_BENCH_PYTHON at one); skipping the comparison",
        candidates.join(", ")
    ))
}

/// One side's numbers for one case.
#[derive(Clone, Copy)]
struct Measured {
    train_s: f64,
    forward_s: f64,
    /// The peak resident memory of a process that ran this case alone (host memory; `None` where
    /// the side does not say).
    peak_rss_bytes: Option<f64>,
}

impl Measured {
    /// The best times of two runs of the same case, and the larger peak.
    fn best(self, other: Self) -> Self {
        let peak_rss_bytes = match (self.peak_rss_bytes, other.peak_rss_bytes) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Self { train_s: self.train_s.min(other.train_s), forward_s: self.forward_s.min(other.forward_s), peak_rss_bytes }
    }
}

/// Our cases and the reference's names for them.
const CASES: [(&str, &str); 3] = [("unet64", "default_dim64"), ("unet32", "small_dim32"), ("mlp_toy", "toy_mlp")];

/// Our bench's JSON line for one case.
fn ours(bench: &[&str], case: &str) -> Result<Measured, String> {
    let mut args = bench.to_vec();
    args.extend(["--case", case]);
    let mut cmd = cargo(&args, &[]);
    eprintln!("==> ours: {cmd:?}");
    let out = cmd.output().map_err(|e| format!("could not start cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("bench_unet failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["case"] == case)
        .and_then(|v| Some(Measured { train_s: v["train_step_s"].as_f64()?, forward_s: v["forward_s"].as_f64()?, peak_rss_bytes: v["peak_rss_bytes"].as_f64() }))
        .ok_or_else(|| format!("bench_unet printed no line for {case}"))
}

/// The reference's numbers for one case, run in a process of its own (so its peak memory is the
/// case's), and the reference's whole JSON object (machine, versions).
fn reference(python: &str, envs: &[(&str, &str)], name: &str) -> Result<(Measured, serde_json::Value), String> {
    eprintln!("==> reference: {python} bench/time_reference.py (PEER_CASES={name}, {envs:?})");
    let out = Command::new(python)
        .arg("bench/time_reference.py")
        .envs(envs.iter().copied())
        .env("PEER_CASES", name)
        .output()
        .map_err(|e| format!("could not start {python}: {e}"))?;
    if !out.status.success() {
        return Err(format!("the reference failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("the reference printed no JSON ({e})"))?;
    let c = all["configs"].as_array().and_then(|cs| cs.iter().find(|c| c["name"] == name)).ok_or_else(|| format!("the reference printed no config {name}"))?;
    // The best of the timed steps where the reference lists them (as ours is), else its median.
    let best = |v: &serde_json::Value| {
        let all = v["all"].as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).fold(f64::INFINITY, f64::min));
        all.filter(|b| b.is_finite()).or_else(|| v["median"].as_f64())
    };
    let measured = Measured {
        train_s: best(&c["train_step_s"]).ok_or("the reference printed no train_step_s")?,
        forward_s: best(&c["denoise_forward_s"]).ok_or("the reference printed no denoise_forward_s")?,
        peak_rss_bytes: c["peak_rss_bytes"].as_f64(),
    };
    Ok((measured, all))
}

fn bench_vs_torch(target: Target) -> Result<f64, String> {
    let start = Instant::now();
    let rounds = match flag("--rounds") {
        None => 1,
        Some(r) => match r.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("--rounds {r:?}: not a number of rounds; write a whole number from 1, e.g. --rounds 3")),
        },
    };
    let python = match reference_python() {
        Ok(p) => Some(p),
        Err(why) if target == Target::Cpu => {
            eprintln!("xtask bench-vs-torch: {why}");
            return Ok(0.0);
        }
        Err(why) => {
            eprintln!("xtask gpu-bench: {why}\n(timing our side only)");
            None
        }
    };
    // PyTorch on the GPU only where its torch has CUDA and sees a device.
    let python = match (target, python) {
        (Target::Gpu, Some(p)) => {
            let cuda = Command::new(&p).args(["-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"]).status();
            if cuda.is_ok_and(|s| s.success()) {
                Some(p)
            } else {
                eprintln!("xtask gpu-bench: {p}'s torch sees no CUDA device; timing our side only");
                None
            }
        }
        (_, p) => p,
    };
    let iters = flag("--iters").unwrap_or_else(|| "5".into());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string();
    let device = match target {
        Target::Cpu => "flex".to_string(),
        Target::Gpu => flag("--device").unwrap_or_else(|| "vulkan".into()),
    };
    let mut bench = vec!["run", "--release"];
    if target == Target::Gpu {
        bench.extend(["--features", "vulkan"]);
    }
    bench.extend(["--example", "bench_unet", "--", "--iters", &iters, "--device", &device]);
    let peer_device = if target == Target::Gpu { "cuda" } else { "cpu" };
    let envs = [("PEER_THREADS", threads.as_str()), ("PEER_STEPS", iters.as_str()), ("PEER_DEVICE", peer_device)];
    // Case by case, ours then the reference's, each side in a process of its own: the two sides of
    // a row are measured minutes apart at most, and each peak is the case's own.
    let mut rows: Vec<(&str, Measured, Option<Measured>)> = Vec::new();
    let mut about = serde_json::Value::Null;
    for round in 0..rounds {
        if rounds > 1 {
            eprintln!("==> round {} of {rounds}", round + 1);
        }
        for (i, (case, name)) in CASES.into_iter().enumerate() {
            let our = ours(&bench, case)?;
            let theirs = match &python {
                Some(p) => {
                    let (m, all) = reference(p, &envs, name)?;
                    about = all;
                    Some(m)
                }
                None => None,
            };
            match rows.get_mut(i) {
                None => rows.push((case, our, theirs)),
                Some((_, best_ours, best_theirs)) => {
                    *best_ours = best_ours.best(our);
                    *best_theirs = match (*best_theirs, theirs) {
                        (Some(a), Some(b)) => Some(a.best(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
    }
    let ms = |s: f64| format!("{:.1} ms", s * 1e3);
    let mib = |b: Option<f64>| b.map_or("-".to_string(), |b| format!("{:.0} MiB", b / (1 << 20) as f64));
    if python.is_none() {
        println!("device: {device} (ours only)");
        println!("| case | train step ours | forward ours |");
        println!("|---|---|---|");
        for (case, our, _) in &rows {
            println!("| {case} | {} | {} |", ms(our.train_s), ms(our.forward_s));
        }
        return Ok(start.elapsed().as_secs_f64());
    }
    let machine = match target {
        Target::Cpu => format!("{} ({threads} threads each side)", about["cpu_model"].as_str().unwrap_or("?")),
        Target::Gpu => format!("{} (ours: {device}; PyTorch: CUDA eager)", about["gpu_name"].as_str().unwrap_or("?")),
    };
    println!(
        "machine: {machine}; torch {}, denoising-diffusion-pytorch {}",
        about["torch_version"].as_str().unwrap_or("?"),
        about["package_version"].as_str().unwrap_or("?"),
    );
    println!("| case | train step ours | PyTorch | ratio | forward ours | PyTorch | ratio | peak RSS ours | PyTorch | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (case, our, theirs) in &rows {
        let theirs = theirs.as_ref().expect("a reference row on every case");
        let memory_ratio = match (our.peak_rss_bytes, theirs.peak_rss_bytes) {
            (Some(a), Some(b)) if target == Target::Cpu => format!("{:.2}x", a / b),
            _ => "-".to_string(),
        };
        println!(
            "| {case} | {} | {} | {:.2}x | {} | {} | {:.2}x | {} | {} | {memory_ratio} |",
            ms(our.train_s), ms(theirs.train_s), our.train_s / theirs.train_s,
            ms(our.forward_s), ms(theirs.forward_s), our.forward_s / theirs.forward_s,
            mib(our.peak_rss_bytes), mib(theirs.peak_rss_bytes),
        );
    }
    println!("(ratio = ours / PyTorch's, below 1 is faster or smaller; best of the timed steps on both sides, over {rounds} round(s) of taking turns;");
    println!(" peak RSS = the peak resident memory of a process that ran that case alone: forward and training steps)");
    Ok(start.elapsed().as_secs_f64())
}

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_else(|| "ci".into());
    match run(&task) {
        Ok(times) => {
            for (name, secs) in times {
                eprintln!("{name:>12}: {secs:6.0} s");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
