"""`cxraug filter --realism` (cxraug.quality.realism): a per-image verdict from the C2ST's probe,
cross-fitted. Expectations from its definition: under the null (the "synthetic" images are
more images of the real kind) about alpha of them are rejected; images the probe separates
(blur, one template) are rejected; in a mixed set mostly the bad ones. On phantoms (fast) and
on real COVID X-rays split by patient (realdata tier)."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
from test_c2st import _blurred, _marked, _one_template, covid  # noqa: F401  (fixture)
from test_filter import chest, make_workspace, planted  # noqa: F401  (fixture)
from typer.testing import CliRunner

from cxraug.cli import app
from cxraug.core.errors import InputError
from cxraug.metrics import c2st as C
from cxraug.quality import realism
from cxraug.quality.decide import FilterConfig, calibrate, judge


def _phantoms(n: int, seed: int, blur: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    imgs = [chest(rng) for _ in range(n)]
    if blur > 0:
        imgs = [np.clip(np.rint(cv2.GaussianBlur(im.astype(np.float32), (0, 0), blur)), 0, 255)
                .astype(np.uint8) for im in imgs]  # fmt: skip
    return np.stack(imgs)


def _rejected(real: np.ndarray, syn: np.ndarray, **cfg: object) -> np.ndarray:
    """(N,) bool: rejected as unrealistic by `judge` with realism on."""
    cal = calibrate(real, [f"r{i}" for i in range(len(real))], FilterConfig(realism=True, **cfg))
    ev = judge(syn, [f"s{i:03d}" for i in range(len(syn))], cal)
    assert all("realism" in d.scores for d in ev.decisions)
    return np.array(["unrealistic" in d.keys for d in ev.decisions])


def test_null_rejects_about_alpha_and_blur_is_rejected() -> None:
    real = _phantoms(150, seed=1)
    fresh = _rejected(real, _phantoms(100, seed=2))
    assert fresh.mean() <= 0.15, fresh.mean()  # alpha = 0.05, 100 images: binomial sd 0.02
    blurred = _rejected(real, _phantoms(100, seed=3, blur=2.0))
    assert blurred.mean() >= 0.9, blurred.mean()


def test_in_a_mixed_set_mostly_the_bad_images_are_rejected() -> None:
    real = _phantoms(150, seed=4)
    syn = np.concatenate([_phantoms(60, seed=5), _phantoms(60, seed=6, blur=2.0)])
    rej = _rejected(real, syn)
    assert rej[60:].mean() >= 0.8 and rej[:60].mean() <= 0.25, (rej[:60].mean(), rej[60:].mean())


def test_off_by_default_and_too_few_images_are_clear_errors() -> None:
    assert FilterConfig().realism is False
    real = _phantoms(30, seed=7)
    cal = calibrate(real, [f"r{i}" for i in range(30)])
    ev = judge(_phantoms(12, seed=8), [f"s{i}" for i in range(12)], cal)
    assert not any("realism" in d.scores or "unrealistic" in d.keys for d in ev.decisions)
    cal = calibrate(real, [f"r{i}" for i in range(30)], FilterConfig(realism=True))
    with pytest.raises(InputError, match="at least 10 synthetic"):
        judge(_phantoms(6, seed=9), [f"s{i}" for i in range(6)], cal)
    plain = calibrate(real, [f"r{i}" for i in range(30)])  # no probe features kept
    with pytest.raises(InputError, match="calibration was made without it"):
        judge(_phantoms(12, seed=8), [f"s{i}" for i in range(12)],
              dataclasses.replace(plain, config=FilterConfig(realism=True)))  # fmt: skip


def test_scores_are_out_of_fold_and_seeded() -> None:
    real = _phantoms(40, seed=10)
    feats = realism.features(real)
    syn = _phantoms(40, seed=11)
    a = realism.realism_scores(feats, syn, seed=3)
    assert np.array_equal(a[0], realism.realism_scores(feats, syn, seed=3)[0])
    assert not np.array_equal(a[1], realism.realism_scores(feats, syn, seed=4)[1])
    assert a[0].shape == (40,) and a[1].shape == (40,) and np.isfinite(a[1]).all()


@pytest.mark.realdata
def test_on_real_xrays_blur_and_templates_are_rejected_and_real_kept(
    covid: tuple[np.ndarray, np.ndarray],  # noqa: F811
) -> None:
    """One patient half as the real training set, the other as the candidates: untouched,
    blurred (sigma 2 px at 224), marked (three thin strokes), one template."""
    imgs, groups = covid
    rng = np.random.default_rng(0)
    a, b = C.split_halves(groups, rng)
    real, other = imgs[a], imgs[b]
    shares = {
        "held-out real": _rejected(real, other).mean(),
        "blurred": _rejected(real, _blurred(other)).mean(),
        "marked": _rejected(real, _marked(other, rng)).mean(),
        "one template": _rejected(real, _one_template(other[0], len(b), rng)).mean(),
    }
    print("\nfilter --realism, rejected share:", {k: round(float(v), 3) for k, v in shares.items()})
    assert shares["held-out real"] <= 0.15
    assert shares["blurred"] >= 0.9 and shares["one template"] >= 0.9
    assert shares["marked"] >= 0.4  # thin strokes: 0.64 in this draw (one-PCA probe: 0.68)


def test_cli_realism_through_the_manifest(tmp_path, planted) -> None:  # noqa: F811
    """`filter --realism` on a workspace: every row gets its realism score in the note, the
    JSON counts the reasons; too few synthetic images exit 3 with what to do."""
    runner = CliRunner()
    names = list(planted["ids"])  # 10 new phantoms and 10 planted bad images
    ws = make_workspace(tmp_path / "ws", planted, names)
    r = runner.invoke(app, ["filter", "-w", str(ws.root), "--realism", "--json"])
    assert r.exit_code == 0, r.output
    rows = [x for x in ws.load_manifest() if x.synthetic]
    noted = [x for x in rows if x.note]  # a constant image carries no scores, so no note
    assert len(rows) == 20 and len(noted) >= 19 and all("realism=" in x.note for x in noted)
    # a probe learns what the synthetic set SHARES: ten unlike bad images are not a pattern
    # (white noise scored as real-like here, -8.7); the other checks reject those
    out = json.loads(r.stdout)
    assert out["kept"] + sum(out["rejected_by_reason"].values()) == 20
    small = make_workspace(tmp_path / "small", planted, names[:6])
    r = runner.invoke(app, ["filter", "-w", str(small.root), "--realism"])
    assert r.exit_code == 3 and "at least 10 synthetic" in r.output, r.output
