"""cxraug/manifest.py: round trip, spreadsheet/pandas edits, and row-numbered validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxraug.core.errors import MAX_LISTED, ManifestError, first, listed, listed_inline
from cxraug.core.manifest import (
    COLUMNS,
    Manifest,
    Record,
    parse_manifest_text,
    read_manifest,
    to_csv_text,
    write_manifest,
)

HEADER = ",".join(COLUMNS)


def row(**kw: str) -> str:
    base = dict.fromkeys(COLUMNS, "")
    base.update(manifest_version="1", id="a", path="a.png", label="covid", split="train",
                status="ok")  # fmt: skip
    base.update(kw)
    return ",".join(base[c] for c in COLUMNS)


def test_round_trip_every_field(tmp_path: Path) -> None:
    recs = [
        Record(id="cohen/images/x.jpg", path="/data/x.jpg", label="covid", split="test",
               source="cohen", source_path="images/x.jpg", patient_id="cohen-7", view="AP Supine",
               license="CC BY", sha256="ab" * 32, width=640, height=512, crop=(1, 2, 100, 200),
               note="a, note \"quoted\"\nwith newline", extra={"reader": "dr x"}),
        Record(id="synthetic/covid/r-0", path="synthetic/covid/r-0.png", label="covid",
               split="train", synthetic=True, run="runs/r", checkpoint_sha256="cd" * 32,
               seed=3, noise_index=0),
        Record(id="k/bad.png", path="k/bad.png", status="error", reason="empty file (0 bytes)"),
    ]  # fmt: skip
    m = Manifest(recs, ["reader"])
    write_manifest(tmp_path / "manifest.csv", m)
    back = read_manifest(tmp_path / "manifest.csv")
    assert back.records[0] == recs[0]
    assert back.records[1] == Record(**{**recs[1].__dict__, "extra": {"reader": ""}})
    assert back.extra_columns == ["reader"]
    assert to_csv_text(back) == to_csv_text(m)


def test_pandas_style_edits_are_accepted() -> None:
    # pandas writes ints as floats once a column has a NaN, and "nan" for empty cells
    text = "\ufeff" + HEADER + ",reader\n" + row(width="640.0", height="512.0", seed="nan",
                                                 crop_x0="nan", synthetic="False") + ",x\n"
    m = parse_manifest_text(text)
    r = m.records[0]
    assert (r.width, r.height, r.seed, r.crop, r.synthetic) == (640, 512, None, None, False)
    assert r.extra == {"reader": "x"} and m.extra_columns == ["reader"]


@pytest.mark.parametrize(("bad", "message"), [
    (dict(label="pneumonia"), "row 3: label='pneumonia' is unknown; use one of normal, covid"),
    (dict(status="maybe"), "row 3: status='maybe'; use one of ok, excluded"),
    (dict(split="val"), "row 3: split='val'; use one of train, test"),
    (dict(split=""), "row 3: split is empty on a usable row"),
    (dict(label=""), "row 3: label is empty on a usable row"),
    (dict(id=""), "row 3: id is empty"),
    (dict(path=""), "row 3: path is empty"),
    (dict(width="12.5"), "row 3: width='12.5' is not a whole number"),
    (dict(width="-4"), "row 3: width=-4 is negative"),
    (dict(synthetic="maybe"), "row 3: synthetic='maybe'; use true or false"),
    (dict(crop_x0="1"), "row 3: crop box needs all of crop_x0"),
    (dict(crop_x0="50", crop_y0="0", crop_x1="10", crop_y1="40"), "x1 (10) must be greater"),
    (dict(crop_x0="0", crop_y0="0", crop_x1="700", crop_y1="40", width="640"),
     "x1 (700) is beyond the image width (640)"),
    (dict(manifest_version="9"), "row 3: manifest_version='9'"),
])  # fmt: skip
def test_validation_messages_carry_the_spreadsheet_row(bad: dict[str, str], message: str) -> None:
    text = "\n".join([HEADER, row(id="first"), row(**{"id": "second", **bad})]) + "\n"
    with pytest.raises(ManifestError) as e:
        parse_manifest_text(text, "manifest.csv")
    assert message in str(e.value)
    assert "manifest.csv has 1 problem(s)" in str(e.value)


def test_duplicate_id_names_both_rows() -> None:
    text = "\n".join([HEADER, row(id="x"), row(id="y"), row(id="x")]) + "\n"
    with pytest.raises(ManifestError, match=r"row 4: id 'x' repeats row 2; ids must be unique"):
        parse_manifest_text(text)


def test_many_errors_are_all_counted_and_capped() -> None:
    text = "\n".join([HEADER] + [row(id=f"r{i}", label="cat") for i in range(30)]) + "\n"
    with pytest.raises(ManifestError) as e:
        parse_manifest_text(text)
    assert "has 30 problem(s)" in str(e.value) and "... and 5 more" in str(e.value)
    assert "row 2:" in str(e.value) and "row 26:" in str(e.value)
    assert "row 27:" not in str(e.value)  # row 2 + MAX_LISTED - 1 is the last one listed


@pytest.mark.parametrize("n", [0, 1, 3, 4, MAX_LISTED, MAX_LISTED + 7])
def test_first_n_then_and_k_more(n: int) -> None:
    """The one "first N, then ... and K more" rule, in its three shapes (core/errors)."""
    items = [f"p{i}" for i in range(n)]
    shown, more = first(items)
    assert list(shown) == items[:MAX_LISTED]
    assert more == (f"... and {n - MAX_LISTED} more" if n > MAX_LISTED else "")
    lines = listed(items, 3, indent="  ")
    assert lines[: min(n, 3)] == [f"  p{i}" for i in range(min(n, 3))]
    assert lines[3:] == ([f"  ... and {n - 3} more"] if n > 3 else [])
    assert listed_inline(items, 3) == ", ".join(items[:3]) + (f" ... and {n - 3} more"
                                                              if n > 3 else "")


def test_structural_problems(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="is empty; run `cxraug collect`"):
        parse_manifest_text("  \n")
    with pytest.raises(ManifestError, match="missing column.*split, status"):
        parse_manifest_text("id,path,label\na,b,covid\n")
    with pytest.raises(ManifestError, match="duplicate column.*label"):
        parse_manifest_text("id,path,label,split,status,label\n")
    with pytest.raises(ManifestError, match="row 2: more cells than header"):
        parse_manifest_text("id,path,label,split,status\na,b,covid,train,ok,extra\n")
    with pytest.raises(ManifestError, match="no manifest at .*run `cxraug collect"):
        read_manifest(tmp_path / "nope.csv")
    (tmp_path / "latin1.csv").write_bytes("id,path,label,split,status\né,b,covid,train,ok\n"
                                          .encode("latin-1"))  # fmt: skip
    with pytest.raises(ManifestError, match="not UTF-8 text"):
        read_manifest(tmp_path / "latin1.csv")


def test_minimal_columns_and_select() -> None:
    m = parse_manifest_text("id,path,label,split,status\n"
                            "a,a.png,covid,train,ok\nb,b.png,normal,test,ok\n"
                            "c,c.png,,,excluded\n")  # fmt: skip
    assert [r.id for r in m.select(label="covid")] == ["a"]
    assert [r.id for r in m.select(status=None)] == ["a", "b", "c"]
    with pytest.raises(ManifestError, match="unknown class 'cat'"):
        m.select(label="cat")
    with pytest.raises(ManifestError, match="already exists"):
        m.add(Record(id="a", path="x"))


def test_write_refuses_invalid_records(tmp_path: Path) -> None:
    m = Manifest([Record(id="a", path="a.png", label="covid", split="", status="ok")])
    with pytest.raises(ManifestError, match="split is empty on a usable row"):
        write_manifest(tmp_path / "m.csv", m)
    assert not (tmp_path / "m.csv").exists()
