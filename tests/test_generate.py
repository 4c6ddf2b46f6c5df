"""`cxraug generate`: determinism, -n independence, manifest rows, --balance arithmetic,
refusals and errors (exit 3)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_train import TINY, make_workspace  # tests/ is on sys.path (rootdir conftest)
from typer.testing import CliRunner

from cxraug.cli import app
from cxraug.core.dataset import real_counts, scarce_class
from cxraug.core.errors import InputError
from cxraug.core.fsutil import sha256_file
from cxraug.core.images import read_gray_u8
from cxraug.core.manifest import Manifest, Record, read_manifest, write_manifest
from cxraug.core.parallel import cpu_count, thread_pool
from cxraug.core.workspace import Workspace, run_name_of
from cxraug.gan.checkpoint import find_latest
from cxraug.gan.config import recipe_config
from cxraug.generate import balance_count
from cxraug.train import train

runner = CliRunner()


def real_rows(normal: int, covid: int) -> list[Record]:
    rows = [Record(id=f"n{i}", path=f"n{i}.png", label="normal", split="train")
            for i in range(normal)]  # fmt: skip
    rows += [Record(id=f"c{i}", path=f"c{i}.png", label="covid", split="train")
             for i in range(covid)]  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = make_workspace(tmp_path_factory.mktemp("gen"))
    write_manifest(ws.manifest_path, Manifest(real_rows(10, 4)))
    train(ws, recipe_config("paper", **TINY).replace(iterations=2), name="r1", quiet=True)
    return ws


def copy_ws(ws: Workspace, dst: Path) -> Workspace:
    shutil.copytree(ws.root, dst)
    return Workspace.at(dst)


def gen(ws: Workspace, *args: str) -> object:
    return runner.invoke(app, ["generate", "-w", str(ws.root), *args])


def test_same_seed_same_bytes_and_image_i_independent_of_n(trained: Workspace,
                                                            tmp_path: Path) -> None:  # fmt: skip
    a, b = copy_ws(trained, tmp_path / "a"), copy_ws(trained, tmp_path / "b")
    r = gen(a, "--class", "covid", "-n", "5", "--seed", "3", "--batch-size", "4")
    assert r.exit_code == 0 and "wrote 5 covid image(s)" in r.output, r.output
    r = gen(b, "--class", "covid", "-n", "7", "--seed", "3", "--batch-size", "4", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["count"] == 7
    for i in range(5):
        name = f"synthetic/covid/r1-s3-{i:06d}.png"
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes()
    # another batch size: same noise; pixels agree to within float rounding (<= 1 grey level)
    c = copy_ws(trained, tmp_path / "c")
    assert gen(c, "--class", "covid", "-n", "5", "--seed", "3", "--batch-size", "2").exit_code == 0
    for i in range(5):
        name = f"synthetic/covid/r1-s3-{i:06d}.png"
        d = read_gray_u8(a.root / name).astype(int) - read_gray_u8(c.root / name).astype(int)
        assert np.abs(d).max() <= 1
    # another seed gives other images
    assert gen(a, "--class", "covid", "-n", "1", "--seed", "4").exit_code == 0
    assert (a.root / "synthetic/covid/r1-s4-000000.png").read_bytes() != (
        a.root / "synthetic/covid/r1-s3-000000.png").read_bytes()  # fmt: skip


def test_manifest_rows_and_config(trained: Workspace, tmp_path: Path) -> None:
    ws = copy_ws(trained, tmp_path / "w")
    assert gen(ws, "--class", "covid", "-n", "3", "--seed", "1").exit_code == 0
    m = read_manifest(ws.manifest_path)
    rows = [r for r in m if r.synthetic]
    ck = find_latest(ws.runs_dir / "r1")
    assert ck is not None
    assert [r.id for r in rows] == [f"synthetic/covid/r1-s1-{i:06d}" for i in range(3)]
    for i, r in enumerate(rows):
        assert (r.label, r.split, r.status, r.source) == ("covid", "train", "ok", "synthetic")
        assert r.path == f"synthetic/covid/r1-s1-{i:06d}.png"
        assert r.sha256 == sha256_file(ws.root / r.path)
        assert (r.seed, r.noise_index, r.width, r.height) == (1, i, 16, 16)
        assert r.run == "runs/r1" and r.checkpoint_sha256 == sha256_file(ck)
    cfg = json.loads((ws.root / "synthetic/covid/generate-r1-s1.json").read_text())
    assert cfg["n"] == 3 and cfg["train_config"]["image_size"] == 16
    # again without --force: refused, nothing changed; with --force: rows stay unique
    r = gen(ws, "--class", "covid", "-n", "3", "--seed", "1")
    assert r.exit_code == 3 and "--force" in r.output
    assert gen(ws, "--class", "covid", "-n", "3", "--seed", "1", "--force").exit_code == 0
    assert len(read_manifest(ws.manifest_path)) == 14 + 3


def test_balance_arithmetic() -> None:
    rows = real_rows(10, 3)
    rows.append(Record(id="t", path="t.png", label="covid", split="test"))  # test: not counted
    rows.append(Record(id="x", path="x.png", label="covid", split="train", status="excluded"))
    rows.append(Record(id="s", path="s.png", label="covid", split="train", synthetic=True))
    assert balance_count(Manifest(rows), "covid") == 10 - (3 + 1)
    assert balance_count(Manifest(rows), "normal") == 0


def test_the_scarce_class_of_counts() -> None:
    assert scarce_class({"normal": 10, "covid": 3}) == "covid"
    assert scarce_class({"normal": 2, "covid": 3}) == "normal"
    assert scarce_class({"normal": 3, "covid": 3}) == "normal"  # a tie: the first of LABELS
    assert scarce_class({"covid": 3, "normal": 3}) == "normal"  # whatever the counts' order
    assert scarce_class({"normal": 3, "covid": 3}, ("covid", "normal")) == "covid"
    # one class with images: that one (a class with none is absent, not scarce)
    assert scarce_class({"covid": 5}) == scarce_class({"normal": 0, "covid": 5}) == "covid"
    assert scarce_class({"normal": 5}, ("normal",)) == "normal"
    with pytest.raises(InputError, match="unknown class 'pneumonia'; use one of normal, covid"):
        scarce_class({"pneumonia": 1, "covid": 2})
    with pytest.raises(InputError, match="unknown class 'covid'; use one of normal"):
        scarce_class({"normal": 5, "covid": 9}, ("normal",))
    with pytest.raises(InputError, match="no normal/covid images to tell which class is scarce"):
        scarce_class({"normal": 0})
    # the manifest's counts: usable real train rows (what test_balance_arithmetic counts)
    rows = real_rows(2, 5) + [Record(id=f"s{i}", path=f"s{i}.png", label="normal",
                                     split="train", synthetic=True) for i in range(9)]
    assert real_counts(Manifest(rows)) == {"normal": 2, "covid": 5}
    assert scarce_class(real_counts(Manifest(rows))) == "normal"


def test_without_class_generate_makes_the_scarce_class(trained: Workspace,
                                                        tmp_path: Path) -> None:  # fmt: skip
    ws = copy_ws(trained, tmp_path / "w")  # 10 normal, 4 covid real train rows
    r = gen(ws, "-n", "1", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["class"] == "covid", r.output
    cfg = json.loads((ws.root / "synthetic/covid/generate-r1-s0.json").read_text())
    assert cfg["label"] == "covid"  # recorded as resolved
    flipped = copy_ws(trained, tmp_path / "f")
    write_manifest(flipped.manifest_path, Manifest(real_rows(3, 10)))
    r = gen(flipped, "--balance")
    assert r.exit_code == 0 and "wrote 7 normal image(s)" in r.output, r.output
    assert json.loads((flipped.root / "synthetic/normal/generate-r1-s0.json").read_text()
                      )["label"] == "normal"  # fmt: skip


def test_the_png_threads_are_one_per_cpu() -> None:
    with thread_pool() as pool:
        assert pool._max_workers == cpu_count() >= 1
    if hasattr(os, "sched_getaffinity"):  # the CPUs this process may use, not the machine's
        assert cpu_count() == len(os.sched_getaffinity(0))


def test_a_run_reference_reads_back_as_the_run_name(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path)
    ref = ws.run_ref(ws.run("conv-1"))
    assert ref == "runs/conv-1"
    for given in (ref, "conv-1", "runs/conv-1/", str(tmp_path / "runs" / "conv-1")):
        assert run_name_of(given) == "conv-1"


def test_balance_cli(trained: Workspace, tmp_path: Path) -> None:
    ws = copy_ws(trained, tmp_path / "w")
    r = gen(ws, "--class", "covid", "--balance", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["count"] == 6
    r = gen(ws, "--class", "covid", "--balance", "--seed", "9")
    assert r.exit_code == 0 and "nothing to generate" in r.output
    # --force makes the same set again: the rows it replaces do not count, so it balances
    r = gen(ws, "--class", "covid", "--balance", "--force", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["count"] == 6, r.output
    m = read_manifest(ws.manifest_path)
    assert balance_count(m, "covid") == 0 and sum(r.synthetic for r in m) == 6


def test_errors(trained: Workspace, tmp_path: Path) -> None:
    ws = copy_ws(trained, tmp_path / "w")
    r = gen(ws, "--class", "pneumonia", "-n", "1")
    assert r.exit_code == 3 and "unknown class 'pneumonia'" in r.output
    r = gen(ws, "--class", "covid", "-n", "1", "--run", "nope")
    assert r.exit_code == 3 and "no training run 'nope'" in r.output
    r = gen(ws, "--class", "covid")
    assert r.exit_code == 2 and "--balance" in r.output
    empty = Workspace.at(tmp_path / "empty")
    empty.root.mkdir()
    write_manifest(empty.manifest_path, Manifest(real_rows(1, 1)))
    r = gen(empty, "--class", "covid", "-n", "1")
    assert r.exit_code == 3 and "cxraug train" in r.output
    # a checkpoint whose stored config does not match its arrays (e.g. another model version)
    ck = find_latest(ws.runs_dir / "r1")
    assert ck is not None
    with np.load(ck) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["config"]["g_widths"] = [16, 24]  # same depth, other width
    arrays["meta"] = np.array(json.dumps(meta))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    r = gen(ws, "--class", "covid", "-n", "1", "--checkpoint", str(bad))
    assert r.exit_code == 3 and "does not match this model" in r.output, r.output
    r = gen(ws, "--class", "covid", "-n", "1", "--checkpoint", str(tmp_path / "none.npz"))
    assert r.exit_code == 3 and "does not exist" in r.output


def test_force_with_smaller_n_leaves_nothing_of_the_larger_run(trained: Workspace,
                                                               tmp_path: Path) -> None:
    ws = copy_ws(trained, tmp_path / "w")
    assert gen(ws, "--class", "covid", "-n", "5", "--seed", "1").exit_code == 0
    assert gen(ws, "--class", "covid", "-n", "2", "--seed", "10").exit_code == 0  # other seed
    # as `filter --move-rejected` leaves it: image 4 in rejected/, its row pointing there
    m = read_manifest(ws.manifest_path)
    moved = m.by_id()["synthetic/covid/r1-s1-000004"]
    (ws.root / "synthetic/covid/rejected").mkdir()
    shutil.move(ws.root / moved.path, ws.root / "synthetic/covid/rejected/r1-s1-000004.png")
    moved.path = "synthetic/covid/rejected/r1-s1-000004.png"
    write_manifest(ws.manifest_path, m)
    (ws.root / "synthetic/covid/mine.png").write_bytes(b"a user's file")
    r = gen(ws, "--class", "covid", "-n", "2", "--seed", "1", "--force")
    assert r.exit_code == 0, r.output
    ids = sorted(r.id for r in read_manifest(ws.manifest_path) if r.synthetic)
    assert ids == [f"synthetic/covid/r1-s{s}-{i:06d}" for s in (1, 10) for i in range(2)]
    left = sorted(p.relative_to(ws.root).as_posix() for p in (ws.root / "synthetic").rglob("*.png"))
    assert left == ["synthetic/covid/mine.png", "synthetic/covid/r1-s1-000000.png",
                    "synthetic/covid/r1-s1-000001.png", "synthetic/covid/r1-s10-000000.png",
                    "synthetic/covid/r1-s10-000001.png"]  # fmt: skip
    assert not list((ws.root / "synthetic").rglob(".generate-*"))


@pytest.mark.parametrize("next_command", ["generate", "filter"])
def test_crash_between_pngs_and_rows_is_swept_by_the_next_run(
    next_command: str, trained: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the PNGs, before the manifest write: the next generate or filter deletes
    the PNGs no row names (they are reproducible), and only those."""
    ws = copy_ws(trained, tmp_path / "w")
    assert gen(ws, "--class", "covid", "-n", "2", "--seed", "5").exit_code == 0  # named: kept
    (ws.root / "synthetic/covid/mine.png").write_bytes(b"a user's file")
    before = ws.manifest_path.read_bytes()

    def crash(self: Workspace, manifest: Manifest) -> None:
        raise SystemExit(137)  # the process dies here (as a kill would): no cleanup runs

    monkeypatch.setattr(Workspace, "save_manifest", crash)
    r = gen(ws, "--class", "covid", "-n", "3", "--seed", "1")
    assert r.exit_code == 137
    monkeypatch.undo()
    orphans = [ws.root / f"synthetic/covid/r1-s1-{i:06d}.png" for i in range(3)]
    assert all(p.is_file() for p in orphans) and ws.manifest_path.read_bytes() == before
    assert list((ws.root / "synthetic/covid").glob(".generate-r1-s1.pending.json"))
    if next_command == "generate":
        r = gen(ws, "--class", "covid", "-n", "1", "--seed", "7")
    else:
        r = runner.invoke(app, ["filter", "-w", str(ws.root), "--class", "covid"])
    assert r.exit_code == 0, r.output
    assert not any(p.exists() for p in orphans)
    assert (ws.root / "synthetic/covid/mine.png").read_bytes() == b"a user's file"
    assert (ws.root / "synthetic/covid/r1-s5-000000.png").is_file()
    assert not list((ws.root / "synthetic").rglob(".generate-*"))
    # and the interrupted generate can simply be run again (no "already exist" refusal)
    assert gen(ws, "--class", "covid", "-n", "3", "--seed", "1").exit_code == 0


