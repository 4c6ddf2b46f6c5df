"""OS file locks: one manifest writer per workspace, one trainer per run folder.

`hold(path, command, what)` takes an exclusive `fcntl.flock` on PATH for the duration of a
`with` block, or raises `BusyError` (exit 7) at once, naming the holder. The kernel releases a
flock when its holder dies (crash, SIGKILL), so a lock file left behind never blocks anyone:
the PID, command and start time written into it serve only the "busy" message. The file itself
is never deleted (unlinking it would let a second process lock a fresh inode while a first still
holds the old one).

Within one process the lock is re-entrant (a counter per path), because flock treats a second
open of the same file as a different owner and would refuse a process its own lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cxraug.core.errors import BusyError

_held: dict[str, int] = {}  # real path -> nesting depth, in this process


def _holder(fd: int) -> str:
    """'PID 1234 is running `cxraug generate` (since 12:34:56)' from the lock file's text."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
        since = time.strftime("%H:%M:%S", time.localtime(float(info["since"])))
        return f"PID {int(info['pid'])} is running `{info['command']}` (since {since})"
    except (OSError, ValueError, KeyError, TypeError):  # holder between open and write
        return "another cxraug process holds it"


@contextmanager
def hold(path: Path, command: str, what: str) -> Iterator[None]:
    """Hold the exclusive lock PATH while the block runs; `command` (e.g. "cxraug generate")
    is recorded for the message others get, `what` names the locked thing in that message."""
    path = Path(path)
    key = os.path.realpath(path)
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(
                f"{what} is busy: {_holder(fd)}; wait for it to finish (or stop it), then "
                f"re-run. Nothing was changed. (Lock file: {path})"
            ) from None
        record = {"pid": os.getpid(), "command": command, "since": time.time(),
                  "argv": sys.argv[1:]}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            try:
                os.ftruncate(fd, 0)  # no stale holder text once released
            except OSError:
                pass
    finally:
        os.close(fd)  # releases the flock
