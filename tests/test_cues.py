"""Source-cue removal for `evaluate`'s classifier (cxraug.classify.cues): marks inpainted and
frames blackened where they were planted, the three-class Otsu threshold against a brute-force
search, the lung crop on phantoms whose lung geometry is known, and a planted source mark that
the shortcut check finds on the images as saved and no longer finds with `--cues marks`."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from rich.console import Console
from test_evaluate import TINY

from cxraug import evaluate as ev
from cxraug.classify import cues
from cxraug.core.dataset import Dataset, save_dataset
from cxraug.core.errors import InputError
from cxraug.core.manifest import Manifest, Record, write_manifest
from cxraug.core.workspace import Workspace
from cxraug.prep.phantom import make_phantom


def test_parse_cues() -> None:
    assert cues.parse_cues("none") == () == cues.parse_cues("")
    assert cues.parse_cues("clahe+marks,lungcrop") == ("marks", "lungcrop", "clahe")  # run order
    with pytest.raises(InputError, match=r"unknown step\(s\) blur"):
        cues.parse_cues("marks+blur")
    with pytest.raises(InputError, match="choose one"):
        cues.parse_cues("clahe+histeq")
    with pytest.raises(InputError, match="unknown step"):
        ev.EvaluateConfig(cues="crop").check()


def test_marks_are_inpainted_and_frames_set_to_black() -> None:
    g = make_phantom(np.random.default_rng(3), "normal", (128, 128))
    clean, clean_share = cues.mask_marks(g)  # the phantom's own black specks at the top edge
    assert clean_share < 0.01
    marked = g.copy()
    cv2.putText(marked, "AB", (3, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 2)  # a corner label
    text = marked != g
    marked[-5:] = 200  # a grey frame band along the bottom edge (figure padding)
    out, share = cues.mask_marks(marked)
    assert share >= text.mean() + 5 / 128
    assert (out[-5:] == 0).all()  # the frame: black, like most radiographs' own padding
    assert not (out[text] >= 235).any()  # no pure ink left
    before = np.abs(marked[text].astype(int) - g[text]).mean()
    after = np.abs(out[text].astype(int) - g[text]).mean()
    assert before > 100 and after < 25, (before, after)  # filled from its surroundings
    far = cv2.dilate(text.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    far[-5:] = False
    assert (out[far] == g[far]).mean() > 1 - 2 * clean_share  # nothing else touched, but
    assert np.abs(out[far].astype(int) - clean[far]).max() <= 3  # the phantom's own specks


def test_otsu3_maximises_the_three_class_between_variance() -> None:
    rng = np.random.default_rng(4)
    g = np.clip(np.r_[rng.normal(40, 12, 300), rng.normal(120, 15, 500),
                      rng.normal(210, 10, 200)], 0, 255).astype(np.uint8)  # fmt: skip
    p = np.bincount(g, minlength=256) / g.size
    v = np.arange(256)

    def between(t1: int, t2: int) -> float:
        out = 0.0
        for lo, hi in ((0, t1), (t1, t2), (t2, 256)):
            w = p[lo:hi].sum()
            if w == 0:
                return -1.0
            out += w * ((p[lo:hi] * v[lo:hi]).sum() / w - g.mean()) ** 2
        return out

    best = max(between(a, b) for a in range(1, 255) for b in range(a + 1, 256))
    t1 = cues.otsu3(g)
    assert max(between(t1, b) for b in range(t1 + 1, 256)) == pytest.approx(best)
    assert 60 < t1 < 100  # between the dark and the middle cluster


def test_lung_box_finds_the_phantom_lungs() -> None:
    """The phantoms' lungs (cxraug.prep.phantom): apices at 10-16 % of the height, domes at
    70-81 % (+ their curve), outer edges at 10-17 % and 83-90 % of the width; the box adds a
    5 % margin."""
    rng = np.random.default_rng(5)
    for size in (64, 224):
        for i in range(12):
            g = make_phantom(rng, "covid" if i % 2 else "normal", (size, size))
            box = cues.lung_box(g)
            assert box is not None
            x0, y0, x1, y1 = np.array(box) / size
            assert 0 <= x0 < 0.17 and 0.83 < x1 <= 1, box
            assert 0.02 < y0 < 0.16 and 0.7 < y1 <= 1, box
    flat = np.full((64, 64), 128, np.uint8)
    assert cues.lung_box(flat) is None
    assert cues.lung_box(rng.integers(0, 256, (64, 64)).astype(np.uint8)) is None
    ramp = np.tile(np.arange(100, dtype=np.uint8), (100, 1))
    np.testing.assert_array_equal(cues.crop_to(ramp, None)[:, [0, -1]][0], [10, 89])  # centre


def test_remove_cues_steps_and_counts() -> None:
    rng = np.random.default_rng(6)
    x = np.stack([make_phantom(rng, "normal", (64, 64)) for _ in range(3)]) / 127.5 - 1
    facts = cues.CueFacts()
    assert cues.remove_cues(x, (), facts) is x  # no steps: the very same pixels
    x[0, :6, :6] = 1.0  # a white corner block on one image
    out = cues.remove_cues(x, ("marks", "lungcrop", "clahe"), facts)
    assert out.shape == x.shape and out.dtype == np.float32 and -1 <= out.min() <= out.max() <= 1
    assert facts.to_json()["marked_images"] == 1 and facts.to_json()["lung_crop_fallbacks"] == 0


def _two_sources(root: Path, n: int = 40) -> Workspace:
    """Sources a and b, each with n normal and n covid phantoms (3/4 train, 1/4 test) at 64 px;
    every image of b carries a white block in its top-left corner (a burnt-in label)."""
    ws = Workspace.at(root)
    rng = np.random.default_rng(8)
    imgs, recs = [], []
    for src in ("a", "b"):
        for label in ("normal", "covid"):
            for i in range(n):
                u8 = make_phantom(rng, label, (64, 64))
                if src == "b":
                    u8[1:7, 1:7] = 255
                split = "train" if i < n * 3 // 4 else "test"
                rid = f"{src}/{label}/{i}"
                recs.append(Record(id=rid, path=f"/nonexistent/{rid}.png", label=label,
                                   split=split, source=src, patient_id=rid))  # fmt: skip
                imgs.append(u8.astype(np.float32) / 127.5 - 1.0)
    ds = Dataset(np.stack(imgs), np.array([r.label == "covid" for r in recs], np.int64),
                 np.array([r.id for r in recs]), np.array([r.split for r in recs]))  # fmt: skip
    save_dataset(ws.dataset_path, ds)
    write_manifest(ws.manifest_path, Manifest(recs))
    return ws


def test_cue_removal_hides_a_planted_source_mark_from_the_shortcut_check(tmp_path: Path) -> None:
    ws = _two_sources(tmp_path)
    cfg = ev.EvaluateConfig(**{**TINY.__dict__, "arms": "real", "shortcut": True,
                               "steps": 120, "cues": "marks"})  # fmt: skip
    r = ev.evaluate(ws, cfg, show_progress=False)
    s = r.shortcut
    assert s["cues"] == "marks" and s["without_cues"]["status"] == "ok"
    assert s["without_cues"]["balanced_accuracy"] > 0.8  # the mark gives the source away
    assert s["balanced_accuracy"] < 0.65  # chance: 0.5
    assert r.cues["real"]["marked_images"] >= 80  # every image of b
    assert r.config["cue_steps"] == ["marks"]
    console = Console(file=io.StringIO(), width=200)
    for item in ev.report_tables(r):
        console.print(item)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "with --cues marks" in shown and "images as saved" in shown  # both columns
    assert "source cues removed (marks)" in shown
