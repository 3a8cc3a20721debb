"""pytorch-fid's side of `bench_inception.rs`: the same batch of 32x32 images in [0, 1] through
pytorch-fid 0.3.0's `InceptionV3([3])` (resize to 299, 2x-1, pool3 features), on the CPU.

    /work/refenv/bin/python crates/ddpm-eval/examples/bench_inception.py \
        [--batch 50] [--iters 3] [--size 32] [--threads N] [--weights pt_inception-2015-12-05.safetensors]

Without `--weights` the network has torchvision's random initialisation (the download is
replaced), which costs the same. Prints one JSON object like the Rust example.
"""

import argparse
import json
import os
import time

import torch

import pytorch_fid.inception as pfi


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--weights", help="pt_inception-2015-12-05.safetensors (pytorch-fid's keys)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.weights:
        from safetensors.torch import load_file

        state = load_file(args.weights)
        state["fc.weight"] = torch.zeros(1008, 2048)
        state["fc.bias"] = torch.zeros(1008)
    else:
        # torchvision's randomly initialised network has the same keys as the FID one.
        state = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None).state_dict()
    pfi.load_state_dict_from_url = lambda *a, **k: state  # instead of the download
    model = pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval()

    images = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))

    def run():
        start = time.perf_counter()
        with torch.no_grad():
            features = model(images)[0].squeeze(3).squeeze(2).numpy()
        assert features.shape == (args.batch, 2048)
        return time.perf_counter() - start

    warmup = run()
    times = sorted(run() for _ in range(max(args.iters, 1)))
    median = times[len(times) // 2]
    print(json.dumps({
        "case": "pytorch_fid_inception", "torch": torch.__version__, "weights": "fid" if args.weights else "random",
        "batch": args.batch, "input": f"{args.size}x{args.size}", "warmup_s": round(warmup, 3),
        "median_s": round(median, 3), "images_per_s": round(args.batch / median, 2), "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
