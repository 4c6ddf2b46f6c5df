"""What this machine computes fast: native bf16 on the CPU or GPU, and the training precision
`--mixed-precision auto` resolves to.

Measured on the development CPU (AMD EPYC Zen 4, AVX512-BF16; bench/RESULTS.md): oneDNN runs
the paper model's bf16 matmuls at ~310-380 GFLOP/s against ~175-205 in fp32, and a bf16
training step is ~1.6x faster than the fp32 one; on the real data both precisions matched at
2,000 iterations (longer runs not compared, bench/RESULTS.md). Without native bf16 dot
products (AVX2-only CPUs) oneDNN emulates bf16 and is slower than fp32; fp16 has no fast CPU
kernels at all. On GPUs, bf16 needs compute capability 8.0 (A100, H100) for tensor cores.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

from cxraug.core.tf_setup import tf

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache  # the hardware does not change while we run; asked on every build_state
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (Linux; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def gpu_capabilities() -> tuple[tuple[int, int], ...]:
    """Compute capability of each visible GPU ((0, 0) where TensorFlow does not say)."""
    out = []
    for dev in tf.config.list_physical_devices("GPU"):
        cc = tf.config.experimental.get_device_details(dev).get("compute_capability")
        out.append(tuple(cc) if cc else (0, 0))
    return tuple(out)  # type: ignore[arg-type]


def auto_precision(flags: frozenset[str] | set[str] | None = None,
                   gpus: Sequence[tuple[int, int]] | None = None) -> str:  # fmt: skip
    """"bf16" where the training device has native bf16 matmuls, else "none" (fp32)."""
    gpus = gpu_capabilities() if gpus is None else gpus
    if gpus:
        return "bf16" if min(gpus) >= (8, 0) else "none"
    flags = cpu_flags() if flags is None else flags
    return "bf16" if flags & NATIVE_BF16_FLAGS else "none"


def resolve_precision(cfg: Any) -> Any:
    """The TrainConfig with mixed_precision "auto" replaced by what this machine runs fast."""
    if cfg.mixed_precision != "auto":
        return cfg
    return dataclasses.replace(cfg, mixed_precision=auto_precision())


def precision_warning(precision: str, flags: frozenset[str] | set[str] | None = None,
                      gpus: Sequence[tuple[int, int]] | None = None) -> str | None:  # fmt: skip
    """Why an explicitly chosen precision will be slow on this machine, or None."""
    gpus = gpu_capabilities() if gpus is None else gpus
    if precision in ("none", "auto") or gpus:
        return None
    flags = cpu_flags() if flags is None else flags
    if precision == "fp16":
        return "fp16 on a CPU is slower than fp32 (no native fp16 matmuls); use bf16 or none"
    if not flags & NATIVE_BF16_FLAGS:
        return ("this CPU has no native bf16 instructions (AVX512-BF16 or AMX): bf16 is "
                "slower than fp32 here; use --mixed-precision none")  # fmt: skip
    return None
