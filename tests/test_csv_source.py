"""The `csv:` source of `cxraug collect`: a CSV naming image files, labels and patients, on a
small layout made here (mapped, excluded and unknown labels, patients, bad rows, clear errors,
nothing lost), and on the Actualmed/UJI layout of ../shared/cxr-data (real-data tier)."""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cxraug.cli import app
from cxraug.collect import CollectConfig, collect
from cxraug.core.errors import InputError
from cxraug.core.images import encode_image
from cxraug.core.manifest import Record, read_manifest
from cxraug.core.workspace import Workspace
from cxraug.prep.csvsource import CsvLayout, parse_classes, view_problem
from cxraug.prep.phantom import make_phantom
from cxraug.prep.sources import list_source, parse_source

runner = CliRunner()
HEADER = ["patientid", "finding", "view", "imagename", "notes"]
#: The Actualmed layout's options; tests change one at a time.
OPTIONS = dict(csv_file_column="imagename", csv_label_column="finding",
               csv_classes="COVID-19=covid,No finding=normal", csv_patient_column="patientid",
               csv_view_column="view", csv_images="images")  # fmt: skip
CFG = CollectConfig(workers=1, show_progress=False, **OPTIONS)  # type: ignore[arg-type]
FORMULA = '=HYPERLINK("http://example.invalid","click")'

# patientid, finding, view, imagename -> status, reason (prefix); "" = no image file written
ROWS: list[tuple[str, str, str, str, str, str]] = [
    ("P1", "COVID-19", "PA", "p1a.png", "ok", ""),
    ("P1", "COVID-19", "AP", "p1b.png", "ok", ""),  # one patient, two images: one split
    ("P2", "No finding", "AP", "p2.png", "ok", ""),
    ("P3", "no FINDING ", "PA", "p3.png", "ok", ""),  # case and spaces do not matter
    ("P4", "COVID-19", "AP Supine", "sub\\p4.png", "ok", ""),  # a sub-folder, Windows-style
    ("P5", "No finding", "PA", "p5.png", "ok", ""),
    ("P6", "COVID-19", "PA", "p6.png", "ok", ""),
    ("P7", "", "AP", "p7.png", "excluded", "finding is blank"),
    ("P8", "Pneumonia", "PA", "p8.png", "excluded", "finding 'Pneumonia' is not mapped"),
    ("P9", FORMULA, "PA", "p9.png", "excluded", f"finding {FORMULA!r} is not mapped"),
    ("P10", "COVID-19", "L", "p10.png", "excluded", "lateral view (L)"),
    ("P11", "COVID-19", "", "p11.png", "excluded", "view not stated"),
    ("P12", "COVID-19", "PA", "gone.png", "error", "file not found"),
    ("P13", "COVID-19", "PA", "../outside.png", "error", "metadata.csv row 15: imagename "
     "'../outside.png' leads outside the images folder"),
    ("P14", "No finding", "PA", "", "error", "metadata.csv row 16: the imagename cell is empty"),
    ("P15", "COVID-19", "PA", "/etc/passwd", "error", "metadata.csv row 17: imagename "
     "'/etc/passwd' leads outside"),
    ("P2", "No finding", "AP", "p2.png", "duplicate", "duplicate of csvsrc/images/p2.png"),
    ("=1+1", "No finding", "PA", "p16.png", "ok", ""),  # a formula as patient id: only text
    ("P17", "COVID-19", "PA", "x\x1b[2J.png", "error", "metadata.csv row 20: imagename "
     "'x\\x1b[2J.png' holds a control character"),
]  # fmt: skip


def write_image(path: Path, seed: int, label: str = "normal") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = make_phantom(np.random.default_rng(seed), label, (96, 80))
    path.write_bytes(encode_image(img, path.suffix))


