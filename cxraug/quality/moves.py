"""`filter --move-rejected`: the file moves and the manifest save, as one transaction.

Rejected files move to synthetic/CLASS/rejected/, kept ones back to synthetic/CLASS/. Each move
is three phases around the manifest save, so that at every moment the manifest names a file that
exists: (1) give each file its new name too (hard link, or copy) and point its record there,
(2) write the stage's outputs, then save the manifest, (3) unlink the old names. A journal
(cxraug.core.pending) lists every name made or removed before phase 1: after a kill the next
generate or filter removes the names no row gives. An error before the manifest is saved (a full
disk while writing the sheet) undoes phase 1 and changes nothing. What a kill leaves behind:
docs/safety.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cxraug.core import pending
from cxraug.core.errors import ImageError
from cxraug.core.fsutil import atomic_write_bytes
from cxraug.core.images import read_bytes
from cxraug.core.manifest import Manifest, Record
from cxraug.core.ui import warn
from cxraug.core.workspace import Workspace
from cxraug.quality.decide import Decision

#: (record, its file, its new name)
Move = tuple[Record, Path, Path]


@dataclass
class Moves:
    """What --move-rejected did: the files moved, and why the others were not."""

    moved: int = 0
    failures: list[str] = field(default_factory=list)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b) or read_bytes(a) == read_bytes(b)
    except (OSError, ImageError):
        return False


def _plan(ws: Workspace, label: str, rows: Sequence[Record], decisions: Sequence[Decision],
          failures: list[str]) -> list[Move]:  # fmt: skip
    """Each file to move: rejected ones to rejected/, kept ones back. Files outside
    synthetic/CLASS (and its rejected/) are never moved, nor onto a different file that already
    has the new name (the reason goes to `failures`)."""
    home, rejected = ws.synthetic_class_dir(label), ws.rejected_dir(label)
    ours = {os.path.realpath(home), os.path.realpath(rejected)}
    moves = []
    for rec, d in zip(rows, decisions, strict=True):
        src = rec.resolve(ws.root)
        dst = (rejected / src.name) if not d.kept else (home / src.name)
        where = os.path.realpath(src.parent)
        if where not in ours:  # a move unlinks the old name: only ever inside synthetic/
            failures.append(
                f"{rec.id}: not moved (its path {rec.path} is not in {home} or {rejected}; "
                "--move-rejected only moves files there)")  # fmt: skip
        elif d.primary != "unreadable" and (not d.kept) != (where == os.path.realpath(rejected)) \
                and src.is_file():  # fmt: skip
            if dst.exists() and not _same_file(src, dst):
                failures.append(f"{rec.id}: not moved ({dst} exists with different content; "
                                "remove it)")  # fmt: skip
            else:
                moves.append((rec, src, dst))
    return moves


def _link_files(ws: Workspace, moves: list[Move], failures: list[str]) -> list[Path]:
    """Phase 1: give each file its new name too (hard link, or copy) and point its record
    there; returns the old names, which phase 3 unlinks."""
    done: list[Path] = []
    for rec, src, dst in moves:
        try:
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, dst)
                except OSError:  # no hard links here (other device, some filesystems)
                    atomic_write_bytes(dst, read_bytes(src))
        except (OSError, ImageError) as e:
            failures.append(f"{rec.id}: not moved ({e})")
            continue
        rec.path = ws.relpath(dst)
        done.append(src)
    return done


def save_verdicts(ws: Workspace, manifest: Manifest, label: str, rows: Sequence[Record],
                  decisions: Sequence[Decision], *, move: bool,
                  write_outputs: Callable[[], None]) -> Moves:  # fmt: skip
    """Write the outputs, then save the manifest (whose `rows` already carry their verdicts);
    with `move`, their files move in the same transaction (module docstring)."""
    result = Moves()
    moves = _plan(ws, label, rows, decisions, result.failures) if move else []
    journal = ws.filter_journal(label)
    if moves:
        pending.begin(journal, [p for _, src, dst in moves
                                for p in (src, *(() if dst.exists() else (dst,)))])  # fmt: skip
    made = {dst for _, _, dst in moves if not dst.exists()}
    done = _link_files(ws, moves, result.failures)
    try:
        write_outputs()  # before the manifest: a failure here leaves the workspace as it was
        ws.save_manifest(manifest)
    except BaseException:
        for _rec, src, dst in moves:  # undo phase 1: the old names remain (should an unlink
            if src in done and dst in made:  # fail, the journal stays for the next sweep)
                dst.unlink(missing_ok=True)
        pending.end(journal)
        raise
    for src in done:  # phase 3: the manifest now names the new files
        try:
            src.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            warn(f"moved but could not remove the old file {src}: {e}")
    pending.end(journal)
    result.moved = len(done)
    return result
