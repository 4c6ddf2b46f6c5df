"""Benchmark: one paper-size CGAN iteration (batch 128, 224x224) on this machine.

In ONE run, each part in its own subprocess (own peak RSS, no thread interference):
  ours      cxraug's compiled step, fp32 (XLA; and without XLA unless --quick)
  ours_bf16 cxraug's step with --mixed-precision bf16 (oneDNN bf16 matmuls, XLA-fused Adam)
  keras     a Keras-GAN-style train_on_batch loop of the same networks, fixed for Keras 3
            (pitfalls #21): D.trainable toggled around its own update, one Adam per model,
            and a check that D's weights really change in the D step and not in the G step;
            in fp32 (what Keras-GAN code runs) and, unless --quick, with the bf16 policy
  gemm      the GEMM roofline: tf.matmul of the model's big shapes, fwd and both bwd forms,
            in fp32 and in bf16 (each variant's % roofline uses its own precision's roofline)
  adam      the two Adam updates alone (XLA-fused, fp32 state; ~78 M parameters, ~2.2 GB of
            memory traffic): memory-bound work that bf16 matmuls do not shrink. "% GEMM+Adam"
            = (GEMM FLOPs at the roofline + this time) / measured s/it
  generate  `cxraug generate` of 1,020 images (PNG writes included), untrained paper-size G

FLOPs are counted analytically from the layer shapes (2*M*N*K per matmul):
  paper-equivalent work per iteration = 8*B*Dfwd + 4*B*Gfwd  (Keras-GAN: D fwd+2 bwd on 2B,
      G predict on B, G fwd+2 bwd on B, D fwd + data-bwd on B) = 107.6 GFLOP at paper size
  executed by cxraug's step = 10*B*Dfwd + 3*B*Gfwd (G forward reused; the G step runs D on
      the joint [real; fake] batch for its BatchNorm statistics) = 107.8 GFLOP
Usage: .venv/bin/python bench/train_step.py [--quick] [--iters N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

import _parts  # bench/_parts.py: the script's folder is on sys.path

B, S, L = 128, 224, 128  # the paper's batch, image size and latent size (recipe "paper")


def paper_flops() -> float:
    # Keras-GAN: D fwd + 2 bwd on 2B, G predict on B, G fwd + 2 bwd on B, D fwd + data bwd on B
    from cxraug.gan.config import recipe_config
    from cxraug.gan.mlp import forward_flops

    gf, df = forward_flops(recipe_config("paper"))
    return float(8 * B * df + 4 * B * gf)


def our_flops() -> float:
    # D step: D fwd + data bwd + weight bwd on 2B = 6*B*Dfwd; G step: D fwd + data bwd on the
    # same 2B batch (joint BatchNorm statistics) = 4*B*Dfwd; G fwd once + 2 bwd = 3*B*Gfwd.
    # (D's data gradients go down to its input: its label embedding multiplies the image.)
    from cxraug.gan.config import recipe_config
    from cxraug.gan.mlp_step import step_flops

    return step_flops(recipe_config("paper"))


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _data(n: int = 600) -> tuple[object, object]:
    import numpy as np

    rng = np.random.default_rng(0)
    return (rng.uniform(-1, 1, (n, S, S)).astype(np.float32),
            (rng.uniform(size=n) < 0.26).astype(np.int64))  # fmt: skip


def part_ours(iters: int, xla: bool, precision: str = "none") -> dict[str, float]:
    from cxraug.gan.config import recipe_config
    from cxraug.gan.step import build_state, make_step, resident_dataset, xla_scope

    img, lab = _data()
    st = build_state(recipe_config("paper", xla=xla, mixed_precision=precision))
    step = make_step(st, *resident_dataset(img, lab))  # type: ignore[arg-type]
    scope = xla_scope(st.cfg, st.strategy)
    t = time.perf_counter()
    step(0.1, True)
    step(0.0, False)
    compile_s = time.perf_counter() - t
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        step(0.0, False)
        ts.append(time.perf_counter() - t)
    ts.sort()
    hlo = step.hlo_matmul_flops() if scope == "step" else 0.0  # the program XLA runs
    return {"s_per_it": ts[len(ts) // 2], "best": ts[0], "compile_s": compile_s,
            "xla_scope": scope, "hlo_flops": hlo}  # type: ignore[dict-item]


def part_keras(iters: int, precision: str = "none") -> dict[str, float]:
    import keras
    import numpy as np

    from cxraug.core.tf_setup import tf
    from cxraug.gan.arch import build_models
    from cxraug.gan.config import recipe_config

    cfg = recipe_config("paper", mixed_precision=precision)
    g, d = build_models(cfg)

    class Combined(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.g, self.d = g, d

        def call(self, inputs: list, training: bool = False) -> object:
            z, y = inputs
            return self.d([self.g([z, y], training=training), y], training=training)

    def adam() -> keras.optimizers.Optimizer:
        return keras.optimizers.Adam(cfg.lr, beta_1=cfg.beta_1)

    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    d.compile(optimizer=adam(), loss=bce)  # jit_compile="auto" -> False on CPU (pitfalls #18)
    comb = Combined()
    d.trainable = False
    comb.compile(optimizer=adam(), loss=bce)
    img, lab = _data()
    rng = np.random.default_rng(0)
    ones, zeros = np.ones((B, 1), np.float32), np.zeros((B, 1), np.float32)
    k0 = d.hidden[0].kernel

    def iteration() -> tuple[bool, bool]:
        idx = rng.integers(0, len(lab), B)  # type: ignore[arg-type]
        z = rng.standard_normal((B, L)).astype(np.float32)
        y = lab[idx].astype(np.int32)  # type: ignore[index]
        fake = g.predict_on_batch([z, y])  # Keras-GAN: inference-mode BN
        d.trainable = True
        before = k0.numpy()[:64, :8].copy()
        d.train_on_batch([img[idx][..., None], y], ones)  # type: ignore[index]
        d.train_on_batch([fake, y], zeros)
        d_changed = not np.array_equal(before, k0.numpy()[:64, :8])
        d.trainable = False
        before = k0.numpy()[:64, :8].copy()
        comb.train_on_batch([z, y], ones)
        d_frozen = np.array_equal(before, k0.numpy()[:64, :8])
        return d_changed, d_frozen

    t = time.perf_counter()
    checks = [iteration() for _ in range(2)]
    compile_s = time.perf_counter() - t
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        checks.append(iteration())
        ts.append(time.perf_counter() - t)
    ts.sort()
    ok = all(c for c, _ in checks) and all(f for _, f in checks)
    del tf
    return {"s_per_it": ts[len(ts) // 2], "best": ts[0], "compile_s": compile_s,
            "d_trains_and_freezes": float(ok)}  # fmt: skip


def part_adam(reps: int) -> dict[str, float]:
    from cxraug.core.tf_setup import tf
    from cxraug.gan.arch import build_models
    from cxraug.gan.config import recipe_config
    from cxraug.gan.mlp_step import _updater
    from cxraug.gan.step import _make_optimizer

    cfg = recipe_config("paper", mixed_precision="none")
    g, d = build_models(cfg)
    fns = []
    for m in (g, d):
        opt = _make_optimizer(cfg, m.name)
        opt.build(m.trainable_variables)
        grads = [tf.random.normal(v.shape, stddev=1e-3) for v in m.trainable_variables]
        fns.append((_updater(opt, m.trainable_variables, jit=True), grads))
    step = tf.function(lambda: [f(gr) for f, gr in fns])
    step()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    n = sum(int(tf.size(v)) for m in (g, d) for v in m.trainable_variables)
    return {"s": min(times), "params": float(n)}


def part_gemm(reps: int, precision: str = "none") -> dict[str, float]:
    from cxraug.core.tf_setup import tf

    dtype = tf.bfloat16 if precision == "bf16" else tf.float32

    p = S * S
    shapes = [  # (M, K, N, transpose_a, transpose_b): the model's big matmuls
        (B, 1024, p, False, False),  # G output layer forward
        (2 * B, p, 512, False, False),  # D first layer forward
        (p, 2 * B, 512, True, False),  # D first layer weight gradient  x^T @ dy
        (2 * B, 512, p, False, True),  # D first layer data gradient    dy @ W^T
        (1024, B, p, True, False),  # G output layer weight gradient
    ]
    total_f = total_t = 0.0
    out: dict[str, float] = {}
    for m, k, n, ta, tb in shapes:
        a = tf.cast(tf.random.normal((k, m) if ta else (m, k)), dtype)
        b = tf.cast(tf.random.normal((n, k) if tb else (k, n)), dtype)
        f = tf.function(lambda a, b, ta=ta, tb=tb: tf.matmul(a, b, transpose_a=ta,
                                                                transpose_b=tb))  # fmt: skip
        f(a, b).numpy()
        times = []
        for _ in range(reps):  # best of reps: the peak this machine reaches on this shape
            t = time.perf_counter()
            f(a, b).numpy()
            times.append(time.perf_counter() - t)
        dt = min(times)
        out[f"{m}x{k}x{n}"] = 2 * m * k * n / dt / 1e9
        total_f += 2 * m * k * n
        total_t += dt
    out["roofline"] = total_f / total_t / 1e9
    return out


def part_generate() -> dict[str, float]:
    from cxraug.core.manifest import Manifest, Record, write_manifest
    from cxraug.core.workspace import Workspace
    from cxraug.gan.checkpoint import save_checkpoint
    from cxraug.gan.config import recipe_config
    from cxraug.gan.step import build_state
    from cxraug.generate import GenerateConfig, generate

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.at(tmp)
        st = build_state(recipe_config("paper"))
        save_checkpoint(st, ws.runs_dir / "bench", keep=1)
        (ws.runs_dir / "bench" / "config.json").write_text(st.cfg.to_json())
        write_manifest(ws.manifest_path, Manifest([Record(id="a", path="a.png",
                                                          label="normal", split="train")]))
        del st
        t = time.perf_counter()
        res = generate(ws, GenerateConfig(label="covid", n=1020, run="bench"))
        dt = time.perf_counter() - t
        assert res.count == 1020 and len(list((ws.synthetic_dir / "covid").glob("*.png"))) == 1020
    return {"s_1020": dt}


def run_part(args: list[str]) -> dict[str, float]:
    return _parts.run_part(__file__, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="3 timed iterations; no no-XLA and no bf16 Keras run")  # fmt: skip
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--part", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.part:
        name, *rest = a.part
        n = int(rest[0]) if rest else 5
        res = {"ours": lambda: part_ours(n, True), "ours_noxla": lambda: part_ours(n, False),
               "ours_bf16": lambda: part_ours(n, True, "bf16"),
               "keras": lambda: part_keras(n), "keras_bf16": lambda: part_keras(n, "bf16"),
               "gemm": lambda: part_gemm(n), "gemm_bf16": lambda: part_gemm(n, "bf16"),
               "adam": lambda: part_adam(n),
               "generate": part_generate}[name]()  # fmt: skip
        res["peak_rss_gib"] = peak_rss_gib()
        print(json.dumps(res))
        return
    n = a.iters or (3 if a.quick else 8)
    load = os.getloadavg()[0]
    roofs = {"fp32": run_part(["gemm", str(max(3, n // 2))]),
             "bf16": run_part(["gemm_bf16", str(max(3, n // 2))])}  # fmt: skip
    adam = run_part(["adam", str(n)])
    ours = run_part(["ours", str(n)])
    noxla = None if a.quick else run_part(["ours_noxla", str(n)])
    bf16 = run_part(["ours_bf16", str(n)])
    keras = run_part(["keras", str(n)])
    keras_bf16 = None if a.quick else run_part(["keras_bf16", str(n)])
    gen = run_part(["generate"])
    pf, of = paper_flops(), our_flops()
    print(f"machine: {os.cpu_count()} cores, load average at start {load:.2f} "
          f"(other jobs compete for the cores when > ~0.5)")
    print(f"work per iteration: paper-equivalent {pf / 1e9:.1f} GFLOP, executed by cxraug "
          f"{of / 1e9:.1f} GFLOP (the dots of the XLA program add up to "
          f"{ours['hlo_flops'] / 1e9:.1f})")
    print(f"Adam updates alone (XLA-fused, {adam['params'] / 1e6:.1f} M parameters): "
          f"{adam['s']:.3f} s/it ({28 * adam['params'] / adam['s'] / 1e9:.0f} GB/s at 28 B "
          f"per parameter)")  # fmt: skip
    for prec, g in roofs.items():
        print(f"GEMM roofline {prec}: {g['roofline']:.0f} GFLOP/s "
              f"({', '.join(f'{k} {v:.0f}' for k, v in g.items() if 'x' in k)})")
    hdr = (f"{'variant':40s} {'prec':>4s} {'s/it':>6s} {'best':>6s} {'exec GF/s':>9s} "
           f"{'%roof':>6s} {'%G+A':>5s} {'x keras fp32':>12s} {'x keras same':>12s} "
           f"{'RSS GiB':>7s} {'compile s':>9s}")  # fmt: skip
    print(hdr)
    print("-" * len(hdr))
    rows = [("cxraug step (XLA: whole step)", "fp32", ours, of, keras),
            ("cxraug step (no XLA)", "fp32", noxla, of, keras),
            ("cxraug step (oneDNN matmuls, XLA Adam)", "bf16", bf16, of, keras_bf16),
            ("Keras-GAN train_on_batch loop", "fp32", keras, pf, keras),
            ("Keras-GAN train_on_batch loop", "bf16", keras_bf16, pf, keras_bf16)]  # fmt: skip
    for label, prec, r, fl, same in rows:
        if r is None:
            continue
        s = r["s_per_it"]
        roof = roofs[prec]["roofline"]
        vs_same = f"{same['s_per_it'] / s:12.2f}" if same is not None else f"{'-':>12s}"
        print(f"{label:40s} {prec:>4s} {s:6.3f} {r['best']:6.3f} {fl / s / 1e9:9.1f} "
              f"{100 * fl / s / 1e9 / roof:5.0f}% {100 * (fl / 1e9 / roof + adam['s']) / s:4.0f}% "
              f"{keras['s_per_it'] / s:12.2f} {vs_same} "
              f"{r['peak_rss_gib']:7.2f} {r['compile_s']:9.1f}")
    checks = [k for k in (keras, keras_bf16) if k is not None]
    print(f"Keras loop check (D trains in its step, frozen in the G step): "
          f"{'ok' if all(k['d_trains_and_freezes'] for k in checks) else 'FAILED'}")
    print(f"generate 1,020 images (224 px, PNG writes, checkpoint load): {gen['s_1020']:.2f} s, "
          f"peak RSS {gen['peak_rss_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
