"""The pixel judges of `cxraug fid`: the classifier two-sample test at several scales beside its
real-vs-real baseline (cxraug.metrics.c2st), the spectrum/sharpness check
(cxraug.metrics.spectrum), their table and figures. They read pixels, not network features, so
they mean the same with `--features random` as with Inception.

Groups: when REAL comes from the manifest its rows carry `patient_id`, which keeps a patient
inside one cross-validation fold and one half of the real-vs-real split; for folders the
patients are unknown and every image is its own group (said in the report).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.table import Table

from cxraug.core.errors import InputError
from cxraug.core.figures import image_rows, line_chart
from cxraug.metrics import c2st as c2st_mod
from cxraug.metrics.spectrum import compare_spectra

MEANING = (
    "C2ST: held-out AUC of a linear probe (three blocks: pixels, log-Laplacian detail map, "
    "detail quantiles; a standardised PCA per block; one logistic regression over them; "
    "grouped 5-fold CV) telling FAKE from REAL. "
    "0.5 = it cannot tell them apart; read it against the real-vs-real AUC (two halves of "
    "REAL, the noise floor). High at coarse sizes = layout, framing or intensity differs; high "
    "only at fine sizes = texture or sharpness differs. 'by block': one block alone, "
    "what separates: pixels = layout, framing, intensity; detail = where "
    "the image is sharp or soft; texture = the distribution of fine detail (grain, strokes). "
    "hf ratio < 1: FAKE has less fine "
    "detail (blur); > 1: more (noise). Fixed pattern: the share of fine detail common to "
    "every image (0 = none; real X-rays measured 0.004-0.009). Pixel judges: valid with any "
    "--features."
)


@dataclass
class PixelJudges:
    c2st: list[dict[str, Any]]  # one entry per size (baseline_* merged in)
    spectrum: dict[str, Any] | None
    groups: str  # how folds and the real-vs-real split were grouped
    notes: list[str] = field(default_factory=list)


def _merge(fake: list[c2st_mod.C2stResult],
           base: list[c2st_mod.C2stResult] | None) -> list[dict[str, Any]]:  # fmt: skip
    out = []
    for k, r in enumerate(fake):
        d = r.to_dict()
        b = base[k] if base is not None else None
        d["baseline_auc"] = None if b is None else b.auc
        d["baseline_ci"] = None if b is None or b.ci is None else list(b.ci)
        d["baseline_n_per_side"] = None if b is None else b.n_per_side
        d["baseline_blocks"] = None if b is None else b.blocks
        out.append(d)
    return out


def judge_pixels(
    real: Sequence[np.ndarray],
    fake: Sequence[np.ndarray],
    *,
    real_groups: Sequence[str] | None,
    fake_groups: Sequence[str] | None,
    sizes: Sequence[int],
    seed: np.random.SeedSequence,
    **c2st_options: Any,
) -> PixelJudges:
    """C2ST (with its baseline) and the spectrum check of two image sets. Too few images for
    the C2ST, or for the baseline's halves, is reported as "not computed" with a note, like
    fid's own baseline: the other numbers stand."""
    notes: list[str] = []
    fake_ss, base_ss = seed.spawn(2)
    groups = "patient_id" if real_groups is not None else "image"
    try:
        res = c2st_mod.c2st(real, fake, sizes, real_groups=real_groups,
                            fake_groups=fake_groups, seed=fake_ss, **c2st_options)  # fmt: skip
    except InputError as e:
        res = [c2st_mod.C2stResult(int(s), None, None, None, 0, len(real), len(fake), 0, 0, 0,
                                   0, note=f"not computed: {e}") for s in sizes]  # fmt: skip
        notes.append(f"C2ST not computed: {e}")
    base: list[c2st_mod.C2stResult] | None = None
    try:
        base = c2st_mod.baseline(real, sizes, real_groups=real_groups, seed=base_ss,
                                 **c2st_options)  # fmt: skip
    except InputError as e:
        notes.append(f"C2ST real-vs-real baseline not computed (each half of REAL needs as "
                     f"many groups as folds): {e}")  # fmt: skip
    if groups == "image":
        notes.append("C2ST: patients of REAL unknown (folder input), folds and the "
                     "real-vs-real split are by image; repeated patients make the baseline "
                     "optimistic and the intervals narrow")  # fmt: skip
    spec = compare_spectra(real, fake)
    if len(spec.sizes) > 1:
        notes.append(f"spectrum: images of several sizes ({', '.join(spec.sizes)}); "
                     "frequencies are in cycles per pixel of each image as stored")  # fmt: skip
    return PixelJudges(_merge(res, base), spec.to_dict(), groups, notes)


