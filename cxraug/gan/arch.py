"""The architectures a run can train (`--arch`), one registry: for each name, its networks
(cxraug.gan.mlp, cxraug.gan.conv), its compiled step (cxraug.gan.mlp_step,
cxraug.gan.conv_step) and its FLOP count per sample. `cxraug.gan.step` builds a run's state
and step through it; `generate` rebuilds a run's generator through it. Adding an architecture
is one module of networks, one of its step, and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cxraug.core.tf_setup import tf
from cxraug.gan import conv, mlp
from cxraug.gan.config import TrainConfig
from cxraug.gan.conv_step import make_conv_step
from cxraug.gan.mlp_step import make_mlp_step


@dataclass(frozen=True)
class Arch:
    generator: Callable[[TrainConfig], Any]  # cfg -> G: ([z (B, L), y (B,)]) -> (B, H, W, 1)
    discriminator: Callable[[TrainConfig], Any]  # cfg -> D: ([x, y]) -> logits (B,)
    #: (state, images, labels, xla scope) -> tf.function (sigma, noisy) -> metrics
    step: Callable[[Any, Any, Any, str], Any]
    #: cfg -> multiply-add FLOPs (2 per MAC) of one forward pass of G and of D, ONE sample
    forward_flops: Callable[[TrainConfig], tuple[int, int]]


REGISTRY: dict[str, Arch] = {  # keys: cxraug.gan.config.ARCHS (the names --arch takes)
    "mlp": Arch(mlp.Generator, mlp.Discriminator, make_mlp_step, mlp.forward_flops),
    "conv": Arch(conv.ConvGenerator, conv.ProjectionDiscriminator, make_conv_step,
                 conv.conv_forward_flops),
}  # fmt: skip


def arch_of(cfg: TrainConfig) -> Arch:
    """The registry entry of cfg.arch (TrainConfig.check has refused unknown names)."""
    return REGISTRY[cfg.arch]


def build_generator(cfg: TrainConfig) -> Any:
    """The generator of cfg.arch with its variables created."""
    g = arch_of(cfg).generator(cfg)
    g([tf.zeros((2, cfg.latent_dim)), tf.zeros((2,), tf.int32)])
    return g


def build_models(cfg: TrainConfig) -> tuple[Any, Any]:
    """Both networks of cfg.arch with their variables created (under a strategy scope if any)."""
    g = build_generator(cfg)
    d = arch_of(cfg).discriminator(cfg)
    y = tf.zeros((2,), tf.int32)
    d([g([tf.zeros((2, cfg.latent_dim)), y]), y])
    return g, d


def forward_flops(cfg: TrainConfig) -> tuple[int, int]:
    """FLOPs of one forward pass of G and of D for ONE sample, for cfg.arch."""
    return arch_of(cfg).forward_flops(cfg)
