"""The detail refiner (`cxraug train --refine N`): a small fully convolutional network R that
adds the fine detail a run's generator leaves out; with `--enlarge K`, the learnt K x
enlargement of a resolution cascade (below). It is trained after the GAN, on the run's
own training images alone, and `generate` applies it to every image G makes.

Why: every generated set measured is soft (energy above 1/4 Nyquist 0.5-0.7x the real
images', Laplacian variance 0.3-0.5x; the C2ST's detail block tells them from real at
0.84-0.95 from 32 px up), and no lever inside the GAN sharpened them: a wider G, noise inputs,
output skips, skip-layer excitation, a patch head, a self-supervised D, detail bands for D,
R1, more iterations (bench/RESULTS.md "Pass for real"). A GAN learns coarse structure first and
fine detail last; on this CPU budget it stops before the last. The refiner learns that last
step on its own, from real images: given a real image blurred by a Gaussian of sigma in
config.REFINE_SIGMAS (a range that spans the generated sets' measured softness), give the real
image back. It is a resolution cascade in its simplest form (LAPGAN, Denton et al. 2015): a
coarse generator, then a conditional one for detail; the detail stage is pix2pix's (Isola et
al. 2017): L1 to the target, plus a conditional patch discriminator so that the detail is
drawn rather than averaged away (L1 alone is least for a blur of the possible targets).

One iteration (batch B, crops of c = min(REFINE_CROP, image side) px; host numpy RNG `rng`):
    i ~ U{train images}, sigma ~ U(REFINE_SIGMAS), a crop at a uniform offset
    soft = (G_sigma * image)[crop]      # blurred with a margin, so exactly the crop of the
                                        # blurred image (OpenCV, reflected at the image border)
    n ~ N(0, 1) (B, c, c, 1);  out = soft + R([soft, n])
    D_r: a logit per patch of [soft, y, y - soft] for y = the real crop and y = out
    d_loss = mean softplus(-D_r(real)) + mean softplus(D_r(out))
    r_loss = mean softplus(-D_r(out)) + REFINE_L1 * mean |out - real|
R: conv3x3(w) x 2 -> stride-2 conv4x4(2w) -> conv3x3(2w) x 2 -> nearest x2, conv3x3(w) ->
[with the full-resolution features] conv3x3(w) -> conv3x3(1), the last one zero-initialised
(R starts as the identity). Its receptive field is ~30 px: local detail only, it cannot move
the layout or copy a training image. D_r: three stride-2 conv4x4 (w, 2w, 4w) -> conv3x3(1).
Every random number comes from `rng`, whose state the refiner's checkpoint saves, so an
interrupted and resumed refiner follows the same trajectory as an uninterrupted one.

The learnt enlargement (`train --enlarge K --refine N`, the resolution cascade of
docs/training.md): the same machinery with another degradation and a deeper R. G then works
at 1/K of the dataset's side, and R learns to take the real image shrunk K times (the area
average, trainset.shrink) and enlarged back bilinearly (`degraded`, computed once for the
whole training set) to the real image: soft = degraded[i][crop], real = image[i][crop], at the
same offset, crops of ENLARGE_CROP px, ENLARGE_BATCH per batch. R has ENLARGE_LEVELS (2)
levels down and up (`build_refiner`; receptive field ~70 px at 224), D_r is unchanged.
`generate` enlarges G's images bilinearly (`enlarge_bilinear`) and applies R as below.

Applying it (`apply`): x (B, H, W) in [-1, 1] -> clip(x + R([x, n]), -1, 1) at full size (R is
fully convolutional), n a standard-normal map per image from that image's own seed, so an
image does not depend on its batch. The R applied is R_ema, the running average of R's
weights: after R's update t, R_ema = d_t R_ema + (1 - d_t) R with d_t = min(REFINE_EMA,
(1 + t) / (10 + t)) (cxraug.gan.ema, as G's average), saved in each file beside R. Why: the
adversarial term makes R's sharpness swing by up to 2x within 250 iterations, so the last
weights are wherever the swing stopped (config.REFINE_EMA).
"""

from __future__ import annotations