def _ci(ci: Sequence[float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _num(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _block(d: dict[str, Any], name: str) -> str:
    """One block's AUC alone, '0.69 (0.48)' with the real-vs-real one when computed."""
    base = d.get("baseline_blocks")
    return f"{d['blocks'][name]:.2f}" + (f" ({base[name]:.2f})" if base else "")


def judges_table(j: PixelJudges) -> Table:
    """The human report of the pixel judges: one C2ST row per size, then the spectrum. The
    protocol (N, folds, grouping) is the same on every computed row: it is said once, in the
    title, so the table fits an 80-column terminal."""
    done = [d for d in j.c2st if not d["note"]]
    how = (f"; N={done[0]['n_per_side']} per side, {done[0]['repeats']}x{done[0]['folds']}-fold,"
           f" grouped by {j.groups}") if done else ""  # fmt: skip
    t = Table(title="Pixel judges: C2ST and spectrum (pixels, not features: valid with any "
              f"--features){how}", title_justify="left", caption=MEANING,
              caption_justify="left")  # fmt: skip
    for name, just in (("size", "right"), ("C2ST AUC", "right"), ("95% CI", "right"),
                       ("real-vs-real AUC", "right"), ("its 95% CI", "right"),
                       ("note", "left")):  # fmt: skip
        t.add_column(name, justify=just, overflow="fold")  # type: ignore[arg-type]
    for d in j.c2st:
        t.add_row(f"{d['size']} px", _num(d["auc"]), _ci(d["ci"]), _num(d["baseline_auc"]),
                  _ci(d["baseline_ci"]), d["note"] or "")  # fmt: skip
    by_block = [d for d in j.c2st if d.get("blocks")]
    if by_block:  # each feature block alone: what separates (real-vs-real in brackets)
        t.add_section()
        t.add_row("by block", "pixels", "detail", "texture", "", "alone (real-vs-real)",
                  style="bold")
        for d in by_block:
            t.add_row(f"{d['size']} px", *(_block(d, k) for k in c2st_mod.BLOCKS), "", "")
    s = j.spectrum
    if s is not None:
        t.add_section()
        t.add_row("spectrum", "hf ratio", f"{s['hf_ratio']:.3f}", "", "",
                  f"fake/real energy share above {s['cutoff']} cycles/px: "
                  f"{s['hf_share_fake']:.4f} / {s['hf_share_real']:.4f}")  # fmt: skip
        t.add_row("", "Laplacian var ratio", f"{s['laplacian_ratio']:.3f}", "", "",
                  f"fake/real mean var(Laplacian): {s['laplacian_var_fake']:.3g} / "
                  f"{s['laplacian_var_real']:.3g}")  # fmt: skip
        if s.get("fixed_fake") is not None:  # None: images of several sizes, or < 2
            t.add_row("", "fixed pattern", f"{s['fixed_fake']:.3f}", "", "",
                      f"share of fine detail the same in every image (a grid glued to "
                      f"pixel positions): fake / real {s['fixed_fake']:.3f} / "
                      f"{_num(s['fixed_real'])}")  # fmt: skip
    return t


def spectrum_figure(spectrum: dict[str, Any]) -> np.ndarray:
    """log10 ring power against radial frequency, REAL and FAKE, the cut-off marked."""
    f = np.asarray(spectrum["freq"])
    series = [("REAL", f, np.log10(np.asarray(spectrum["real_power"]))),
              ("FAKE", f, np.log10(np.asarray(spectrum["fake_power"])))]  # fmt: skip
    note = (f"FAKE/REAL: hf ratio {spectrum['hf_ratio']:.3f} (share of energy above "
            f"{spectrum['cutoff']} cycles/px), Laplacian variance ratio "
            f"{spectrum['laplacian_ratio']:.3f}")  # fmt: skip
    return line_chart(series, "Radially averaged power spectrum (standardised, Hann window)",
                      "radial frequency (cycles/pixel)", "log10 power", note=note,
                      vlines=[(spectrum["cutoff"], "1/4 Nyquist")])  # fmt: skip


def comparison_sheet(real: Sequence[Callable[[], np.ndarray]],
                     fake: Sequence[Callable[[], np.ndarray]], n: int,
                     rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """n seeded REAL images on the top row, n FAKE below, for a side-by-side look (loaders:
    only the chosen images are read)."""
    pick_r = np.sort(rng.choice(len(real), min(n, len(real)), replace=False))
    pick_f = np.sort(rng.choice(len(fake), min(n, len(fake)), replace=False))
    rows = [("REAL", [real[i]() for i in pick_r]), ("FAKE", [fake[i]() for i in pick_f])]
    return image_rows(rows, f"REAL (top) vs FAKE (bottom): {len(pick_r)} and {len(pick_f)} images, "
                      "seeded random choice")  # fmt: skip
