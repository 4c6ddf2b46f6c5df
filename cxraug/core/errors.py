"""Exceptions and the documented exit codes of the `cxraug` command.

Library code raises these; `cxraug.cli.app` maps them to exit codes and prints their message
(never a traceback). Every message says what was wrong *and* how to fix it.

Exit codes (also in README.md):
    0   success, every row/file usable
    1   finished, but some rows/files failed (they are recorded in the manifest and the summary)
        (evaluate: an arm or a test source was skipped; the others ran)
    2   usage error (bad option or argument; printed by typer/click)
    3   bad input: invalid manifest, bad crop box, unknown class, missing file/run, too few images
    4   a required resource is missing (e.g. Inception-v3 weights not found offline)
    5   numeric failure (NaN/Inf loss, imaginary matrix square root)
    130 interrupted (Ctrl-C / SIGTERM); training saved a checkpoint first
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_MISSING_RESOURCE = 4
EXIT_NUMERIC = 5
EXIT_INTERRUPTED = 130

#: How many problems (bad rows, failed files) a message or summary lists before "... and N more".
MAX_LISTED = 25


class CxrError(Exception):
    """Base class: a user-facing error with an exit code."""

    exit_code: int = EXIT_INPUT


class InputError(CxrError):
    """Bad input the user can fix (files, options, classes, counts)."""

    exit_code = EXIT_INPUT


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


def vassert(cond: object, message: str, exc: type[CxrError] = InputError) -> None:
    """Raise `exc(message)` unless `cond` holds (torch-fidelity's vassert)."""
    if not cond:
        raise exc(message)
