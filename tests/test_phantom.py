"""Procedural chest phantoms: deterministic, varied, anatomically ordered, covid = normal + GGO."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cxraug.core.errors import InputError
from cxraug.core.imageheader import probe
from cxraug.core.images import read_gray
from cxraug.prep.phantom import make_phantom, write_phantom_folder


def test_shape_dtype_determinism_and_variety() -> None:
    a = make_phantom(np.random.default_rng(1), "normal", (300, 240))
    assert a.shape == (300, 240) and a.dtype == np.uint8
    assert np.array_equal(a, make_phantom(np.random.default_rng(1), "normal", (300, 240)))
    b = make_phantom(np.random.default_rng(2), "normal", (300, 240))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 3  # another seed, another chest
    assert a.std() > 25  # real contrast, not a flat or washed-out image


def test_anatomy_is_where_a_chest_xray_has_it() -> None:
    # averaged over seeds: lungs (mid-lateral thorax) dark, spine/mediastinum bright, air darkest
    imgs = np.stack([make_phantom(np.random.default_rng(s), "normal", (200, 200)).astype(float)
                     for s in range(12)])  # fmt: skip
    m = imgs.mean(0)  # (200, 200)
    lung_l, lung_r = m[60:110, 40:70].mean(), m[60:110, 130:160].mean()
    spine = m[30:110, 95:105].mean()
    below_diaphragm = m[180:195, 40:70].mean()
    corner_air = m[0:10, 0:10].mean()
    assert max(lung_l, lung_r) + 40 < spine
    assert max(lung_l, lung_r) + 30 < below_diaphragm
    assert corner_air < min(lung_l, lung_r)


def test_covid_adds_bilateral_lower_peripheral_opacities_only() -> None:
    for seed in range(6):
        n = make_phantom(np.random.default_rng(seed), "normal", (256, 256)).astype(int)
        c = make_phantom(np.random.default_rng(seed), "covid", (256, 256)).astype(int)
        d = c - n  # (H, W): the opacities alone, same anatomy and noise
        assert d.min() >= -3  # never darker, up to the ringing of the cubic upsampling
        assert d.sum() > 0
        lower, upper = d[128:].sum(), d[:96].sum()
        assert lower > 2 * upper
        left, right = d[:, :128].sum(), d[:, 128:].sum()
        assert min(left, right) > 0.1 * (left + right)  # bilateral
        assert d[:, 118:138].sum() < 0.1 * d.sum()  # not over the spine (peripheral)


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="use covid or normal"):
        make_phantom(np.random.default_rng(0), "pneumonia")
    with pytest.raises(InputError, match="too small"):
        make_phantom(np.random.default_rng(0), "normal", (8, 8))


def test_write_phantom_folder_formats(tmp_path: Path) -> None:
    out = write_phantom_folder(tmp_path / "ph", n_covid=6, n_normal=6, seed=3)
    assert "SYNTHETIC TEST DATA" in (out / "README.txt").read_text(encoding="utf-8")
    files = sorted((out / "covid").iterdir()) + sorted((out / "normal").iterdir())
    assert len(files) == 12
    kinds = set()
    for p in files:
        info = probe(p.read_bytes())
        kinds.add((info.format, info.channels, info.bit_depth))
        assert info.width is not None and info.height is not None
        assert 400 <= info.width <= 1100 and 400 <= info.height <= 1100
        gray, _, _ = read_gray(p)
        assert gray.std() > 0.05
    assert kinds == {("PNG", 1, 8), ("JPEG", 3, 8), ("PNG", 1, 16), ("PNG", 4, 8)}
    # same seed -> same bytes; a non-phantom folder is refused; our own folder is rewritten
    again = write_phantom_folder(tmp_path / "ph2", n_covid=6, n_normal=6, seed=3)
    assert [p.read_bytes() for p in sorted(again.rglob("*.*"))] == \
        [p.read_bytes() for p in sorted(out.rglob("*.*"))]  # fmt: skip
    write_phantom_folder(out, n_covid=1, n_normal=1, seed=0)
    assert len(list(out.rglob("phantom-*"))) == 2
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "mine.txt").write_text("x")
    with pytest.raises(InputError, match="not empty and not a phantom folder"):
        write_phantom_folder(tmp_path / "user", 1, 1, 0)


def test_module_cli(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "cxraug.prep.phantom", str(tmp_path / "o"), "--covid",
                        "2", "--normal", "1", "--seed", "5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "wrote 2 covid + 1 normal phantoms" in r.stdout
    assert len(list((tmp_path / "o").rglob("phantom-*"))) == 3
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "x").write_text("x")
    r = subprocess.run([sys.executable, "-m", "cxraug.prep.phantom", str(tmp_path / "u")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 3 and "not a phantom folder" in r.stderr
