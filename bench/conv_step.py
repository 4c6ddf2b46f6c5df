"""Benchmark: one conv-recipe iteration (`--arch conv`, 224x224x1, batch 32) on this machine.

The recipe's own TrainConfig (`recipe_config("conv")`: default channels, DiffAugment (since
2026-12-05 cutout alone, with the flatten D head; 2026-12-02 to 12-04 translation,cutout; the
numbers in bench/RESULTS.md were measured with colour too, two element-wise ops per image), EMA),
so the step timed is the one `cxraug train` runs.
Each part in its own subprocess (own peak RSS, no thread interference):
  step       cxraug's conv step (cxraug.gan.conv_step, plain tf.function, oneDNN convs), in
             bf16 (mixed_precision="bf16") and fp32 ("none"): median s/iteration over N timed
             iterations after two warm-up calls, on random images (600, 224, 224) in [-1, 1]
  roofline   the measured convolution roofline for the SAME layer shapes: every conv layer of
             G (5 stride-2 4x4 transposed convs, the 3x3 output conv) at B and of D (5 stride-2
             4x4 convs) at 2B and at B, each alone under tf.function (no XLA): forward + the
             gradients w.r.t. input and kernel, in fp32 and in bf16 (best of reps). Roofline
             GFLOP/s = sum of the isolated FLOPs / sum of their best times; the step's "% roof"
             = its GFLOP/s / the roofline of the same precision
  xla        the same step with the whole step under XLA (jit_compile=True), fp32: documents
             why the conv recipe runs without XLA on this CPU (cxraug.gan.step.xla_scope)

FLOPs are counted analytically from the layer shapes (`conv_step_flops`, from
cxraug.gan.conv.conv_forward_flops: 2 FLOPs per multiply-add, convolutions and G's dense).
Usage: .venv/bin/python bench/conv_step.py [--quick] [--iters N] [--no-xla] [--json [PATH]]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import _parts  # bench/_parts.py: the script's folder is on sys.path

N_IMAGES = 600
PRECISIONS = {"bf16": "bf16", "fp32": "none"}  # label -> TrainConfig.mixed_precision


def recipe(precision: str = "none") -> Any:
    """The conv recipe's TrainConfig (batch 32, 224 px, default widths) at a precision."""
    from cxraug.gan.config import recipe_config

    return recipe_config("conv", mixed_precision=precision)


def conv_step_flops(cfg: Any) -> float:
    """FLOPs executed by one conv-recipe iteration, from the layer shapes.

    With Dfwd / Gfwd = one forward pass of D / G for ONE sample (conv_forward_flops), and a
    backward pass of a conv costing one forward per gradient (input and kernel):
      D step, one D pass on [T(real); T(fake)] (2B images): forward + kernel gradients +
          input gradients = 3 * 2B * Dfwd = 6 B Dfwd
      G step, D' on T(fake) (B images): forward + input gradients (down to the image, for G;
          no kernel gradients of D) = 2 B Dfwd
      G, one forward on B (reused by both steps) + kernel and input gradients = 3 B Gfwd
    total = B * (8 Dfwd + 3 Gfwd). It is an upper bound by < 1 %: the D step needs no input
    gradient of D's first conv (its input is data) and the G step none of G's dense layer
    (z is data). DiffAugment, activations, norms, spectral norm, Adam and the EMA are not
    counted (memory-bound, few FLOPs).
    """
    from cxraug.gan.conv import conv_forward_flops

    gf, df = conv_forward_flops(cfg)
    return float(cfg.batch_size * (8 * df + 3 * gf))