def make_layout(root: Path, rows: list[tuple[str, ...]] = ROWS, extra_line: bool = True) -> Path:
    """ROOT/metadata.csv + ROOT/images/; returns the CSV path. `extra_line` adds a row with
    more cells than the header (an unquoted comma) at the end."""
    root.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    for k, (pid, finding, view, name, *_) in enumerate(rows):
        w.writerow([pid, finding, view, name, "a note, with a comma"])
        target = root / "images" / name.replace("\\", "/")
        if name and expected_id(k, name).startswith("csvsrc/images/") and \
                name != "gone.png" and not target.exists():  # fmt: skip
            write_image(target, k, "covid" if finding == "COVID-19" else "normal")
    text = buf.getvalue() + ("P99,No finding,PA,p99.png,note,unquoted, comma\n" if extra_line
                             else "")  # fmt: skip
    (root / "metadata.csv").write_text(text, encoding="utf-8")
    write_image(root / "outside.png", 98)  # what ../outside.png names: must never be read
    write_image(root / "images" / "unlisted.png", 97)
    return root / "metadata.csv"


def rows_by_id(ws: Path) -> dict[str, Record]:
    return read_manifest(ws / "manifest.csv").by_id()


def expected_id(k: int, name: str) -> str:
    """The id of ROWS[k]: NAME/images/<file>, #2 for a second row naming one file, and
    NAME/metadata.csv#row<line> for a row that names no readable file."""
    if not name or name.startswith(("/", "..")) or "\x1b" in name:
        return f"csvsrc/metadata.csv#row{k + 2}"
    nth = sum(r[3] == name for r in ROWS[: k + 1])
    return f"csvsrc/images/{name.replace(chr(92), '/')}" + (f"#{nth}" if nth > 1 else "")


def test_every_row_is_recorded_with_its_class_or_reason(tmp_path: Path) -> None:
    meta = make_layout(tmp_path / "csvsrc")
    ws = tmp_path / "ws"
    result = collect(Workspace.at(ws), [f"csv:{meta}"], CFG)
    rows = rows_by_id(ws)
    for k, (pid, finding, view, name, status, reason) in enumerate(ROWS):
        r = rows[expected_id(k, name)]
        assert (r.status, r.source, r.view) == (status, "csvsrc", view), (k, r)
        assert r.reason.startswith(reason), (k, r.reason)
        assert r.patient_id == f"csvsrc-{pid}"
        mapped = {"covid-19": "covid", "no finding": "normal"}.get(finding.strip().casefold(), "")
        assert r.label == ("" if status == "excluded" else mapped), (k, r)
    # the row with an extra cell, and the image no row names: reported, not dropped
    assert rows["csvsrc/metadata.csv#unreadable1"].status == "error"
    assert rows["csvsrc/metadata.csv#unreadable1"].reason.startswith(
        f"metadata.csv row {len(ROWS) + 2}: more cells than header columns")
    assert rows["csvsrc/images/unlisted.png"].reason == "not in metadata.csv"
    # nothing lost: one manifest row per data row, plus the unlisted image
    assert len(rows) == len(ROWS) + 1 + 1
    n_err = sum(r[4] == "error" for r in ROWS) + 1
    assert result.n_errors == n_err and result.exact_duplicates == 1
    assert not rows[expected_id(13, "../outside.png")].sha256  # refused, never read
    assert "metadata.csv rows 4, 18 list this file" in rows["csvsrc/images/p2.png"].note
    # no cell of the manifest is a formula a spreadsheet would run
    with open(ws / "manifest.csv", encoding="utf-8", newline="") as f:
        assert not [c for row in csv.reader(f) for c in row if c.startswith(("=", "@"))]
    assert rows[expected_id(8, "p9.png")].reason.startswith("finding '=HYPERLINK(")


def test_one_patients_rows_share_a_split(tmp_path: Path) -> None:
    meta = make_layout(tmp_path / "csvsrc", extra_line=False)
    ws = Workspace.at(tmp_path / "ws")
    seen = set()
    for seed in range(6):
        cfg = CollectConfig(**{**vars(CFG), "seed": seed, "test_fraction": 0.5, "force": True})
        collect(ws, [f"csv:{meta}"], cfg)
        splits = defaultdict(set)
        for r in ws.load_manifest().select():
            splits[r.patient_id].add(r.split)
        assert all(len(s) == 1 for s in splits.values()), splits
        seen |= splits["csvsrc-P1"]
    assert seen == {"train", "test"}  # the pair did move between seeds, together


