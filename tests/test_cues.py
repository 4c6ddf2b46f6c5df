"""Source-cue removal (cxraug.prep.cues, shared by `evaluate` and `train`): marks inpainted and
frames blackened where they were planted, the three-class Otsu threshold against a brute-force
search, the lung crop on phantoms whose lung geometry is known, and a planted source mark that
the shortcut check finds on the images as saved and no longer finds with `--cues marks`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from rich.console import Console
from test_evaluate import TINY, runner

from cxraug import evaluate as ev
from cxraug.cli import app
from cxraug.core.dataset import Dataset, save_dataset
from cxraug.core.errors import InputError
from cxraug.core.manifest import Manifest, Record, write_manifest
from cxraug.core.workspace import Workspace
from cxraug.prep import cues
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


# ---- train --cues: the GAN's training images ------------------------------------------------

#: the tiny MLP of tests/test_train.py
GAN_TINY = dict(latent_dim=8, g_widths=(16, 32), d_widths=(32, 32, 32, 32), batch_size=8,
                xla=False, mixed_precision="none", sample_interval=3, samples_per_class=2,
                noise_iterations=4)  # fmt: skip


def test_train_cues_option_is_canonical_and_old_configs_read_as_none() -> None:
    from cxraug.gan.config import RESUMABLE_CHANGES, TrainConfig, recipe_config

    assert TrainConfig().cues == "none" and TrainConfig().cue_steps == ()
    c = recipe_config("paper", cues="clahe+marks")
    assert c.cues == "marks+clahe" and c.cue_steps == ("marks", "clahe")  # the run order
    assert TrainConfig.from_json(c.to_json()) == c
    old = {k: v for k, v in c.to_dict().items() if k != "cues"}  # a config from before --cues
    assert TrainConfig.from_dict(old).cues == "none"
    with pytest.raises(InputError, match=r"unknown step\(s\) blur"):
        recipe_config("paper", cues="blur")
    with pytest.raises(InputError, match="choose one"):
        recipe_config("paper", cues="clahe+histeq")
    assert "cues" not in RESUMABLE_CHANGES  # the images a run trains on are fixed


def test_training_set_applies_the_cue_steps(tmp_path: Path) -> None:
    from cxraug.core.dataset import load_dataset
    from cxraug.gan.trainset import training_set

    ws = _two_sources(tmp_path, n=8)
    saved = load_dataset(ws.dataset_path).subset(split="train")
    plain, _, facts = training_set(ws.dataset_path, True)
    np.testing.assert_array_equal(plain.images, saved.images)  # no steps: the saved pixels
    assert facts == {}
    got, _, facts = training_set(ws.dataset_path, True, ("clahe",))
    u8 = np.rint((saved.images + 1) * 127.5).astype(np.uint8)  # the saved 8-bit levels
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    want = np.stack([clahe.apply(g) for g in u8]).astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(got.images, want, atol=1e-6)
    assert np.abs(got.images - saved.images).mean() > 0.01  # the step changed the images
    assert list(got.ids) == list(saved.ids) and (got.labels == saved.labels).all()
    assert facts["steps"] == ["clahe"] and facts["images"] == len(saved)
    marks, _, facts = training_set(ws.dataset_path, True, ("marks",))
    b = np.array([i.startswith("b/") for i in saved.ids])
    assert (saved.images[b][:, 1:7, 1:7] == 1).all()  # the planted white block...
    assert (marks.images[b][:, 1:7, 1:7] < 0.8).all()  # ...is gone from what the GAN sees
    assert facts["marked_images"] >= b.sum()


def test_a_tiny_training_run_records_cues_and_trains_on_those_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cxraug import train as train_stage
    from cxraug.gan import loop
    from cxraug.gan.checkpoint import find_latest, read_checkpoint
    from cxraug.gan.config import recipe_config
    from cxraug.gan.trainset import training_set

    ws = _two_sources(tmp_path, n=8)
    seen: list[np.ndarray] = []
    resident = loop.resident_dataset  # the training loop's (cxraug.gan.loop)

    def spy(images: np.ndarray, labels: np.ndarray) -> object:
        seen.append(np.array(images))  # the pixels the compiled step will train on
        return resident(images, labels)

    monkeypatch.setattr(loop, "resident_dataset", spy)
    cfg = recipe_config("paper", **GAN_TINY, iterations=2, cues="clahe+marks")  # type: ignore[arg-type]
    res = train_stage.train(ws, cfg, name="c", quiet=True)
    want = training_set(ws.dataset_path, cfg.include_marked, ("marks", "clahe"))[0].images
    np.testing.assert_array_equal(seen[0], want)
    run = ws.runs_dir / "c"
    assert json.loads((run / "config.json").read_text())["cues"] == "marks+clahe"
    saved = json.loads((run / "training_set.json").read_text())["cues"]
    assert saved["steps"] == ["marks", "clahe"] and saved["images"] == len(want)
    assert read_checkpoint(res.checkpoint).config.cues == "marks+clahe"  # type: ignore[arg-type]
    with pytest.raises(InputError, match="cannot change cues"):
        train_stage.resume(ws, "c", quiet=True, cues="none")
    again = train_stage.resume(ws, "c", quiet=True, iterations=3)  # the same images again
    assert again.iteration == 3 and find_latest(run) is not None
    np.testing.assert_array_equal(seen[-1], want)
    off = train_stage.train(ws, recipe_config("paper", **GAN_TINY, iterations=1), name="off",  # type: ignore[arg-type]
                            quiet=True)  # fmt: skip
    np.testing.assert_array_equal(seen[-1], training_set(ws.dataset_path, False)[0].images)
    assert "cues" not in json.loads((off.run_dir / "training_set.json").read_text())
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--cues", "blur", "--name", "x"])
    assert r.exit_code == 3 and "unknown step(s) blur" in r.output


def test_evaluate_does_not_apply_a_step_twice_to_a_cues_runs_images(tmp_path: Path) -> None:
    """Synthetic images of a run trained with `--cues clahe` are drawn with CLAHE's look
    already: `evaluate --cues clahe` leaves them as they are and equalises the real ones; the
    images of a run trained without it (or from before the option) get the step."""
    from test_evaluate import S, make_workspace

    from cxraug.classify.data import load_synthetic

    ws = make_workspace(tmp_path, "fresh")  # 80 synthetic covid rows of run "runs/g"
    raw, _ = load_synthetic(ws, "covid", "", S)
    u8 = np.rint((raw + 1) * 127.5).astype(np.uint8)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    once = np.stack([clahe.apply(g) for g in u8]).astype(np.float32) / 127.5 - 1
    ws.run("g").path.mkdir(parents=True)
    for run_cues, want in (("clahe", raw), ("none", once), (None, once)):
        cfg = {} if run_cues is None else {"cues": run_cues}  # None: a config from before
        ws.run("g").config_path.write_text(json.dumps(cfg), encoding="utf-8")
        facts = cues.CueFacts()
        got, why = load_synthetic(ws, "covid", "", S, ("clahe",), facts)
        assert not why and facts.steps == ["clahe"]
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=str(run_cues))
