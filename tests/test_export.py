"""`cxraug export OUT`: folders other frameworks read, index.csv, the pixels `preprocess`
makes, synthetic rows by status, links, safe names, and never overwriting."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from _dicom import PATIENT_ID, PATIENT_NAME, write_dicom
from typer.testing import CliRunner

from cxraug.cli import app
from cxraug.collect import CollectConfig, collect
from cxraug.core.dataset import load_dataset
from cxraug.core.errors import InputError
from cxraug.core.fsutil import sha256_file
from cxraug.core.images import encode_image, to_uint8
from cxraug.core.manifest import Record, read_manifest
from cxraug.core.workspace import Workspace
from cxraug.export import ExportConfig, _names, export, file_stem
from cxraug.prep.phantom import make_phantom
from cxraug.preprocess import PreprocessConfig, preprocess

S = 32
CFG = ExportConfig(size=S, workers=1, show_progress=False)
runner = CliRunner()


def phantom(seed: int, label: str = "normal", size: tuple[int, int] = (80, 72)) -> np.ndarray:
    return make_phantom(np.random.default_rng(seed), label, size)


def png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_image(arr, ".png"))
    return path


def workspace(tmp_path: Path) -> Workspace:
    """A folder source (PNG, a 16-bit PNG and a 12-bit DICOM), a test-only source, and three
    synthetic rows: ok at the export size, ok at another size, rejected."""
    src, ext = tmp_path / "src", tmp_path / "ext"
    for k in range(5):
        png(src / "normal" / f"n{k}.png", phantom(k))
        png(src / "covid" / f"c{k}.png", phantom(10 + k, "covid"))
    png(src / "normal" / "deep.png", (phantom(20).astype(np.uint16) * 257))
    write_dicom(src / "covid" / "d.dcm", phantom(21, "covid").astype(np.uint16) * 16,
                bits_stored=12)  # fmt: skip
    png(ext / "covid" / "e.png", phantom(30, "covid"))
    png(ext / "normal" / "f.png", phantom(31))
    ws = Workspace.at(tmp_path / "ws")
    collect(ws, [f"h=folder:{src}", f"x=folder:{ext}"],
            CollectConfig(workers=1, show_progress=False, test_fraction=0.4, test_only="x"))
    manifest = ws.load_manifest()
    for i, (side, status) in enumerate([(S, "ok"), (48, "ok"), (S, "rejected")]):
        stem = f"run1-s0-{i:06d}"
        path = png(ws.synthetic_png("covid", stem), phantom(40 + i, "covid", (side, side)))
        manifest.records.append(Record(
            id=ws.synthetic_id("covid", stem), path=ws.relpath(path), label="covid",
            split="train", status=status, source="synthetic", sha256=sha256_file(path),
            width=side, height=side, synthetic=True, run="runs/run1",
            checkpoint_sha256="ab" * 32, seed=0, noise_index=i))  # fmt: skip
    ws.save_manifest(manifest)
    return ws


def expected_counts(ws: Workspace, splits: tuple[str, ...] = ("train", "test"),
                    statuses: tuple[str, ...] = ("ok",)) -> Counter[tuple[str, str]]:  # fmt: skip
    return Counter((r.split, r.label) for r in read_manifest(ws.manifest_path)
                   if r.split in splits and (r.status in statuses if r.synthetic
                                             else r.status == "ok"))  # fmt: skip


def index_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "index.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_round_trip_keras_reads_the_manifest_classes_and_counts(tmp_path: Path) -> None:
    import keras

    ws = workspace(tmp_path)
    out = tmp_path / "out"
    res = export(ws, out, CFG)
    want = expected_counts(ws)
    assert sorted(os.listdir(out)) == ["export-config.json", "index.csv", "test", "train"]
    assert res.errors == [] and res.copied == 1 and res.written == sum(want.values()) - 1
    data = keras.utils.image_dataset_from_directory(out / "train", color_mode="grayscale",
                                                    image_size=(S, S), shuffle=False)  # fmt: skip
    assert data.class_names == ["covid", "normal"]
    labels = np.concatenate([y.numpy() for _, y in data])
    got = Counter(data.class_names[i] for i in labels)
    assert got == {c: want["train", c] for c in ("covid", "normal")}
    rows = index_rows(out)  # index.csv lists exactly the files, with their manifest rows
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert sorted(r["file"] for r in rows) == on_disk
    manifest = read_manifest(ws.manifest_path).by_id()
    for r in rows:
        m = manifest[r["id"]]
        assert r["file"].split("/")[:2] == [m.split, m.label] == [r["split"], r["label"]]
        assert (r["synthetic"], r["source"], r["run"]) == (str(m.synthetic).lower(), m.source,
                                                            m.run)  # fmt: skip
    assert Counter((r["split"], r["label"]) for r in rows) == want


def test_real_pixels_are_those_of_preprocess_and_16_bit_keeps_more(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    preprocess(ws, PreprocessConfig(size=S, workers=1), show_progress=False)
    ds = load_dataset(ws.dataset_path)
    export(ws, tmp_path / "o8", CFG)
    export(ws, tmp_path / "o16", ExportConfig(size=S, bits=16, workers=1, show_progress=False))
    files = {r["id"]: r["file"] for r in index_rows(tmp_path / "o8")}
    for rid, img in zip(ds.ids, ds.images, strict=True):
        if str(rid) not in files:  # external rows: not asked for
            continue
        u8 = cv2.imread(str(tmp_path / "o8" / files[str(rid)]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(u8, to_uint8(img))
        u16 = cv2.imread(str(tmp_path / "o16" / files[str(rid)]), cv2.IMREAD_UNCHANGED)
        assert u16.dtype == np.uint16
        np.testing.assert_allclose(u16 / 65535.0, (img + 1) / 2, atol=1e-5)


def test_synthetic_by_status_external_on_request_and_links(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    res = export(ws, tmp_path / "a", ExportConfig(size=S, workers=1, show_progress=False,
                                                  splits="train,test,external",
                                                  statuses="ok,rejected", link=True))
    assert res.counts["external"] == {"normal": 1, "covid": 1}
    assert Counter((r["split"], r["label"]) for r in index_rows(tmp_path / "a")) == \
        expected_counts(ws, ("train", "test", "external"), ("ok", "rejected"))  # fmt: skip
    src = ws.synthetic_png("covid", "run1-s0-000000")
    linked = [p for p in (tmp_path / "a" / "train" / "covid").iterdir()
              if p.name.startswith("synthetic__covid__run1-s0-000000")]  # fmt: skip
    assert res.linked == 2 and os.stat(linked[0]).st_ino == os.stat(src).st_ino
    only = export(ws, tmp_path / "b", ExportConfig(size=S, workers=1, show_progress=False,
                                                   classes="covid", sources="synthetic"))
    assert only.counts == {"train": {"covid": 2}} and only.copied == 1
    manifest = ws.load_manifest()  # a person's verdict "marked": left out on request only
    manifest.by_id()[ws.synthetic_id("covid", "run1-s0-000000")].marks = "marked: arrow"
    ws.save_manifest(manifest)
    kept = export(ws, tmp_path / "c", ExportConfig(size=S, workers=1, show_progress=False,
                                                   sources="synthetic", exclude_marked=True))
    assert kept.counts == {"train": {"normal": 0, "covid": 1}}
    with pytest.raises(InputError, match="--sources nope: no such source"):
        export(ws, tmp_path / "d", ExportConfig(sources="nope"))


def test_never_overwrites_without_force_and_never_a_foreign_folder(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    out = tmp_path / "out"
    export(ws, out, CFG)
    with pytest.raises(InputError, match="pass --force"):
        export(ws, out, CFG)
    small = ExportConfig(size=S, workers=1, show_progress=False, classes="normal", force=True)
    export(ws, out, small)
    assert not (out / "train" / "covid").exists()  # the earlier export is gone, all of it
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no leftovers
    mine = tmp_path / "mine"
    png(mine / "keep.png", phantom(1))
    with pytest.raises(InputError, match="not a cxraug export"):
        export(ws, mine, small)
    assert os.listdir(mine) == ["keep.png"]
    with pytest.raises(InputError, match="one of its folders"):
        export(ws, ws.synthetic_dir / "x", CFG)


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_exports_hidden_folders_are_swept_and_a_half_swap_restored(
    tmp_path: Path,
) -> None:
    """What SIGKILL leaves: a half-built folder, and (killed mid-swap) the earlier export moved
    aside with OUT missing. The next export removes the first and puts the second back at OUT
    (then refuses to replace it without --force); a live process's folder is left alone."""
    ws = workspace(tmp_path)
    out = tmp_path / "out"
    export(ws, out, CFG)
    want = sorted(p.relative_to(out) for p in out.rglob("*"))
    dead = _dead_pid()
    half = tmp_path / f".out.export-{dead}-abc123"
    (half / "train").mkdir(parents=True)
    aside = tmp_path / f".out.old-{dead}-def456"
    aside.mkdir()
    os.replace(out, aside / "x")
    live = tmp_path / f".out.export-{os.getppid()}-ghi789"  # our parent: alive
    live.mkdir()
    with pytest.raises(InputError, match="pass --force"):
        export(ws, out, CFG)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == want  # restored, whole
    assert not half.exists() and not aside.exists() and live.is_dir()
    live.rmdir()


