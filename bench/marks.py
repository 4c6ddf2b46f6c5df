"""Measure the editorial-mark detector (cxraug.prep.marks) on hand-labelled real images.

    .venv/bin/python bench/marks.py [--data PATH] [--labels bench/marks_labels.csv]
                                    [--sources] [--check-draw WORKSPACE]

bench/marks_labels.csv names 100 frontal COVID images of the shared cohen source (no pixels),
each labelled `marked` or `clean` by looking at it, with the kinds of marks seen (arrow,
outline, letter = a panel letter, text, colour, border). The draw: the ids of the 427 usable
cohen rows that `cxraug collect` makes of ../shared/cxr-data, sorted, then
`numpy.random.default_rng(17).choice(427, 100, replace=False)`; `--check-draw WORKSPACE`
repeats it on that workspace's manifest. The first 50 drawn (half `dev`) were used to develop
the detector's rules; the last 50 (`held-out`) were run once, at the end.

Prints markdown: image-level precision/recall per half; per kind, how many labelled images the
matching reason found; per reason, how many flagged images carry a matching kind; with
`--sources`, the share flagged per source (every covid/normal file of SOURCES.csv); and the
detector's time per image (decoding excluded). Images are decoded the way `preprocess` does
(cxraug.core.images, colour kept) and never copied.
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from cxraug.core.images import decode_displayed, read_bytes
from cxraug.core.manifest import MARK_REASONS, read_manifest
from cxraug.prep.marks import detect_marks

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "cxr-data"
LABELS = Path(__file__).resolve().parent / "marks_labels.csv"
#: a labelled kind -> the detector reason that should report it
KIND_REASON = {"arrow": "stroke", "outline": "stroke", "letter": "text", "text": "text",
               "colour": "colour", "border": "border"}  # fmt: skip
SEED, DRAWN = 17, 100


def detect(path: Path) -> tuple[list[str], float]:
    """(reasons, detector seconds) for one file, decoded as `preprocess` decodes it."""
    d = decode_displayed(read_bytes(path), colour=True)
    t0 = time.perf_counter()
    found = detect_marks(d.gray, d.colour)
    return found, time.perf_counter() - t0


def pr(tp: int, fp: int, fn: int) -> str:
    p = f"{tp / (tp + fp):.2f}" if tp + fp else "-"
    r = f"{tp / (tp + fn):.2f}" if tp + fn else "-"
    return f"{p} | {r} | {tp} | {fp} | {fn}"


def labelled(data: Path, labels: Path, only: str | None) -> None:
    rows = [r for r in csv.DictReader(labels.open(encoding="utf-8"))
            if only is None or r["half"] == only]  # fmt: skip
    results, seconds = [], []
    for r in rows:
        found, s = detect(data / r["file"])
        kinds = {k for k in r["kind"].split("+") if k}
        results.append((r["half"], r["label"] == "marked", kinds, set(found)))
        seconds.append(s)
    print("| half | images | marked (labels) | precision | recall | TP | FP | FN |")
    print("|---|---|---|---|---|---|---|---|")
    halves = ("dev", "held-out", "all") if only is None else (only,)
    for half in halves:
        sel = [x for x in results if half in ("all", x[0])]
        tp = sum(m and bool(f) for _, m, _, f in sel)
        fp = sum(not m and bool(f) for _, m, _, f in sel)
        fn = sum(m and not f for _, m, _, f in sel)
        print(f"| {half} | {len(sel)} | {sum(m for _, m, _, _ in sel)} | {pr(tp, fp, fn)} |")
    print("\nPer kind (labelled images with that kind, and how many the matching reason found) "
          "and per reason (flagged images, and how many carry a kind that reason stands for):\n")
    print("| half | " + " | ".join(f"{k} found" for k in KIND_REASON) + " | "
          + " | ".join(f"{r} right" for r in MARK_REASONS) + " |")  # fmt: skip
    print("|---" * (1 + len(KIND_REASON) + len(MARK_REASONS)) + "|")
    for half in halves:
        sel = [x for x in results if half in ("all", x[0])]
        cells = []
        for kind, reason in KIND_REASON.items():
            with_kind = [f for _, _, k, f in sel if kind in k]
            cells.append(f"{sum(reason in f for f in with_kind)}/{len(with_kind)}")
        for reason in MARK_REASONS:
            flagged = [k for _, _, k, f in sel if reason in f]
            right = sum(any(KIND_REASON[k] == reason for k in ks) for ks in flagged)
            cells.append(f"{right}/{len(flagged)}")
        print(f"| {half} | " + " | ".join(cells) + " |")
    print(f"\ndetector: {1000 * np.mean(seconds):.1f} ms per image (median "
          f"{1000 * np.median(seconds):.1f}, max {1000 * np.max(seconds):.1f})")


def per_source(data: Path) -> None:
    """Share of every covid/normal file of SOURCES.csv flagged, per source folder."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for r in csv.DictReader((data / "SOURCES.csv").open(encoding="utf-8")):
        top = r["path"].split("/")
        if r["class"] in ("covid", "normal") and top[0] != "originals":
            groups[top[1] if top[0] == "folders" else top[0]].append(data / r["path"])
    print("\n| source | images | flagged | share | " + " | ".join(MARK_REASONS)
          + " | ms/image |\n|---|---|---|---|" + "---|" * (len(MARK_REASONS) + 1))
    for name, paths in groups.items():
        per: Counter[str] = Counter()
        flagged, seconds = 0, []
        for p in paths:
            found, s = detect(p)
            flagged += bool(found)
            per.update(found)
            seconds.append(s)
        print(f"| {name} | {len(paths)} | {flagged} | {flagged / len(paths):.1%} | "
              + " | ".join(str(per[r]) for r in MARK_REASONS)
              + f" | {1000 * np.mean(seconds):.1f} |")  # fmt: skip


def check_draw(workspace: Path, labels: Path) -> None:
    ids = sorted(r.id for r in read_manifest(workspace / "manifest.csv")
                 if r.source == "cohen" and r.usable and not r.synthetic)  # fmt: skip
    pick = np.random.default_rng(SEED).choice(len(ids), DRAWN, replace=False)
    drawn = [ids[i].split("/", 1)[1] for i in pick]
    files = [r["file"].split("/", 1)[1] for r in csv.DictReader(labels.open(encoding="utf-8"))]
    same = drawn == files
    print(f"draw from {len(ids)} cohen rows: {'matches' if same else 'DIFFERS FROM'} {labels}")
    if not same:
        raise SystemExit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--labels", type=Path, default=LABELS)
    ap.add_argument("--sources", action="store_true", help="also the share flagged per source")
    ap.add_argument("--check-draw", type=Path, metavar="WORKSPACE")
    ap.add_argument("--half", choices=("dev", "held-out"), help="only this half of the labels")
    a = ap.parse_args()
    if a.check_draw is not None:
        check_draw(a.check_draw, a.labels)
    print(f"machine: {platform.machine()}, {platform.processor() or platform.platform()}\n")
    labelled(a.data, a.labels, a.half)
    if a.sources:
        per_source(a.data)


if __name__ == "__main__":
    main()
