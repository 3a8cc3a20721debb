"""The computations of bench_metrics.rs with the reference Python implementations, timed.

    python crates/ddpm-eval/examples/bench_metrics.py [ROWS DIM]

Needs numpy, scipy, pytorch-fid and prdc (which brings scikit-learn). Features are float32 like
Inception activations; statistics are np.mean/np.cov as pytorch-fid computes them, the distance is
pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm), PRDC is prdc.compute_prdc (k = 3),
KID is torch-fidelity's estimator (100 subsets of 1000, cubic kernel), re-implemented in numpy.
"""

import contextlib
import io
import os
import sys
import time

import numpy as np
import prdc
from pytorch_fid.fid_score import calculate_frechet_distance


def timed(label, work):
    start = time.perf_counter()
    result = work()
    print(f"{label:<52} {time.perf_counter() - start:>8.2f} s", flush=True)
    return result


def features(rng, rows, dim, offset):
    return (rng.random((rows, dim), dtype=np.float32) + offset * (np.arange(dim, dtype=np.float32) / dim)).astype(np.float32)


def stats(f):
    return np.mean(f, axis=0), np.cov(f, rowvar=False)


def quiet_prdc(real, fake):
    # compute_prdc prints the set sizes.
    with contextlib.redirect_stdout(io.StringIO()):
        return prdc.compute_prdc(real, fake, 3)


def kid(f1, f2, subsets=100, subset_size=1000, seed=0):
    rng = np.random.RandomState(seed)
    d = f1.shape[1]
    mmds = np.zeros(subsets)
    for i in range(subsets):
        x = f1[rng.choice(len(f1), subset_size, replace=False)].astype(np.float64)
        y = f2[rng.choice(len(f2), subset_size, replace=False)].astype(np.float64)
        k_xx, k_yy, k_xy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        m = subset_size
        mmds[i] = ((k_xx.sum() - np.trace(k_xx)) + (k_yy.sum() - np.trace(k_yy))) / (m * (m - 1)) - 2 * k_xy.sum() / m**2
    return mmds.mean(), mmds.std()


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    dim = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
    print(f"{os.cpu_count()} cpus; {rows} x {dim} features per set; numpy {np.__version__}")
    rng = np.random.default_rng(0)
    real = features(rng, rows, dim, 0.0)
    fake = features(rng, rows, dim, 0.02)
    mu1, sigma1 = timed(f"stats of {rows} x {dim} (real)", lambda: stats(real))
    mu2, sigma2 = timed(f"stats of {rows} x {dim} (fake)", lambda: stats(fake))
    fid = timed("Frechet distance (pytorch-fid, scipy sqrtm)", lambda: calculate_frechet_distance(mu1, sigma1, mu2, sigma2))
    print(f"  FID {fid:.6f}")
    result = timed(f"PRDC {rows} x {rows} x {dim}, k = 3 (prdc)", lambda: quiet_prdc(real, fake))
    print("  " + " ".join(f"{k} {v:.4f}" for k, v in result.items()))
    mean, std = timed("KID, 100 subsets of 1000 (numpy)", lambda: kid(real, fake, subset_size=min(1000, rows)))
    print(f"  KID {mean:.6f} ± {std:.6f}")
    del real, fake
    big = features(rng, 5 * rows, dim, 0.0)
    timed(f"stats of {5 * rows} x {dim}", lambda: stats(big))


if __name__ == "__main__":
    main()
