"""What a training run gives back (`cxraug.train.train`, `resume`): its result, or the
interruption that saved a checkpoint. No TensorFlow here: the train stage and its CLI import
this before any network runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxraug.core.errors import EXIT_INTERRUPTED, CxrError
from cxraug.gan.config import TrainConfig


class TrainingInterrupted(CxrError):
    """SIGINT/SIGTERM: a checkpoint was saved, the run can be resumed."""

    exit_code = EXIT_INTERRUPTED


@dataclass
class TrainResult:
    run_dir: Path
    iteration: int
    checkpoint: Path | None
    metrics: dict[str, float]
    seconds: float
    config: TrainConfig
    left_out_marked: int = 0  # training images left out for editorial marks
    refiner: Path | None = None  # the refiner file written last (--refine)
    refiner_iteration: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "iteration": self.iteration,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "metrics": self.metrics, "seconds": round(self.seconds, 2),
                "left_out_marked": self.left_out_marked,
                "refiner": str(self.refiner) if self.refiner else None,
                "refiner_iteration": self.refiner_iteration}  # fmt: skip
