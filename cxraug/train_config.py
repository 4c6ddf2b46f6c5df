"""TrainConfig and GenerateConfig: every default of the paper's CGAN, its training loop and
`generate`, each in one frozen dataclass.

The values follow Mohammed & Ali 2022, Table 2: latent 128, Adam(lr 2e-4, beta_1 0.6),
LeakyReLU slope 0.2 ("momentum alpha"), batch-norm momentum 0.8 ("momentum beta"), batch 128,
10,000 "epochs", sample interval 200. The paper's "epochs" are ITERATIONS: each draws one random
batch with replacement (Keras-GAN style), so 10,000 x 128 on ~2,150 images is ~600 passes.

The config is saved as runs/NAME/config.json and inside every checkpoint; `generate` rebuilds
the generator from the copy stored in the checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Any

from cxraug.errors import InputError, vassert

MIXED_PRECISION = ("auto", "none", "bf16", "fp16")
ARCHS = ("mlp", "conv")
AUGMENT_POLICIES = ("color", "translation", "cutout")  # cxraug.augment


def parse_policy(policy: str) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); '' or 'none' -> ()."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip() and p.strip() != "none")
    bad = [p for p in names if p not in AUGMENT_POLICIES]
    vassert(not bad, f"unknown augmentation {', '.join(bad)}; use a comma-separated list of "
                     f"{', '.join(AUGMENT_POLICIES)} (or none)")  # fmt: skip
    return names
STRATEGIES = ("default", "mirrored", "multiworker")


@dataclass(frozen=True)
class TrainConfig:
    # --- model (paper §3.c) ---
    image_size: int = 224  # H = W; must equal the dataset's image size
    num_classes: int = 2  # normal = 0, covid = 1 (cxraug.manifest.LABELS)
    latent_dim: int = 128
    g_widths: tuple[int, ...] = (128, 256, 512, 1024)  # generator hidden Dense widths
    d_widths: tuple[int, ...] = (512, 512, 512, 512)  # discriminator hidden Dense widths
    leaky_slope: float = 0.2
    bn_momentum: float = 0.8
    dropout: float = 0.4  # not given in the paper; Keras-GAN's CGAN value
    # --- optimisation ---
    lr: float = 2e-4
    beta_1: float = 0.6
    beta_2: float = 0.999
    batch_size: int = 128
    iterations: int = 10_000  # the paper's "epochs": one random batch each, with replacement
    # Annealed instance noise (paper: "to increase gradient flow at the start"): sigma of
    # N(0, sigma^2) added to D's real and fake inputs, falling linearly to 0. sigma 1.0 over
    # half the run: with 0.1 over 1,000 iterations D separated real from fake perfectly from
    # iteration ~50 and G stayed noise; 1.0 let G form chest outlines (docs/training.md).
    noise_start: float = 1.0
    noise_iterations: int = 5_000
    # --- architecture and data-efficient training (docs/training.md "Recipes") ---
    recipe: str = "paper"  # the preset these values started from (RECIPES); informational
    arch: str = "mlp"  # mlp: the paper's two MLPs (cxraug.models); conv: cxraug.conv
    conv_g_channels: tuple[int, ...] = (256, 128, 64, 32, 16, 8)  # G at 7, 14, ..., 224 px
    conv_d_channels: tuple[int, ...] = (16, 32, 64, 128, 256)  # D at 112, 56, ..., 7 px
    spectral_norm: bool = False  # conv D kernels divided by their top singular value
    mbstd_group: int = 4  # conv D: minibatch-stddev over groups of this many (0/1: off)
    augment: str = ""  # DiffAugment policy for D's inputs, e.g. "color,translation,cutout"
    ema_decay: float = 0.0  # > 0: keep an EMA generator (with warm-up) for samples/generate
    lecam: float = 0.0  # > 0: weight of the LeCam regulariser on D (conv only)
    score_samples: int = 0  # > 0: score each checkpoint on this many images (cxraug.scoring)
    # --- bookkeeping ---
    sample_interval: int = 200
    samples_per_class: int = 8  # columns of the fixed-noise sample grid
    checkpoint_interval: int = 500
    keep_checkpoints: int = 3
    seed: int = 0
    # --- speed ---
    # auto: bf16 where the device has native bf16 matmuls (AVX512-BF16/AMX CPUs, GPUs of
    # compute capability >= 8), else none (fp32); runs record the resolved value (hardware.py)
    mixed_precision: str = "auto"
    xla: bool = True  # XLA where it is faster (trainstep.xla_scope), see bench/
    strategy: str = "default"  # default | mirrored | multiworker (tf.distribute)

    def __post_init__(self) -> None:
        vassert(self.image_size >= 4, f"image_size={self.image_size}: use at least 4 pixels")
        vassert(self.num_classes >= 1, "num_classes must be at least 1")
        vassert(self.latent_dim >= 1, "latent_dim must be at least 1")
        vassert(len(self.g_widths) >= 1 and min(self.g_widths) >= 1,
                f"g_widths={self.g_widths}: give one or more positive widths")  # fmt: skip
        vassert(len(self.d_widths) >= 1 and min(self.d_widths) >= 1,
                f"d_widths={self.d_widths}: give one or more positive widths")  # fmt: skip
        vassert(0.0 <= self.dropout < 1.0, f"dropout={self.dropout}: use 0 <= dropout < 1")
        vassert(0.0 <= self.bn_momentum < 1.0, f"bn_momentum={self.bn_momentum}: use [0, 1)")
        vassert(self.lr > 0, f"lr={self.lr}: the learning rate must be positive")
        vassert(0.0 <= self.beta_1 < 1.0 and 0.0 <= self.beta_2 < 1.0,
                "Adam betas must lie in [0, 1)")  # fmt: skip
        vassert(self.batch_size >= 2, f"batch_size={self.batch_size}: use at least 2")
        vassert(self.iterations >= 0, f"iterations={self.iterations} is negative")
        vassert(self.noise_start >= 0 and self.noise_iterations >= 0,
                "noise_start and noise_iterations must not be negative")  # fmt: skip
        for name in ("sample_interval", "checkpoint_interval", "keep_checkpoints",
                     "samples_per_class"):  # fmt: skip
            vassert(getattr(self, name) >= 1, f"{name}={getattr(self, name)}: use at least 1")
        vassert(self.mixed_precision in MIXED_PRECISION,
                f"mixed_precision={self.mixed_precision!r}; use one of "
                f"{', '.join(MIXED_PRECISION)}")  # fmt: skip
        vassert(self.arch in ARCHS, f"arch={self.arch!r}; use one of {', '.join(ARCHS)}")
        if self.arch == "conv":
            lv = len(self.conv_g_channels) - 1
            vassert(lv >= 1 and min(self.conv_g_channels) >= 1
                    and self.image_size % 2**lv == 0,
                    f"conv_g_channels={self.conv_g_channels}: give 2 or more positive widths; "
                    f"image_size {self.image_size} must be a multiple of 2^{lv}")  # fmt: skip
            vassert(len(self.conv_d_channels) >= 1 and min(self.conv_d_channels) >= 1
                    and self.image_size >= 2 ** len(self.conv_d_channels),
                    f"conv_d_channels={self.conv_d_channels}: give positive widths, at most "
                    f"log2(image_size) of them")  # fmt: skip
            vassert(self.mbstd_group <= 1 or self.batch_size % self.mbstd_group == 0,
                    f"batch_size {self.batch_size} must be a multiple of mbstd_group "
                    f"{self.mbstd_group}")  # fmt: skip
        else:
            vassert(not self.spectral_norm and self.lecam == 0,
                    "spectral_norm and lecam apply to --arch conv only")  # fmt: skip
        parse_policy(self.augment)
        vassert(0.0 <= self.ema_decay < 1.0, f"ema_decay={self.ema_decay}: use 0 (off) .. <1")
        vassert(self.lecam >= 0 and self.score_samples >= 0,
                "lecam and score_samples must not be negative")  # fmt: skip
        vassert(self.strategy in STRATEGIES,
                f"strategy={self.strategy!r}; use one of {', '.join(STRATEGIES)}")  # fmt: skip

    def noise_sigma(self, iteration: int) -> float:
        """Instance-noise sigma at a 0-based iteration: linear from noise_start to 0."""
        if self.noise_iterations == 0:
            return 0.0
        return self.noise_start * max(0.0, 1.0 - iteration / self.noise_iterations)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown training option(s) {', '.join(unknown)} in config; "
                             "was it written by a newer cxraug?")  # fmt: skip
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        try:
            return cls(**kw)
        except TypeError as e:
            raise InputError(f"invalid training config: {e}") from e

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise InputError(f"training config is not valid JSON ({e})") from e

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


#: Options that may change when a run is resumed (they do not change the algorithm's state).
#: Not xla: XLA draws other random numbers from the same generator state than plain TF does.
RESUMABLE_CHANGES = frozenset(
    {"iterations", "sample_interval", "checkpoint_interval", "keep_checkpoints", "recipe",
     "score_samples"}
)
DEFAULTS = TrainConfig()

#: Named presets: TrainConfig fields that differ from the dataclass defaults (the paper's).
#: `cxraug train --recipe NAME` starts from one; explicit options override it.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},  # Mohammed & Ali 2022, Table 2, exactly (plus cxraug's instance noise)
    "conv": {
        "arch": "conv", "beta_1": 0.5, "batch_size": 32, "iterations": 3000,
        "noise_start": 0.0, "noise_iterations": 0, "spectral_norm": True,
        "augment": "color,translation,cutout", "ema_decay": 0.999, "lecam": 0.0,
        "checkpoint_interval": 250, "keep_checkpoints": 3, "score_samples": 128,
    },
}  # fmt: skip
DEFAULT_RECIPE = "conv"


def recipe_config(name: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig of a named recipe, with explicit field overrides on top."""
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}; use one of {', '.join(RECIPES)}")
    return TrainConfig(**{**RECIPES[name], "recipe": name, **overrides})


@dataclass(frozen=True)
class GenerateConfig:
    label: str = "covid"
    n: int | None = None  # None with balance=True: computed from the manifest
    balance: bool = False
    seed: int = 0
    batch_size: int = 256
    run: str | None = None  # default: the newest run with a checkpoint
    # default: the run's best-scored checkpoint if it has one, else its latest; or "best",
    # "latest", or a checkpoint file
    checkpoint: str | None = None
    force: bool = False
