"""TrainConfig: every default of the paper's CGAN and its training loop, in one frozen
dataclass (each option's help text next to its field).

The values follow Mohammed & Ali 2022, Table 2: latent 128, Adam(lr 2e-4, beta_1 0.6),
LeakyReLU slope 0.2 ("momentum alpha"), batch-norm momentum 0.8 ("momentum beta"), batch 128,
10,000 "epochs", sample interval 200. The paper's "epochs" are ITERATIONS: each draws one random
batch with replacement (Keras-GAN style), so 10,000 x 128 on ~2,150 images is ~600 passes.

The config is saved as runs/NAME/config.json and inside every checkpoint; `generate` rebuilds
the generator from the copy stored in the checkpoint. Its mixed_precision there is always the
resolved one (bf16 or none, never auto).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Any

from cxraug.core.errors import InputError, vassert
from cxraug.core.settings import setting

MIXED_PRECISION = ("auto", "none", "bf16", "fp16")
STRATEGIES = ("default", "mirrored", "multiworker")


@dataclass(frozen=True)
class TrainConfig:
    # --- model (paper §3.c); image_size and num_classes are the dataset's (set by `train`) ---
    image_size: int = 224  # H = W; must equal the dataset's image size
    num_classes: int = 2  # normal = 0, covid = 1 (cxraug.core.manifest.LABELS)
    latent_dim: int = setting(128, "Noise size.")
    g_widths: tuple[int, ...] = setting((128, 256, 512, 1024), "Generator hidden Dense widths.")
    d_widths: tuple[int, ...] = setting(
        (512, 512, 512, 512),
        "Discriminator hidden Dense widths (BN after all but the first, dropout after "
        "2nd..n-1th).",
    )
    leaky_slope: float = setting(0.2, "LeakyReLU slope.")
    bn_momentum: float = setting(0.8, "BatchNorm momentum.")
    dropout: float = setting(0.4, "D dropout rate (not in the paper; Keras-GAN's CGAN value).")
    # --- optimisation ---
    lr: float = setting(2e-4, "Adam learning rate.")
    beta_1: float = setting(0.6, "Adam beta_1.")
    beta_2: float = setting(0.999, "Adam beta_2.")
    batch_size: int = setting(128, "Batch size.")
    iterations: int = setting(
        10_000,
        "Training iterations. The paper's 'epochs' ARE iterations: each draws one random batch "
        "with replacement (10,000 x 128 on ~2,150 images is ~600 passes).",
        "--iterations", "--epochs",
    )  # fmt: skip
    # Annealed instance noise (paper: "to increase gradient flow at the start"): sigma of
    # N(0, sigma^2) added to D's real and fake inputs, falling linearly to 0. sigma 1.0 over
    # half the run: with 0.1 over 1,000 iterations D separated real from fake perfectly from
    # iteration ~50 and G stayed noise; 1.0 let G form chest outlines (docs/training.md).
    noise_start: float = setting(
        1.0, "Instance-noise sigma on D's inputs at iteration 0, annealed linearly to 0."
    )
    noise_iterations: int = setting(
        5_000, "Iterations over which the instance noise anneals to 0 (0: none)."
    )
    # --- bookkeeping ---
    sample_interval: int = setting(200, "Save a fixed-noise sample grid every N iterations.")
    samples_per_class: int = setting(8, "Columns of the sample grid.")
    checkpoint_interval: int = setting(
        500, "Checkpoint every N iterations (and on Ctrl-C/SIGTERM)."
    )
    keep_checkpoints: int = setting(3, "Checkpoints kept.")
    seed: int = setting(0, "Seed of every random choice.")
    # --- speed ---
    # auto is resolved ONCE, when a run's state is built (cxraug.gan.step.build_state, through
    # cxraug.gan.hardware.resolve_precision); runs and checkpoints record bf16 or none.
    mixed_precision: str = setting(
        "auto",
        "auto | none (fp32) | bf16 | fp16. auto = bf16 where matmuls run natively in bf16 "
        "(CPUs with AVX512-BF16/AMX: ~1.5x faster here; GPUs of compute capability >= 8), "
        "else fp32; weights stay fp32.",
    )
    xla: bool = setting(
        True,
        "Use XLA where it is faster (fp32: the whole step; bf16 on a CPU: the Adam updates).",
        "--xla/--no-xla",
    )
    strategy: str = setting(
        "default", "default | mirrored (all local GPUs) | multiworker (TF_CONFIG)."
    )

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
    {"iterations", "sample_interval", "checkpoint_interval", "keep_checkpoints"}
)
DEFAULTS = TrainConfig()

