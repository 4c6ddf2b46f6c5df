"""Failures that are not the input's fault: a full disk or a file-size limit (exit 6, one line,
nothing the user had is damaged), a corrupt dataset (exit 3), a preprocess worker that dies or a
decoder that throws (that row becomes `error`, the batch goes on). Training's own cases (SIGKILL,
SIGTERM, ENOSPC during checkpoints) are in test_train.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_preprocess import make_ws, run

import cxraug.preprocess as pp
from cxraug.core import parallel
from cxraug.core.dataset import Dataset, load_dataset, save_dataset
from cxraug.core.errors import InputError
from cxraug.core.fsutil import atomic_write_bytes, sha256_file
from cxraug.core.manifest import read_manifest

REPO = Path(__file__).resolve().parents[1]


def _run_py(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


# ---- disk full / file-size limit -------------------------------------------------------------

#: Runs `cxraug ARGS...` with writes above LIMIT bytes failing for real (EFBIG from the kernel,
#: SIGXFSZ ignored): the same OSError path as a full disk (ENOSPC), no Python-level fake.
LIMITED = """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from cxraug.cli import app
    app(sys.argv[2:], prog_name="cxraug")
"""


@pytest.mark.parametrize("where", ["scratch", "dataset"])
def test_file_size_limit_during_preprocess_exits_6_and_damages_nothing(where: str,
                                                                       tmp_path: Path) -> None:
    ws = make_ws(tmp_path, n=6)
    code, _, errout = run("-w", str(ws.root), "--size", "16", "--workers", "1")
    assert code == 0, errout
    before = {p: sha256_file(p) for p in (ws.manifest_path, ws.dataset_path,
                                          ws.dataset_config_path)}  # fmt: skip
    # 6 x 64 x 64 float32 = 98,304 bytes: the scratch array does not fit under 64 KiB; under
    # 98,304 + 64 bytes it does, but dataset.npz (the same pixels plus headers) does not
    limit = 64 * 1024 if where == "scratch" else 6 * 64 * 64 * 4 + 64
    r = _run_py(LIMITED, str(limit), "preprocess", "-w", str(ws.root), "--size", "64",
                "--force", "--workers", "1")  # fmt: skip
    assert r.returncode == 6, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("preprocess ")]
    assert len(lines) == 1, r.stderr  # the one-line message (the progress bar aside)
    assert lines[0].startswith("error: system error on ")
    assert "File too large (EFBIG)" in lines[0] and "ulimit -f" in lines[0]
    assert "intact" in lines[0]
    if where == "dataset":
        assert f"system error on {ws.dataset_path}:" in lines[0]
    # the old dataset and manifest are untouched (atomic writes), no temp file left behind
    assert sha256_file(ws.manifest_path) == before[ws.manifest_path]
    assert sha256_file(ws.dataset_path) == before[ws.dataset_path]
    assert load_dataset(ws.dataset_path).images.shape == (6, 16, 16)
    assert not [p for p in ws.processed_dir.iterdir() if p.name.startswith(".")]


def test_atomic_write_error_names_the_target_not_the_temp_file(tmp_path: Path) -> None:
    r = _run_py("""
        import resource, signal, sys
        from pathlib import Path
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        from cxraug.core.fsutil import atomic_write_bytes
        try:
            atomic_write_bytes(Path(sys.argv[1]), b"x" * 5000)
        except OSError as e:
            print(type(e).__name__, e.errno, e.filename)
    """, str(tmp_path / "out.bin"))
    assert r.stdout.split() == ["OSError", "27", str(tmp_path / "out.bin")], r.stderr
    assert list(tmp_path.iterdir()) == []  # the temp file was removed


def test_read_only_workspace_exits_6(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ws = make_ws(tmp_path, n=3)
    ws.root.chmod(0o555)
    try:
        code, _, errout = run("-w", str(ws.root), "--size", "16", "--workers", "1")
    finally:
        ws.root.chmod(0o755)
    assert code == 6 and "Permission denied (EACCES)" in errout


# ---- corrupt dataset ---------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "bit-flip", "missing-key"])
def test_corrupt_dataset_is_a_clear_input_error(damage: str, tmp_path: Path) -> None:
    path = tmp_path / "dataset.npz"
    n = 4
    save_dataset(path, Dataset(np.zeros((n, 8, 8), np.float32), np.zeros(n, np.int64),
                               np.array([f"i{i}" for i in range(n)]),
                               np.array(["train"] * n)))  # fmt: skip
    data = path.read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = b""
    elif damage == "garbage":
        data = b"not a dataset " * 20
    elif damage == "bit-flip":  # inside the images array: only the zip CRC notices
        i = data.index(b"images.npy") + 200
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
    else:
        with zipfile.ZipFile(path) as z:
            keep = {k: z.read(k) for k in z.namelist() if k != "splits.npy"}
        with zipfile.ZipFile(path, "w") as z:
            for k, v in keep.items():
                z.writestr(k, v)
        data = path.read_bytes()
    atomic_write_bytes(path, data)
    with pytest.raises(InputError, match=r"corrupt or not a cxraug dataset .*"
                       r"rebuild it with `cxraug preprocess --force`"):  # fmt: skip
        load_dataset(path)


# ---- a worker that dies, a decoder that throws ---------------------------------------------------


def _die_on_7(x: int) -> int:
    if x == 7:
        os.kill(os.getpid(), 9)  # as the out-of-memory killer would
    return x * x


def test_run_parallel_isolates_the_item_whose_worker_dies() -> None:
    items = list(range(40))
    out = parallel.run_parallel(_die_on_7, items, workers=2, what="t", show=False,
                                on_crash=lambda x: -1)  # fmt: skip
    assert out == [-1 if x == 7 else x * x for x in items]
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool):  # without on_crash: the caller sees the crash
        parallel.run_parallel(_die_on_7, items, workers=2, what="t", show=False)


def test_preprocess_worker_killed_marks_that_row_error_and_goes_on(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, n=24)
    r = _run_py("""
        import os, sys
        import cxraug.preprocess as pp
        real = pp.load_image
        def load(task, *a, **k):
            if task.id == "demo/img07":
                os.kill(os.getpid(), 9)
            return real(task, *a, **k)
        pp.load_image = load  # inherited by the forked workers
        from cxraug.cli import app
        app(sys.argv[1:], prog_name="cxraug")
    """, "preprocess", "-w", str(ws.root), "--size", "16", "--workers", "2")
    assert r.returncode == 1, r.stderr
    assert "failed: demo/img07: the worker process died" in " ".join(r.stderr.split())
    rows = read_manifest(ws.manifest_path).by_id()
    assert rows["demo/img07"].status == "error" and "worker process died" in rows[
        "demo/img07"].reason  # fmt: skip
    ds = load_dataset(ws.dataset_path)
    assert len(ds) == 23 and "demo/img07" not in set(ds.ids)


def test_unexpected_decoder_exception_is_a_row_error(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ws = make_ws(tmp_path, n=4)
    real = pp.load_image

    def load(task, *a, **k):  # type: ignore[no-untyped-def]
        if task.id == "demo/img02":
            raise RuntimeError("libfoo: bad marker")
        return real(task, *a, **k)

    monkeypatch.setattr(pp, "load_image", load)
    code, _, errout = run("-w", str(ws.root), "--size", "16", "--workers", "1")
    assert code == 1, errout
    reason = read_manifest(ws.manifest_path).by_id()["demo/img02"].reason
    assert reason == "unexpected RuntimeError while decoding: libfoo: bad marker"
    assert len(load_dataset(ws.dataset_path)) == 3


def test_preprocess_removes_what_a_killed_preprocess_left(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, n=3)
    ws.processed_dir.mkdir()
    left = [ws.processed_dir / ".images-ab12cd_9.f32",
            ws.processed_dir / ".dataset.npz.x1y2z3w4.tmp"]  # fmt: skip
    for p in left:
        p.write_bytes(bytes(1000))
    mine = [ws.processed_dir / "notes.txt", ws.processed_dir / ".images-mine.f32"]
    for p in mine:
        p.write_text("a user's file")
    code, _, errout = run("-w", str(ws.root), "--size", "16", "--workers", "1")
    assert code == 0, errout
    assert "removed 2 temp file(s)" in " ".join(errout.split())
    assert not any(p.exists() for p in left) and all(p.read_text() == "a user's file" for p in mine)


def test_collect_worker_killed_marks_that_file_error_and_goes_on(tmp_path: Path) -> None:
    from cxraug.prep.phantom import write_phantom_folder

    data = write_phantom_folder(tmp_path / "data", 40, 40, 0)  # >= 64 files: a real pool
    victim = sorted((data / "covid").iterdir())[3]
    r = _run_py("""
        import os, sys
        import cxraug.prep.inspect as ins
        real = ins.inspect_file
        def inspect(path, *a, **k):
            if path == sys.argv[1]:
                os.kill(os.getpid(), 9)
            return real(path, *a, **k)
        ins.inspect_file = inspect  # inherited by the forked workers
        from cxraug.cli import app
        app(sys.argv[2:], prog_name="cxraug")
    """, str(victim), "collect", f"folder:{data}", "-w", str(tmp_path / "ws"), "--workers", "2")
    assert r.returncode == 1, r.stderr[-2000:]
    rows = read_manifest(tmp_path / "ws" / "manifest.csv")
    bad = [x for x in rows if x.status == "error"]
    assert [x.source_path for x in bad] == [str(victim.relative_to(data))], bad
    assert "worker process died" in bad[0].reason and len(rows) == 80
