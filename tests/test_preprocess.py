"""`cxraug preprocess`: the per-image maths, the workspace run, crop boxes and the CLI."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cxraug.cli import app
from cxraug.core.dataset import load_dataset
from cxraug.core.fsutil import sha256_file
from cxraug.core.images import choose_reduce, read_gray
from cxraug.core.manifest import Manifest, Record, read_manifest, write_manifest
from cxraug.core.workspace import Workspace
from cxraug.prep.loading import ImageTask, LoadOptions, load_image
from cxraug.preprocess import PreprocessConfig, preprocess, preprocess_image

runner = CliRunner()

# ---- preprocess_image maths ---------------------------------------------------------------


def test_crop_then_area_resize_equals_block_means() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((40, 60)).astype(np.float32)
    out = preprocess_image(img, (10, 5, 50, 37), 8)  # crop 40 x 32 -> 8 x 8: 5 x 4 blocks
    region = img[5:37, 10:50]  # (32, 40)
    expected = region.reshape(8, 4, 8, 5).mean(axis=(1, 3)) * 2 - 1
    assert out.dtype == np.float32 and out.shape == (8, 8)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_full_range_image_maps_exactly_to_minus_one_and_one() -> None:
    img = np.zeros((64, 64), np.float32)
    img[:, 32:] = 1.0
    out = preprocess_image(img, None, 16)
    assert out.min() == -1.0 and out.max() == 1.0
    np.testing.assert_array_equal(out[:, :8], -1.0)
    np.testing.assert_array_equal(out[:, 8:], 1.0)


def test_upscaling_uses_clipped_cubic() -> None:
    rng = np.random.default_rng(1)
    img = rng.random((12, 10)).astype(np.float32)
    expected = np.clip(cv2.resize(img, (32, 32), interpolation=cv2.INTER_CUBIC), 0, 1) * 2 - 1
    np.testing.assert_allclose(preprocess_image(img, None, 32), expected, atol=1e-6)
    assert preprocess_image(img, None, 32).min() >= -1.0  # cubic overshoot clipped


def test_keep_aspect_pads_with_black_centred() -> None:
    img = np.full((20, 40), 0.5, np.float32)  # wide: 40 x 20 -> 10 x 5 inside 10 x 10
    img[0, 0] = 0.0
    out = preprocess_image(img, None, 10, keep_aspect=True)
    assert out.shape == (10, 10)
    np.testing.assert_array_equal(out[:2], -1.0)  # (10 - 5) // 2 = 2 rows of padding on top
    np.testing.assert_array_equal(out[7:], -1.0)  # and 3 below
    assert np.allclose(out[3:6], 0.0, atol=0.02)  # the grey content


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        preprocess_image(np.zeros((10, 10), np.float32), (0, 0, 11, 10), 4)
    with pytest.raises(ValueError, match="gray image"):
        preprocess_image(np.zeros((10, 10, 3), np.float32), None, 4)


@pytest.mark.parametrize(
    "w,h,k", [(5623, 4757, 8), (4280, 3520, 4), (1000, 1000, 2), (895, 2000, 1), (640, 480, 1)]
)
def test_choose_reduce(w: int, h: int, k: int) -> None:
    assert choose_reduce(w, h, 224) == k  # largest k keeping min side / k >= 448


# ---- workspace helpers --------------------------------------------------------------------


def smooth(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth, asymmetric uint8 test image (survives JPEG and resizing well)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = 0.5 + 0.25 * np.sin(xx / w * (3 + seed)) + 0.2 * np.cos(yy / h * 2) + 0.05 * (xx / w)
    return np.clip(a * 255, 0, 255).astype(np.uint8)


def make_ws(tmp_path: Path, n: int = 6, size: tuple[int, int] = (120, 96)) -> Workspace:
    """A workspace with n PNG/JPEG images (alternating covid/normal, train/test) + manifest."""
    ws = Workspace.at(tmp_path / "ws")
    (ws.root / "data").mkdir(parents=True)
    recs = []
    for i in range(n):
        name = f"data/img{i:02d}." + ("png" if i % 2 == 0 else "jpg")
        Image.fromarray(smooth(size[1], size[0], i)).save(ws.root / name, quality=95)
        recs.append(Record(f"demo/img{i:02d}", name, ("covid", "normal")[i % 2],
                           ("train", "train", "test")[i % 3], width=size[0], height=size[1],
                           sha256=sha256_file(ws.root / name)))  # fmt: skip
    write_manifest(ws.manifest_path, Manifest(recs))
    return ws


def run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, ["preprocess", *args])
    return r.exit_code, r.stdout, r.stderr


# ---- end to end ---------------------------------------------------------------------------


def test_cli_builds_dataset_matching_the_pure_function(tmp_path: Path) -> None:
    ws = make_ws(tmp_path)
    code, out, errout = run("-w", str(ws.root), "--size", "32", "--workers", "1", "--json")
    assert code == 0, errout
    res = json.loads(out)
    assert res["n_images"] == 6 and res["errors"] == []
    assert res["counts"] == {"train": {"normal": 2, "covid": 2}, "test": {"normal": 1, "covid": 1}}
    ds = load_dataset(ws.dataset_path)
    assert ds.images.shape == (6, 32, 32) and ds.images.dtype == np.float32
    assert list(ds.ids) == [f"demo/img{i:02d}" for i in range(6)]  # manifest order
    assert list(ds.labels) == [1, 0, 1, 0, 1, 0] and list(ds.splits[:3]) == ["train"] * 2 + ["test"]
    for i in (0, 1):
        g, _, _ = read_gray(ws.root / f"data/img{i:02d}.{'png' if i == 0 else 'jpg'}")
        np.testing.assert_array_equal(ds.images[i], preprocess_image(g, None, 32))
    cfg = json.loads((ws.processed_dir / "config.json").read_text())
    assert cfg["config"]["size"] == 32 and cfg["manifest_sha256"] == sha256_file(ws.manifest_path)
    assert cfg["dataset_sha256"] == sha256_file(ws.dataset_path) and cfg["counts"] == res["counts"]

    # same settings + same manifest: up to date
    code, out, errout = run("-w", str(ws.root), "--size", "32", "--workers", "1")
    assert code == 0 and "is up to date (6 images" in out
    # other settings: refused without --force, exit 3, dataset untouched
    before = sha256_file(ws.dataset_path)
    code, out, errout = run("-w", str(ws.root), "--size", "16")
    assert code == 3 and "was built with other settings (size 32 -> 16); pass --force" in errout
    assert sha256_file(ws.dataset_path) == before
    code, _, errout = run("-w", str(ws.root), "--size", "16", "--force", "--workers", "1")
    assert code == 0, errout
    assert load_dataset(ws.dataset_path).images.shape == (6, 16, 16)


def test_deleted_and_changed_files_become_error_rows(tmp_path: Path) -> None:
    ws = make_ws(tmp_path)
    (ws.root / "data/img01.jpg").unlink()
    Image.fromarray(smooth(96, 120, 9)).save(ws.root / "data/img02.png")  # changed bytes
    code, out, errout = run("-w", str(ws.root), "--size", "16", "--workers", "1", "--json")
    assert code == 1
    assert "failed: demo/img01: file not found" in errout
    assert "demo/img02: file changed since collect (sha256 differs)" in errout
    assert json.loads(out)["n_images"] == 4
    rows = read_manifest(ws.manifest_path).by_id()
    assert (rows["demo/img01"].status, rows["demo/img01"].reason) == ("error", "file not found")
    assert rows["demo/img02"].status == "error" and rows["demo/img03"].status == "ok"
    assert list(load_dataset(ws.dataset_path).ids) == ["demo/img00", "demo/img03", "demo/img04",
                                                       "demo/img05"]  # fmt: skip
    # the error rows are recorded, so the next run is clean and up to date
    code, out, _ = run("-w", str(ws.root), "--size", "16", "--workers", "1")
    assert code == 0 and "up to date" in out


def test_crop_boxes_applied_and_persisted(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, n=3)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("id,x0,y0,x1,y1\ndemo/img00,10,8,90,72\n")
    boxes.write_text(boxes.read_text() + "demo/img02,0,0,120,96\n")  # full image: no-op box
    code, out, errout = run("-w", str(ws.root), "--crop-boxes", str(boxes), "--size", "16",
                            "--workers", "1")  # fmt: skip
    assert code == 0, errout
    assert "saved 2 crop box(es) into" in out
    m = read_manifest(ws.manifest_path).by_id()
    assert m["demo/img00"].crop == (10, 8, 90, 72) and m["demo/img01"].crop is None
    g, _, _ = read_gray(ws.root / "data/img00.png")
    ds = load_dataset(ws.dataset_path)
    np.testing.assert_array_equal(ds.images[0], preprocess_image(g, (10, 8, 90, 72), 16))


def test_bad_crop_file_exit_3_and_manifest_unchanged(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, n=3)
    before = ws.manifest_path.read_bytes()
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("id,x0,y0,x1,y1\ndemo/img00,10,8,90,72\ndemo/img01,90,0,40,50\n"
                     "demo/zzz,0,0,20,20\ndemo/img02,0,0,121,96\n")  # fmt: skip
    code, _, errout = run("-w", str(ws.root), "--crop-boxes", str(boxes), "--workers", "1")
    assert code == 3
    assert "boxes.csv has 3 problem(s); nothing was changed" in errout
    assert "boxes.csv row 3: crop box (90, 0, 40, 50): x1 (40) must be greater than x0 (90)" in (
        errout
    )
    assert "boxes.csv row 4: id 'demo/zzz' is not in the manifest" in errout
    assert "row 5: crop box (0, 0, 121, 96): x1 (121) is beyond the image width (120)" in errout
    assert ws.manifest_path.read_bytes() == before
    assert not ws.dataset_path.exists()


def test_cli_bad_input_messages(tmp_path: Path) -> None:
    code, _, errout = run("-w", str(tmp_path))
    assert code == 3 and "no manifest at" in errout and "cxraug collect" in errout
    ws = make_ws(tmp_path, n=2)
    code, _, errout = run("-w", str(ws.root), "--suggest-crops", "a.csv", "--crop-boxes", "b.csv")
    assert code == 2 and "either --suggest-crops or --crop-boxes" in errout
    code, _, errout = run("-w", str(ws.root), "--size", "2")
    assert code == 2 and "--size 2 must be in [8, 4096]" in errout  # an option: usage error
    for p in (ws.root / "data").iterdir():
        p.unlink()
    code, _, errout = run("-w", str(ws.root), "--workers", "1")
    assert code == 3 and "none of the 2 usable images could be read" in errout


def test_suggest_crops_writes_boxes_and_sheet_that_feed_back(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, n=3)
    out, sheet = tmp_path / "sugg.csv", tmp_path / "sheet.png"
    code, stdout, errout = run("-w", str(ws.root), "--suggest-crops", str(out),
                               "--contact-sheet", str(sheet), "--workers", "1",
                               "--json")  # fmt: skip
    assert code == 0, errout
    res = json.loads(stdout)
    assert res["n_boxes"] == 3 and res["contact_sheets"] == [str(sheet)]
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["demo/img00", "demo/img01", "demo/img02"]
    assert all(0 <= int(r["x0"]) < int(r["x1"]) <= 120 for r in rows)
    assert Image.open(sheet).size[0] > 0 and not ws.dataset_path.exists()
    code, _, errout = run("-w", str(ws.root), "--suggest-crops", str(out))
    assert code == 3 and "already exists" in errout and "--force" in errout
    # the sheet exists: preprocess refuses to overwrite it (exit 3, nothing changed) ...
    before, sheet_bytes = ws.manifest_path.read_bytes(), sheet.read_bytes()
    code, _, errout = run("-w", str(ws.root), "--crop-boxes", str(out), "--size", "16",
                          "--workers", "1", "--contact-sheet", str(sheet))  # fmt: skip
    assert code == 3 and "already exists; pass --force" in errout and str(sheet) in errout
    assert ws.manifest_path.read_bytes() == before and sheet.read_bytes() == sheet_bytes
    assert not ws.dataset_path.exists()
    # ... so does --suggest-crops to a new boxes file, and so does a page of a multi-page sheet
    code, _, errout = run("-w", str(ws.root), "--suggest-crops", str(tmp_path / "new.csv"),
                          "--contact-sheet", str(sheet))  # fmt: skip
    assert code == 3 and "already exists" in errout and not (tmp_path / "new.csv").exists()
    (tmp_path / "pages-002.png").write_bytes(b"an earlier sheet's page")
    code, _, errout = run("-w", str(ws.root), "--size", "16", "--workers", "1",
                          "--contact-sheet", str(tmp_path / "pages.png"))  # fmt: skip
    assert code == 3 and "pages-002.png already exists" in errout
    sheet.write_bytes(b"an earlier sheet")
    code, _, errout = run("-w", str(ws.root), "--crop-boxes", str(out), "--size", "16",
                          "--workers", "1", "--contact-sheet", str(sheet), "--force")  # fmt: skip
    assert code == 0, errout
    assert Image.open(sheet).size[0] > 0  # with --force: replaced by the new sheet
    assert read_manifest(ws.manifest_path).by_id()["demo/img01"].crop is not None
    # an unreadable image: reported (exit 1), the others still get boxes, manifest untouched
    (ws.root / "data/img02.png").write_text("not a picture")
    before = ws.manifest_path.read_bytes()
    code, _, errout = run("-w", str(ws.root), "--suggest-crops", str(out), "--force",
                          "--workers", "1")  # fmt: skip
    assert code == 1 and "failed: demo/img02: file changed since collect" in errout
    assert out.read_text().count("\ndemo/") == 2 and ws.manifest_path.read_bytes() == before


def test_two_workers_equal_one_and_jpeg_reduce_is_close(tmp_path: Path) -> None:
    # 20 rows > one chunk, so two spawned worker processes really run
    ws = make_ws(tmp_path, n=20, size=(64, 48))
    cfg1 = PreprocessConfig(size=16, workers=1)
    one = preprocess(ws, cfg1, show_progress=False)
    a = load_dataset(ws.dataset_path).images
    two = preprocess(ws, PreprocessConfig(size=16, workers=2), force=True, show_progress=False)
    np.testing.assert_array_equal(load_dataset(ws.dataset_path).images, a)
    assert one.n_images == two.n_images == 20

    # a big JPEG: DCT-reduced decode (k = 4 for a 1900 x 1800 crop at size 224) vs full decode
    big = Workspace.at(tmp_path / "big")
    (big.root).mkdir()
    Image.fromarray(smooth(2000, 2400, 3)).save(big.root / "x.jpg", quality=92)
    crop = (300, 100, 2200, 1900)
    write_manifest(big.manifest_path, Manifest([Record("b/x", "x.jpg", "covid", "train",
                   width=2400, height=2000, crop=crop)]))  # fmt: skip
    fast = preprocess(big, PreprocessConfig(workers=1), show_progress=False)
    reduced = load_dataset(big.dataset_path).images[0]
    slow = preprocess(big, PreprocessConfig(workers=1, jpeg_reduce=False), force=True,
                      show_progress=False)  # fmt: skip
    full = load_dataset(big.dataset_path).images[0]
    assert (fast.reduced, slow.reduced) == (1, 0)
    assert np.abs(reduced - full).mean() < 0.01 and np.abs(reduced - full).max() < 0.05


# ---- real data ----------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_sample_preprocesses(cxr_data: Path, tmp_path: Path) -> None:
    with open(cxr_data / "SOURCES.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["class"] in ("covid", "normal")]
    sample = [r for r in rows if r["path"].startswith("originals/")]
    sample += random.Random(0).sample([r for r in rows if not r["path"].startswith("orig")], 14)
    recs = [Record(r["path"], str(cxr_data / r["path"]), r["class"], ("train", "test")[i % 2],
                   width=int(r["width"]), height=int(r["height"]))
            for i, r in enumerate(sample)]  # fmt: skip
    ws = Workspace.at(tmp_path)
    write_manifest(ws.manifest_path, Manifest(recs))
    res = preprocess(ws, PreprocessConfig(workers=2), show_progress=False)
    assert res.errors == [] and res.reduced >= 2  # the 4280 x 3520 JPEGs used DCT scaling
    ds = load_dataset(ws.dataset_path)
    assert ds.images.shape == (24, 224, 224) and ds.images.dtype == np.float32
    assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0
    assert (ds.images.reshape(24, -1).std(axis=1) > 0.05).all()  # real content, not blank


@pytest.mark.realdata
def test_jpeg_reduce_on_real_originals_is_close(cxr_data: Path) -> None:
    for p in sorted((cxr_data / "originals").glob("*.jp*g")):  # 2518..4280 px wide
        task = ImageTask(0, p.name, str(p), None, None, None, "")
        fast = load_image(task, LoadOptions(jpeg_reduce=True), 224)
        full = load_image(task, LoadOptions(jpeg_reduce=False), 224)
        assert fast.reduced == 4 and (fast.width, fast.height) == (full.width, full.height)
        diff = np.abs(preprocess_image(fast.gray, fast.crop, 224)
                      - preprocess_image(full.gray, full.crop, 224)) / 2  # [0, 1] units
        assert diff.mean() < 0.005 and diff.max() < 0.15, p.name
