"""The patient split of `cxraug collect`: train/test (and external) by patient group.

Split groups are connected components linking rows that share a patient id, a file (metadata
rows naming the same file), exact bytes, or a near-duplicate image: whatever could leak one
patient's image from the training set into the test set ends up on one side.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from cxraug.core.manifest import LABELS, Record


class _Groups:
    """Union-find over row indices."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int, max_size: int | None = None) -> bool:
        a, b = self.find(i), self.find(j)
        if a == b or (max_size is not None and self.size[a] + self.size[b] > max_size):
            return a == b
        self.parent[a] = b
        self.size[b] += self.size[a]
        return True

    def link_equal(self, keys: Iterable[str]) -> None:
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k:
                self.union(i, first.setdefault(k, i))


def assign_splits(records: list[Record], pairs: Iterable[tuple[int, int]], test_fraction: float,
                  seed: int, test_only: Iterable[str] = ()) -> list[tuple[int, int]]:  # fmt: skip
    """Set `split` on ok rows, by patient group, stratified by class; clear it on other rows.

    Rows of a `test_only` source get split external. A patient group that holds one of them
    never reaches train: its other rows go to test, so no image of a test-only patient (same
    patient id, same bytes, a near-duplicate) can be trained on.

    Per class, the groups are shuffled (seeded) and each is put in test while that brings the
    test image count closer to round(fraction * images); the rest go to train. Near-duplicate
    pairs join groups only up to max(20, 2% of rows) rows, so that a too-loose threshold cannot
    glue the whole dataset into one group. Returns the pairs that could not be joined."""
    g = _Groups(len(records))
    g.link_equal(r.patient_id for r in records)
    g.link_equal(r.sha256 for r in records)
    g.link_equal(r.path for r in records)
    cap = max(20, len(records) // 50)
    unjoined = [(i, j) for i, j in pairs if not g.union(i, j, max_size=cap)]
    members: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        r.split = ""
        if r.status == "ok":
            members.setdefault(g.find(i), []).append(i)
    external = set(test_only)
    groups = []
    for m in sorted(members.values(), key=lambda m: min(records[i].id for i in m)):
        if any(records[i].source in external for i in m):
            for i in m:
                records[i].split = "external" if records[i].source in external else "test"
        else:
            groups.append(m)
    for k, label in enumerate(LABELS):
        # a group's class is its majority (ties: the scarce covid class)
        mine = [m for m in groups
                if max(LABELS, key=lambda lb: (sum(records[i].label == lb for i in m),
                                               LABELS.index(lb))) == label]  # fmt: skip
        target = round(test_fraction * sum(len(m) for m in mine))
        rng = np.random.default_rng([seed, k])  # one stream per class: classes independent
        n_test = 0
        for gi in rng.permutation(len(mine)):
            m = mine[gi]
            to_test = n_test < target and abs(n_test + len(m) - target) <= abs(target - n_test)
            n_test += len(m) if to_test else 0
            for i in m:
                records[i].split = "test" if to_test else "train"
    return unjoined
