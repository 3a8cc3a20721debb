//! `cargo xtask ci` runs what CI runs, part by part, and prints how long each part took.
//!
//! - `cargo xtask test`: the README's test command (`cargo test --workspace`, Flex).
//! - `cargo xtask vulkan`: the tests of ddpm-core and ddpm-models on WGPU over Vulkan (lavapipe on
//!   a CPU-only machine: install `mesa-vulkan-drivers libvulkan1`).
//! - `cargo xtask cuda-check`: type-checks the CUDA backend offline (`DOCS_RS=1` skips the LLVM
//!   download in cubecl's build scripts; the result cannot be linked).
//! - `cargo xtask ci`: all three, in that order.

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
                &["test", "--no-fail-fast", "-p", "ddpm-core", "-p", "ddpm-models", "--features", "wgpu"],
                &[("DDPM_DEVICE", "wgpu:cpu"), ("CUBECL_AUTOTUNE_LEVEL", "minimal")],
            ),
        )
    };
    let cuda = || part("cuda type-check", cargo(&["check", "--workspace", "--features", "cuda"], &[("DOCS_RS", "1")]));
    let mut times = Vec::new();
    match task {
        "test" => times.push(("test".into(), test()?)),
        "vulkan" => times.push(("vulkan".into(), vulkan()?)),
        "cuda-check" => times.push(("cuda-check".into(), cuda()?)),
        "ci" => {
            times.push(("test".into(), test()?));
            times.push(("vulkan".into(), vulkan()?));
            times.push(("cuda-check".into(), cuda()?));
        }
        other => return Err(format!("unknown task `{other}`; use ci, test, vulkan or cuda-check")),
    }
    Ok(times)
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
