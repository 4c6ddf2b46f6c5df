"""Atomic file writes and hashing: every output is written to a temp file then renamed.

A crash or kill at any moment leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


#: The temp files _atomic creates: "." + target name + "." + mkstemp's 8 random characters
#: (tempfile's alphabet: a-z, 0-9, "_") + ".tmp". A process killed mid-write leaves one behind.
TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temps(folder: Path, target: re.Pattern[str] | None = None) -> list[Path]:
    """Delete the temp files a killed process left in `folder` (TEMP_NAME; with `target`, only
    those for a target name it matches); user files never match. Call it only where no other
    cxraug process can be writing the same folder. Returns what was removed."""
    removed: list[Path] = []
    if not Path(folder).is_dir():
        return removed
    for p in Path(folder).iterdir():
        m = TEMP_NAME.match(p.name)
        if m and (target is None or target.match(m.group("target"))) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.filename in (None, tmp):
            # a failed write() names no file, and the temp name means nothing to the user
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    # fsync the directory so the rename itself survives a power cut
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Give an OSError raised inside the path it concerns: a failed write() names no file."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def preallocate(path: Path, nbytes: int) -> None:
    """Create `path` with `nbytes` of real disk blocks (zeros). A sparse file that is later
    written through mmap gets SIGBUS, not ENOSPC, when the disk fills up: that would kill the
    worker processes and look like every image failing. This fails up front instead."""
    with naming(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if nbytes and hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, nbytes)
            else:
                os.ftruncate(fd, nbytes)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))  # type: ignore[arg-type, return-value]


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def create_once(path: Path, data: bytes, mode: int = 0o600) -> bytes:
    """Write `data` to `path` unless it exists, and return what `path` then holds. The file
    appears complete under its name or not at all (temp file, fsync, then os.link, which never
    replaces an existing file), so two writers agree on one content and a kill leaves no torn
    file. `mode`: the new file's permissions (default: the owner's only, for secrets)."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return path.read_bytes()


def atomic_save_npz(path: Path, **arrays: Any) -> None:
    """np.savez (uncompressed, so it can be read fast) through a temp file + rename."""
    import numpy as np

    _atomic(path, lambda f: np.savez(f, **arrays))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
