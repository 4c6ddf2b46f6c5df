"""The classifier of `evaluate`: a compact CNN trained from scratch (no ImageNet weights can be
assumed offline), and its training loop with early stopping on validation images.

    x (B, S, S, 1) in [-1, 1]
    -> `blocks` x [Conv 3x3 stride 2 (width * 2^b channels, no bias) -> BatchNorm -> ReLU]
    -> global average pool -> Dense(classes) logits

At S = 128, width 16, 4 blocks: 8 x 8 x 128 features before the pool, ~0.1 M weights,
~30 MFLOP per forward pass (`forward_flops`). The loop: `steps` Adam steps on batches an arm
chooses (cxraug.classify.augment), the validation score every `eval_every` steps, the best
weights kept, and a stop after `patience` evaluations without improvement.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxraug.classify.augment import Classical, augment_batch, batch_indices
from cxraug.classify.stats import auc, balanced_accuracy_multiclass
from cxraug.core.errors import NumericError


@dataclass(frozen=True)
class NetConfig:
    size: int = 128
    width: int = 16
    blocks: int = 4
    steps: int = 600
    batch_size: int = 32
    eval_every: int = 50
    patience: int = 4
    learning_rate: float = 1e-3


def build_classifier(cfg: NetConfig, classes: int, seed: int) -> Any:
    """The CNN above, its initial weights drawn from `seed` alone (no global seeding)."""
    from cxraug.core.tf_setup import keras

    layers = keras.layers
    x = inp = keras.Input((cfg.size, cfg.size, 1))
    for b in range(cfg.blocks):
        x = layers.Conv2D(cfg.width * 2**b, 3, strides=2, padding="same", use_bias=False,
                          kernel_initializer=keras.initializers.HeNormal(seed=seed * 97 + b))(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(classes, kernel_initializer=keras.initializers.GlorotUniform(
        seed=seed * 97 + 50))(x)  # fmt: skip
    return keras.Model(inp, out)


def forward_flops(cfg: NetConfig, classes: int) -> int:
    """Multiply-adds x 2 of one forward pass (convolutions and the dense layer)."""
    total, s, cin = 0, cfg.size, 1
    for b in range(cfg.blocks):
        s, cout = -(-s // 2), cfg.width * 2**b
        total += 2 * s * s * 9 * cin * cout
        cin = cout
    return total + 2 * cin * classes


@dataclass
class Trained:
    predict: Callable[[np.ndarray], np.ndarray]  # (N, S, S) -> (N, classes) probabilities
    best_step: int
    best_val: float
    steps_run: int
    images_seen: int
    seconds: float  # training only (the validation passes excluded)
    #: (N, S, S) -> (N, F): the pooled features the dense layer reads (the penultimate layer)
    features: Callable[[np.ndarray], np.ndarray] | None = None
    weights: list[np.ndarray] | None = None  # the kept (best) weights: another fit's `init`


def _runners(model: Any, classes: int) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                 Callable[[np.ndarray], np.ndarray]]:  # fmt: skip
    """(predict, features) of `model` in inference mode, 256 images at a time."""
    from cxraug.core.tf_setup import keras, tf

    pooled = keras.Model(model.inputs, model.layers[-2].output)  # shares the weights

    @tf.function(reduce_retracing=True)
    def forward(xb: Any) -> Any:
        return tf.nn.softmax(model(xb, training=False))

    def embed(xb: Any) -> Any:  # eager: a few calls per model (selection, the source probe);
        return pooled(xb, training=False)  # traced, each new model's first calls warn as retracing

    def batched(fn: Any, width: int) -> Callable[[np.ndarray], np.ndarray]:
        def run(images: np.ndarray) -> np.ndarray:
            out = [np.asarray(fn(tf.constant(images[i : i + 256, ..., None])))
                   for i in range(0, len(images), 256)]  # fmt: skip
            return np.concatenate(out) if out else np.zeros((0, width), np.float32)

        return run

    return batched(forward, classes), batched(embed, int(pooled.output.shape[-1]))


def val_score(y: np.ndarray, prob: np.ndarray, accuracy: bool = False) -> float:
    """Binary: AUC of the positive class; more classes, or `accuracy`: balanced accuracy of
    the argmax."""
    if prob.shape[1] == 2 and not accuracy:
        return auc(y, prob[:, 1])
    return balanced_accuracy_multiclass(y, prob.argmax(1), prob.shape[1])


def fit(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, classes: int,
        cfg: NetConfig, seed: int, *, balanced: bool = False, augment: Classical | None = None,
        init: list[np.ndarray] | None = None, stream: int = 0,
        by_accuracy: bool = False) -> Trained:  # fmt: skip
    """Train a classifier on (x, y) and return the weights that scored best on validation
    (`val_score`; `by_accuracy`: balanced accuracy even for two classes, when that, not the
    ranking, is what will be reported: a perfect validation AUC reached early would otherwise
    keep weights whose argmax is still one class).

    It starts from `seed`'s initial weights, or from `init` (another fit's kept weights: a
    fine-tuning phase) with a fresh optimizer; `stream` > 0 gives the batch order and the
    augmentation a generator of their own (a second phase of the same seed)."""
    from cxraug.core.tf_setup import keras, quiet_native_stderr, tf

    rng = np.random.default_rng([seed, 0xC1A5, stream] if stream else [seed, 0xC1A5])
    model = build_classifier(cfg, classes, seed)
    if init is not None:
        model.set_weights(init)
    opt = keras.optimizers.Adam(cfg.learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(reduce_retracing=True)
    def step(xb: Any, yb: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    predict, features = _runners(model, classes)
    order = batch_indices(y, cfg.batch_size, cfg.steps, balanced, rng)  # (steps, B)
    best, best_step, best_w, bad, train_s, done = -np.inf, 0, model.get_weights(), 0, 0.0, 0
    for k in range(cfg.steps):
        t0 = time.perf_counter()
        xb = x[order[k]]
        if augment is not None:
            xb = augment_batch(xb, augment, rng)
        with quiet_native_stderr() if k == 0 else contextlib.nullcontext():
            loss = float(step(tf.constant(xb[..., None]), tf.constant(y[order[k]])))
        train_s += time.perf_counter() - t0
        done = k + 1
        if not np.isfinite(loss):
            raise NumericError(f"classifier loss became {loss} at step {k + 1}; lower the "
                               "learning rate or check the images for NaN")  # fmt: skip
        if done % cfg.eval_every == 0 or done == cfg.steps:
            v = val_score(y_val, predict(x_val), by_accuracy)
            if np.isfinite(v) and v > best:
                best, best_step, best_w, bad = v, done, model.get_weights(), 0
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
    model.set_weights(best_w)
    return Trained(predict, best_step, float(best), done, done * cfg.batch_size, train_s,
                   features, best_w)  # fmt: skip
