"""Exceptions and the documented exit codes of the `cxraug` command.

Library code raises these; `cxraug.cli.app` maps them to exit codes and prints their message
(never a traceback). Every message says what was wrong *and* how to fix it.

Exit codes (also in README.md):
    0   success, every row/file usable
    1   finished, but some rows/files failed (they are recorded in the manifest and the summary)
        (evaluate: an arm or a test source was skipped; the others ran)
    2   usage error: a bad option or argument (printed by typer/click), or an option value that
        is not a finite number or out of its range (UsageError, before anything is touched)
    3   bad input: invalid manifest, bad crop box, unknown class, missing file/run, too few images
    4   a required resource is missing (e.g. Inception-v3 weights not found offline)
    5   numeric failure (NaN/Inf loss, imaginary matrix square root)
    6   system error: an operating-system call failed (disk full, permission denied,
        read-only workspace, file size limit); the files written before are intact
    7   busy: another cxraug command holds the workspace (or run) lock; nothing was changed
    130 interrupted (Ctrl-C / SIGTERM); training saved a checkpoint first
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_MISSING_RESOURCE = 4
EXIT_NUMERIC = 5
EXIT_SYSTEM = 6
EXIT_BUSY = 7
EXIT_INTERRUPTED = 130

#: The exit codes in a few words each, for `cxraug --help` (the module docstring and README.md
#: say more; tests/test_cli.py checks that all three name every EXIT_* code).
EXIT_WORDS: dict[int, str] = {
    EXIT_OK: "ok", EXIT_PARTIAL: "some rows failed", EXIT_USAGE: "usage",
    EXIT_INPUT: "bad input", EXIT_MISSING_RESOURCE: "missing resource",
    EXIT_NUMERIC: "numeric failure", EXIT_SYSTEM: "system error (disk full, permission denied)",
    EXIT_BUSY: "busy (another command holds the workspace)", EXIT_INTERRUPTED: "interrupted",
}  # fmt: skip

#: How many problems (bad rows, failed files) a message or summary lists before "... and N more".
MAX_LISTED = 25


def first(items: Sequence[T], limit: int = MAX_LISTED) -> tuple[Sequence[T], str]:
    """The items a message lists (the first `limit`) and the line that stands for the rest:
    "... and K more", or "" when nothing is left out. The one owner of that rule; `listed`
    and `listed_inline` are its two shapes."""
    rest = len(items) - limit
    return items[:limit], (f"... and {rest} more" if rest > 0 else "")


def listed(items: Sequence[str], limit: int = MAX_LISTED, indent: str = "") -> list[str]:
    """One line per item (the first `limit`, each after `indent`), then "... and K more"."""
    shown, more = first(items, limit)
    return [indent + x for x in shown] + ([indent + more] if more else [])


def listed_inline(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    """The items on one line, comma-separated: "a, b, c ... and K more" (a note, a message)."""
    shown, more = first(items, limit)
    return ", ".join(shown) + (f" {more}" if more else "")


class CxrError(Exception):
    """Base class: a user-facing error with an exit code."""

    exit_code: int = EXIT_INPUT


class InputError(CxrError):
    """Bad input the user can fix (files, options, classes, counts)."""

    exit_code = EXIT_INPUT


class UsageError(InputError):
    """An option value the command cannot take (not a finite number, out of its range): exit 2,
    raised while the options are checked, before anything is read or written."""

    exit_code = EXIT_USAGE


class ManifestError(InputError):
    """The manifest is missing, unreadable or has invalid rows (messages carry row numbers)."""


class CropBoxError(InputError):
    """A crop-boxes file has invalid rows (messages carry row numbers)."""


class ImageError(InputError):
    """One image file cannot be used; `reason` is the short text stored in the manifest."""

    def __init__(self, reason: str, path: str = "") -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


class MissingResourceError(CxrError):
    """A required file (weights, checkpoint) is absent; the message names where it comes from."""

    exit_code = EXIT_MISSING_RESOURCE


class NumericError(CxrError):
    """Numeric trouble we refuse to patch silently (NaN loss, complex sqrtm)."""

    exit_code = EXIT_NUMERIC


class BusyError(CxrError):
    """Another cxraug process holds the workspace (or run) lock; the message names it."""

    exit_code = EXIT_BUSY


def vassert(cond: object, message: str, exc: type[CxrError] = InputError) -> None:
    """Raise `exc(message)` unless `cond` holds (torch-fidelity's vassert)."""
    if not cond:
        raise exc(message)


#: What to do about an OSError, by errno (the rest get _OS_HINT_DEFAULT).
_OS_HINTS = {
    errno.ENOSPC: "free space on that disk (or use a --workspace on another one) and re-run",
    errno.EDQUOT: "your disk quota is used up: free space (or use another --workspace) and re-run",
    errno.EFBIG: "the file is over a file-size limit (`ulimit -f`, the file system's maximum): "
    "raise the limit or use another --workspace, and re-run",
    errno.EACCES: "check that you may read and write that path (`ls -l`), or use a --workspace "
    "you own",
    errno.EPERM: "check that you may read and write that path (`ls -l`), or use a --workspace "
    "you own",
    errno.EROFS: "that file system is read-only: use a writable --workspace",
    errno.EMFILE: "too many open files: raise `ulimit -n` or lower --workers",
    errno.ENOMEM: "out of memory: lower --workers or --batch-size",
}
_OS_HINT_DEFAULT = "check that path and its disk, then re-run"


def describe_os_error(e: OSError) -> str:
    """One line for an OSError: what failed, on which path, and what to do about it."""
    name = errno.errorcode.get(e.errno or 0, "")
    what = e.strerror or str(e) or type(e).__name__
    code = f" ({name})" if name else ""
    where = f" on {os.fsdecode(e.filename)}" if e.filename is not None else ""
    if e.filename2 is not None:
        where += f" -> {os.fsdecode(e.filename2)}"
    hint = _OS_HINTS.get(e.errno or 0, _OS_HINT_DEFAULT)
    return (f"system error{where}: {what}{code}; {hint}. Files written before this one are "
            "intact (every write is atomic)")
