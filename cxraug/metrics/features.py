"""Image -> feature vectors for FID/KID/PR: Keras Inception-v3 (ImageNet weights, pooled
2048-d), or a fixed-seed untrained Inception-v3 for offline smoke tests ("random" mode).

Preprocessing (pitfalls #10; every step changes the numbers, so each is fixed and reported):
    uint8 gray (H, W) -> float32 -> resize to 299x299 with the named filter (no re-quantising)
    -> copy to 3 channels -> keras inception_v3.preprocess_input (x / 127.5 - 1)
    -> InceptionV3(include_top=False, pooling="avg") -> (2048,) -> float64.
Each image is resized on its own, so features do not depend on the batch size.

Keras' InceptionV3 is not the TF 2015 "pool3" graph behind published FIDs (pitfalls #9): our
numbers are comparable with each other, not with papers. The extractor name says which it is.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxraug.core.errors import InputError, MissingResourceError
from cxraug.core.ui import progress

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/" + WEIGHTS_FILE
)
#: MD5 that keras.applications pins for WEIGHTS_FILE (keras/src/applications/inception_v3.py).
WEIGHTS_MD5 = "bcbd6486424b2319ff4ef7d526e38f63"
#: Seed of the untrained network in "random" mode: fixed, and independent of --seed, so the
#: feature space never changes between runs.
RANDOM_FEATURES_SEED = 0

#: name -> description. "bilinear-aa": tf.image.resize(method="bilinear", antialias=True)
#: (area-weighted when shrinking, plain bilinear when enlarging our 224 px images);
#: "cubic": cv2.resize INTER_CUBIC (no antialiasing when shrinking; overshoot clipped to 0..255).
RESIZE_FILTERS: dict[str, str] = {
    "bilinear-aa": "tf.image.resize bilinear, antialias=True, float (no re-quantisation)",
    "cubic": "cv2.resize INTER_CUBIC, float, clipped to [0, 255]",
}

Embed = Callable[[np.ndarray], np.ndarray]  # (B, 299, 299, 3) float32 preprocessed -> (B, D)


@dataclass(frozen=True)
class FeatureExtractor:
    """A named feature function. `standard` is False for anything but the pinned Keras
    ImageNet weights; reports then say that the numbers are not a standard FID."""

    name: str
    standard: bool
    weights_sha256: str | None
    dim: int
    embed: Embed


def keras_module() -> Any:
    """Keras, imported only after cxraug.core.tf_setup has set TensorFlow's environment (oneDNN on):
    a plain `import keras` first would load TensorFlow without it."""
    from cxraug.core.tf_setup import tf  # noqa: F401

    return importlib.import_module("keras")


def resize_to_inception(img_u8: np.ndarray, resize: str) -> np.ndarray:
    """(H, W) uint8 -> (299, 299) float32 in [0, 255] with the named filter."""
    if img_u8.dtype != np.uint8 or img_u8.ndim != 2:
        raise InputError(f"expected a (H, W) uint8 gray image, got {img_u8.shape} {img_u8.dtype}")
    s = INCEPTION_SIZE
    x = img_u8.astype(np.float32)
    if resize == "bilinear-aa":
        from cxraug.core.tf_setup import tf

        y = tf.image.resize(x[:, :, None], (s, s), method="bilinear", antialias=True)
        return np.asarray(y, np.float32)[:, :, 0]
    if resize == "cubic":
        return np.clip(cv2.resize(x, (s, s), interpolation=cv2.INTER_CUBIC), 0.0, 255.0)
    raise InputError(f"unknown resize filter {resize!r}; use one of {', '.join(RESIZE_FILTERS)}")


def prepare_batch(images_u8: list[np.ndarray], resize: str) -> np.ndarray:
    """List of (H, W) uint8 -> (B, 299, 299, 3) float32 in [-1, 1] (Inception's input)."""
    preprocess_input = keras_module().applications.inception_v3.preprocess_input
    gray = np.stack([resize_to_inception(im, resize) for im in images_u8])  # (B, 299, 299)
    rgb = np.repeat(gray[:, :, :, None], 3, axis=3)  # (B, 299, 299, 3): gray copied
    return np.asarray(preprocess_input(rgb), np.float32)


def extract_features(
    load: Callable[[int], np.ndarray],
    n: int,
    extractor: FeatureExtractor,
    *,
    resize: str = "bilinear-aa",
    batch_size: int = 32,
    label: str = "features",
    show_progress: bool = True,
) -> np.ndarray:
    """Features of images 0..n-1 (`load(i)` -> (H, W) uint8), batched: (n, D) float64.
    Images are loaded one batch at a time, so memory stays bounded for large sets."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    out = np.empty((n, extractor.dim), np.float64)
    with progress(disable=not show_progress) as bar:
        task = bar.add_task(label, total=n)
        for s in range(0, n, batch_size):
            idx = range(s, min(n, s + batch_size))
            x = prepare_batch([load(i) for i in idx], resize)  # (B, 299, 299, 3)
            f = np.asarray(extractor.embed(x), np.float64)  # (B, D)
            if f.shape != (len(idx), extractor.dim):
                raise RuntimeError(f"extractor returned {f.shape}, expected ({len(idx)}, D)")
            out[s : s + len(idx)] = f
            bar.advance(task, len(idx))
    return out


# ---- weights -------------------------------------------------------------------------------


def keras_model_dirs() -> list[Path]:
    """Where Keras keeps downloaded weights: $KERAS_HOME/models, then ~/.keras/models."""
    dirs = []
    if os.environ.get("KERAS_HOME"):
        dirs.append(Path(os.environ["KERAS_HOME"]).expanduser() / "models")
    dirs.append(Path("~/.keras/models").expanduser())
    return dirs


def find_weights(explicit: Path | None = None) -> Path:
    """The Inception-v3 notop weights file, or MissingResourceError saying how to get it."""
    how = (
        f"Download {WEIGHTS_URL} on a connected machine and put it in "
        f"{keras_model_dirs()[0]}/ (the Keras cache), or pass --weights PATH. For an offline "
        "smoke test only, `--features random` uses an untrained network (NOT a standard FID)."
    )
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise MissingResourceError(f"--weights {p}: no such file ({WEIGHTS_FILE}). {how}")
        return p
    for d in keras_model_dirs():
        if (d / WEIGHTS_FILE).is_file():
            return d / WEIGHTS_FILE
    looked = ", ".join(str(d) for d in keras_model_dirs())
    raise MissingResourceError(f"Inception-v3 weights {WEIGHTS_FILE} not found in {looked}. {how}")


def hash_weights(path: Path) -> tuple[str, str]:
    """(sha256, md5) of a weights file in one pass."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


# ---- networks ------------------------------------------------------------------------------


def _inception(weights: str | None) -> Any:
    shape = (INCEPTION_SIZE, INCEPTION_SIZE, 3)
    return keras_module().applications.InceptionV3(
        include_top=False, weights=weights, pooling="avg", input_shape=shape
    )


class _LazyNetwork:
    """Builds the network on the first batch, so a run whose features all come from the cache
    never pays for building Inception-v3 (~4 s) or loading its weights."""

    def __init__(self, build: Callable[[], Any], xla: bool) -> None:
        self._build, self._xla = build, xla
        self._fn: Any = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from cxraug.core.tf_setup import tf

        if self._fn is None:
            model = self._build()
            # autograph=False: a Keras model call needs no Python-to-graph conversion
            self._fn = tf.function(
                lambda t: model(t, training=False),
                jit_compile=self._xla,
                reduce_retracing=True,
                autograph=False,
            )
        return np.asarray(self._fn(tf.constant(x)))


def reinitialise(model: Any, seed: int) -> None:
    """Overwrite every weight from np.random.default_rng(seed): He-normal kernels (keeps
    activations O(1) through ~90 ReLU layers, where glorot would shrink them ~2x per layer),
    zero biases/betas/moving means, unit moving variances. No global seeding."""
    rng = np.random.default_rng(seed)
    for v in model.weights:  # fixed construction order
        shape, name = tuple(int(d) for d in v.shape), str(v.path)
        if name.endswith("kernel"):
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif name.endswith(("moving_variance", "gamma")):
            value = np.ones(shape)
        else:
            value = np.zeros(shape)
        v.assign(value.astype(np.float32))


def inception_extractor(weights: Path | None = None, *, xla: bool = False) -> FeatureExtractor:
    """Keras InceptionV3 with ImageNet weights found by `find_weights` (no download)."""
    path = find_weights(weights)
    sha, md5 = hash_weights(path)

    def build() -> Any:
        try:
            return _inception(str(path))
        except Exception as e:  # h5py/keras raise many types for a bad file
            raise MissingResourceError(
                f"could not load Inception-v3 weights from {path} ({type(e).__name__}: {e}); "
                f"re-download {WEIGHTS_URL}"
            ) from e

    standard = md5 == WEIGHTS_MD5
    name = "keras-inception_v3-imagenet" + ("" if standard else f"(unpinned weights md5={md5})")
    return FeatureExtractor(name, standard, sha, FEATURE_DIM, _LazyNetwork(build, xla))


def random_extractor(seed: int = RANDOM_FEATURES_SEED, *, xla: bool = False) -> FeatureExtractor:
    """UNTRAINED InceptionV3 with fixed-seed weights: deterministic, offline, NOT a standard
    FID (its features carry no ImageNet semantics). For smoke tests and speed benchmarks."""

    def build() -> Any:
        model = _inception(None)
        reinitialise(model, seed)
        return model

    name = f"inception_v3-random-init(seed={seed})"
    return FeatureExtractor(name, False, None, FEATURE_DIM, _LazyNetwork(build, xla))


FEATURE_KINDS = ("inception", "random")


def load_extractor(
    kind: str, weights: Path | None = None, *, xla: bool = False
) -> FeatureExtractor:
    if kind == "inception":
        return inception_extractor(weights, xla=xla)
    if kind == "random":
        if weights is not None:
            raise InputError("--weights cannot be combined with --features random")
        return random_extractor(xla=xla)
    raise InputError(f"unknown --features {kind!r}; use one of {', '.join(FEATURE_KINDS)}")