import json
import math
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxraug.core.errors import InputError, NumericError, vassert
from cxraug.core.fsutil import atomic_save_npz, remove_stale_temps, sha256_file
from cxraug.core.tf_setup import keras, quiet_native_stderr, tf
from cxraug.core.ui import progress, text_column
from cxraug.gan.checkpoint import assign_group, pack_groups, pointed, write_pointer
from cxraug.gan.config import (
    ENLARGE_BATCH,
    ENLARGE_CROP,
    ENLARGE_LEVELS,
    REFINE_BATCH,
    REFINE_CHECKPOINT,
    REFINE_CROP,
    REFINE_EMA,
    REFINE_L1,
    REFINE_LR,
    REFINE_SIGMAS,
    REFINE_TEXTURE,
    REFINE_TEXTURE_SCALES,
    REFINE_WIDTH,
)
from cxraug.gan.ema import copy_weights, update_ema
from cxraug.gan.layers import POLICIES, SeededInit
from cxraug.gan.result import TrainingInterrupted
from cxraug.gan.trainset import shrink

FORMAT = "cxraug-refiner-1"
STREAM = 7  # SeededInit stream and RNG stream of the refiner (the GAN's use 0-6)


def crop_side(image_size: int, enlarge: int = 1) -> int:
    """The training crop: REFINE_CROP px (ENLARGE_CROP for an enlargement), or the whole
    image when it is smaller."""
    return min(REFINE_CROP if enlarge == 1 else ENLARGE_CROP, image_size)


def refiner_levels(enlarge: int) -> int:
    """U-Net levels: 1 for the detail refiner, ENLARGE_LEVELS for an enlargement."""
    return 1 if enlarge == 1 else ENLARGE_LEVELS


def enlarge_bilinear(images: np.ndarray, side: int) -> np.ndarray:
    """(N, h, w) -> (N, side, side) float32 by OpenCV's bilinear resize: the enlargement's
    input, in training (`degraded`) and in `generate` alike."""
    out = np.empty((len(images), side, side), np.float32)
    for i, im in enumerate(images):
        out[i] = cv2.resize(np.asarray(im, np.float32), (side, side),
                            interpolation=cv2.INTER_LINEAR)  # fmt: skip
    return out


