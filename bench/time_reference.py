#!/usr/bin/env python3
"""CPU timings of the reference denoising-diffusion-pytorch 2.3.4 (lucidrains).

Run in a Python environment with torch and denoising-diffusion-pytorch==2.3.4:
    python time_reference.py > reference-timings.json

Prints one JSON object. PEER_DEVICE=cuda times the same cases in eager PyTorch on the GPU (with
torch.cuda.synchronize() around each timed call); the default is the CPU with PEER_THREADS threads. For each config (the two Unets below, and `toy_mlp`: the same network as
ddpm-rs's `Mlp` on 2-D points, batch 1000, see `time_toy_mlp`):
  - params: number of parameters of the Unet (== GaussianDiffusion parameters)
  - train_step_s: median wall seconds of one training step = GaussianDiffusion(img) loss
    (random t, random noise, default objective pred_v, sigmoid schedule, T=1000) + backward
    + Adam step (lr 1e-4, betas (0.9, 0.99) as the package's Trainer) + zero_grad;
    2 warm-up steps, then `steps` timed steps. (No grad clipping / EMA, which Trainer adds.)
  - denoise_forward_s: median wall seconds of one Unet forward under torch.no_grad()
    (one sampling step's network cost), same batch, random t; 2 warm-ups then `steps` timed.
  - peak_rss_bytes: the process's peak resident memory when the config had run (Linux reports
    KiB): that config's own peak when it runs alone, as PEER_CASES=default_dim64 (a comma-separated
    list of config names; default all three) makes it.
"""
import json
import os
import platform
import resource
import statistics
import sys
import time

os.environ.setdefault("TQDM_DISABLE", "1")
import torch
from torch.optim import Adam

from denoising_diffusion_pytorch import GaussianDiffusion, Unet
from denoising_diffusion_pytorch.version import __version__ as DDP_VERSION

NUM_THREADS = int(os.environ.get("PEER_THREADS", "2"))
# "cpu" (default) or "cuda": eager PyTorch on the GPU, timed with torch.cuda.synchronize().
DEVICE = torch.device(os.environ.get("PEER_DEVICE", "cpu"))
WARMUP = 2
STEPS = int(os.environ.get("PEER_STEPS", "5"))

torch.set_num_threads(NUM_THREADS)


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cpu_simd_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return sorted(f for f in flags if f in {"avx", "avx2", "fma", "avx512f", "avx512bw",
                                                           "avx512_vnni", "avx512_bf16", "amx_tile"})
    except OSError:
        pass
    return []


def time_config(name, unet_kwargs, image_size, batch, seed=0):
    torch.manual_seed(seed)
    model = Unet(**unet_kwargs)
    diffusion = GaussianDiffusion(model, image_size=image_size, timesteps=1000).to(DEVICE)
    params = sum(p.numel() for p in diffusion.parameters())
    opt = Adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))
    data = torch.rand(batch, unet_kwargs.get("channels", 3), image_size, image_size, device=DEVICE)

    diffusion.train()
    train_times, losses = [], []
    for i in range(WARMUP + STEPS):
        sync()
        t0 = time.perf_counter()
        loss = diffusion(data)
        loss.backward()
        opt.step()
        opt.zero_grad()
        sync()
        dt = time.perf_counter() - t0
        losses.append(loss.detach().item())
        if i >= WARMUP:
            train_times.append(dt)

    diffusion.eval()
    fwd_times = []
    x = torch.randn(batch, unet_kwargs.get("channels", 3), image_size, image_size, device=DEVICE)
    with torch.no_grad():
        for i in range(WARMUP + STEPS):
            t = torch.randint(0, 1000, (batch,), device=DEVICE)
            sync()
            t0 = time.perf_counter()
            out = model(x, t)
            sync()
            dt = time.perf_counter() - t0
            if i >= WARMUP:
                fwd_times.append(dt)
    assert out.shape == x.shape

    return {
        "name": name,
        "unet": {k: (list(v) if isinstance(v, tuple) else v) for k, v in unet_kwargs.items()},
        "gaussian_diffusion": {"image_size": image_size, "timesteps": 1000,
                               "objective": diffusion.objective, "beta_schedule": "sigmoid (default)"},
        "batch": batch,
        "params": params,
        "train_step_s": {"median": statistics.median(train_times), "all": train_times,
                         "warmup": WARMUP, "timed": STEPS},
        "denoise_forward_s": {"median": statistics.median(fwd_times), "all": fwd_times,
                              "warmup": WARMUP, "timed": STEPS},
        "train_losses": losses,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ToyMlp(torch.nn.Module):
    """The same network as ddpm-rs's `Mlp` (features 2, hidden 128, 3 residual temporal layers with
    LayerNorm and SiLU, sinusoidal time embedding of width `hidden`, then Linear and SiLU)."""

    def __init__(self, features=2, hidden=128, num_layers=3):
        super().__init__()
        L = torch.nn.Linear
        self.hidden = hidden
        self.input, self.time_proj = L(features, hidden), L(hidden, hidden)
        self.layers = torch.nn.ModuleList(torch.nn.ModuleDict(dict(
            norm1=torch.nn.LayerNorm(hidden), fc1=L(hidden, hidden), time=L(hidden, hidden),
            norm2=torch.nn.LayerNorm(hidden), fc2=L(hidden, hidden))) for _ in range(num_layers))
        self.out_norm, self.output = torch.nn.LayerNorm(hidden), L(hidden, features)

    def forward(self, x, t):
        half = self.hidden // 2
        freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(half) / (half - 1))
        emb = torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], 1)
        temb = torch.nn.functional.silu(self.time_proj(emb))
        h = self.input(x)
        for l in self.layers:
            a = l["fc1"](torch.nn.functional.silu(l["norm1"](h))) + l["time"](temb)
            h = h + l["fc2"](torch.nn.functional.silu(l["norm2"](a)))
        return self.output(torch.nn.functional.silu(self.out_norm(h)))


