"""Checkpoint scores: which checkpoint of a run makes the best images (later is not better).

At every checkpoint the sampling generator (the EMA one when kept) draws `score_samples`
images of the SCORED CLASS (the class with the fewest training images: the one
`generate --balance` grows; in a `--condition class,source` run, from the class's OBSERVED
cells in the proportions of its training images) from a fixed noise set of its own seeded
stream, so every checkpoint is judged on the same z and the training RNG is untouched. They
are compared with the REAL TRAINING images of that class, never the test split, so a final
`cxraug fid` on the test split stays an honest, unseen judge:

    kid         KID (unbiased MMD^2, cubic kernel) between features of the samples and of the
                real images; features: the fixed-seed random Inception-v3 (NOT a standard
                feature space, but a fixed one, so scores compare across checkpoints)
    kept        share of the samples that `cxraug filter`'s checks (default FilterConfig,
                calibrated on the same real images) keep
    memorised   share rejected as copies of a real training image
    near_duplicate  share rejected as duplicates of another sample (mode collapse)
    precision, recall  improved precision/recall (k = PR_K) on the same random features:
                the share of samples inside the real images' k-NN balls, and the reverse
                (logged, not part of the criterion: see docs/training.md)
    c2st        held-out AUC of the pixel C2ST (cxraug.metrics.c2st: a linear probe on pixels
                and Laplacian detail, grouped 5-fold, C2ST_REPEATS repeats) telling the
                samples from the real images at C2ST_SIZE px (the coarse scale, where one
                shared framing shows; the image side when smaller); 0.5 = indistinguishable.
                Unlike random-feature KID it has proven power against blur, one template and
                drawn marks (tests/test_c2st.py); NaN when not computable (too few images)

Criterion (lower key is better): a checkpoint is ELIGIBLE when kept >= KEPT_MIN and
memorised <= MEMORISED_MAX; every eligible checkpoint ranks before every ineligible one.
Within each group the lower C2ST AUC wins, rounded to a grid of C2ST_STEP (0.02: about its
split noise at 128 samples, so two checkpoints a probe scores alike are not ranked by noise;
rounded, not floored, so 0.9999 and 1.0 share a step);
within one grid step, and for runs scored before the C2ST existed (NaN), the lower KID wins.
The winner becomes the run's `best` checkpoint (checkpoints/best, kept out of pruning), which
`generate` uses by default. Real images are grouped by image here, not by patient (the run
has no patient ids): a patient's two images may fall in different folds, which makes every
checkpoint's AUC a little higher alike and does not change the order.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cxraug.core.csvfile import read_csv
from cxraug.core.dataset import scarce_class
from cxraug.core.errors import InputError, vassert
from cxraug.core.figures import data_range, line_chart
from cxraug.core.fsutil import atomic_write_text
from cxraug.core.images import to_uint8, write_png_rgb
from cxraug.core.manifest import LABELS
from cxraug.core.workspace import RunDir
from cxraug.metrics import c2st as c2st_mod
from cxraug.metrics import distances as metrics
from cxraug.metrics import features as feats
from cxraug.quality.decide import FilterConfig, decide

KEPT_MIN = 0.70
MEMORISED_MAX = 0.02
SCORE_COLUMNS = ("iteration", "checkpoint", "kid", "kid_std", "kept", "memorised",
                 "near_duplicate", "precision", "recall", "c2st", "eligible")  # fmt: skip
KID_SUBSETS = 50
PR_K = 3
C2ST_SIZE = 32
C2ST_STEP = 0.02
C2ST_REPEATS = 3
C2ST_BOOT = 50  # the interval is not used here; the bootstrap only has to run


@dataclass(frozen=True)
class Score:
    iteration: int
    checkpoint: str  # file name under checkpoints/
    kid: float
    kid_std: float
    kept: float
    memorised: float
    near_duplicate: float
    precision: float = math.nan  # NaN: too few images for k = PR_K, or a pre-precision log
    recall: float = math.nan
    c2st: float = math.nan  # NaN: not computable, or a log written before the column

    @property
    def eligible(self) -> bool:
        return self.kept >= KEPT_MIN and self.memorised <= MEMORISED_MAX

    def key(self) -> tuple[int, float, float]:
        """Sort key, lower is better (see the module docstring)."""
        grid = round(self.c2st / C2ST_STEP) if math.isfinite(self.c2st) else math.inf
        return (0 if self.eligible else 1, grid, self.kid if math.isfinite(self.kid) else math.inf)

    def row(self) -> dict[str, str]:
        d = asdict(self)
        return {**{k: (f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in d.items()},
                "eligible": str(int(self.eligible))}  # fmt: skip

    @classmethod
    def from_row(cls, r: dict[str, str]) -> Score:
        return cls(int(r["iteration"]), r["checkpoint"], float(r["kid"]), float(r["kid_std"]),
                   float(r["kept"]), float(r["memorised"]), float(r["near_duplicate"]),
                   float(r.get("precision") or "nan"),  # scores.csv of older runs lack it
                   float(r.get("recall") or "nan"),
                   float(r.get("c2st") or "nan"))  # fmt: skip


def best_of(scores: list[Score]) -> Score | None:
    return min(scores, key=lambda s: (s.key(), -s.iteration)) if scores else None


def minority_class(labels: np.ndarray, num_classes: int) -> int:
    """The index of the scarce class of these training labels (cxraug.core.dataset's
    `scarce_class`: the fewest images; ties: the lower index)."""
    classes = LABELS[:num_classes]
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes)
    return LABELS.index(scarce_class({c: int(counts[i]) for i, c in enumerate(classes)}, classes))


class Scorer:
    """Scores generators against fixed real images of one class (see the module docstring)."""

    def __init__(self, real_images: np.ndarray, real_ids: list[str], label: int, n: int,
                 latent_dim: int, seed: int, extractor: feats.FeatureExtractor | None = None,
                 cells: np.ndarray | None = None) -> None:  # fmt: skip
        """`cells` (n,): the label of each sample where G takes cells (--condition
        class,source: the scored class's observed cells, cxraug.gan.cells.apportion); by
        default every sample gets `label`."""
        self.real_u8 = to_uint8(real_images)  # (M, H, W) as filter sees saved images
        self.real_ids = list(real_ids)
        self.label, self.n, self.seed = label, n, seed
        self.cells = None if cells is None else np.asarray(cells, np.int32)
        vassert(self.cells is None or self.cells.shape == (n,), f"cells must be ({n},)")
        rng = np.random.default_rng([seed, 0x5C0E])  # its own stream
        self.z = rng.standard_normal((n, latent_dim)).astype(np.float32)
        self.extractor = extractor or feats.random_extractor()
        self.filter_cfg = FilterConfig(seed=seed)
        self._real_feats: np.ndarray | None = None

    def _features(self, u8: np.ndarray) -> np.ndarray:
        return feats.extract_features(lambda i: u8[i], len(u8), self.extractor,
                                      show_progress=False)  # fmt: skip

    def sample(self, gen: Any) -> np.ndarray:
        from cxraug.core.tf_setup import tf

        out = []
        for lo in range(0, self.n, 64):
            z = self.z[lo : lo + 64]
            y = (tf.fill((len(z),), self.label) if self.cells is None
                 else tf.constant(self.cells[lo : lo + 64]))  # fmt: skip
            out.append(np.asarray(gen([tf.constant(z), y], training=False))[..., 0])
        return to_uint8(np.concatenate(out))

    def score_images(self, fake_u8: np.ndarray, iteration: int, checkpoint: str) -> Score:
        if self._real_feats is None:
            self._real_feats = self._features(self.real_u8)
        ids = [f"score-{i:05d}" for i in range(len(fake_u8))]
        dec = decide(fake_u8, self.real_u8, ids, self.real_ids, self.filter_cfg)
        n = len(dec)
        share = {k: sum(d.primary == k for d in dec) / n for k in ("memorised", "near-duplicate")}
        fake_feats = self._features(fake_u8)
        k = metrics.kid(self._real_feats, fake_feats, subsets=KID_SUBSETS,
                        subset_size=1000, rng=np.random.default_rng([self.seed, iteration]))
        pr = (metrics.precision_recall(self._real_feats, fake_feats, k=PR_K)
              if min(len(self._real_feats), len(fake_feats)) > PR_K else None)  # fmt: skip
        return Score(iteration, checkpoint, k.mean, k.std, sum(d.kept for d in dec) / n,
                     share["memorised"], share["near-duplicate"],
                     pr.precision if pr else math.nan, pr.recall if pr else math.nan,
                     self.c2st_auc(fake_u8, iteration))  # fmt: skip

    def c2st_auc(self, fake_u8: np.ndarray, iteration: int) -> float:
        """The pixel C2ST's AUC, samples vs the real images, at C2ST_SIZE px (or the image
        side when smaller); NaN when a side has too few images for its folds."""
        size = min(C2ST_SIZE, fake_u8.shape[1], self.real_u8.shape[1])
        try:
            seed = np.random.SeedSequence([self.seed, iteration, 0xC2])  # own stream
            (res,) = c2st_mod.c2st(self.real_u8, fake_u8, (size,), repeats=C2ST_REPEATS,
                                   boot=C2ST_BOOT, seed=seed, blocks=False)  # fmt: skip
        except InputError:
            return math.nan
        return res.auc if res.auc is not None else math.nan

    def __call__(self, gen: Any, iteration: int, checkpoint: str) -> Score:
        return self.score_images(self.sample(gen), iteration, checkpoint)


class ScoreLog:
    """runs/NAME/scores.csv (+ scores.png), rewritten atomically after each score."""

    def __init__(self, run: RunDir, resume_from: int = 0) -> None:
        self.path = run.scores_path
        self.png = run.scores_plot_path
        self.scores: list[Score] = []
        if self.path.is_file():
            self.scores = [Score.from_row(r) for r in read_csv(self.path)[1]
                           if int(r["iteration"]) <= resume_from]  # fmt: skip

    def add(self, s: Score) -> Score:
        """Record a score; returns the best score so far."""
        self.scores = [x for x in self.scores if x.iteration != s.iteration] + [s]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=SCORE_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(x.row() for x in self.scores)
        atomic_write_text(self.path, buf.getvalue())
        write_png_rgb(self.png, draw_scores(self.scores))
        best = best_of(self.scores)
        assert best is not None
        return best


def draw_scores(scores: list[Score], w: int = 800, h: int = 400) -> np.ndarray:
    """KID (scaled to 0..1 over its range, said in the note), the kept share, precision and
    C2ST AUC (0..1 as they are) against iteration; the best checkpoint marked. RGB."""
    its = np.array([s.iteration for s in scores], float)
    kid = np.array([s.kid for s in scores], float)
    lo, hi = data_range(kid)
    series = [("KID (scaled)", its, (kid - lo) / (hi - lo)),
              ("kept share", its, np.array([s.kept for s in scores], float))]  # fmt: skip
    for label, vals in (("precision", [s.precision for s in scores]),
                        ("C2ST AUC", [s.c2st for s in scores])):  # fmt: skip
        if np.isfinite(vals).all():  # absent in logs older than the column, or with tiny N
            series.append((label, its, np.array(vals, float)))
    best = best_of(scores)
    return line_chart(series, "Checkpoint scores", "iteration", "score",
                      note=f"KID scaled: 0 = {lo:.3g}, 1 = {hi:.3g}; the others as they are",
                      vlines=[(best.iteration, "best")] if best else (), ylim=(0.0, 1.0),
                      markers=True, w=w, h=h)  # fmt: skip