def degraded(images: np.ndarray, enlarge: int) -> np.ndarray:
    """What the enlargement learns to undo: each image (N, H, W) shrunk `enlarge` times by
    the area average that shrinks the GAN's training images (trainset.shrink), then enlarged
    bilinearly back to H x W."""
    side = images.shape[1]
    return enlarge_bilinear(shrink(images, side // enlarge), side)


def _lrelu(x: Any, policy: str) -> Any:
    return keras.layers.LeakyReLU(0.2, dtype=policy)(x)


def build_refiner(width: int, seed: int, levels: int = 1, policy: str = "float32") -> Any:
    """R: ([x (B, H, W, 1), n (B, H, W, 1)]) -> x + r (B, H, W, 1); H, W multiples of
    2^levels. A U-Net: two convs at full size, then per level a stride-2 conv doubling the
    width (one more conv on the way down, two at the bottom), and back up through nearest x2
    and a conv, each level joined with its way-down features. levels 1 is the detail
    refiner (the module docstring), 2 the enlargement (config.ENLARGE_LEVELS). `policy`:
    the Keras dtype policy of every conv but the last (layers.POLICIES: "mixed_bfloat16"
    when the run trains in bf16); the last conv, the residual add and the output are float32
    whatever the policy, so x reaches the output untouched by bf16's 8-bit mantissa and the
    weights (float32 under every policy) load into a float32 R for `generate`."""
    init, L = SeededInit(seed, STREAM), keras.layers

    def conv(c: int, k: int = 3, s: int = 1, last: bool = False) -> Any:
        return L.Conv2D(c, k, strides=s, padding="same", dtype="float32" if last else policy,
                        kernel_initializer="zeros" if last else init.glorot())  # fmt: skip

    def act(h: Any) -> Any:
        return _lrelu(h, policy)

    x, n = L.Input((None, None, 1)), L.Input((None, None, 1))
    h = act(conv(width)(L.Concatenate(dtype=policy)([x, n])))
    skips = [act(conv(width)(h))]  # the way-down features at each level, finest first
    h = skips[0]
    for lv in range(1, levels + 1):
        h = act(conv(width * 2**lv, 4, 2)(h))
        h = act(conv(width * 2**lv)(h))
        if lv < levels:
            skips.append(h)
    h = act(conv(width * 2**levels)(h))
    for lv in range(levels, 0, -1):
        h = act(conv(width * 2 ** (lv - 1))(L.UpSampling2D(dtype=policy)(h)))
        h = act(conv(width * 2 ** (lv - 1))(L.Concatenate(dtype=policy)([h, skips[lv - 1]])))
    r = conv(1, last=True)(h)  # float32: its input is cast up from the policy's dtype
    return keras.Model([x, n], L.Add(dtype="float32")([x, r]), name="refiner")


def build_critic(width: int, seed: int, policy: str = "float32") -> Any:
    """D_r: ([soft, y] (B, c, c, 1) each) -> patch logits (B, c/8, c/8, 1), float32 (the
    last conv's) whatever `policy`, the dtype policy of the rest (as build_refiner's). y - soft
    is taken in float32 before the cast: the detail it carries is small beside the image."""
    init, L = SeededInit(seed, STREAM + 1), keras.layers
    soft, y = L.Input((None, None, 1)), L.Input((None, None, 1))
    h = L.Concatenate(dtype=policy)([soft, y, L.Subtract(dtype="float32")([y, soft])])
    for c in (width, 2 * width, 4 * width):
        h = _lrelu(L.Conv2D(c, 4, strides=2, padding="same", dtype=policy,
                            kernel_initializer=init.glorot())(h), policy)  # fmt: skip
    out = L.Conv2D(1, 3, padding="same", dtype="float32", kernel_initializer=init.glorot())(h)
    return keras.Model([soft, y], out, name="refiner_critic")


def soft_crops(images: np.ndarray, idx: np.ndarray, sigmas: np.ndarray, y0: np.ndarray,
               x0: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(soft, real) crops (B, c, c): real = images[i, y0:y0+c, x0:x0+c]; soft = the same crop
    of the image blurred by sigma (OpenCV's Gaussian, reflected at the image border),
    computed on the crop plus a margin wider than the kernel's radius (OpenCV's is 4 sigma
    for float images): exact, at ~(c/H)^2 of the cost of blurring the whole image."""
    h, w = images.shape[1:]
    soft, real = np.empty((len(idx), c, c), np.float32), np.empty((len(idx), c, c), np.float32)
    for k, (i, s, a, b) in enumerate(zip(idx, sigmas, y0, x0, strict=True)):
        r = int(np.ceil(4 * s)) + 1  # beyond OpenCV's kernel radius for float images
        ya, yb, xa, xb = max(0, a - r), min(h, a + c + r), max(0, b - r), min(w, b + c + r)
        part = images[i, ya:yb, xa:xb]
        # BORDER_REFLECT_101 is correct only where the part touches the image border; the
        # margin r keeps every other edge's reflection outside the kernel's reach
        blurred = cv2.GaussianBlur(part, (0, 0), float(s), borderType=cv2.BORDER_REFLECT_101)
        soft[k] = blurred[a - ya : a - ya + c, b - xa : b - xa + c]
        real[k] = images[i, a : a + c, b : b + c]
    return soft, real


@dataclass
class RefinerState:
    """Everything a refiner checkpoint holds."""

    refiner: Any
    critic: Any
    r_opt: Any
    d_opt: Any
    rng: np.random.Generator
    iteration: int
    width: int
    crop: int
    enlarge: int = 1  # 1: the detail refiner; K > 1: the K x enlargement
    levels: int = 1
    batch: int = REFINE_BATCH
    ema: Any = None  # R_ema, the weight average of R (REFINE_EMA) that `generate` applies
    texture: float = REFINE_TEXTURE  # the texture term's weight (saved; a resume keeps it)
    precision: str = "none"  # the run's resolved --mixed-precision (saved, for the record)
    history: list[list[float]] = field(default_factory=list)  # [it, d, adv, l1, texture] / 50

    def groups(self) -> dict[str, list[Any]]:
        g = {"r": self.refiner.weights, "d": self.critic.weights,
             "r_opt": self.r_opt.variables, "d_opt": self.d_opt.variables}  # fmt: skip
        if self.ema is not None:
            g["r_ema"] = self.ema.weights
        return g


def build_state(seed: int, image_size: int, width: int = REFINE_WIDTH, enlarge: int = 1,
                texture: float = REFINE_TEXTURE, precision: str = "none") -> RefinerState:
    """A new refiner (an enlargement when `enlarge` > 1), its weight average (a copy),
    critic, their Adam optimizers (slots created) and the seeded RNG. `precision`: the run's
    resolved --mixed-precision ("none", "bf16"; "fp16" gives "none"): R and D_r compute in
    it (their weights, R_ema and Adam's slots stay float32), as G and D do. Why: in fp32 the
    enlargement took 34.7 of the cascade's 84.7 minutes while the GAN ran in bf16; in bf16
    its step is ~1.8x faster (bench/refine_step.py) and its images judge the same
    (bench/RESULTS.md, "A bf16 enlargement"). fp16 stays fp32 here: its small exponent range
    needs loss scaling, which the GAN's step has and this one has not."""
    if precision == "fp16":
        precision = "none"
    levels, policy = refiner_levels(enlarge), POLICIES[precision]
    r, d = build_refiner(width, seed, levels, policy), build_critic(width, seed, policy)
    ema = build_refiner(width, seed, levels)  # float32: only averaged, saved and applied
    copy_weights(ema, r)
    r_opt = keras.optimizers.Adam(REFINE_LR, beta_1=0.5, beta_2=0.999, name="refiner_adam")
    d_opt = keras.optimizers.Adam(REFINE_LR, beta_1=0.5, beta_2=0.999, name="critic_adam")
    r_opt.build(r.trainable_variables)
    d_opt.build(d.trainable_variables)
    rng = np.random.default_rng([seed, STREAM])
    return RefinerState(r, d, r_opt, d_opt, rng, 0, width, crop_side(image_size, enlarge),
                        enlarge, levels, REFINE_BATCH if enlarge == 1 else ENLARGE_BATCH, ema,
                        texture, precision)  # fmt: skip


#: the 4-neighbour Laplacian, as the C2ST's probe computes it (cxraug.metrics.probe)
_LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32).reshape(3, 3, 1, 1)


def texture_loss(out: Any, real: Any, scales: tuple[int, ...] = REFINE_TEXTURE_SCALES) -> Any:
    """Mean over `scales` of the 1-D Wasserstein-1 distance, per crop, between the values of
    t(x) = asinh(255 * Laplacian of the grey image (x + 1) / 2) in `out` and in `real`
    ((B, c, c, 1) each, in [-1, 1]), each first shrunk by the scale (the area average;
    the Laplacian on valid pixels only). Between two sets of M values that distance is the
    mean |difference| of their sorted values: it is 0 when the crop's detail has the real
    crop's distribution WHEREVER it sits (a mirrored crop scores 0), unlike L1. asinh(255 .)
    is the probe's texture transform: ~linear below one grey level, logarithmic above."""
    lap = tf.constant(_LAPLACIAN)
    total = tf.constant(0.0, tf.float32)
    for k in scales:
        vals = []
        for x in (out, real):
            g = (tf.cast(x, tf.float32) + 1.0) / 2.0
            if k > 1:
                g = tf.nn.avg_pool2d(g, k, k, "VALID")
            t = tf.asinh(255.0 * tf.nn.conv2d(g, lap, 1, "VALID"))
            vals.append(tf.sort(tf.reshape(t, (tf.shape(t)[0], -1)), axis=1))
        total += tf.reduce_mean(tf.abs(vals[0] - vals[1]))
    return total / len(scales)


def make_step(state: RefinerState) -> Any:
    """A tf.function (soft, real, noise) -> (d_loss, r_adv, r_l1, r_texture) that updates
    D_r, then R, then R_ema (its update count is R's optimizer's, which the file saves).
    R's loss: adv + REFINE_L1 * l1 + state.texture * texture_loss (reported as 0 when off)."""
    r, d, texture = state.refiner, state.critic, state.texture

    def step(soft: Any, real: Any, n: Any) -> tuple[Any, Any, Any, Any]:
        with tf.GradientTape() as r_tape, tf.GradientTape() as d_tape:
            out = r([soft, n], training=True)
            l_real, l_fake = d([soft, real], training=True), d([soft, out], training=True)
            d_loss = tf.reduce_mean(tf.nn.softplus(-l_real)) + tf.reduce_mean(
                tf.nn.softplus(l_fake))
            adv = tf.reduce_mean(tf.nn.softplus(-l_fake))
            l1 = tf.reduce_mean(tf.abs(out - real))
            # off (0), the term is not computed: the step is the one before it existed
            tex = texture_loss(out, real) if texture > 0 else tf.constant(0.0, tf.float32)
            r_loss = adv + REFINE_L1 * l1 + texture * tex
        d_vars, r_vars = d.trainable_variables, r.trainable_variables
        state.d_opt.apply_gradients(zip(d_tape.gradient(d_loss, d_vars), d_vars, strict=True))
        state.r_opt.apply_gradients(zip(r_tape.gradient(r_loss, r_vars), r_vars, strict=True))
        update_ema(state.ema, r, state.r_opt.iterations, REFINE_EMA)
        return d_loss, adv, l1, tex

    return tf.function(step, reduce_retracing=False)


def draw_batch(state: RefinerState, images: np.ndarray,
               inputs: np.ndarray | None = None) -> tuple[np.ndarray, ...]:  # fmt: skip
    """One batch's (soft, real, noise), (B, c, c, 1) each, from state.rng. `inputs`: an
    enlargement's `degraded` images (soft = their crops at the real crops' offsets), None
    for the detail refiner (soft = the crops blurred by a sigma drawn from REFINE_SIGMAS)."""
    rng, c, b, (n, h, w) = state.rng, state.crop, state.batch, images.shape
    idx = rng.integers(0, n, b)
    if inputs is None:  # drawn before the offsets: the detail refiner's draws, as ever
        sig = rng.choice(np.asarray(REFINE_SIGMAS, np.float64), b)
    y0, x0 = rng.integers(0, h - c + 1, b), rng.integers(0, w - c + 1, b)
    if inputs is None:
        soft, real = soft_crops(images, idx, sig, y0, x0, c)
    else:
        at = list(zip(idx, y0, x0, strict=True))
        soft = np.stack([inputs[i, y : y + c, x : x + c] for i, y, x in at])
        real = np.stack([images[i, y : y + c, x : x + c] for i, y, x in at])
    noise = rng.standard_normal((b, c, c), np.float32)
    return soft[..., None], real[..., None], noise[..., None]


# --- files: runs/NAME/refiner/refiner-NNNNNNN.npz and the pointer refiner/latest -----------


def refiner_dir(run_path: Path) -> Path:
    return Path(run_path) / "refiner"


def refiner_path(run_path: Path, iteration: int) -> Path:
    return refiner_dir(run_path) / f"refiner-{iteration:07d}.npz"


def save(state: RefinerState, run_path: Path, total: int, dataset_sha256: str,
         keep: int = 2) -> Path:  # fmt: skip
    """Write the refiner's state atomically, then move the `latest` pointer; prune all but
    `keep` files. `total`: the iterations the refiner was asked for (done when reached)."""
    arrays, names = pack_groups(state.groups())
    meta = {"format": FORMAT, "iteration": state.iteration, "iterations": total,
            "names": names, "width": state.width, "crop": state.crop,
            "enlarge": state.enlarge, "levels": state.levels,
            "rng": state.rng.bit_generator.state, "dataset_sha256": dataset_sha256,
            "sigmas": list(REFINE_SIGMAS), "l1": REFINE_L1, "lr": REFINE_LR, "ema": REFINE_EMA,
            "texture": state.texture, "precision": state.precision,
            "batch": state.batch, "history": state.history}  # fmt: skip
    arrays["meta"] = np.array(json.dumps(meta))
    path = refiner_path(run_path, state.iteration)
    atomic_save_npz(path, **arrays)
    write_pointer(refiner_dir(run_path) / "latest", path, state.iteration)
    files = sorted(refiner_dir(run_path).glob("refiner-*.npz"))
    for old in files[:-keep]:
        old.unlink(missing_ok=True)
    return path


@dataclass
class RefinerFile:
    path: Path
    sha256: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def done(self) -> bool:
        return int(self.meta["iteration"]) >= int(self.meta["iterations"])


def read(path: Path) -> RefinerFile:
    """Load and verify one refiner file (every array decompressed: zip CRCs checked)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"refiner file {path} is corrupt or truncated ({e}); remove it: "
                         "the run's other refiner file is used, or `cxraug train --resume RUN` "
                         "trains the refiner again") from e  # fmt: skip
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a cxraug refiner file; move it out of the run's "
                         "refiner/ folder")
    return RefinerFile(Path(path), sha256_file(path), meta, arrays)


def find_latest(run_path: Path) -> RefinerFile | None:
    """The pointer's file if its hash matches, else the newest file that loads; None if the
    run has no refiner file."""
    folder = refiner_dir(run_path)
    if (cand := pointed(folder / "latest")) is not None:
        try:
            return read(cand)
        except InputError:  # a matching hash makes this unlikely; fall back as below
            pass
    for p in sorted(folder.glob("refiner-*.npz"), reverse=True) if folder.is_dir() else []:
        try:
            return read(p)
        except InputError:
            continue
    return None


def restore(state: RefinerState, f: RefinerFile) -> None:
    """Assign a refiner file's arrays and RNG state to a freshly built state."""
    old = "r_ema" not in f.meta["names"]  # written before R had an average
    for group, vs in state.groups().items():
        if not (old and group == "r_ema"):
            assign_group(vs, f.arrays, f.meta["names"], group, f"refiner file {f.path.name}")
    if old:  # the average starts from the file's weights
        copy_weights(state.ema, state.refiner)
    state.rng.bit_generator.state = f.meta["rng"]
    state.iteration = int(f.meta["iteration"])
    state.texture = float(f.meta.get("texture", 0.0))  # files before the term: off
    state.history = [list(h) for h in f.meta.get("history", [])]


def load_refiner(f: RefinerFile, seed: int = 0, average: bool = True) -> Any:
    """R alone, with a file's weights (for `generate`): its weight average R_ema (`average`;
    R where the file has none: written before 2026-12-06), else its last weights."""
    r = build_refiner(int(f.meta["width"]), seed, int(f.meta.get("levels", 1)))
    group = "r_ema" if average and "r_ema" in f.meta["names"] else "r"
    assign_group(r.weights, f.arrays, f.meta["names"], group, f"refiner file {f.path.name}")
    return r


def image_noise(seed: int, index: int, side: int) -> np.ndarray:
    """The refiner's noise map (side, side) of image `index` of a `generate` seed: its own
    stream, so image i is the same whatever -n or the batch size."""
    rng = np.random.default_rng([seed, index, STREAM])
    return rng.standard_normal((side, side), np.float32)


def apply(refiner: Any, images: np.ndarray, noise: np.ndarray, chunk: int = 32) -> np.ndarray:
    """images (B, H, W) in [-1, 1], noise (B, H, W) -> refined images, clipped to [-1, 1];
    `chunk` images per call (its full-resolution maps take ~6 MB per image and channel
    group at 224 px: 32 images ~1 GB at most)."""
    out = [np.asarray(refiner([tf.constant(images[k : k + chunk, ..., None], tf.float32),
                               tf.constant(noise[k : k + chunk, ..., None], tf.float32)],
                              training=False))[..., 0]
           for k in range(0, len(images), chunk)]  # fmt: skip
    return np.clip(np.concatenate(out), -1.0, 1.0)


@dataclass
class RefineResult:
    path: Path | None  # the refiner file written last (None: nothing to do, no file)
    iteration: int
    seconds: float
    losses: dict[str, float]


def train_refiner(run_path: Path, images: np.ndarray, iterations: int, seed: int,
                  dataset_sha256: str, *, quiet: bool,
                  on_iteration: Callable[[int], None] | None = None,
                  enlarge: int = 1, texture: float = REFINE_TEXTURE,
                  precision: str = "none") -> RefineResult:  # fmt: skip
    """Train the run's refiner on `images` (N, H, W) in [-1, 1] (the GAN's training images,
    at the dataset's size) up to `iterations`, continuing its latest file if it has one (same
    RNG and optimizer state: resumed = uninterrupted); `enlarge` > 1: the enlargement of a
    run whose G works at 1/enlarge of the side (`degraded` inputs); `texture`: the weight of
    the texture term (texture_loss; a resumed refiner keeps its file's); `precision`: the
    run's resolved --mixed-precision (build_state; a resumed refiner takes the run's, as the
    GAN does: the file's weights are float32 either way). Saved every
    REFINE_CHECKPOINT iterations and at the end; SIGINT/SIGTERM save and raise
    TrainingInterrupted (exit 130)."""
    from cxraug.gan.loop import StopFlag  # the GAN loop's signal handling, shared

    n, h, w = images.shape
    levels = refiner_levels(enlarge)
    vassert(h % 2**levels == 0 and w % 2**levels == 0,
            f"the refiner halves and doubles its map {levels} time(s): image sides must be "
            f"{'even' if levels == 1 else f'multiples of {2**levels}'}, the images are "
            f"{w}x{h} px; preprocess to another --size or drop --refine")  # fmt: skip
    # a process killed while saving left a temp file; we hold the run's lock (cxraug.train)
    remove_stale_temps(refiner_dir(run_path))
    state = build_state(seed, h, enlarge=enlarge, texture=texture, precision=precision)
    latest = find_latest(run_path)
    if latest is not None:
        if latest.meta.get("dataset_sha256") != dataset_sha256:
            raise InputError(f"the refiner in {refiner_dir(run_path)} was trained on another "
                             "dataset; move that folder away to train a new refiner")
        if int(latest.meta.get("enlarge", 1)) != enlarge:
            raise InputError(f"the refiner in {refiner_dir(run_path)} was trained for "
                             f"--enlarge {latest.meta.get('enlarge', 1)}, this run has "
                             f"--enlarge {enlarge}; move that folder away to train a new one")
        restore(state, latest)
    t0 = time.perf_counter()
    path = latest.path if latest is not None else None
    if state.iteration >= iterations:
        return RefineResult(path, state.iteration, 0.0, {})
    images = np.ascontiguousarray(images, np.float32)
    inputs = degraded(images, enlarge) if enlarge > 1 else None
    step = make_step(state)
    losses: dict[str, float] = {}
    traced = False
    info = text_column("{task.fields[info]}")
    with StopFlag() as stop, progress(info, disable=quiet) as bar:
        task = bar.add_task("refiner", total=iterations, completed=state.iteration, info="")
        while state.iteration < iterations:
            batch = [tf.constant(a) for a in draw_batch(state, images, inputs)]
            if traced:
                out = step(*batch)
            else:  # tracing + graph optimisation: keep grappler's lines off the terminal
                with quiet_native_stderr():
                    out = step(*batch)
                traced = True
            losses = dict(zip(("d_loss", "adv", "l1", "texture"), (float(v) for v in out),
                              strict=True))  # fmt: skip
            if not all(math.isfinite(v) for v in losses.values()):
                raise NumericError(f"non-finite refiner loss at its iteration "
                                   f"{state.iteration + 1} ({losses}); the last refiner file "
                                   f"is kept: {path or 'none'}")  # fmt: skip
            state.iteration += 1
            it = state.iteration
            if it % 50 == 0:
                state.history.append([it, *(round(v, 5) for v in losses.values())])
            bar.update(task, completed=it, info=f"D {losses['d_loss']:.3f} "
                       f"L1 {losses['l1']:.4f}")  # fmt: skip
            if on_iteration is not None:
                on_iteration(it)
            if it % REFINE_CHECKPOINT == 0 or it == iterations or stop.signum is not None:
                path = save(state, run_path, iterations, dataset_sha256)
            if stop.signum is not None and it < iterations:
                raise TrainingInterrupted(
                    f"refiner interrupted at its iteration {it}; saved to {path}. Continue "
                    f"with `cxraug train --resume {Path(run_path).name}`")
    return RefineResult(path, state.iteration, time.perf_counter() - t0, losses)
