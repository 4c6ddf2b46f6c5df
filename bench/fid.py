"""Benchmark of `cxraug fid`: Inception-v3 feature extraction speed against a measured
roofline, XLA on/off, batch sizes, and the speed-up the feature cache gives a second run.

    .venv/bin/python bench/fid.py            # full run (~5-10 min on 2 cores)
    .venv/bin/python bench/fid.py --quick    # smoke run (~1-2 min)

Random-init weights (`--features random`): same graph, same FLOPs as the ImageNet weights.
FLOPs/image are counted from the built model: 2 * H_out * W_out * k_h * k_w * C_in * C_out per
convolution (multiply + add), i.e. convolutions only; BN/ReLU/pooling add < 1 %.
Results: bench/RESULTS.md (section fid).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cxraug.core.tf_setup import tf  # sets TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow loads


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (tracing, compilation, allocator)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def conv_flops(model: Any) -> float:
    """Forward FLOPs of one image: 2 x MACs of every Conv2D (batch dimension 1)."""
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            total += 2.0 * h * w * kh * kw * c_in * c_out
    return total


def roofline(repeats: int) -> dict[str, float]:
    """GFLOP/s of a large float32 GEMM and of a representative Inception conv, in TF."""
    n = 3072
    a = tf.random.stateless_normal((n, n), seed=(1, 2))
    b = tf.random.stateless_normal((n, n), seed=(3, 4))
    mm = tf.function(lambda: tf.matmul(a, b))
    gemm = 2 * n**3 / best_time(lambda: mm().numpy(), repeats) / 1e9
    x = tf.random.stateless_normal((32, 35, 35, 288), seed=(5, 6))  # mixed_5 block input
    k = tf.random.stateless_normal((3, 3, 288, 384), seed=(7, 8))
    cv = tf.function(lambda: tf.nn.conv2d(x, k, 1, "SAME"))
    conv = 2 * 32 * 35 * 35 * 9 * 288 * 384 / best_time(lambda: cv().numpy(), repeats) / 1e9
    return {"gemm": gemm, "conv": conv}


def network_rates(model: Any, configs: list[tuple[int, bool]], rounds: int) -> dict:
    """Images/s of the network alone per (batch, xla). Configurations are timed in turn,
    round after round, and the best round is kept: on a shared machine this compares them
    under the same background load instead of at different moments."""
    runs = {}
    for b, xla in configs:
        fn = tf.function(lambda t: model(t, training=False), jit_compile=xla, autograph=False)
        x = tf.random.stateless_uniform((b, 299, 299, 3), seed=(9, 9), minval=-1, maxval=1)
        fn(x).numpy()  # trace / XLA-compile outside the timing
        runs[(b, xla)] = (fn, x)
    best = {c: float("inf") for c in configs}
    for _ in range(rounds):
        for c, (fn, x) in runs.items():
            t = time.perf_counter()
            fn(x).numpy()
            best[c] = min(best[c], time.perf_counter() - t)
    return {c: c[0] / best[c] for c in configs}


def cache_speedup(n_real: int, n_fake: int) -> dict[str, float]:
    """Wall time of `cxraug fid` (library call, random features): cold, then a second run
    against the same REAL set with new fakes, then an exact repeat (both sets cached)."""
    from cxraug.core.images import write_png_gray
    from cxraug.fid import FidConfig, run_fid

    rng = np.random.default_rng(0)
    cfg = FidConfig(features="random", kid_subsets=100)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for name, n in (("real", n_real), ("fake1", n_fake), ("fake2", n_fake)):
            for i in range(n):
                img = np.clip(rng.normal(120, 40, (224, 224)), 0, 255).astype(np.uint8)
                write_png_gray(root / name / f"{i:04d}.png", img)
        times = {}
        for label, fake in (("cold", "fake1"), ("real cached", "fake2"), ("both cached", "fake2")):
            t = time.perf_counter()
            run_fid(root / "real", root / fake, cfg, workspace=root)
            times[label] = time.perf_counter() - t
    return times


def sqrtm_paths(n_real: int, n_fake: int, dim: int) -> tuple[float, float, float]:
    """Seconds of the FID maths: full-space sqrtm (pytorch-fid's way) vs the subspace sqrtm
    that fid_from_features uses when N_real + N_fake < D; and the relative difference."""
    from cxraug.metrics import distances as metrics

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_real, dim))
    y = rng.normal(size=(n_fake, dim)) * 1.2 + 0.1
    t = time.perf_counter()
    mu1, s1 = metrics.feature_statistics(x)
    mu2, s2 = metrics.feature_statistics(y)
    full = metrics.frechet_distance(mu1, s1, mu2, s2).value
    t_full = time.perf_counter() - t
    t = time.perf_counter()
    sub = metrics.fid_from_features(x, y).value
    t_sub = time.perf_counter() - t
    return t_full, t_sub, abs(sub - full) / abs(full)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (fewer repeats and images)")
    args = ap.parse_args()
    q = args.quick
    repeats = 2 if q else 4
    batches = [1, 8] if q else [1, 8, 32]
    from cxraug.metrics.features import _inception, reinitialise

    print(f"TF {tf.__version__}, oneDNN={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}, "
          f"threads intra={tf.config.threading.get_intra_op_parallelism_threads()}, "
          f"cpus={os.cpu_count()}")  # fmt: skip
    model = _inception(None)
    reinitialise(model, 0)
    flops = conv_flops(model)
    roof = roofline(repeats + 2)
    print(f"\nInception-v3 299x299 -> 2048: {flops / 1e9:.2f} GFLOP/image (conv MACs x 2)")
    print(f"roofline: GEMM 3072^3 {roof['gemm']:.0f} GFLOP/s, "
          f"conv 3x3 288->384 @35x35 b32 {roof['conv']:.0f} GFLOP/s\n")  # fmt: skip
    print(f"{'batch':>5} {'XLA':>4} {'img/s':>7} {'GFLOP/s':>8} {'% GEMM':>7} {'% conv':>7}")
    bl = batches[-1]
    configs = [(b, False) for b in batches] + [(bl, True)]  # XLA at one batch: compile ~30 s
    rates = network_rates(model, configs, repeats)
    for (b, xla), r in rates.items():
        g = r * flops / 1e9
        print(f"{b:>5} {'on' if xla else 'off':>4} {r:>7.2f} {g:>8.1f} "
              f"{100 * g / roof['gemm']:>6.0f}% {100 * g / roof['conv']:>6.0f}%")  # fmt: skip
    print(f"XLA on/off at batch {bl}: {rates[(bl, True)] / rates[(bl, False)]:.2f}x")
    print(f"batch {bl} / batch 1 (XLA off): {rates[(bl, False)] / rates[(1, False)]:.2f}x")

    from cxraug.metrics.features import extract_features, random_extractor

    n = 16 if q else 64
    imgs = [np.full((224, 224), i, np.uint8) for i in range(n)]
    ex = random_extractor()
    t = best_time(lambda: extract_features(lambda i: imgs[i], n, ex, batch_size=bl,
                                           show_progress=False), 1)  # fmt: skip
    e2e = n / t
    print(f"\nextract_features end to end (resize 224->299 + network), batch {bl}: {e2e:.2f} img/s "
          f"({e2e / rates[(bl, False)]:.2f}x of network-only at batch {bl})")  # fmt: skip

    cases = [(50, 200, 512)] if q else [(85, 1020, 2048), (400, 1020, 2048)]
    print("\nFID maths (random features): full-space sqrtm (pytorch-fid) vs subspace sqrtm")
    for nr, nf, dim in cases:
        t_full, t_sub, rel = sqrtm_paths(nr, nf, dim)
        print(
            f"  N_real={nr:>4} N_fake={nf:>4} D={dim}: full {t_full:5.1f} s, subspace "
            f"{t_sub:5.2f} s ({t_full / t_sub:5.1f}x), relative difference {rel:.1e}"
        )

    n_real, n_fake = (24, 8) if q else (128, 32)
    from cxraug.core import ui

    ui.err.quiet = True  # the three fid runs' warnings and progress bars would drown the table
    times = cache_speedup(n_real, n_fake)
    ui.err.quiet = False
    print(f"\ncache: fid of {n_real} REAL vs {n_fake} FAKE (random features, 100 KID subsets)")
    for label, s in times.items():
        print(f"  {label:>12}: {s:7.1f} s   speed-up vs cold {times['cold'] / s:5.2f}x")


if __name__ == "__main__":
    main()
