"""Atomic writes: a failure mid-write leaves the previous file intact and no temp litter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxraug.core.fsutil import (
    _atomic,
    atomic_save_npz,
    atomic_write_text,
    sha256_bytes,
    sha256_file,
)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "f.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in p.parent.iterdir()] == ["f.txt"]


def test_failed_write_keeps_old_content(tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    atomic_write_text(p, "precious")

    def boom(f: object) -> None:
        f.write(b"half")  # type: ignore[attr-defined]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _atomic(p, boom)
    assert p.read_text() == "precious"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"]


def test_npz_round_trip_and_hash(tmp_path: Path) -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    atomic_save_npz(tmp_path / "a.npz", a=a)
    with np.load(tmp_path / "a.npz") as z:
        np.testing.assert_array_equal(z["a"], a)
    (tmp_path / "b").write_bytes(b"abc")
    # SHA-256("abc") from FIPS 180-2, appendix B.1
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_file(tmp_path / "b") == expected == sha256_bytes(b"abc")