def conv_layers(cfg: Any) -> list[dict[str, Any]]:
    """Every conv layer of the recipe's G and D with its per-sample shapes, read from the
    built models (kernels from the layers, sides checked by calling each layer on a sample),
    and the batch sizes the step runs it at."""
    from cxraug.core.tf_setup import tf
    from cxraug.gan.arch import build_models
    from cxraug.gan.conv import base_size, conv_forward_flops

    g, d = build_models(cfg)
    b, out = cfg.batch_size, []
    side = base_size(cfg)
    for i, up in enumerate(g.ups):
        if g.to_image:  # --conv-g-output skip: this level's 1x1 conv to one channel
            t = g.to_image[i]
            out.append({"name": f"G.skip{i}", "op": "conv", "side": side,
                        "cin": int(t.kernel.shape[2]), "cout": 1, "k": 1, "stride": 1,
                        "layer": t, "batches": [b]})  # fmt: skip
        if cfg.conv_upsample != "transposed":  # x2 resize (not timed) then a 3x3 conv
            conv = up.layers[1]
            kh, kw, cin, cout = (int(v) for v in conv.kernel.shape)
            out.append({"name": f"G.up{i + 1}", "op": "conv", "side": 2 * side, "cin": cin,
                        "cout": cout, "k": kh, "stride": 1, "layer": conv,
                        "batches": [b]})  # fmt: skip
            assert kh == kw == 3
        else:
            kh, kw, cout, cin = (int(v) for v in up.kernel.shape)  # (h, w, out, in) transposed
            out.append({"name": f"G.up{i + 1}", "op": "conv_transpose", "side": side,
                        "cin": cin, "cout": cout, "k": kh, "stride": 2, "layer": up,
                        "batches": [b]})  # fmt: skip
            assert kh == kw == 4
        side *= 2
    kh, kw, cin, cout = (int(v) for v in g.out.kernel.shape)
    out.append({"name": "G.out", "op": "conv", "side": side, "cin": cin, "cout": cout,
                "k": kh, "stride": 1, "layer": g.out, "batches": [b]})  # fmt: skip
    side = cfg.image_size
    for i, conv in enumerate(d.convs):
        kh, kw, cin, cout = (int(v) for v in conv.kernel.shape)
        out.append({"name": f"D.conv{i + 1}", "op": "conv", "side": side, "cin": cin,
                    "cout": cout, "k": kh, "stride": 2, "layer": conv,
                    "batches": [2 * b, b]})  # fmt: skip
        side //= 2
    for spec in out:  # the sides really are the layers' own: call each on one sample
        x = tf.zeros((1, spec["side"], spec["side"], spec["cin"]), spec["layer"].compute_dtype)
        y = spec.pop("layer")(x)
        so = spec["side"] * 2 if spec["op"] == "conv_transpose" else spec["side"] // spec["stride"]
        assert tuple(y.shape) == (1, so, so, spec["cout"]), (spec["name"], y.shape)
        spec["side_out"] = so
        # per sample, 2 FLOPs per MAC: (smaller side)^2 * k^2 * cin * cout MACs, for a conv
        # (one k x k window per output pixel) and a transposed conv (one per input pixel)
        spec["fwd_flops"] = (
            2 * min(spec["side"], so) ** 2 * spec["k"] ** 2 * spec["cin"] * spec["cout"]
        )
    gf, df = conv_forward_flops(cfg)
    g_conv = sum(s["fwd_flops"] for s in out if s["name"].startswith("G"))
    d_conv = sum(s["fwd_flops"] for s in out if s["name"].startswith("D"))
    dense = 2 * 2 * cfg.latent_dim * base_size(cfg) ** 2 * cfg.conv_g_channels[0]
    for gate in g.sle.values():  # --conv-g-sle's Dense layers (not timed: ~0.01 % of G)
        dense += 2 * sum(int(w.kernel.shape[0]) * int(w.kernel.shape[1])
                         for w in (gate.w1, gate.w2))  # fmt: skip
    assert (g_conv + dense, d_conv) == (gf, df), "layer shapes disagree with conv_forward_flops"
    return out


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _data(n: int = N_IMAGES) -> tuple[Any, Any]:
    import numpy as np

    from cxraug.gan.config import TrainConfig

    s = TrainConfig().image_size
    rng = np.random.default_rng(0)
    return (rng.uniform(-1, 1, (n, s, s)).astype(np.float32),
            rng.integers(0, 2, n).astype(np.int64))  # fmt: skip


