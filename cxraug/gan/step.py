"""The compiled CGAN training step: explicit GradientTape, explicit variable lists.

One iteration (batch B, images (H, W, 1)):
    idx ~ U{0..N-1}^B (with replacement), z ~ N(0, I) (B, L), y = labels[idx]
    fake = G([z, y], training)                               # (B, H, W, 1), the ONLY G pass
    D step: logits = D([real + s*e_r ; fake + s*e_f], [y; y])   # ONE pass, (2B,)
            d_loss = mean BCE(1, logits[:B]) and BCE(0, logits[B:]); Adam update of D only
    G step: D' = updated D on the SAME [real; fake] batch (same z, same labels, so the
            recorded G forward pass equals a fresh one: reusing it changes only the cost)
            g_loss = mean BCE(1, D'(...)[B:]) (fake half only); Adam update of G only
Fake labels are the real batch's labels, so D cannot learn the class prior (pitfalls #3).
`s` is the annealed instance-noise sigma.

BatchNorm in D uses JOINT statistics over the concatenated [real; fake] batch, in both steps.
Per-half statistics (what two separate Keras-GAN `train_on_batch` calls compute) make this D
blind: its last hidden layer ends in BatchNorm, so the batch-mean logit of an all-real and of
an all-fake batch are both exactly `w . beta + b` and D stays at chance (loss ln 2; seen on
real data in the first version). With joint statistics the real/fake mean difference survives.
Every random number comes from one tf.random.Generator seeded by --seed, in-graph.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxraug.core.errors import InputError, vassert
from cxraug.core.tf_setup import keras, quiet_native_stderr, tf
from cxraug.gan.augment import diff_augment
from cxraug.gan.config import TrainConfig, parse_policy
from cxraug.gan.ema import copy_weights, update_ema
from cxraug.gan.hardware import resolve_precision
from cxraug.gan.models import (
    Discriminator,
    Generator,
    build_generator,
    build_models,
    dropout_layers,
)

METRICS = ("d_loss", "g_loss", "d_real_acc", "d_fake_acc")
XLA_SCOPES = ("step", "update", "none")


def make_strategy(name: str) -> Any:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()  # all local GPUs (or logical devices)
    if name == "multiworker":  # cluster layout from the TF_CONFIG environment variable
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _make_optimizer(cfg: TrainConfig, name: str) -> Any:
    opt = keras.optimizers.Adam(cfg.lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, name=name)
    if cfg.mixed_precision == "fp16":  # fp16 gradients underflow without loss scaling
        opt = keras.optimizers.LossScaleOptimizer(opt, name=f"{name}_ls")
    return opt


@dataclass
class TrainState:
    """Everything a checkpoint holds: networks, both optimizers, the RNG and the iteration."""

    cfg: TrainConfig
    strategy: Any
    gen: Generator
    disc: Discriminator
    g_opt: Any
    d_opt: Any
    rng: Any  # tf.random.Generator
    iteration: int = 0
    ema: Any = None  # the EMA generator (cxraug.ema) when cfg.ema_decay > 0
    g_updates: Any = None  # tf.Variable int64: generator updates so far (the EMA's t)
    lecam: Any = None  # tf.Variable (2,): LeCam anchors (EMA of D on reals, on fakes)

    def aux_variables(self) -> list[Any]:
        """State beyond the networks and optimizers (checkpointed when present)."""
        return [v for v in (self.g_updates, self.lecam) if v is not None]

    @property
    def sampler(self) -> Any:
        """The generator that samples: the EMA one when there is one."""
        return self.ema if self.ema is not None else self.gen


def build_state(cfg: TrainConfig, strategy: Any | None = None) -> TrainState:
    """A run's networks, optimizers and RNG. This is where a run's config becomes final:
    "auto" precision is resolved here, ONCE, and everything downstream (models, step,
    checkpoints, config.json) reads the resolved `state.cfg`."""
    cfg = resolve_precision(cfg)
    strategy = strategy if strategy is not None else make_strategy(cfg.strategy)
    if cfg.batch_size % strategy.num_replicas_in_sync:
        raise InputError(f"batch size {cfg.batch_size} does not split over "
                         f"{strategy.num_replicas_in_sync} replicas; use a multiple of it")
    with strategy.scope():
        gen, disc = build_models(cfg)
        g_opt, d_opt = _make_optimizer(cfg, "g_adam"), _make_optimizer(cfg, "d_adam")
        g_opt.build(gen.trainable_variables)  # create the slots now: checkpoints hold them
        d_opt.build(disc.trainable_variables)
        ema = g_updates = lecam = None
        if cfg.ema_decay > 0:
            ema = build_generator(cfg)
            copy_weights(ema, gen)  # ema_0 = the initial weights
            g_updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="g_updates")
        if cfg.lecam > 0:
            lecam = tf.Variable(tf.zeros(2), trainable=False, name="lecam_anchors")
    # Outside the scope: one generator, used in cross-replica context only.
    rng = tf.random.Generator.from_seed(cfg.seed, alg="philox")
    return TrainState(cfg, strategy, gen, disc, g_opt, d_opt, rng, 0, ema, g_updates, lecam)


def _bce_sum(target: float, logits: Any) -> Any:
    t = tf.fill(tf.shape(logits), target)
    return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(t, logits))


def _scaled(opt: Any, loss: Any) -> Any:
    """The loss to differentiate (call inside the tape): fp16 scales it, apply() unscales."""
    if isinstance(opt, keras.optimizers.LossScaleOptimizer):
        return opt.scale_loss(loss)
    return loss


def xla_scope(cfg: TrainConfig, strategy: Any) -> str:
    """Where XLA compiles: "step" (all of it), "update" (the two Adam updates only) or "none".

    Measured on this CPU (bench/RESULTS.md): XLA fuses Adam's element-wise passes over the
    78 M parameters (0.20 s -> 0.06 s per iteration) and the whole fp32 step runs at ~95 % of
    the GEMM roofline; but XLA's CPU matmul has no bf16/fp16 kernel as fast as oneDNN's
    (bf16: ~160 vs ~310-380 GFLOP/s), so on a CPU a mixed-precision step keeps its matmuls
    outside XLA and compiles only the updates. XLA needs one device: tf.distribute over
    several replicas runs without it.
    """
    if cfg.mixed_precision == "auto":
        raise ValueError("xla_scope needs a resolved precision (a run's state.cfg), not auto")
    if not cfg.xla or strategy.num_replicas_in_sync != 1 or cfg.strategy != "default":
        return "none"
    if cfg.arch == "conv":  # XLA's CPU convolutions are slower than oneDNN's (bench/conv_step)
        return "none"
    mixed = cfg.mixed_precision != "none"
    if mixed and not tf.config.list_physical_devices("GPU"):
        return "update"
    return "step"


def _updater(opt: Any, variables: list[Any], *, jit: bool) -> Callable[[list[Any]], None]:
    """opt.apply_gradients over `variables`, compiled on its own with XLA when `jit`
    (a jit_compile function nested in the step's tf.function is one fused XLA cluster)."""

    def apply(grads: list[Any]) -> None:
        opt.apply_gradients(zip(grads, variables, strict=True))

    return tf.function(apply, jit_compile=True) if jit else apply


def make_step(
    state: TrainState, images: Any, labels: Any, *, scope: str | None = None
) -> Step:
    """A function (sigma, noisy) -> metrics that runs one compiled iteration in place.

    `images` (N, H, W) float32 and `labels` (N,) int32 are tf.Variables resident in memory.
    Two graphs are traced at most: with instance noise (sigma > 0) and without.
    `scope` overrides `xla_scope` (tests and bench/ compare the three).
    """
    cfg, st = state.cfg, state.strategy
    if cfg.arch == "conv":
        from cxraug.gan.conv_step import make_conv_step

        vassert(st.num_replicas_in_sync == 1, "--arch conv trains on one device for now")
        vassert(scope in (None, "none"), "the conv step has no XLA form (xla_scope: none)")
        return Step(make_conv_step(state, images, labels))
    gen, disc, rng = state.gen, state.disc, state.rng
    policy = parse_policy(cfg.augment)
    vassert(not policy or st.num_replicas_in_sync == 1,
            "--augment draws its transforms per replica; use one device (--strategy default)")
    b_glob = cfg.batch_size
    b = b_glob // st.num_replicas_in_sync
    s = cfg.image_size
    n_drop = len(dropout_layers(cfg))
    drop_w = [cfg.d_widths[i] for i in dropout_layers(cfg)]
    n_images = int(images.shape[0])

    def replica_step(idx: Any, z: Any, e_real: Any, e_fake: Any, u_d: Any, u_g: Any,
                     sigma: Any) -> dict[str, Any]:  # fmt: skip
        r = tf.distribute.get_replica_context().replica_id_in_sync_group
        lo = r * b  # this replica's slice of the global batch
        idx, z = idx[lo : lo + b], z[lo : lo + b]
        real = tf.gather(images, idx)[..., None]  # (b, H, W, 1)
        y = tf.gather(labels, idx)  # (b,) fakes get the real batch's labels
        with tf.GradientTape() as g_tape:
            fake = gen([z, y], training=True)  # (b, H, W, 1)
            fake_in = fake if e_fake is None else fake + sigma * e_fake[lo : lo + b]
            if policy:  # DiffAugment: the same T(fake) is seen by the D and the G step
                fake_in = diff_augment(fake_in, rng, policy, p=cfg.augment_p)
            with g_tape.stop_recording(), tf.GradientTape() as d_tape:
                real_in = real if e_real is None else real + sigma * e_real[lo : lo + b]
                if policy:
                    real_in = diff_augment(real_in, rng, policy, p=cfg.augment_p)
                x = tf.concat([real_in, fake_in], 0)  # (2b, H, W, 1)
                ud = [tf.concat([u[lo : lo + b], u[b_glob + lo : b_glob + lo + b]], 0)
                      for u in u_d]  # fmt: skip
                yy = tf.concat([y, y], 0)
                logits = disc([x, yy], training=True, groups=1, dropout_u=ud)
                d_sum = _bce_sum(1.0, logits[:b]) + _bce_sum(0.0, logits[b:])
                d_loss = d_sum / (2.0 * b_glob)  # global mean: replica gradients are summed
                d_obj = _scaled(state.d_opt, d_loss)
            d_vars = disc.trainable_variables
            d_grads = d_tape.gradient(d_obj, d_vars)
            apply_d(d_grads)
            # G step through the UPDATED D (control dependencies keep program order), on the
            # same [real; fake] batch so BatchNorm uses the same joint statistics as in the D
            # step; the loss reads only the fake half.
            ug = [tf.concat([u[lo : lo + b], u[b_glob + lo : b_glob + lo + b]], 0)
                  for u in u_g]  # fmt: skip
            g_logits = disc([tf.concat([real_in, fake_in], 0), yy], training=True, groups=1,
                            dropout_u=ug)[b:]  # fmt: skip
            g_sum = _bce_sum(1.0, g_logits)
            g_loss = g_sum / float(b_glob)
            g_obj = _scaled(state.g_opt, g_loss)
        apply_g(g_tape.gradient(g_obj, gen.trainable_variables))
        if state.ema is not None:
            state.g_updates.assign_add(1)
            update_ema(state.ema, gen, state.g_updates, cfg.ema_decay)
        f32 = tf.float32
        return {
            "d_sum": d_sum, "g_sum": g_sum,
            "real_ok": tf.reduce_sum(tf.cast(logits[:b] > 0, f32)),
            "fake_ok": tf.reduce_sum(tf.cast(logits[b:] < 0, f32)),
        }  # fmt: skip

    def step(sigma: Any, noisy: bool) -> dict[str, Any]:
        # All randomness drawn here, in cross-replica context, for the GLOBAL batch:
        # the result does not depend on the number of replicas.
        idx = rng.uniform([b_glob], 0, n_images, dtype=tf.int64)
        z = rng.normal([b_glob, cfg.latent_dim])
        e_real = rng.normal([b_glob, s, s, 1]) if noisy else None
        e_fake = rng.normal([b_glob, s, s, 1]) if noisy else None
        u_d = [rng.uniform([2 * b_glob, w]) for w in drop_w]
        u_g = [rng.uniform([2 * b_glob, w]) for w in drop_w]
        assert len(u_d) == n_drop
        out = st.run(replica_step, args=(idx, z, e_real, e_fake, u_d, u_g, sigma))
        tot = {k: st.reduce("SUM", v, axis=None) for k, v in out.items()}
        return {
            "d_loss": tot["d_sum"] / (2.0 * b_glob), "g_loss": tot["g_sum"] / float(b_glob),
            "d_real_acc": tot["real_ok"] / b_glob, "d_fake_acc": tot["fake_ok"] / b_glob,
        }  # fmt: skip

    scope = scope or xla_scope(cfg, st)
    vassert(scope in XLA_SCOPES, f"xla scope {scope!r}; use one of {', '.join(XLA_SCOPES)}")
    apply_d = _updater(state.d_opt, disc.trainable_variables, jit=scope == "update")
    apply_g = _updater(state.g_opt, gen.trainable_variables, jit=scope == "update")
    compiled = tf.function(step, jit_compile=scope == "step", reduce_retracing=False)

    return Step(compiled)


class Step:
    """One compiled training iteration: step(sigma, noisy) -> metrics, run in place."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled  # the tf.function (bench/ and tests read its HLO)
        self._traced: set[bool] = set()

    def __call__(self, sigma: float, noisy: bool) -> dict[str, float]:
        if bool(noisy) in self._traced:
            out = self.compiled(tf.constant(sigma, tf.float32), bool(noisy))
        else:  # tracing + graph optimisation: keep grappler's start-up lines off the terminal
            with quiet_native_stderr():
                out = self.compiled(tf.constant(sigma, tf.float32), bool(noisy))
            self._traced.add(bool(noisy))
        return {k: float(v) for k, v in out.items()}

    def hlo_matmul_flops(self, noisy: bool = False) -> float:
        """FLOPs of every dot (2*M*N*K) in the optimized XLA program of the whole-step form:
        the work really executed, to check the analytic count (`step_flops`) against."""
        hlo = self.compiled.experimental_get_compiler_ir(tf.constant(0.0), noisy)(
            stage="optimized_hlo"
        )
        shapes = {m[1]: [int(d) for d in m[2].split(",") if d]
                  for m in re.finditer(r"%([\w.\-]+) = \w+\[([\d,]*)\]", hlo)}  # fmt: skip
        total = 0
        dot = (r"= \w+\[([\d,]*)\]\S* dot\(%([\w.\-]+), %[\w.\-]+\), "
               r"lhs_contracting_dims=\{([\d,]*)\}")  # out shape, lhs name, lhs K dims
        for m in re.finditer(dot, hlo):
            out = math.prod(int(d) for d in m[1].split(",") if d)
            k = math.prod(shapes[m[2]][int(d)] for d in m[3].split(",") if d)
            total += 2 * out * k
        return float(total)


def forward_flops(cfg: TrainConfig) -> tuple[int, int]:
    """Matmul FLOPs of one forward pass of G and of D for ONE sample (2*N*K per Dense)."""

    def fwd(widths: list[int]) -> int:
        return sum(2 * a * b for a, b in zip(widths[:-1], widths[1:], strict=True))

    px = cfg.image_size**2
    return fwd([cfg.latent_dim, *cfg.g_widths, px]), fwd([px, *cfg.d_widths, 1])


def step_flops(cfg: TrainConfig) -> float:
    """Matmul FLOPs of one iteration, from the layer shapes (2*M*N*K per matmul).

    Per sample, Dfwd / Gfwd = one forward pass of D / G. D step on the 2B batch: forward,
    weight gradients, data gradients (down to the input: D's label embedding multiplies it)
    = 6 B Dfwd; G step: D forward + data gradients on the same 2B batch = 4 B Dfwd; G: one
    forward (reused), weight and data gradients = 3 B Gfwd.
    """
    g, d = forward_flops(cfg)
    return float(10 * cfg.batch_size * d + 3 * cfg.batch_size * g)


def resident_dataset(images: np.ndarray, labels: np.ndarray) -> tuple[Any, Any]:
    """The training images and labels as host-resident, non-trainable tf.Variables."""
    with tf.device("/CPU:0"):
        return (tf.Variable(images.astype(np.float32, copy=False), trainable=False),
                tf.Variable(labels.astype(np.int32), trainable=False))  # fmt: skip


def all_finite(state: TrainState) -> bool:
    """True when every weight and optimizer slot is finite (checked before saving)."""
    vs = state.gen.weights + state.disc.weights + state.g_opt.variables + state.d_opt.variables
    if state.ema is not None:
        vs = vs + state.ema.weights
    return all(bool(np.isfinite(v.numpy()).all()) for v in vs
               if "float" in str(v.dtype))  # fmt: skip