def test_parse_classes() -> None:
    assert parse_classes("COVID-19=covid,No finding=normal") == {
        "covid-19": "covid", "no finding": "normal"}  # fmt: skip
    # a value may hold commas (a pair ends after its =CLASS) and '='
    assert parse_classes("COVID-19, ARDS=covid, Normal = NORMAL,a=b=normal") == {
        "covid-19, ards": "covid", "normal": "normal", "a=b": "normal"}  # fmt: skip
    for text, message in [("COVID-19=covd", "'covd', which is not a class; use one of normal"),
                          ("COVID-19=covid,No finding", "'No finding' has no '=CLASS'"),
                          ("=covid", "has no value before '='"),
                          ("x=covid,X=normal", "maps 'X' to both covid and normal")]:
        with pytest.raises(InputError, match=message):
            parse_classes(text)


@pytest.mark.parametrize("view, problem", [
    ("PA", ""), ("AP Supine", ""), ("Frontal", ""), (" ap ", ""),
    ("L", "lateral view (L)"), ("LL", "lateral view (LL)"), ("Lateral", "lateral view (Lateral)"),
    ("", "view not stated"), ("?", "view not stated ('?')"), ("Axial", "not a frontal view"),
])  # fmt: skip
def test_view_problem(view: str, problem: str) -> None:
    assert view_problem(view).startswith(problem) and bool(view_problem(view)) == bool(problem)


def with_options(**change: str) -> CollectConfig:
    return CollectConfig(**{**vars(CFG), **change})


def test_layout_errors_name_the_columns(tmp_path: Path) -> None:
    meta = make_layout(tmp_path / "csvsrc", extra_line=False)
    ws = Workspace.at(tmp_path / "ws")
    src = [f"csv:{meta}"]
    columns = "has the columns: 'patientid', 'finding', 'view', 'imagename', 'notes'"
    for change, message in [
        ({"csv_label_column": "Finding"}, "--csv-label-column 'Finding': no such column"),
        ({"csv_patient_column": "patient"}, "--csv-patient-column 'patient': no such column"),
        ({"csv_file_column": ""}, "needs --csv-file-column"),
        ({"csv_classes": ""}, "needs --csv-classes"),
    ]:
        with pytest.raises(InputError, match="(?s)" + message + ".*" + columns):
            collect(ws, src, with_options(**change))
    with pytest.raises(InputError, match=r"--csv-images 'imgs': .* is not a folder"):
        collect(ws, src, with_options(csv_images="imgs"))
    n = Counter(r[1] for r in ROWS)
    with pytest.raises(InputError, match="no row's finding is a value --csv-classes maps .* "
                       f"holds: 'COVID-19' \\({n['COVID-19']}\\), 'No finding' "
                       f"\\({n['No finding']}\\), "):
        collect(ws, src, with_options(csv_classes="COVID=covid,Normal=normal"))
    with pytest.raises(InputError, match="the --csv-\\* options describe csv: sources"):
        folder = tmp_path / "f" / "normal"
        write_image(folder / "a.png", 1)
        collect(ws, [f"folder:{folder.parent}"], with_options())
    with pytest.raises(InputError, match="csv: takes the CSV file itself, e.g. csv:.*metadata.csv "
                                         "\\(it holds metadata.csv\\)"):
        parse_source(f"csv:{meta.parent}")
    assert not ws.manifest_path.exists()  # nothing was written


def test_warnings_no_patient_column_and_unused_value(tmp_path: Path) -> None:
    meta = make_layout(tmp_path / "csvsrc", extra_line=False)
    spec = parse_source(f"csv:{meta}")
    assert spec.name == "csvsrc" and parse_source(f"h=csv:{meta}").name == "h"
    layout = CsvLayout.parse(file_column="imagename", label_column="finding", images="images",
                             classes="COVID-19=covid,Normal=normal", patient_column="",
                             view_column="")  # fmt: skip
    listing = list_source(spec, layout)
    assert len(listing.warnings) == 2
    assert "every image counts as its own patient" in listing.warnings[0]
    n_covid = sum(r[1] == "COVID-19" for r in ROWS)
    assert f"value(s) 'normal' match no row; finding holds: 'COVID-19' ({n_covid})" in \
        listing.warnings[1]  # fmt: skip
    by = {c.id: c for c in listing.candidates}
    assert by["csvsrc/images/p1a.png"].patient_id == ""  # no column: its own patient
    assert by["csvsrc/images/p10.png"].status == "ok"  # no view column: no view rule


