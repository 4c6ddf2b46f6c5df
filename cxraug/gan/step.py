"""A run's training state and its compiled step, for every architecture (cxraug.gan.arch).

`build_state` makes a run's networks, optimizers and RNG (and resolves "auto" precision,
once); `make_step` compiles one iteration of cfg.arch's step (the MLP's: cxraug.gan.mlp_step,
the conv networks': cxraug.gan.conv_step) with XLA where it is faster (`xla_scope`). Every
random number comes from one tf.random.Generator seeded by --seed, in-graph.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxraug.core.errors import InputError, vassert
from cxraug.core.tf_setup import keras, quiet_native_stderr, tf
from cxraug.gan.arch import arch_of, build_generator, build_models
from cxraug.gan.cluster import make_strategy
from cxraug.gan.config import TrainConfig
from cxraug.gan.ema import copy_weights
from cxraug.gan.hardware import resolve_precision

METRICS = ("d_loss", "g_loss", "d_real_acc", "d_fake_acc")
XLA_SCOPES = ("step", "update", "none")


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
    gen: Any  # the generator of cfg.arch (cxraug.gan.arch): a keras.Model
    disc: Any  # its discriminator
    g_opt: Any
    d_opt: Any
    rng: Any  # tf.random.Generator
    iteration: int = 0
    ema: Any = None  # the EMA generator (cxraug.gan.ema) when cfg.ema_decay > 0
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


def make_step(
    state: TrainState, images: Any, labels: Any, *, scope: str | None = None
) -> Step:
    """A function (sigma, noisy) -> metrics that runs one compiled iteration of cfg.arch's
    step in place (cxraug.gan.arch).

    `images` (N, H, W) float32 and `labels` (N,) int32 are tf.Variables resident in memory.
    Two graphs are traced at most: with instance noise (sigma > 0) and without.
    `scope` overrides `xla_scope` (tests and bench/ compare the three).
    """
    scope = scope or xla_scope(state.cfg, state.strategy)
    vassert(scope in XLA_SCOPES, f"xla scope {scope!r}; use one of {', '.join(XLA_SCOPES)}")
    return Step(arch_of(state.cfg).step(state, images, labels, scope))


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
        the work really executed, to check the analytic count against
        (`cxraug.gan.mlp_step.step_flops`)."""
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
