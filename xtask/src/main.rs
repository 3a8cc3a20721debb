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
//! - `cargo xtask bench-vs-torch [--iters N]`: `examples/bench_unet.rs` and the PyTorch reference
//!   (`bench/time_reference.py`, denoising-diffusion-pytorch 2.3.4 on torch) back to back on this
//!   machine, and the table of their ratios. The reference runs in `DDPM_BENCH_PYTHON` (default
//!   `.venv/bin/python`, then `python3`); without torch there it says how to install it and skips.
//! - `cargo xtask gpu-bench [--iters N] [--device vulkan]`: the same cases on a GPU: ours built with
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

/// `(case, train_step_s, forward_s)` of our bench's JSON lines.
fn our_timings(stdout: &str) -> Vec<(String, f64, f64)> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["case"].as_str()?.to_string(), v["train_step_s"].as_f64()?, v["forward_s"].as_f64()?)))
        .collect()
}

fn bench_vs_torch(target: Target) -> Result<f64, String> {
    let start = Instant::now();
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
    let mut args = vec!["run", "--release"];
    if target == Target::Gpu {
        args.extend(["--features", "vulkan"]);
    }
    args.extend(["--example", "bench_unet", "--", "--iters", &iters, "--device", &device]);
    let mut ours = cargo(&args, &[]);
    eprintln!("==> ours: {ours:?}");
    let out = ours.output().map_err(|e| format!("could not start cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("bench_unet failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    let ours = our_timings(&String::from_utf8_lossy(&out.stdout));
    let Some(python) = python else {
        println!("device: {device} (ours only)");
        println!("| case | train step ours | forward ours |");
        println!("|---|---|---|");
        for (case, train, forward) in ours {
            println!("| {case} | {:.1} ms | {:.1} ms |", train * 1e3, forward * 1e3);
        }
        return Ok(start.elapsed().as_secs_f64());
    };
    let peer_device = if target == Target::Gpu { "cuda" } else { "cpu" };
    eprintln!("==> reference: {python} bench/time_reference.py (PEER_DEVICE={peer_device}, PEER_THREADS={threads}, PEER_STEPS={iters})");
    let out = Command::new(&python)
        .arg("bench/time_reference.py")
        .env("PEER_THREADS", &threads)
        .env("PEER_STEPS", &iters)
        .env("PEER_DEVICE", peer_device)
        .output()
        .map_err(|e| format!("could not start {python}: {e}"))?;
    if !out.status.success() {
        return Err(format!("the reference failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    let reference: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("the reference printed no JSON ({e})"))?;
    let configs = reference["configs"].as_array().cloned().unwrap_or_default();
    let reference_of = |case: &str| {
        let name = match case {
            "unet64" => "default_dim64",
            "unet32" => "small_dim32",
            "mlp_toy" => "toy_mlp",
            other => other,
        };
        let c = configs.iter().find(|c| c["name"] == name)?;
        // The best of the timed steps where the reference lists them (as ours is), else its median.
        let best = |v: &serde_json::Value| {
            let all = v["all"].as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).fold(f64::INFINITY, f64::min));
            all.filter(|b| b.is_finite()).or_else(|| v["median"].as_f64())
        };
        Some((best(&c["train_step_s"])?, best(&c["denoise_forward_s"])?))
    };
    let machine = match target {
        Target::Cpu => format!("{} ({threads} threads each side)", reference["cpu_model"].as_str().unwrap_or("?")),
        Target::Gpu => format!("{} (ours: {device}; PyTorch: CUDA eager)", reference["gpu_name"].as_str().unwrap_or("?")),
    };
    println!(
        "machine: {machine}; torch {}, denoising-diffusion-pytorch {}",
        reference["torch_version"].as_str().unwrap_or("?"),
        reference["package_version"].as_str().unwrap_or("?"),
    );
    println!("| case | train step ours | PyTorch | ratio | forward ours | PyTorch | ratio |");
    println!("|---|---|---|---|---|---|---|");
    for (case, train, forward) in ours {
        match reference_of(&case) {
            Some((t_ref, f_ref)) => println!(
                "| {case} | {:.1} ms | {:.1} ms | {:.2}x | {:.1} ms | {:.1} ms | {:.2}x |",
                train * 1e3, t_ref * 1e3, train / t_ref, forward * 1e3, f_ref * 1e3, forward / f_ref
            ),
            None => println!("| {case} | {:.1} ms | - | - | {:.1} ms | - | - |", train * 1e3, forward * 1e3),
        }
    }
    println!("(ratio = ours / PyTorch's time, below 1 is faster; best of the timed steps on both sides)");
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