def test_cli_exit_codes(tmp_path: Path) -> None:
    meta = make_layout(tmp_path / "csvsrc")
    opts = [f"--{k.replace('_', '-')}={v}" for k, v in OPTIONS.items()]
    base = ["collect", f"hosp=csv:{meta}", "--workers", "1"]
    r = runner.invoke(app, [*base, "-w", str(tmp_path / "w1"), *opts])
    assert r.exit_code == 1, r.output  # some rows failed, the rest recorded
    assert "error: hosp/images/gone.png: file not found" in r.output
    r = runner.invoke(app, [*base, "-w", str(tmp_path / "w2"), *opts,
                            "--csv-file-column", "image"])  # fmt: skip
    assert r.exit_code == 3 and "no such column" in r.output and "'imagename'" in r.output
    assert not (tmp_path / "w2" / "manifest.csv").exists()


def test_a_csv_source_is_one_of_several(tmp_path: Path) -> None:
    """A csv: source next to a folder: source, test-only: its rows are all external and the
    folder source's split is the one it gets alone."""
    meta = make_layout(tmp_path / "csvsrc", extra_line=False)
    for i in range(6):
        write_image(tmp_path / "f" / "normal" / f"n{i}.png", 50 + i)
        write_image(tmp_path / "f" / "covid" / f"c{i}.png", 60 + i, "covid")
    alone, both = Workspace.at(tmp_path / "w1"), Workspace.at(tmp_path / "w2")
    collect(alone, [f"folder:{tmp_path / 'f'}"], CollectConfig(workers=1, show_progress=False))
    res = collect(both, [f"folder:{tmp_path / 'f'}", f"csv:{meta}"],
                  with_options(test_only="csvsrc"))  # fmt: skip
    rows = both.load_manifest().select()
    assert {r.split for r in rows if r.source == "csvsrc"} == {"external"}
    assert {r.id: r.split for r in rows if r.source == "f"} == \
        {r.id: r.split for r in alone.load_manifest().select()}  # fmt: skip
    ok = Counter(r.label for r in rows if r.source == "csvsrc")
    expected = Counter("covid" if r[1] == "COVID-19" else "normal" for r in ROWS if r[4] == "ok")
    assert res.splits["covid"]["external"] == ok["covid"] == expected["covid"]
    assert res.splits["normal"]["external"] == ok["normal"] == expected["normal"]


@pytest.mark.realdata
def test_actualmed_as_a_test_only_source(cxr_data: Path, tmp_path: Path) -> None:
    """Actualmed/UJI collected with the options examples/collect_external.sh uses; the
    expected counts come from its metadata.csv, read here with the csv module."""
    meta = cxr_data / "external" / "actualmed" / "metadata.csv"
    with open(meta, encoding="utf-8", newline="") as f:
        table = list(csv.DictReader(f))
    findings = Counter(m["finding"].strip() for m in table)
    patients = {m["patientid"] for m in table}
    other = cxr_data / "folders" / "kermany-reencoded"
    res = collect(Workspace.at(tmp_path), [f"folder:{other}", f"actualmed=csv:{meta}"],
                  with_options(test_only="actualmed"))  # fmt: skip
    rows = [r for r in read_manifest(tmp_path / "manifest.csv") if r.source == "actualmed"]
    assert len(rows) == len(table) == len(list((meta.parent / "images").iterdir()))
    got = Counter((r.label, r.status) for r in rows)
    assert got == {("covid", "ok"): findings["COVID-19"], ("normal", "ok"): findings["No finding"],
                   ("", "excluded"): findings[""]}  # fmt: skip
    assert all(r.reason == "finding is blank" for r in rows if r.status == "excluded")
    assert {r.split for r in rows if r.status == "ok"} == {"external"}
    assert {r.patient_id for r in rows} == {f"actualmed-{p}" for p in patients}
    assert res.splits["covid"]["external"] == findings["COVID-19"]
    assert res.splits["normal"]["external"] == findings["No finding"]
    assert res.n_errors == 0
    # the counts the shared data's README states
    assert (len(rows), len(patients), findings["COVID-19"], findings["No finding"],
            findings[""]) == (54, 49, 26, 18, 10)  # fmt: skip
