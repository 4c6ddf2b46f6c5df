"""OS file locks: one manifest writer per workspace, one trainer per run folder.

`hold(path, command, what)` takes an exclusive lock on PATH for the duration of a `with` block,
or raises `BusyError` (exit 7) at once, naming the holder. The PID, command and start time
written into the file serve only that message.

The lock is a POSIX record lock (`fcntl.lockf`), not an `flock`, because it must belong to
the process that took it. An flock belongs to the open file: a child forked while it is held
(a process-pool worker) inherits the descriptor and with it the lock, so a SIGKILLed command
whose workers lived on kept its workspace locked for ever. A record lock is never inherited
by a child, and the kernel drops it when its process dies (crash, SIGKILL), so a lock file
left behind never blocks anyone. The price: a process loses its record lock when it closes
ANY descriptor of that file, so nothing else in cxraug opens a lock file (the holder's record
is read through the lock's own descriptor).

The file itself is never deleted (unlinking it would let a second process lock a fresh inode
while a first still holds the old one). Within one process the lock is re-entrant (a counter
per path): a process's second record lock on a file merges with its first, and the nested
block's close would release both.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cxraug.core.errors import BusyError
from cxraug.core.fsutil import naming

_held: dict[str, int] = {}  # real path -> nesting depth, in this process


def _holder(fd: int) -> str:
    """'PID 1234 is running `cxraug generate` (since 12:34:56)' from the lock file's text."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
        since = time.strftime("%H:%M:%S", time.localtime(float(info["since"])))
        return f"PID {int(info['pid'])} is running `{info['command']}` (since {since})"
    except (OSError, ValueError, KeyError, TypeError):  # holder between open and write
        return "another cxraug process holds it"


def _try_lock(fd: int) -> bool:
    """Take the whole-file record lock without waiting; False if another process holds it."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):  # POSIX allows either for "held"
            return False
        raise
    return True


@contextmanager
def hold(path: Path, command: str, what: str) -> Iterator[None]:
    """Hold the exclusive lock PATH while the block runs; `command` (e.g. "cxraug generate")
    is recorded for the message others get, `what` names the locked thing in that message.
    An OSError (disk full while writing the record, a read-only folder) names PATH."""
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
    with naming(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        with naming(path):
            if not _try_lock(fd):
                raise BusyError(
                    f"{what} is busy: {_holder(fd)}; wait for it to finish (or stop it), then "
                    f"re-run. Nothing was changed. (Lock file: {path})"
                )
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
        os.close(fd)  # releases the lock
