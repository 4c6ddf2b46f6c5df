"""Experiment (issue 17): a resolution cascade, measured outside the product.

The product has it since session 16: `cxraug train --recipe cascade` (`--enlarge 4 --refine
3000`; cxraug.gan.refine's enlargement is this script's R, trained inside the run). This
script stays so that the numbers of bench/RESULTS.md "A resolution cascade" rerun exactly,
and as a judge of any folder of PNGs through an enlargement.

A GAN trained at 56 px (`cxraug preprocess --size 56` into its own workspace, `cxraug train`
with four G levels) gets ~5x the iterations of the 224 px run in the same time; a 4x
super-resolution stage R, trained on the 224 px workspace's REAL training images, takes its
images to 224 px. R learns: the real image shrunk to 56 px (INTER_AREA) and enlarged again
(bilinear) -> the real image; L1 plus a conditional patch critic (pix2pix, Isola et al.
2017), a noise map as a second input, two levels down and up (receptive field ~70 px at
224). Why: every 224 px run draws wavy outlines where ribs belong (bench/RESULTS.md, "A
resolution cascade"), and a 56 px image still shows the ribs.

    bench/cascade.py train-sr --ws WS224 --out SR.weights.h5 [--iterations 1500] [--l1 10]
        [--init SR.weights.h5]          # continue from a G (its critic too if saved beside)
    bench/cascade.py judge --ws WS224 --sr SR.weights.h5 DIR... [--ceiling]

`judge` puts each DIR's PNGs (any side) through R, writes them to DIR-sr/, and scores them
and their plain bilinear enlargements against the held-out COVID images of WS224 with the
C2ST and spectrum of `cxraug fid`. `--ceiling` does the same for WS224's clean training COVID
images (shrunk to 56 px first): what a perfect 56 px generator would score. The training
images are the train split without editorial marks, half COVID and half normal per batch.
Seeded (R's weights, batches and noise maps from --seed).
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from cxraug.core.tf_setup import keras, tf  # noqa: E402
from cxraug.gan.refine import enlarge_bilinear  # noqa: E402
from cxraug.gan.trainset import shrink  # noqa: E402
from cxraug.metrics import c2st  # noqa: E402
from cxraug.metrics.spectrum import compare_spectra  # noqa: E402

SIDE, LOW, WIDTH, CROP, BATCH = 224, 56, 32, 96, 16


def enlarge(im: np.ndarray) -> np.ndarray:
    """(h, w) float32 -> the LOW px image enlarged bilinearly to SIDE (shrunk first if larger):
    the product's degradation (cxraug.gan.refine.degraded), the same OpenCV calls."""
    small = shrink(im[None], LOW) if im.shape != (LOW, LOW) else im[None]
    return enlarge_bilinear(small, SIDE)[0]


def build_r(seed: int) -> Any:
    """R([x, n]) = x + r: x the enlarged image, n a noise map; r's last conv starts at zero."""
    L, init = keras.layers, keras.initializers.GlorotUniform(seed)

    def conv(c: int, h: Any, k: int = 3, s: int = 1) -> Any:
        return L.LeakyReLU(0.2)(L.Conv2D(c, k, strides=s, padding="same",
                                         kernel_initializer=init)(h))  # fmt: skip

    x, n = L.Input((None, None, 1)), L.Input((None, None, 1))
    f0 = conv(WIDTH, conv(WIDTH, L.Concatenate()([x, n])))
    f1 = conv(2 * WIDTH, conv(2 * WIDTH, f0, 4, 2))
    h = conv(4 * WIDTH, conv(4 * WIDTH, conv(4 * WIDTH, f1, 4, 2)))
    h = conv(2 * WIDTH, L.Concatenate()([conv(2 * WIDTH, L.UpSampling2D()(h)), f1]))
    h = conv(WIDTH, L.Concatenate()([conv(WIDTH, L.UpSampling2D()(h)), f0]))
    r = L.Conv2D(1, 3, padding="same", kernel_initializer="zeros")(h)
    return keras.Model([x, n], L.Add()([x, r]))


def build_critic(seed: int) -> Any:
    """Patch logits of [x, y, y - x] (three stride-2 4x4 convs, then a 3x3 conv): the
    architecture of cxraug.gan.refine.build_critic, kept here with its own Glorot seeds so
    that the numbers in bench/RESULTS.md ("A resolution cascade") rerun exactly."""
    L, init = keras.layers, keras.initializers.GlorotUniform(seed + 1)
    x, y = L.Input((None, None, 1)), L.Input((None, None, 1))
    h = L.Concatenate()([x, y, L.Subtract()([y, x])])
    for c in (WIDTH, 2 * WIDTH, 4 * WIDTH):
        h = L.LeakyReLU(0.2)(L.Conv2D(c, 4, strides=2, padding="same",
                                      kernel_initializer=init)(h))  # fmt: skip
    return keras.Model([x, y], L.Conv2D(1, 3, padding="same", kernel_initializer=init)(h))


