"""Benchmark: `--conv-d-input bands`' Gaussian blurs (cxraug.gan.conv.detail_bands), forward
and the gradient w.r.t. the images, on B images of 224 x 224, against the obvious alternative
measured in the same process: each blur as a reflect pad and two 1-D convolutions
(tf.nn.conv2d, 1 channel, 2r + 1 taps). Both compute the same bands (the table says how far
apart); the product uses the matrix products. Best of `reps` timings of each, interleaved.

Usage: .venv/bin/python bench/d_bands.py [--quick] [--batch B] [--reps N]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cxraug.core.tf_setup import tf  # noqa: E402
from cxraug.gan.config import D_BAND_GAINS, D_BAND_SIGMAS, band_radius  # noqa: E402
from cxraug.gan.conv import detail_bands  # noqa: E402
from cxraug.gan.layers import gaussian_kernel  # noqa: E402


def conv_bands(x: Any) -> Any:
    """The same bands, each blur a reflect pad and a row then a column convolution."""
    out, prev = [x], x
    for sigma, gain in zip(D_BAND_SIGMAS, D_BAND_GAINS, strict=True):
        k = gaussian_kernel(sigma, band_radius(sigma)).astype("float32")
        r = len(k) // 2
        h = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
        h = tf.nn.conv2d(h, k.reshape(1, -1, 1, 1), 1, "VALID")
        smooth = tf.nn.conv2d(h, k.reshape(-1, 1, 1, 1), 1, "VALID")
        out.append(gain * (prev - smooth))
        prev = smooth
    return tf.concat(out, -1)


def timed(fn: Any, x: Any) -> Any:
    @tf.function
    def fwd_bwd(x: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(fn(x) ** 2)
        return tape.gradient(loss, x)

    fwd_bwd(x)  # trace and warm up
    return fwd_bwd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 16, 3 repetitions")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    batch, reps = (16, 3) if a.quick else (a.batch, a.reps)
    x = tf.random.stateless_uniform((batch, 224, 224, 1), (0, 0), -1.0, 1.0)
    diff = float(tf.reduce_max(tf.abs(detail_bands(x[:4]) - conv_bands(x[:4]))))
    fns = {"matmul (cxraug)": timed(detail_bands, x),
           "conv (pad + 1-D convs)": timed(conv_bands, x)}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):  # interleaved: both see the same machine load
        for name, f in fns.items():
            t = time.perf_counter()
            f(x)
            best[name] = min(best[name], time.perf_counter() - t)
    ref = best["matmul (cxraug)"]
    print(f"detail bands, {batch} x 224 x 224, forward + input gradient, best of {reps} "
          f"(largest difference between the two: {diff:.1e})")  # fmt: skip
    print(f"{'implementation':<26} {'s':>8} {'ms/image':>9} {'x matmul':>9}")
    for name, s in best.items():
        print(f"{name:<26} {s:8.3f} {1000 * s / batch:9.2f} {s / ref:9.2f}")


if __name__ == "__main__":
    main()
