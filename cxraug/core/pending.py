"""Files changed around a manifest commit: a journal makes a kill at any moment recoverable.

Two commands change files in synthetic/ that manifest rows name, and cannot change the files
and the manifest in one atomic step:
- `generate` writes a batch of PNGs, then saves the rows that name them; with --force it first
  saves the manifest without the rows of the set it replaces, then deletes their files;
- `filter --move-rejected` gives each file its new name too (a hard link), saves the manifest
  that names it there, then unlinks the old name.
Before touching a file, each lists every path it is about to create or delete in a journal
(`Workspace.generate_journal`, `Workspace.filter_journal`); once the manifest names exactly the
files that should exist, the journal is removed. So at every moment the manifest names only
files that exist and hold the bytes its row describes (provenance stays true), and a kill can
leave behind only journal-listed files that no row names.

The next `generate` or `filter` (`sweep`) deletes each journal-listed file inside synthetic/
that no manifest row names, then the journal. Orphans are deleted rather than adopted:
generated images are bit-reproducible from (checkpoint, seed, index), so running `generate`
again restores them, while adopting them would mean trusting rows that were never written.
Only files a journal lists are ever touched, and only with the manifest in hand: `sweep` takes
the loaded manifest, so a missing or invalid manifest stops the command before anything is
deleted (without it, every listed file would look like an orphan).
"""

from __future__ import annotations

import json
from pathlib import Path

from cxraug.core.fsutil import atomic_write_json
from cxraug.core.manifest import Manifest
from cxraug.core.workspace import Workspace


def begin(journal: Path, paths: list[Path]) -> None:
    """Record `paths` (about to be written or deleted) before touching any of them; a later
    call replaces the list (it must still hold every path not yet accounted for)."""
    atomic_write_json(journal, {"paths": [str(p) for p in paths]})


def end(journal: Path) -> None:
    """The manifest now names every file that should exist: forget the journal."""
    journal.unlink(missing_ok=True)


def sweep(ws: Workspace, manifest: Manifest) -> list[Path]:
    """Finish what an interrupted run left: delete journal-listed files that no row of
    `manifest` (the workspace's, just loaded) names, then the journals. Returns the deleted
    files."""
    journals = ws.pending_journals()
    if not journals:
        return []
    named = {r.resolve(ws.root).resolve() for r in manifest}
    inside = ws.synthetic_dir.resolve()
    removed: list[Path] = []
    for j in journals:
        try:
            listed = [Path(p) for p in json.loads(j.read_text(encoding="utf-8"))["paths"]]
        except (ValueError, KeyError, TypeError):
            listed = []  # a torn journal cannot exist (atomic write); an edited one is ignored
        for p in listed:
            if p.resolve().is_relative_to(inside) and p.resolve() not in named and p.is_file():
                p.unlink()
                removed.append(p)
        end(j)
    return removed