def load(ws: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    d = dict(np.load(ws / "processed" / "dataset.npz"))
    with open(ws / "manifest.csv", newline="") as f:
        pid = {r["id"]: r["patient_id"] or r["id"] for r in csv.DictReader(f)}
    return d, pid


def train_sr(a: argparse.Namespace) -> None:
    d, _ = load(a.ws)
    keep = (d["splits"] == "train") & (d["marks"] == "")
    X, lab = d["images"][keep].astype(np.float32), d["labels"][keep]
    XL = np.stack([enlarge(im) for im in X])
    by_class = [np.flatnonzero(lab == c) for c in np.unique(lab)]
    print(f"training images: {len(X)} ({[len(b) for b in by_class]} per class)", flush=True)
    rng, r, critic = np.random.default_rng(a.seed), build_r(a.seed), build_critic(a.seed)
    if a.init:
        r.load_weights(a.init)
        if Path(a.init + ".critic.weights.h5").exists():
            critic.load_weights(a.init + ".critic.weights.h5")
    r_opt, c_opt = keras.optimizers.Adam(2e-4, 0.5), keras.optimizers.Adam(2e-4, 0.5)

    @tf.function
    def step(soft: Any, real: Any, noise: Any) -> tuple[Any, Any, Any]:
        with tf.GradientTape() as rt, tf.GradientTape() as ct:
            out = r([soft, noise], training=True)
            lr, lf = critic([soft, real], training=True), critic([soft, out], training=True)
            c_loss = tf.reduce_mean(tf.nn.softplus(-lr)) + tf.reduce_mean(tf.nn.softplus(lf))
            adv, l1 = tf.reduce_mean(tf.nn.softplus(-lf)), tf.reduce_mean(tf.abs(out - real))
            r_loss = adv + a.l1 * l1
        cv, rv = critic.trainable_variables, r.trainable_variables
        c_opt.apply_gradients(zip(ct.gradient(c_loss, cv), cv, strict=True))
        r_opt.apply_gradients(zip(rt.gradient(r_loss, rv), rv, strict=True))
        return c_loss, adv, l1

    t0 = time.perf_counter()
    for it in range(1, a.iterations + 1):
        i = np.concatenate([rng.choice(b, BATCH // len(by_class)) for b in by_class])
        y0, x0 = (rng.integers(0, SIDE - CROP + 1, len(i)) for _ in range(2))
        at = list(zip(i, y0, x0, strict=True))
        soft = np.stack([XL[k, y : y + CROP, x : x + CROP] for k, y, x in at])
        real = np.stack([X[k, y : y + CROP, x : x + CROP] for k, y, x in at])
        noise = rng.standard_normal(soft.shape, np.float32)
        losses = step(soft[..., None], real[..., None], noise[..., None])
        if it % 100 == 0:
            print(it, " ".join(f"{k} {float(v):.4f}" for k, v in
                               zip(("critic", "adv", "l1"), losses, strict=True)),  # fmt: skip
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        if it % 500 == 0 or it == a.iterations:
            r.save_weights(a.out)
            critic.save_weights(a.out + ".critic.weights.h5")


def super_resolve(r: Any, images: list[np.ndarray], seed: int) -> np.ndarray:
    rng, out = np.random.default_rng(seed), []
    for k in range(0, len(images), 16):
        x = np.stack([enlarge(im) for im in images[k : k + 16]])[..., None]
        n = rng.standard_normal(x.shape, np.float32)
        out.append(np.asarray(r([x, n], training=False))[..., 0])
    return np.clip(np.concatenate(out), -1, 1)


def judge(a: argparse.Namespace) -> None:
    d, pid = load(a.ws)
    covid = d["labels"] == list(d["classes"]).index("covid")
    test = covid & (d["splits"] == "test")
    real, groups = d["images"][test], [pid[i] for i in d["ids"][test]]
    r = build_r(a.seed)
    r.load_weights(a.sr)
    sets: list[tuple[str, list[np.ndarray], Any]] = []
    if a.ceiling:
        clean = covid & (d["splits"] == "train") & (d["marks"] == "")
        sets.append(("ceiling", list(d["images"][clean]), [pid[i] for i in d["ids"][clean]]))
    for folder in a.dirs:
        files = sorted(Path(folder).glob("*.png"))
        ims = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 127.5 - 1
               for f in files]  # fmt: skip
        sets.append((folder, ims, None))
    print("| set | C2ST 16 / 32 / 64 / 128 px | hf / Laplacian |\n|---|---|---|")
    for name, ims, g in sets:
        sr = super_resolve(r, ims, a.seed)
        if name != "ceiling":
            out = Path(name + "-sr")
            out.mkdir(exist_ok=True)
            for f, im in zip(sorted(Path(name).glob("*.png")), sr, strict=True):
                cv2.imwrite(str(out / f.name), np.round((im + 1) * 127.5).astype(np.uint8))
        for how, fake in (("R", sr), ("bilinear", np.stack([enlarge(im) for im in ims]))):
            res = c2st.c2st(real, fake, real_groups=groups, fake_groups=g, seed=0)
            sp = compare_spectra(list(real), list(fake))
            aucs = " / ".join(f"{x.auc:.3f}" for x in res)
            print(f"| {name}, {how} | {aucs} | {sp.hf_ratio:.2f} / {sp.laplacian_ratio:.2f} |",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train-sr")
    t.add_argument("--out", required=True)
    t.add_argument("--iterations", type=int, default=1500)
    t.add_argument("--l1", type=float, default=10.0)
    t.add_argument("--init", default="")
    j = sub.add_parser("judge")
    j.add_argument("--sr", required=True)
    j.add_argument("--ceiling", action="store_true")
    j.add_argument("dirs", nargs="*")
    for p in (t, j):
        p.add_argument("--ws", type=Path, required=True, help="the 224 px workspace")
        p.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    train_sr(a) if a.cmd == "train-sr" else judge(a)


if __name__ == "__main__":
    main()