def part_step(iters: int, precision: str, xla: bool = False) -> dict[str, Any]:
    import math

    from cxraug.core.tf_setup import tf
    from cxraug.gan.conv_step import make_conv_step
    from cxraug.gan.step import Step, build_state, make_step, resident_dataset, xla_scope

    st = build_state(recipe(precision))
    assert st.cfg.arch == "conv" and st.cfg.image_size == 224 and st.cfg.batch_size == 32
    assert xla_scope(st.cfg, st.strategy) == "none"  # what `cxraug train` runs: no XLA
    images, labels = resident_dataset(*_data())
    if xla:  # the same step function, whole step compiled by XLA
        fn = make_conv_step(st, images, labels).python_function
        step = Step(tf.function(fn, jit_compile=True, reduce_retracing=False))
    else:
        step = make_step(st, images, labels)
    t = time.perf_counter()
    step(0.0, False)  # trace (+ XLA compile) and run
    step(0.0, False)
    compile_s = time.perf_counter() - t
    ts, finite = [], True
    for _ in range(iters):
        t = time.perf_counter()
        m = step(0.0, False)
        ts.append(time.perf_counter() - t)
        finite = finite and all(math.isfinite(v) for v in m.values())
    ts.sort()
    return {"s_per_it": ts[len(ts) // 2], "best": ts[0], "compile_s": compile_s,
            "iters": iters, "finite": finite}  # fmt: skip


def part_roofline(reps: int, precision: str) -> dict[str, Any]:
    from cxraug.core.tf_setup import tf

    dtype = tf.bfloat16 if precision == "bf16" else tf.float32
    layers = conv_layers(recipe("none"))
    rows, total_f, total_t = [], 0.0, 0.0
    for spec in layers:
        s, so, k, st = spec["side"], spec["side_out"], spec["k"], spec["stride"]
        if spec["op"] == "conv_transpose":  # what keras.layers.Conv2DTranspose runs

            def op(x: Any, w: Any, so: int = so, cout: int = spec["cout"], st: int = st) -> Any:
                return tf.nn.conv2d_transpose(x, w, (tf.shape(x)[0], so, so, cout), st, "SAME")

            kshape = (k, k, spec["cout"], spec["cin"])
        else:

            def op(x: Any, w: Any, st: int = st) -> Any:
                return tf.nn.conv2d(x, w, st, "SAME")

            kshape = (k, k, spec["cin"], spec["cout"])

        @tf.function(jit_compile=False)
        def fwd_bwd(x: Any, w: Any, dy: Any, op: Any = op) -> Any:
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                y = op(x, w)
            dx, dw = tape.gradient(y, [x, w], output_gradients=dy)
            return y, dx, dw  # y returned: the forward is not pruned

        for n in spec["batches"]:
            x = tf.cast(tf.random.uniform((n, s, s, spec["cin"]), -1, 1), dtype)
            w = tf.cast(tf.random.normal(kshape, stddev=0.05), dtype)
            dy = tf.cast(tf.random.normal((n, so, so, spec["cout"])), dtype)
            for o in fwd_bwd(x, w, dy):  # trace + warm-up
                o.numpy()
            times = []
            for _ in range(reps):  # best of reps: the peak this machine reaches on the shape
                t = time.perf_counter()
                for o in fwd_bwd(x, w, dy):
                    o.numpy()
                times.append(time.perf_counter() - t)
            f = 3.0 * n * spec["fwd_flops"]  # forward + input gradient + kernel gradient
            dt = min(times)
            rows.append({"name": spec["name"], "batch": n, "in": [s, s, spec["cin"]],
                         "out": [so, so, spec["cout"]], "gflop": f / 1e9, "best_s": dt,
                         "gflops": f / dt / 1e9})  # fmt: skip
            total_f += f
            total_t += dt
    return {"roofline": total_f / total_t / 1e9, "gflop": total_f / 1e9, "s": total_t,
            "layers": rows}  # fmt: skip


def run_part(args: list[str]) -> dict[str, Any]:
    return _parts.run_part(__file__, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: 2 timed iterations, 2 roofline reps, 1 XLA iteration")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations (default 10)")
    ap.add_argument("--no-xla", action="store_true", help="skip the XLA part")
    ap.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                    help="the results as JSON: to stdout instead of the table, or to PATH")
    ap.add_argument("--part", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        name, prec, n = a.part[0], a.part[1], int(a.part[2])
        res = {"step": lambda: part_step(n, PRECISIONS[prec]),
               "xla": lambda: part_step(n, PRECISIONS[prec], xla=True),
               "roofline": lambda: part_roofline(n, prec)}[name]()  # fmt: skip
        res["peak_rss_gib"] = peak_rss_gib()
        print(json.dumps(res))
        return
    n = a.iters or (2 if a.quick else 10)
    reps = max(2, n // 2)
    load = os.getloadavg()[0]
    roofs = {p: run_part(["roofline", p, str(reps)]) for p in PRECISIONS}
    steps = {p: run_part(["step", p, str(n)]) for p in PRECISIONS}
    xla = None if a.no_xla else run_part(["xla", "fp32", str(1 if a.quick else max(2, n // 2))])
    cfg = recipe()
    fl = conv_step_flops(cfg)
    rows = [("cxraug conv step (no XLA)", p, r) for p, r in steps.items()]
    if xla is not None:
        rows.append(("cxraug conv step (XLA: whole step)", "fp32", xla))
    table = []
    for label, prec, r in rows:
        gfs = fl / r["s_per_it"] / 1e9
        table.append({"variant": label, "precision": prec, **r, "gflops": gfs,
                      "pct_conv_roofline": 100 * gfs / roofs[prec]["roofline"]})  # fmt: skip
    result = {"machine": {"cores": os.cpu_count(), "load_at_start": load},
              "config": {"batch": cfg.batch_size, "image_size": cfg.image_size,
                         "g_channels": list(cfg.conv_g_channels),
                         "d_channels": list(cfg.conv_d_channels)},
              "gflop_per_it": fl / 1e9, "roofline": roofs, "variants": table}  # fmt: skip
    if a.json == "-":
        print(json.dumps(result, indent=1))
        return
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"machine: {os.cpu_count()} cores, load average at start {load:.2f} "
          f"(other jobs compete for the cores when > ~0.5)")
    print(f"conv recipe: batch {cfg.batch_size}, {cfg.image_size}x{cfg.image_size}x1, G "
          f"channels {cfg.conv_g_channels}, D channels {cfg.conv_d_channels}; executed work "
          f"B*(8*Dfwd + 3*Gfwd) = {fl / 1e9:.1f} GFLOP per iteration")
    lhdr = (f"{'layer':9s} {'batch':>5s} {'in':>13s} {'out':>13s} {'GFLOP':>6s} "
            f"{'fp32 GF/s':>9s} {'bf16 GF/s':>9s}")  # fmt: skip
    print(f"\nconv roofline: each layer alone, forward + input and kernel gradients "
          f"(best of {reps})\n{lhdr}\n{'-' * len(lhdr)}")
    for r32, r16 in zip(roofs["fp32"]["layers"], roofs["bf16"]["layers"], strict=True):
        shp = "x".join
        print(f"{r32['name']:9s} {r32['batch']:5d} {shp(map(str, r32['in'])):>13s} "
              f"{shp(map(str, r32['out'])):>13s} {r32['gflop']:6.2f} {r32['gflops']:9.1f} "
              f"{r16['gflops']:9.1f}")
    for p, r in roofs.items():
        print(f"conv roofline {p}: {r['roofline']:.1f} GFLOP/s ({r['gflop']:.1f} GFLOP in "
              f"{r['s']:.3f} s, peak RSS {r['peak_rss_gib']:.2f} GiB)")
    hdr = (f"{'variant':36s} {'prec':>4s} {'s/it':>7s} {'best':>7s} {'GF/s':>7s} "
           f"{'%roof':>6s} {'RSS GiB':>7s} {'compile s':>9s} {'iters':>5s}")  # fmt: skip
    print(f"\n{hdr}\n{'-' * len(hdr)}")
    for r in table:
        print(f"{r['variant']:36s} {r['precision']:>4s} {r['s_per_it']:7.3f} {r['best']:7.3f} "
              f"{r['gflops']:7.1f} {r['pct_conv_roofline']:5.0f}% {r['peak_rss_gib']:7.2f} "
              f"{r['compile_s']:9.1f} {r['iters']:5d}")
    if xla is not None:
        print(f"XLA / no XLA (fp32): {xla['s_per_it'] / steps['fp32']['s_per_it']:.2f}x the "
              f"time per iteration")
    if not all(r["finite"] for r in table):
        print("WARNING: a step returned a non-finite loss")


if __name__ == "__main__":
    main()
