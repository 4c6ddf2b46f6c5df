"""What a training run writes besides checkpoints: log.csv, TensorBoard events, sample grids
from a fixed noise grid, and loss.png (drawn by cxraug.core.figures). Paths come from
cxraug.core.workspace.RunDir, PNGs are encoded by cxraug.core.images.

    runs/NAME/config.json            resolved TrainConfig
    runs/NAME/log.csv                iteration,d_loss,g_loss,d_real_acc,d_fake_acc,it_per_s,wall_s
    runs/NAME/tb/                    TensorBoard scalars (same values)
    runs/NAME/samples/iter_XXXXXX.png  rows = classes (with --condition class,source: every
                                     cell, class-major: normal/A, normal/B, ..., covid/A, ...,
                                     unseen cells included), columns = the SAME z every time
    runs/NAME/loss.png               d_loss and g_loss against iteration
"""

from __future__ import annotations

import csv
import importlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from cxraug.core.csvfile import read_csv
from cxraug.core.figures import line_chart
from cxraug.core.fsutil import atomic_write_text
from cxraug.core.images import to_uint8, write_png_gray, write_png_rgb
from cxraug.core.tf_setup import tf
from cxraug.core.workspace import RunDir
from cxraug.gan.config import TrainConfig

# After cxraug.core.tf_setup (so TensorFlow starts with our settings); a sibling import would be
# sorted above it by the import sorter.
summary_pb2 = importlib.import_module("tensorflow.core.framework.summary_pb2")

# tf.summary.scalar needs the tensorboard package; this is the same event record without it.
_SCALAR = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
).SerializeToString()
LOG_COLUMNS = ("iteration", "d_loss", "g_loss", "d_real_acc", "d_fake_acc", "it_per_s", "wall_s")


def fixed_noise(cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The sample grid's inputs: z (R*K, L) and labels (R*K,), from the seed alone; R rows =
    the classes, or every class x source cell of a source-conditioned run."""
    k = cfg.samples_per_class
    rng = np.random.default_rng([cfg.seed, 0x5A])  # its own stream: training RNG untouched
    z = rng.standard_normal((k, cfg.latent_dim)).astype(np.float32)
    return np.tile(z, (cfg.num_cells, 1)), np.repeat(np.arange(cfg.num_cells), k)


class RunLog:
    def __init__(self, run_dir: Path | RunDir, cfg: TrainConfig, resume_from: int = 0) -> None:
        self.run = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
        self.cfg = cfg
        self.log_path = self.run.log_path
        self.rows: list[dict[str, str]] = []
        if resume_from > 0 and self.log_path.is_file():
            # keep rows up to the checkpoint: later ones are re-done by the resumed run
            self.rows = [r for r in read_csv(self.log_path)[1]
                         if int(r["iteration"]) <= resume_from]
        self._rewrite()
        self._f = open(self.log_path, "a", newline="")  # noqa: SIM115 (closed in close())
        self._w = csv.DictWriter(self._f, fieldnames=LOG_COLUMNS, lineterminator="\n")
        self.tb = tf.summary.create_file_writer(str(self.run.tb_dir))
        self.z, self.y = fixed_noise(cfg)

    def _rewrite(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.log_path, buf.getvalue())

    def record(self, iteration: int, metrics: dict[str, float], it_per_s: float,
               wall_s: float) -> None:  # fmt: skip
        row = {"iteration": str(iteration), **{k: f"{v:.6g}" for k, v in metrics.items()},
               "it_per_s": f"{it_per_s:.4g}", "wall_s": f"{wall_s:.2f}"}  # fmt: skip
        self.rows.append(row)
        self._w.writerow(row)
        self._f.flush()
        with self.tb.as_default(step=iteration):
            for k, v in {**metrics, "it_per_s": it_per_s}.items():
                tf.summary.write(k, tf.constant(v, tf.float32), metadata=_SCALAR)

    def scalars(self, iteration: int, values: dict[str, float]) -> None:
        """Extra TensorBoard scalars (checkpoint scores)."""
        with self.tb.as_default(step=iteration):
            for k, v in values.items():
                tf.summary.write(k, tf.constant(v, tf.float32), metadata=_SCALAR)

    def sample(self, gen: Any, iteration: int) -> Path:
        """Grid of G(z_fixed, label) in inference mode: rows = classes (cells), columns = z."""
        imgs = gen([tf.constant(self.z), tf.constant(self.y, tf.int32)], training=False)
        u8 = to_uint8(np.asarray(imgs)[..., 0])  # (C*K, H, W)
        c, k, s = self.cfg.num_cells, self.cfg.samples_per_class, self.cfg.image_size
        grid = u8.reshape(c, k, s, s).transpose(0, 2, 1, 3).reshape(c * s, k * s)
        path = self.run.sample_path(iteration)
        write_png_gray(path, grid)
        return path

    def plot(self) -> Path:
        path = self.run.loss_plot_path
        write_png_rgb(path, draw_losses(self.rows))
        return path

    def close(self) -> None:
        self._f.close()
        self.tb.flush()
        self.tb.close()


def draw_losses(rows: list[dict[str, str]], w: int = 800, h: int = 400) -> np.ndarray:
    """d_loss and g_loss against iteration: an RGB (h, w, 3) uint8 chart (cxraug.core.figures)."""
    it = np.array([float(r["iteration"]) for r in rows])
    series = [(k, it, np.array([float(r[k]) for r in rows])) for k in ("d_loss", "g_loss")]
    return line_chart(series, "Training losses", "iteration", "loss", w=w, h=h)
