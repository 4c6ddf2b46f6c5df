"""Duplicates for `cxraug collect`: exact copies (same sha256) and near-duplicates (256-bit
difference hashes within a number of bits; the hash: `cxraug.prep.inspect.difference_hash`).

Exact copies after the first usable one get status `duplicate`; near-duplicate pairs are only
noted (kept, and kept in one split by `cxraug.prep.split`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cxraug.core.errors import listed_inline
from cxraug.core.manifest import Record

#: Rows a near-duplicate note names before "... and K more": fewer than MAX_LISTED because
#: the note is one manifest cell, which must stay short enough to read in a spreadsheet.
NOTE_LISTED = 3


def mark_exact_duplicates(records: list[Record]) -> int:
    """The first usable row of each sha256 stays ok, later usable copies become `duplicate`."""
    first: dict[str, Record] = {}
    n = 0
    for r in records:
        if not r.sha256 or r.status != "ok":
            continue
        keep = first.setdefault(r.sha256, r)
        if keep is not r:
            reason = f"duplicate of {keep.id}"
            if keep.label != r.label:
                reason += f" (labelled {keep.label} there, {r.label} here)"
                keep.add_note(f"same file labelled {r.label} in {r.id}")
            r.set_status("duplicate", reason)
            n += 1
    return n


def _words(hashes: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The hashes as machine words and a popcount for them. np.bitwise_count (numpy >= 2.0) on
    64-bit words; on numpy 1.26 (which TensorFlow 2.16/2.17 need) a 16-bit lookup table."""
    h = np.ascontiguousarray(hashes, np.uint8)
    if _bitwise_count is not None:
        return h.view(">u8"), _bitwise_count  # (N, 4)
    return h.view(">u2"), _POPCOUNT16.__getitem__  # (N, 16)


_bitwise_count: Callable[[np.ndarray], np.ndarray] | None = getattr(np, "bitwise_count", None)
_POPCOUNT16 = np.unpackbits(np.arange(1 << 16, dtype=">u2").view(np.uint8).reshape(-1, 2),
                            axis=1).sum(1).astype(np.uint8)  # (65536,) set bits  # fmt: skip


def near_duplicate_pairs(
    hashes: np.ndarray, max_bits: int, block: int = 512
) -> list[tuple[int, int, int]]:
    """(i, j, distance) with i < j for rows of `hashes` ((N, 32) uint8) within max_bits."""
    h, popcount = _words(hashes)
    out: list[tuple[int, int, int]] = []
    for s in range(0, len(h), block):
        d = np.zeros((min(block, len(h) - s), len(h)), np.int32)  # (B, N) Hamming distances
        for k in range(h.shape[1]):
            d += popcount(h[s : s + block, k, None] ^ h[None, :, k])
        for i, j in zip(*np.nonzero(d <= max_bits), strict=True):
            if s + i < j:
                out.append((int(s + i), int(j), int(d[i, j])))
    return out


def note_near_duplicates(records: list[Record], pairs: list[tuple[int, int, int]]) -> None:
    """Note on each row of a near-duplicate pair which rows it resembles, and how closely."""
    per_row: dict[int, list[str]] = {}
    for i, j, d in pairs:
        per_row.setdefault(i, []).append(f"{records[j].id} ({d}/256 bits)")
        per_row.setdefault(j, []).append(f"{records[i].id} ({d}/256 bits)")
    for i, others in per_row.items():
        records[i].add_note("near-duplicate of " + listed_inline(others, NOTE_LISTED))