def time_toy_mlp(name="toy_mlp", batch=1000, timesteps=100, steps=50, seed=0):
    """Diffusion training on 2-D points (eps objective, linear betas 1e-3..0.2 as tqch's toy runs, Adam
    lr 1e-3) and the no-grad forward, with the network above."""
    torch.manual_seed(seed)
    net = ToyMlp().to(DEVICE)
    betas = torch.linspace(1e-3, 0.2, timesteps, device=DEVICE)
    abar = torch.cumprod(1 - betas, 0)
    opt = Adam(net.parameters(), lr=1e-3)
    data = torch.randn(batch, 2, device=DEVICE)
    train_times, fwd_times = [], []
    for i in range(WARMUP + steps):
        sync()
        t0 = time.perf_counter()
        t = torch.randint(0, timesteps, (batch,), device=DEVICE)
        noise = torch.randn_like(data)
        a = abar[t][:, None]
        loss = torch.nn.functional.mse_loss(net(a.sqrt() * data + (1 - a).sqrt() * noise, t.float()), noise)
        loss.backward()
        opt.step()
        opt.zero_grad()
        sync()
        if i >= WARMUP:
            train_times.append(time.perf_counter() - t0)
    with torch.no_grad():
        for i in range(WARMUP + steps):
            t = torch.randint(0, timesteps, (batch,), device=DEVICE).float()
            sync()
            t0 = time.perf_counter()
            net(data, t)
            sync()
            if i >= WARMUP:
                fwd_times.append(time.perf_counter() - t0)
    return {"name": name, "batch": batch, "params": sum(p.numel() for p in net.parameters()),
            "train_step_s": {"median": statistics.median(train_times), "all": train_times, "warmup": WARMUP, "timed": steps},
            "denoise_forward_s": {"median": statistics.median(fwd_times), "all": fwd_times, "warmup": WARMUP, "timed": steps},
            "peak_rss_bytes": peak_rss_bytes()}


def main():
    t_start = time.perf_counter()
    cases = {
        "default_dim64": lambda: time_config("default_dim64", dict(dim=64, dim_mults=(1, 2, 4, 8), channels=3, flash_attn=False),
                                             image_size=32, batch=16),
        "small_dim32": lambda: time_config("small_dim32", dict(dim=32, dim_mults=(1, 2, 2), channels=3, flash_attn=False),
                                           image_size=32, batch=32),
        "toy_mlp": time_toy_mlp,
    }
    wanted = [c.strip() for c in os.environ.get("PEER_CASES", ",".join(cases)).split(",") if c.strip()]
    unknown = [c for c in wanted if c not in cases]
    if unknown:
        sys.exit(f"PEER_CASES: unknown case(s) {', '.join(unknown)}; the cases are {', '.join(cases)}")
    configs = [cases[c]() for c in wanted]
    out = {
        "description": ("CPU timings of denoising-diffusion-pytorch (reference implementation). "
                        "Medians of wall-clock seconds via time.perf_counter."),
        "package_version": DDP_VERSION,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "cpu_model": cpu_model(),
        "device": str(DEVICE),
        "gpu_name": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else None,
        "logical_cpus": os.cpu_count(),
        "cpu_simd_flags": cpu_simd_flags(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "configs": configs,
        "total_wall_s": time.perf_counter() - t_start,
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
