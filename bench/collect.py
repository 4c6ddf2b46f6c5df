"""Benchmark `cxraug collect`'s file inspection (sha256 + header + full decode check + dHash).

Compares, on the same files in the same run: 1 vs 2 worker processes, and the JPEG check at
reduced DCT scale (fast_decode, the default) vs a full-resolution decode. Uses the real images
in ../shared/cxr-data when present, else procedural phantoms written to a temp folder.

    .venv/bin/python bench/collect.py [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cxraug.core.images import IMAGE_SUFFIXES
from cxraug.prep.inspect import inspect_files
from cxraug.prep.phantom import write_phantom_folder

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "cxr-data"


def files(quick: bool, tmp: Path) -> tuple[str, list[Path]]:
    if (SHARED / "README.md").is_file():
        found = sorted(p for p in SHARED.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                       and "originals" not in p.parts)  # fmt: skip
        return "real cxr-data (<=640 px)", found[:: 6 if quick else 1]
    n = 40 if quick else 200
    write_phantom_folder(tmp / "ph", n // 4, n - n // 4, seed=0)
    return "phantoms (400-1100 px)", sorted((tmp / "ph").rglob("phantom-*"))


def timed(paths: list[Path], **kw: object) -> float:
    t = time.perf_counter()
    out = inspect_files(paths, show_progress=False, **kw)  # type: ignore[arg-type]
    assert len(out) == len(paths)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a sixth of the files")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        what, paths = files(args.quick, Path(tmp))
        print(f"{len(paths)} files: {what}")
        print(f"{'workers':>7} {'decode':>6} {'seconds':>8} {'files/s':>8} "
              f"{'vs 1 worker full':>17}")
        base = None
        for workers in (1, 2):
            for fast in (False, True):
                s = timed(paths, workers=workers, fast_decode=fast)
                base = base or s
                print(f"{workers:>7} {'fast' if fast else 'full':>6} {s:>8.2f} "
                      f"{len(paths) / s:>8.0f} {base / s:>16.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
