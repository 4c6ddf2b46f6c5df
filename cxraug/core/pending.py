"""Files written before the manifest rows that name them: a journal makes that recoverable.

`generate` writes its PNGs first and its manifest rows after (one manifest write for the whole
batch). A crash in between would leave PNGs no row names. So before writing it records every
path it is about to create or delete in a journal (`Workspace.generate_journal`); once the
manifest is saved and the deletions are done, the journal is removed. The next `generate` or
`filter` that finds a journal deletes each listed file that no manifest row names, then the
journal. Orphans are deleted rather than adopted: generated images are bit-reproducible from
(checkpoint, seed, index), so running `generate` again restores them, while adopting them would
mean trusting rows that were never written. Only files a journal lists are ever touched.
"""

from __future__ import annotations

import json
from pathlib import Path

from cxraug.core.fsutil import atomic_write_json
from cxraug.core.workspace import Workspace


def begin(journal: Path, paths: list[Path]) -> None:
    """Record `paths` (about to be written or deleted) before touching any of them."""
    atomic_write_json(journal, {"paths": [str(p) for p in paths]})


def end(journal: Path) -> None:
    """The manifest now names every file that should exist: forget the journal."""
    journal.unlink(missing_ok=True)


def sweep(ws: Workspace) -> list[Path]:
    """Finish what an interrupted run left: delete journal-listed files that no manifest row
    names, then the journals. Returns the deleted files."""
    journals = ws.generate_journals()
    if not journals:
        return []
    named = ({r.resolve(ws.root).resolve() for r in ws.load_manifest()}
             if ws.manifest_path.exists() else set())  # fmt: skip
    removed: list[Path] = []
    for j in journals:
        try:
            listed = [Path(p) for p in json.loads(j.read_text(encoding="utf-8"))["paths"]]
        except (ValueError, KeyError, TypeError):
            listed = []  # a torn journal cannot exist (atomic write); an edited one is ignored
        for p in listed:
            inside = p.resolve().is_relative_to(ws.synthetic_dir.resolve())
            if inside and p.resolve() not in named and p.is_file():
                p.unlink()
                removed.append(p)
        end(j)
    return removed