def test_z_scale_feeds_g_the_scaled_noise(trained: Workspace, tmp_path: Path) -> None:
    """--z-scale S: image i is G(S z_i) (computed here from the checkpoint's generator
    directly, outside `generate`); S = 1 is the plain image; the json records S."""
    from cxraug.core.images import to_uint8
    from cxraug.core.tf_setup import tf
    from cxraug.gan.arch import build_generator
    from cxraug.gan.checkpoint import assign_generator, read_checkpoint
    from cxraug.generate import latent

    ws = copy_ws(trained, tmp_path / "w")
    r = gen(ws, "--class", "covid", "-n", "2", "--z-scale", "1.7")
    assert r.exit_code == 0, r.output
    ck = read_checkpoint(find_latest(ws.runs_dir / "r1"))  # type: ignore[arg-type]
    g = build_generator(ck.config)
    assign_generator(g, ck)
    seen = []
    for s in (1.7, 1.0):
        z = np.stack([s * latent(0, i, ck.config.latent_dim) for i in range(2)])
        want = to_uint8(np.asarray(g([tf.constant(z), tf.fill((2,), 1)], training=False))[..., 0])
        if s == 1.0:
            assert gen(ws, "--class", "covid", "-n", "2", "--force").exit_code == 0
        for i in range(2):
            got = read_gray_u8(ws.root / f"synthetic/covid/r1-s0-{i:06d}.png").astype(int)
            assert np.abs(got - want[i].astype(int)).max() <= 1, s  # batch rounding only
            seen.append(got)
        cfg = json.loads((ws.root / "synthetic/covid/generate-r1-s0.json").read_text())
        assert cfg["z_scale"] == s
    assert not np.array_equal(seen[0], seen[2])  # the scale changed the image
    r = gen(ws, "--class", "covid", "-n", "1", "--z-scale", "0", "--force")
    assert r.exit_code == 2 and "(0, 4]" in r.output
