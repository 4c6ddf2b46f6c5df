"""What a `cxraug collect --force` rebuild keeps from the manifest it replaces: the user's
edits of ids that still exist and every synthetic row (`merge_previous`), and the list of what
it recomputed instead (`MergeInfo`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cxraug.core.manifest import Manifest, Record, crop_box_problem


@dataclass
class MergeInfo:
    """What a `--force` rebuild carried over from the manifest it replaced."""

    backup: str = ""
    kept_crops: int = 0
    dropped_crops: list[str] = field(default_factory=list)
    kept_synthetic: int = 0
    kept_extra_columns: list[str] = field(default_factory=list)
    dropped_rows: list[str] = field(default_factory=list)
    kept_labels: list[str] = field(default_factory=list)  # "id: old (collect says new)"
    kept_exclusions: list[str] = field(default_factory=list)  # ids
    discarded: list[str] = field(default_factory=list)  # "id: split test -> train", ...


def merge_previous(records: list[Record], old: Manifest) -> tuple[list[Record], MergeInfo]:
    """Keep the user's edits of surviving ids and all synthetic rows; list what is recomputed.

    Kept: crop box, extra columns, a label that differs from what collect reads from the
    source (a correction), status `excluded` where collect now says ok (a person's decision to
    leave an image out outweighs a re-scan). Recomputed, and listed in `discarded`: the split
    (re-drawn by patient group, so a patient never lands on both sides, which kept old splits
    could cause once sources change) and any other status (error, duplicate: facts of the
    files, re-checked now)."""
    info = MergeInfo(kept_extra_columns=list(old.extra_columns))
    new_by_id = {r.id: r for r in records}
    out = list(records)
    for o in old:
        n = new_by_id.get(o.id)
        if o.synthetic and n is None:
            out.append(o)
            info.kept_synthetic += 1
        elif n is None:
            info.dropped_rows.append(o.id)
            continue
        else:
            n.extra = dict(o.extra)
            if o.label and o.label != n.label and n.status == "ok":
                info.kept_labels.append(f"{o.id}: {o.label} (collect says {n.label or '-'})")
                n.label = o.label
            if o.status == "excluded" and n.status == "ok":
                n.set_status("excluded", o.reason)
                info.kept_exclusions.append(o.id)
            elif o.status != n.status:
                info.discarded.append(f"{o.id}: status {o.status} -> {n.status}")
            if o.split and n.split and o.split != n.split:
                info.discarded.append(f"{o.id}: split {o.split} -> {n.split}")
            if o.crop is not None:
                problem = crop_box_problem(o.crop, n.width, n.height)
                if problem:
                    info.dropped_crops.append(f"{o.id}: {problem}")
                    n.add_note(f"previous crop box dropped: {problem}")
                else:
                    n.crop = o.crop
                    info.kept_crops += 1
    return out, info