def test_safe_unique_file_names() -> None:
    assert file_stem("../../etc/passwd") == "etc__passwd"
    assert file_stem("cohen/images/x y.jpeg#2") == "cohen__images__x_y.jpeg_2"
    assert file_stem("/abs/a.png") == "abs__a"
    rows = [Record(id=i, path="p", label="normal", split="train")
            for i in ("s/A.png", "s/a.jpg", "s/" + "z" * 300)]  # fmt: skip
    names = _names(rows)
    assert names[0] == "train/normal/s__A.png" and names[1].startswith("train/normal/s__a-")
    assert len(set(n.lower() for n in names)) == 3 and all(len(n) < 160 for n in names)
    assert all("/" not in n.split("/", 2)[2] for n in names)


def test_cli_exit_codes_failed_rows_and_no_header_values(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    args = ["export", "-w", str(ws.root), "--size", str(S), "--workers", "1"]
    r = runner.invoke(app, [*args, str(tmp_path / "o"), "--bits", "12"])
    assert r.exit_code == 3 and "--bits 12: use 8 or 16" in r.output
    (tmp_path / "src" / "normal" / "n0.png").unlink()  # gone since collect: that row fails
    r = runner.invoke(app, [*args, str(tmp_path / "o"), "--json"])
    assert r.exit_code == 1 and "h/normal/n0.png: file not found" in r.output
    assert len(index_rows(tmp_path / "o")) == sum(expected_counts(ws).values()) - 1
    for p in (tmp_path / "o").rglob("*"):
        if p.is_file():
            assert PATIENT_ID.encode() not in p.read_bytes()
            assert PATIENT_NAME.encode() not in p.read_bytes()


@pytest.mark.parametrize(("options", "message"), [
    ({"bits": 12}, "--bits 12: use 8 or 16"),
    ({"splits": "train,dev"}, "--splits dev: unknown; use train, test, external"),
    ({"splits": " , "}, "--splits is empty"),
    ({"classes": "cat"}, "--classes cat: unknown"),
    ({"statuses": "fine"}, "--statuses fine: unknown"),
])  # fmt: skip
def test_bad_choices_are_refused_when_the_config_is_built(options: dict[str, object],
                                                          message: str) -> None:
    # config check(), not the stage body: refused before OUT or the manifest is looked at
    with pytest.raises(InputError, match=message):
        ExportConfig(**options)  # type: ignore[arg-type]
