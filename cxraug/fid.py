"""`cxraug fid`: FID, KID and precision/recall between a REAL and a FAKE image set, with a
real-vs-real baseline, a content-keyed feature cache, and labels that say which extractor made
the numbers (docs/fid.md). Inputs: cxraug.metrics.inputs; features: cxraug.metrics.features
(cached by cxraug.metrics.cache); maths: cxraug.metrics.distances. Beside them, judges that
read pixels (cxraug.metrics.realism): a classifier two-sample test at several sizes with its
own real-vs-real baseline, and a spectrum/sharpness check.

Every set is put in a canonical order (sorted content keys), so features, cache entries and
the seeded real-vs-real split do not depend on file names or listing order.

Cache: the (N, 2048) features of a set are stored in CACHE_DIR/<key>.npz (default
WORKSPACE/.cache/fid), key = sha256 of
(sorted content sha256s, extractor name, weights sha256, resize filter, feature dim, cxraug
version). A changed file changes the key; an entry whose stored metadata or keys differ from
what was asked is recomputed with a warning, never reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from cxraug import __version__
from cxraug.core.errors import InputError
from cxraug.core.fsutil import atomic_write_json
from cxraug.core.images import write_png_rgb
from cxraug.core.settings import SEED, Settings, at_least, setting
from cxraug.core.ui import warn
from cxraug.core.workspace import Workspace
from cxraug.metrics import c2st
from cxraug.metrics import distances as metrics
from cxraug.metrics import features as feats
from cxraug.metrics.cache import set_features
from cxraug.metrics.inputs import ImageSet, array_set, resolve_set
from cxraug.metrics.realism import PixelJudges, comparison_sheet, judge_pixels, spectrum_figure
from cxraug.metrics.realism import judges_table as judges_table  # re-exported for the CLI

#: Below this many images per side the 2048-d covariance is rank-deficient and FID is biased.
FID_UNBIASED_N = 2048


@dataclass(frozen=True)
class FidConfig(Settings):
    """Defaults of `cxraug fid` (shown by --help)."""

    features: str = setting(
        "inception",
        "inception (Keras ImageNet weights, offline lookup) or random (untrained fixed-seed "
        "network: smoke tests only, NOT a standard FID).",
    )
    resize: str = setting(  # see features.RESIZE_FILTERS
        "bilinear-aa", "Resize filter to 299 px: bilinear-aa or cubic."
    )
    batch_size: int = setting(32, "Images per network call.", bounds=at_least(1))
    seed: int = setting(0, "Seeds KID subsets and the real-vs-real split.", bounds=SEED)
    kid_subsets: int = setting(100, "KID: number of subsets.", bounds=at_least(1))
    kid_subset_size: int = setting(1000, "KID: max subset size.", bounds=at_least(2))
    pr_k: int = setting(3, "Precision/recall: k of the k-NN radii.", bounds=at_least(1))
    pr_draws: int = setting(
        20,
        "Precision/recall at equal N: random subsets of the larger set, each the size of the "
        "smaller (k-NN radii shrink as a set grows, so numbers at unequal sizes depend on "
        "how many images were generated).",
        bounds=at_least(1),
    )
    c2st_sizes: tuple[int, ...] = setting(
        c2st.SIZES,
        "C2ST: sizes (px) at which a linear probe tries to tell FAKE from REAL pixels, "
        "comma-separated (pixels: valid with any --features).",
        bounds=at_least(4),
    )
    c2st_repeats: int = setting(c2st.REPEATS, "C2ST: repeats of the grouped cross-validation.",
                                bounds=at_least(1))  # fmt: skip
    c2st_folds: int = setting(c2st.FOLDS, "C2ST: cross-validation folds (>= 2).",
                              bounds=at_least(2))  # fmt: skip
    c2st_max_per_side: int = setting(
        c2st.MAX_PER_SIDE, "C2ST: at most this many images per side (cost grows as N^2).",
        bounds=at_least(1),
    )  # fmt: skip
    sheet_n: int = setting(8, "--sheet: images per side.", bounds=at_least(1))
    eps: float = 1e-6  # added to covariances only if sqrtm returns non-finite values
    # measured: no gain for Inception on CPU (bench/RESULTS.md)
    xla: bool = setting(False, "Compile the extractor with XLA.", "--xla/--no-xla")

    def check(self) -> None:
        if self.resize not in feats.RESIZE_FILTERS:
            raise InputError(f"unknown --resize {self.resize!r}; use one of "
                             f"{', '.join(feats.RESIZE_FILTERS)}")  # fmt: skip
        if not self.c2st_sizes:
            raise InputError("--c2st-sizes lists no size; give e.g. 16,32,64,128")


# ---- report --------------------------------------------------------------------------------


@dataclass
class FidReport:
    standard: bool
    extractor: str
    weights_sha256: str | None
    resize_filter: str
    n_real: int
    n_fake: int
    fid: float
    fid_imag_dropped: float
    fid_eps: float | None
    kid_mean: float
    kid_std: float
    kid_subsets: int
    kid_subset_size: int
    precision: float  # all images of both sets (depends on N_real and N_fake)
    recall: float
    pr_k: int
    # equal N: both sides at min(N_real, N_fake), mean ± std over pr_draws subsets of the larger
    precision_equal_n: float
    recall_equal_n: float
    precision_equal_n_std: float
    recall_equal_n_std: float
    pr_equal_n: int
    pr_draws: int  # 0: the sets were the same size, nothing was drawn
    baseline_fid: float | None  # real-vs-real: two seeded random halves of REAL
    baseline_n: int  # images per half
    # the same two halves: what precision/recall of two real samples of that size look like
    baseline_precision: float | None
    baseline_recall: float | None
    real: str
    fake: str
    cache: dict[str, str]
    c2st: list[dict[str, Any]]  # pixel judges (cxraug.metrics.realism): one entry per size
    c2st_groups: str  # "patient_id" or "image": how folds and the real-vs-real split group
    spectrum: dict[str, Any] | None
    config: dict[str, Any]
    warnings: list[str]
    cxraug_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_counts(real: ImageSet, fake: ImageSet, config: FidConfig) -> None:
    """Enough images per side for the metrics. A data check, not an option check: --pr-k's
    own range is a Settings bound, checked when the config is built; how many images the sets
    hold is known only once they are resolved, so it is checked here, before the slow part."""
    for name, s in (("REAL", real), ("FAKE", fake)):
        if len(s) < 2:
            raise InputError(
                f"{name} ({s.description}) has {len(s)} image(s); FID needs at "
                "least 2 per side (a covariance), KID 2, precision/recall "
                f"k+1 = {config.pr_k + 1}"
            )
        if len(s) <= config.pr_k:
            raise InputError(
                f"{name} ({s.description}) has {len(s)} images; precision/recall "
                f"with k={config.pr_k} needs at least {config.pr_k + 1}: add "
                "images or lower --pr-k"
            )


#: The seeded streams of one `fid` run, in the order they were added. spawn(n)[:k] ==
#: spawn(k), so each added stream left the earlier numbers unchanged; add new ones at the end.
STREAMS = ("kid", "split", "pr", "pixels", "sheet")


def seed_streams(seed: int) -> dict[str, np.random.SeedSequence]:
    """One independent SeedSequence per name in STREAMS, all from --seed."""
    return dict(zip(STREAMS, np.random.SeedSequence(seed).spawn(len(STREAMS)), strict=True))


def pixel_judges(real: ImageSet, fake: ImageSet, config: FidConfig,
                 seed: np.random.SeedSequence) -> PixelJudges:  # fmt: skip
    """The C2ST and spectrum judges on the pixels of both (canonical) sets."""
    return judge_pixels([real.loaders[i]() for i in range(len(real))],
                        [fake.loaders[i]() for i in range(len(fake))],
                        real_groups=real.groups or None, fake_groups=fake.groups or None,
                        sizes=config.c2st_sizes, seed=seed, repeats=config.c2st_repeats,
                        folds=config.c2st_folds, max_per_side=config.c2st_max_per_side)  # fmt: skip


@dataclass(frozen=True)
class _FeatureScores:
    """Every metric of the two feature sets, each from its own seeded stream."""

    fid: metrics.FrechetResult
    kid: metrics.KidResult
    pr: metrics.PrecisionRecall
    pr_eq: metrics.EqualNPrecisionRecall
    baseline: metrics.Baseline


def _feature_scores(fr: np.ndarray, ff: np.ndarray, config: FidConfig,
                    ss: dict[str, np.random.SeedSequence]) -> _FeatureScores:  # fmt: skip
    """FID, KID, precision/recall (all images and at equal N) and the real-vs-real baseline
    of (N, D) real and fake features."""
    return _FeatureScores(
        metrics.fid_from_features(fr, ff, eps=config.eps),
        metrics.kid(fr, ff, subsets=config.kid_subsets, subset_size=config.kid_subset_size,
                    rng=np.random.default_rng(ss["kid"])),
        metrics.precision_recall(fr, ff, k=config.pr_k),
        metrics.precision_recall_equal_n(fr, ff, k=config.pr_k, draws=config.pr_draws,
                                         rng=np.random.default_rng(ss["pr"])),
        metrics.real_baseline(fr, k=config.pr_k, eps=config.eps,
                              rng=np.random.default_rng(ss["split"])),
    )  # fmt: skip


def _notes(ex: feats.FeatureExtractor, n_real: int, n_fake: int, scores: _FeatureScores,
           pix: PixelJudges) -> list[str]:  # fmt: skip
    """What the numbers cannot be compared with, and what was done to get them."""
    notes: list[str] = []
    if not ex.standard:
        notes.append(f"features from {ex.name}: NOT a standard FID; compare only with numbers "
                     "from the same extractor")  # fmt: skip
    if min(n_real, n_fake) < FID_UNBIASED_N:
        notes.append(f"N_real={n_real}, N_fake={n_fake} < {FID_UNBIASED_N}: FID is biased "
                     "upwards at small N; compare FIDs only at equal N (KID is unbiased)")
    if scores.fid.eps is not None:
        notes.append(f"sqrtm was singular: added eps={scores.fid.eps} to both covariances")
    return [*notes, *pix.notes, *scores.baseline.notes]


def compute_fid(
    real: ImageSet,
    fake: ImageSet,
    config: FidConfig = FidConfig(),
    *,
    weights: Path | None = None,
    extractor: feats.FeatureExtractor | None = None,
    cache_dir: Path | None = None,
    show_progress: bool = True,
) -> FidReport:
    """Score FAKE against REAL. `cache_dir=None` disables the feature cache."""
    _check_counts(real, fake, config)
    ex = extractor or feats.load_extractor(config.features, weights, xla=config.xla)
    real, fake = real.canonical(), fake.canonical()
    fr, hit_r = set_features(real, ex, config.resize, config.batch_size, cache_dir, "real",
                             show_progress)  # fmt: skip
    ff, hit_f = set_features(fake, ex, config.resize, config.batch_size, cache_dir, "fake",
                             show_progress)  # fmt: skip
    ss = seed_streams(config.seed)
    sc = _feature_scores(fr, ff, config, ss)
    pix = pixel_judges(real, fake, config, ss["pixels"])
    notes = _notes(ex, len(real), len(fake), sc, pix)
    for n in notes:
        warn(n)
    fd, k, pr, pr_eq, base = sc.fid, sc.kid, sc.pr, sc.pr_eq, sc.baseline
    return FidReport(
        standard=ex.standard, extractor=ex.name, weights_sha256=ex.weights_sha256,
        resize_filter=f"{config.resize}: {feats.RESIZE_FILTERS[config.resize]}",
        n_real=len(real), n_fake=len(fake),
        fid=fd.value, fid_imag_dropped=fd.max_imag, fid_eps=fd.eps,
        kid_mean=k.mean, kid_std=k.std, kid_subsets=k.subsets, kid_subset_size=k.subset_size,
        precision=pr.precision, recall=pr.recall, pr_k=pr.k,
        precision_equal_n=pr_eq.precision, recall_equal_n=pr_eq.recall,
        precision_equal_n_std=pr_eq.precision_std, recall_equal_n_std=pr_eq.recall_std,
        pr_equal_n=pr_eq.n, pr_draws=pr_eq.draws,
        baseline_fid=base.fid, baseline_n=base.n,
        baseline_precision=None if base.pr is None else base.pr.precision,
        baseline_recall=None if base.pr is None else base.pr.recall,
        real=real.description, fake=fake.description, cache={"real": hit_r, "fake": hit_f},
        c2st=pix.c2st, c2st_groups=pix.groups, spectrum=pix.spectrum,
        config=asdict(config), warnings=notes,
    )  # fmt: skip


def run_fid(
    real: str | Path,
    fake: str | Path,
    config: FidConfig = FidConfig(),
    *,
    workspace: Path = Path("."),
    weights: Path | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    out: Path | None = None,
    force: bool = False,
    spectrum: Path | None = None,
    sheet: Path | None = None,
) -> FidReport:
    """The `cxraug fid` command: resolve inputs, score, optionally save the report JSON, the
    spectrum plot (`spectrum`, default with `out`: OUT's folder/<OUT stem>.spectrum.png) and
    a REAL-vs-FAKE sheet of `config.sheet_n` seeded images per side (`sheet`)."""
    if spectrum is None and out is not None:
        spectrum = Path(out).with_name(Path(out).stem + ".spectrum.png")
    for path, flag in ((out, "--out"), (spectrum, "--spectrum"), (sheet, "--sheet")):
        if path is not None and Path(path).exists() and not force:
            raise InputError(f"{path} exists; pass --force to overwrite it or choose another "
                             f"{flag}")  # fmt: skip
    r, f = resolve_set(real, workspace), resolve_set(fake, workspace)
    cdir = None
    if use_cache:
        cdir = Path(cache_dir) if cache_dir else Workspace.at(workspace).fid_cache_dir
    report = compute_fid(r, f, config, weights=weights, cache_dir=cdir)
    if out is not None:
        atomic_write_json(Path(out), report.to_dict())
    if spectrum is not None and report.spectrum is not None:
        write_png_rgb(Path(spectrum), spectrum_figure(report.spectrum))
    if sheet is not None:
        rng = np.random.default_rng(seed_streams(config.seed)["sheet"])
        grid = comparison_sheet(r.canonical().loaders, f.canonical().loaders, config.sheet_n, rng)
        write_png_rgb(Path(sheet), grid)
    return report


def fid_from_arrays(
    real_u8: Sequence[np.ndarray] | np.ndarray,
    fake_u8: Sequence[np.ndarray] | np.ndarray,
    config: FidConfig = FidConfig(),
    *,
    weights: Path | None = None,
    extractor: feats.FeatureExtractor | None = None,
    cache_dir: Path | None = None,
    show_progress: bool = False,
) -> FidReport:
    """Library entry point for in-memory uint8 gray images ((N, H, W) or a list of (H, W))."""
    return compute_fid(
        array_set(real_u8, "real arrays"),
        array_set(fake_u8, "fake arrays"),
        config,
        weights=weights,
        extractor=extractor,
        cache_dir=cache_dir,
        show_progress=show_progress,
    )


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _draws(r: FidReport) -> str:
    if r.pr_draws == 0:
        return f"k={r.pr_k}, N={r.pr_equal_n} per side (sets already equal)"
    return f"k={r.pr_k}, N={r.pr_equal_n} per side, mean ± std of {r.pr_draws} draws"


def report_table(r: FidReport) -> Table:
    """The human-readable report. With a non-standard extractor the title and every metric
    row say so, so that a screenshot or a copied line cannot pass for a standard FID."""
    flag = "" if r.standard else "NOT a standard FID"
    why = "unpinned weights file" if r.weights_sha256 else "untrained features"
    title = f"FID report ({r.extractor})" + ("" if r.standard else f" — {flag}: {why}")
    t = Table(title=title, title_justify="left")
    t.add_column("metric", overflow="fold")
    t.add_column("value", justify="right", overflow="fold")
    t.add_column("note", overflow="fold")
    kid = f"{r.kid_mean:.5f} ± {r.kid_std:.5f}"
    # sqrtm round-off: the imaginary part dropped is said, not hidden (fid_imag_dropped in JSON)
    dropped = (
        f"; dropped sqrtm imag. part <= {r.fid_imag_dropped:.1e}" if r.fid_imag_dropped else ""
    )
    if r.fid_eps is not None:
        dropped += f"; eps={r.fid_eps} added to covariances (singular sqrtm)"
    rows = [
        ("FID", _fmt(r.fid), f"N_real={r.n_real}, N_fake={r.n_fake}" + dropped),
        (
            "FID real-vs-real baseline",
            _fmt(r.baseline_fid),
            f"two halves of REAL, {r.baseline_n} each",
        ),
        ("KID", kid, f"{r.kid_subsets} subsets of {r.kid_subset_size}"),
        ("precision", _fmt(r.precision), f"k={r.pr_k}, all images (N_real={r.n_real}, "
         f"N_fake={r.n_fake})"),
        ("recall", _fmt(r.recall), f"k={r.pr_k}, all images; depends on N_fake"),
        ("precision (equal N)", f"{r.precision_equal_n:.3f} ± {r.precision_equal_n_std:.3f}",
         _draws(r)),
        ("recall (equal N)", f"{r.recall_equal_n:.3f} ± {r.recall_equal_n_std:.3f}",
         _draws(r)),
        ("precision / recall real-vs-real",
         f"{_fmt(r.baseline_precision, '.2f')} / {_fmt(r.baseline_recall, '.2f')}",
         f"the baseline's two halves, {r.baseline_n} each"),
    ]  # fmt: skip
    for name, value, note in rows:
        t.add_row(name, value, note if r.standard else f"{note}; {flag}")
    t.add_section()
    t.add_row(
        "extractor", r.extractor, f"weights sha256 {r.weights_sha256 or 'none (random init)'}"
    )
    t.add_row("resize", r.resize_filter.split(":")[0], r.resize_filter.split(": ", 1)[-1])
    t.add_row("cache", f"real {r.cache['real']}, fake {r.cache['fake']}", "")
    return t
