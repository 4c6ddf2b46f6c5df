"""What a source reader hands `cxraug collect` (`SourceSpec`, `Candidate`, `Listing`), and the
file-system walk every reader shares: image-named entries (and DICOM files named without a
suffix) found below a folder, the path rules of a listed file (`outside`), and the patient id
a Kermany or NIH file name carries. The readers themselves: cxraug.prep.sources.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cxraug.core.images import IMAGE_SUFFIXES

#: Names that may hold an image, including formats we refuse with a helpful reason (DICOM, GIF).
CANDIDATE_SUFFIXES = IMAGE_SUFFIXES + (".dcm", ".dicom", ".gif")
_SKIP_DIRS = {"__MACOSX", "__pycache__"}
# Kermany names: IM-0117-0001.jpeg, NORMAL2-IM-1294-0001-0002.jpeg, person1_virus_6.jpeg;
# NIH ChestX-ray8 names: 00001280_004.png (patient 00001280, follow-up 4).
_KERMANY_IM = re.compile(r"^((?:NORMAL2-)?IM-\d+)-")
_KERMANY_PERSON = re.compile(r"^(person\d+)_")
_NIH = re.compile(r"^(\d{8})_\d{3}$")


@dataclass(frozen=True)
class SourceSpec:
    name: str
    scheme: str
    root: Path


@dataclass
class Candidate:
    """A file the source lists. status "ok" means "to inspect"; collect may still reject it."""

    id: str
    path: Path  # absolute, symlinks not resolved (a dangling link is reported as such)
    source: str
    source_path: str  # posix path inside the source root
    label: str = ""
    status: str = "ok"
    reason: str = ""
    patient_id: str = ""
    view: str = ""
    license: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Listing:
    spec: SourceSpec
    candidates: list[Candidate]
    skipped: list[str]  # non-image files ignored (README, .DS_Store is not even counted)
    warnings: list[str] = field(default_factory=list)  # for the user; nothing was refused


def walk(root: Path) -> tuple[list[Path], list[Path]]:
    """(image-named entries, other files) under root, sorted; hidden entries are ignored.

    An image-named entry may be a directory or a dangling link: it is returned (not entered) so
    that collect records it as an error instead of silently skipping it."""
    images: list[Path] = []
    others: list[Path] = []
    seen: set[str] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        real = os.path.realpath(d)
        if real in seen:  # a symlink loop
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(".") or e.name in _SKIP_DIRS:
                continue
            p = Path(e.path)
            if p.suffix.lower() in CANDIDATE_SUFFIXES or _unnamed_dicom(p):
                images.append(p)
            elif e.is_dir():
                stack.append(p)
            else:
                others.append(p)
    return sorted(images), sorted(others)


def _unnamed_dicom(p: Path) -> bool:
    """A DICOM file named without .dcm, as PACS exports name them (IM0001, 1.2.840.1.17):
    no suffix or a numeric one, and "DICM" at byte 128. Only regular files are opened (a FIFO
    would block), without blocking, and only their first 132 bytes are read."""
    if p.suffix and not p.suffix[1:].isdigit():
        return False
    try:
        if not stat.S_ISREG(os.stat(p).st_mode):
            return False
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            head = os.read(fd, 132)
        finally:
            os.close(fd)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def rel_path(p: Path, root: Path) -> str:
    return p.relative_to(root).as_posix()


def candidate(spec: SourceSpec, p: Path, **kw: object) -> Candidate:
    rel = rel_path(p, spec.root)
    return Candidate(id=f"{spec.name}/{rel}", path=p, source=spec.name, source_path=rel,
                     **kw)  # type: ignore[arg-type]  # fmt: skip


def patient_from_name(name: str) -> str:
    """Patient id encoded in a Kermany or NIH file name, '' when the name carries none."""
    stem = Path(name).stem
    m = _KERMANY_IM.match(stem) or _KERMANY_PERSON.match(stem)
    if m:
        return f"kermany-{m.group(1)}"
    m = _NIH.match(stem)
    return f"nih-{m.group(1)}" if m else ""


def outside(rel: str) -> bool:
    """A metadata.csv path that leaves the checkout: absolute (also C:/... or ~), or with '..'."""
    p = Path(rel)
    return p.is_absolute() or rel.startswith(("~", "\\")) or ".." in p.parts or ":" in p.parts[0]
