"""The hostile-input corpus: what a careless or hostile user types or leaves in a workspace,
each case run through the real command line, with its exit code, the message the user needs,
and proof that nothing was lost (manifest.csv byte for byte, no half-made folders).

Cases: issue 19 (option values that are not finite or out of range, CSV cells over the csv
module's limit, control characters and markup in file names, files the tool writes for people
to edit that must read back, empty and over-long names, a checkpoint that is not one, a manifest
that is a folder or a symlink, a mistyped --workspace) and the round before it (names that climb
out of their folder, FIFOs posing as images, formula cells). Runs in `make test` (< 60 s).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cxraug.cli import app
from cxraug.core.csvfile import CELL_LIMIT
from cxraug.core.images import encode_image
from cxraug.core.manifest import read_manifest
from cxraug.core.names import NAME_MAX, RUN_NAME_MAX, name_problem
from cxraug.core.settings import SEED_MAX
from cxraug.prep.phantom import make_phantom

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
SEED_RANGE = f"must be in [0, {SEED_MAX}]"
#: file names a person would not type: control characters, markup, formula starts, CSV syntax
ESC_NAME = "evil\x1b[2J\x1b]0;owned\x07[bold]x[red]\x9b1m.png"
ROUND_TRIP_NAMES = ("a\rb.png", "line\nbreak.png", "com,ma.png", 'quo"te.png', "=cmd|x.png",
                    "'=quoted.png", "+1.png", "@sum.png", "[bold]m[red].png", "tab\tin.png")


def phantoms(folder: Path, names: dict[str, list[str]]) -> Path:
    """PNG phantoms named `names[class]` under folder/class/."""
    for label, files in names.items():
        for k, name in enumerate(files):
            p = folder / label / name
            p.parent.mkdir(parents=True, exist_ok=True)
            img = make_phantom(np.random.default_rng(10 * k + (label == "covid")), label, (64, 56))
            p.write_bytes(encode_image(img, ".png"))
    return folder


def cli(*args: str | Path) -> object:
    return runner.invoke(app, [str(a) for a in args])


def said(result: object) -> str:
    """Everything the command printed, whitespace runs and the usage-error box folded (rich
    wraps long lines)."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A collected workspace (ws/) of 3 + 3 phantoms kept in src/ beside it."""
    root = tmp_path_factory.mktemp("corpus")
    src = phantoms(root / "src", {c: [f"{c}{k}.png" for k in range(3)]
                                  for c in ("normal", "covid")})  # fmt: skip
    r = cli("collect", f"folder:{src}", "-w", root / "ws", "--workers", "1")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    return root


# ---- the corpus -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """`args(ws)` prepares a copy of the base workspace and returns the command line; the command
    must exit `code` saying `says`; with `keeps`, manifest.csv keeps its bytes and no runs/,
    processed/ or synthetic/ appears; `also(ws, output)` checks the rest."""

    id: str
    args: Callable[[Path], list[str | Path]]
    code: int
    says: str
    keeps: bool = True
    also: Callable[[Path, str], None] | None = None


def _long_note(ws: Path) -> None:
    lines = (ws / "manifest.csv").read_bytes().decode().splitlines()
    head, rows = lines[0], lines[1:]
    rows[1] = rows[1].rstrip(",") + "," + "n" * (CELL_LIMIT + 1)  # the last column is `note`
    assert head.endswith(",note")
    (ws / "manifest.csv").write_bytes(("\n".join([head, *rows]) + "\n").encode())


def _with_long_note(*args: str) -> Callable[[Path], list[str | Path]]:
    def prepare(ws: Path) -> list[str | Path]:
        _long_note(ws)
        return [*args, "-w", ws]

    return prepare


def _crop_file(ws: Path, x0: str, note: str = "") -> Path:
    rid = read_manifest(ws / "manifest.csv").records[0].id
    p = ws.parent / "boxes.csv"
    p.write_text(f"id,x0,y0,x1,y1,note\n{rid},{x0},0,40,40,{note}\n", encoding="utf-8")
    return p


def _cohen_with_long_cell(ws: Path) -> list[str | Path]:
    root = ws.parent / "cohen"
    (root / "images").mkdir(parents=True)
    (root / "metadata.csv").write_text(
        "patientid,finding,view,modality,folder,filename,clinical_notes\n"
        "1,COVID-19,PA,X-ray,images,a.png,short\n"
        f"2,COVID-19,PA,X-ray,images,b.png,{'x' * (CELL_LIMIT + 1)}\n", encoding="utf-8")
    return ["collect", f"cohen:{root}", "-w", ws.parent / "new"]


def _csv_source_with_long_cell(ws: Path) -> list[str | Path]:
    root = ws.parent / "hospital"
    root.mkdir()
    (root / "meta.csv").write_text(
        "imagename,finding\n"
        "a.png,COVID-19\n"
        f"b.png,{'x' * (CELL_LIMIT + 1)}\n", encoding="utf-8")
    return ["collect", f"h=csv:{root / 'meta.csv'}", "--csv-file-column", "imagename",
            "--csv-label-column", "finding", "--csv-classes", "COVID-19=covid",
            "-w", ws.parent / "new"]


def _manifest_folder(*command: str) -> Callable[[Path], list[str | Path]]:
    """`command -w WS` run on a workspace whose manifest.csv is a folder."""

    def prepare(ws: Path) -> list[str | Path]:
        (ws / "manifest.csv").rename(ws / "aside.csv")
        (ws / "manifest.csv").mkdir()
        (ws / "manifest.csv" / "keep.txt").write_text("mine")
        return [*command, "-w", ws]

    return prepare


def _fake_checkpoint(ws: Path) -> list[str | Path]:
    p = ws.parent / "passwd"
    p.write_text("root:x:0:0:root:/root:/bin/bash\n")
    return ["generate", "-w", ws, "--class", "covid", "-n", "1", "--checkpoint", p]


def _no_workspace_left(ws: Path, _: str) -> None:
    assert not (ws.parent / "typo").exists()


def _nothing_created(ws: Path, _: str) -> None:
    assert not (ws.parent / "new").exists()


def _no_export(ws: Path, _: str) -> None:
    assert not (ws.parent / "out").exists()


def _manifest_folder_kept(ws: Path, _: str) -> None:
    assert (ws / "manifest.csv" / "keep.txt").read_text() == "mine"


def _escaped(ws: Path, output: str) -> None:
    assert "\x1b" not in output and "\x9b" not in output and "\x07" not in output
    assert "evil\\x1b[2J\\x1b]0;owned\\x07[bold]x[red]\\x9b1m.png" in output, output


def _evil_folder(ws: Path) -> list[str | Path]:
    src = phantoms(ws.parent / "evil", {"covid": ["c0.png", ESC_NAME], "normal": ["n0.png"]})
    (src / "covid" / ESC_NAME).write_bytes(b"not a png")  # an error row: its name is printed
    return ["collect", f"folder:{src}", "-w", ws, "--force", "--workers", "1"]


def _seed(command: str, *extra: str) -> Case:
    def args(ws: Path) -> list[str | Path]:
        return [command, *extra, "--seed", "-1", "-w", ws]

    return Case(f"{command}-seed-negative", args, 2, f"--seed -1 {SEED_RANGE}")


LONG_RUN = "r" * 96

CASES = [
    # item 2: one bad option value must not touch the manifest's statuses
    Case("preprocess-max-file-mb-inf",
         lambda ws: ["preprocess", "-w", ws, "--max-file-mb", "inf"], 2,
         "--max-file-mb inf is not a finite number"),
    Case("preprocess-max-megapixels-nan",
         lambda ws: ["preprocess", "-w", ws, "--max-megapixels", "nan"], 2,
         "--max-megapixels nan is not a number"),
    Case("collect-max-file-mb-inf",
         lambda ws: ["collect", f"folder:{ws.parent / 'src'}", "-w", ws.parent / "new",
                     "--max-file-mb", "inf"], 2, "--max-file-mb inf is not a finite number",
         also=_nothing_created),
    # item 10: a cell over the csv module's limit is exit 3 naming file and row
    Case("manifest-long-note-preprocess", _with_long_note("preprocess"), 3,
         f"manifest.csv row 3: a cell is longer than {CELL_LIMIT:,} characters"),
    Case("manifest-long-note-filter", _with_long_note("filter"), 3,
         "manifest.csv row 3: a cell is longer than"),
    Case("manifest-long-note-fid",
         _with_long_note("fid", "manifest:split=train", "manifest:split=test"), 3,
         "manifest.csv row 3: a cell is longer than"),
    Case("crop-boxes-long-cell",
         lambda ws: ["preprocess", "-w", ws, "--crop-boxes",
                     _crop_file(ws, "0", "n" * (CELL_LIMIT + 1))], 3,
         "boxes.csv row 2: a cell is longer than"),
    Case("cohen-metadata-long-cell", _cohen_with_long_cell, 3,
         "metadata.csv row 3: a cell is longer than", also=_nothing_created),
    Case("csv-source-long-cell", _csv_source_with_long_cell, 3,
         "meta.csv row 3: a cell is longer than", also=_nothing_created),
    # item 11: --seed -1 and --width 0 refused before any side effect
    _seed("collect", "folder:x"),
    _seed("generate", "-n", "1"),
    _seed("train", "--name", "x"),
    _seed("filter"),
    _seed("fid", "a", "b"),
    _seed("evaluate"),
    Case("evaluate-width-0", lambda ws: ["evaluate", "-w", ws, "--width", "0"], 2,
         "--width 0 must be in [1, 1024]"),
    Case("export-workers-0",
         lambda ws: ["export", ws.parent / "out", "-w", ws, "--workers", "0"], 2,
         "--workers 0 must be in [1, 256]", also=_no_export),
    Case("export-size-out-of-range",
         lambda ws: ["export", ws.parent / "out", "-w", ws, "--size", "5000"], 2,
         "--size 5000 must be in [8, 4096]"),
    Case("generate-batch-size-0",
         lambda ws: ["generate", "-w", ws, "-n", "1", "--batch-size", "0"], 2,
         "--batch-size 0 must be at least 1"),
    # item 12: control characters and markup in a file name never reach the terminal raw
    Case("collect-escape-in-file-name", _evil_folder, 1, "error: evil/covid/evil", keeps=False,
         also=_escaped),
    # item 15: each gets the message a user needs
    Case("filter-noise-max-nan", lambda ws: ["filter", "-w", ws, "--noise-max", "nan"], 2,
         "--noise-max nan is not a number"),
    Case("train-96-character-name", lambda ws: ["train", "-w", ws, "--name", LONG_RUN], 3,
         f"is 96 characters long; a run name has at most {RUN_NAME_MAX}"),
    Case("generate-checkpoint-not-npz", _fake_checkpoint, 3,
         "is not a cxraug checkpoint (not an .npz file)"),
    Case("manifest-is-a-folder", _manifest_folder("preprocess"), 3,
         "manifest.csv is a folder, not a manifest file", also=_manifest_folder_kept),
    Case("collect-force-over-a-manifest-folder",
         lambda ws: _manifest_folder("collect", f"folder:{ws.parent / 'src'}", "--force",
                                     "--workers", "1")(ws), 3,
         "manifest.csv is a folder, not a manifest file", also=_manifest_folder_kept),
    *(Case(f"{cmd}-mistyped-workspace", lambda ws, c=cmd: [c, "-w", ws.parent / "typo" / "ws"],
           2, "does not exist; check the path (only `cxraug collect` creates a workspace)",
           also=_no_workspace_left)
      for cmd in ("preprocess", "train", "generate", "filter", "evaluate")),
    Case("export-mistyped-workspace",
         lambda ws: ["export", ws.parent / "out", "-w", ws.parent / "typo" / "ws"], 2,
         "does not exist; check the path", also=_no_workspace_left),
    Case("fid-mistyped-workspace",
         lambda ws: ["fid", ws.parent / "src", ws.parent / "src", "-w", ws.parent / "typo"],
         2, "does not exist; check the path", also=_no_workspace_left),
    Case("train-empty-name", lambda ws: ["train", "-w", ws, "--name", ""], 3,
         "run name '' is empty"),
    Case("generate-empty-run", lambda ws: ["generate", "-w", ws, "-n", "1", "--run", ""], 3,
         "--run is empty"),
    Case("train-resume-empty", lambda ws: ["train", "-w", ws, "--resume", ""], 3,
         "the run name is empty"),
    Case("evaluate-empty-name", lambda ws: ["evaluate", "-w", ws, "--name", ""], 3,
         "evaluation name '' is empty"),
    Case("crop-box-nan",
         lambda ws: ["preprocess", "-w", ws, "--crop-boxes", _crop_file(ws, "nan")], 3,
         "x0 is 'nan', not a number"),
    # the round before: names that climb out of their folder
    Case("train-name-dotdot", lambda ws: ["train", "-w", ws, "--name", "..", "--force"], 3,
         "is a path, not a name"),
    Case("generate-run-outside", lambda ws: ["generate", "-w", ws, "-n", "1", "--run",
                                             "../../etc"], 3, "is not a folder of"),
    Case("evaluate-name-traversal", lambda ws: ["evaluate", "-w", ws, "--name", "../x"], 3,
         "is a path, not a name"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, base: Path, tmp_path: Path) -> None:
    shutil.copytree(base, tmp_path, dirs_exist_ok=True)
    ws = tmp_path / "ws"
    args = case.args(ws)
    before = {p.name for p in ws.iterdir()}
    manifest = (ws / "manifest.csv").read_bytes() if (ws / "manifest.csv").is_file() else None
    r = cli(*args)
    output = r.output  # type: ignore[attr-defined]
    assert r.exit_code == case.code, output  # type: ignore[attr-defined]
    assert case.says in said(r), output
    assert "Traceback" not in output
    if case.keeps:
        if manifest is not None:
            assert (ws / "manifest.csv").read_bytes() == manifest
        assert {p.name for p in ws.iterdir()} == before  # no runs/, processed/, .pending
    if case.also is not None:
        case.also(ws, output)


# ---- cases that need more than one command ----------------------------------------------------


def test_suggested_crops_read_back_for_every_kind_of_name(tmp_path: Path) -> None:
    """Every file name of ROUND_TRIP_NAMES survives collect -> manifest -> --suggest-crops ->
    --crop-boxes: the tool reads back what it wrote for a person to edit."""
    ws = tmp_path / "ws"  # the source inside it, named so that every id and path starts with =
    src = phantoms(ws / "=src", {"covid": list(ROUND_TRIP_NAMES),
                                 "normal": [f"n{k}.png" for k in range(3)]})  # fmt: skip
    r = cli("collect", f"folder:{src}", "-w", ws, "--workers", "1")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    ids = {Path(x.id).name for x in read_manifest(ws / "manifest.csv")}
    assert {n.strip() for n in ROUND_TRIP_NAMES} <= ids  # the manifest read them back
    boxes = tmp_path / "boxes.csv"
    r = cli("preprocess", "-w", ws, "--suggest-crops", boxes, "--workers", "1")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert "\n=src" not in boxes.read_text() and "\n'=src" in boxes.read_text()
    r = cli("preprocess", "-w", ws, "--crop-boxes", boxes, "--workers", "1", "--size", "16")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert f"saved {len(ROUND_TRIP_NAMES) + 3} crop box(es)" in said(r)
    assert all(x.crop is not None for x in read_manifest(ws / "manifest.csv"))


def test_symlinked_manifest_stays_a_symlink(base: Path, tmp_path: Path) -> None:
    shutil.copytree(base, tmp_path, dirs_exist_ok=True)
    ws = tmp_path / "ws"
    target = tmp_path / "kept" / "manifest-v1.csv"
    target.parent.mkdir()
    (ws / "manifest.csv").rename(target)
    (ws / "manifest.csv").symlink_to(target)
    before = target.read_bytes()
    r = cli("preprocess", "-w", ws, "--crop-boxes", _crop_file(ws, "0"), "--size", "16",
            "--workers", "1")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert (ws / "manifest.csv").is_symlink() and os.readlink(ws / "manifest.csv") == str(target)
    assert target.read_bytes() != before  # written through: the crop box is in the target
    assert read_manifest(target).records[0].crop == (0, 0, 40, 40)


def test_collect_says_it_created_the_workspace(base: Path, tmp_path: Path) -> None:
    r = cli("collect", f"folder:{base / 'src'}", "-w", tmp_path / "a" / "ws", "--workers", "1")
    assert r.exit_code == 0 and f"created the workspace folder {tmp_path / 'a' / 'ws'}" in said(r)
    r = cli("collect", f"folder:{base / 'src'}", "-w", tmp_path / "a" / "ws", "--workers", "1",
            "--force")  # fmt: skip
    assert r.exit_code == 0 and "created the workspace folder" not in said(r)


def test_formula_cells_are_neutralised_on_disk_and_read_back(tmp_path: Path) -> None:
    """A source folder named like a formula makes id, source and path cells that start with
    =: on disk each starts with ', read back each is what it was."""
    ws = tmp_path / "ws"
    src = phantoms(ws / "=cmd|'-C calc'!A0", {"covid": ["c0.png", "c1.png"],
                                              "normal": ["n0.png", "n1.png"]})  # fmt: skip
    r = cli("collect", f"folder:{src}", "-w", ws, "--workers", "1")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    text = (ws / "manifest.csv").read_text()
    assert "\n1,=" not in text and ",=cmd" not in text  # no cell starts with =
    assert "\n1,'=cmd|'-C calc'!A0/covid/c0.png," in text
    rows = read_manifest(ws / "manifest.csv").records
    assert {x.source for x in rows} == {"=cmd|'-C calc'!A0"}
    assert {x.path for x in rows} == {f"=cmd|'-C calc'!A0/{c}" for c in
                                      ("covid/c0.png", "covid/c1.png", "normal/n0.png",
                                       "normal/n1.png")}  # fmt: skip


@pytest.mark.parametrize("command", ["preprocess", "collect"])
def test_own_failure_is_not_written_into_rows(command: str, base: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A failure of the command itself (every file, the same unexpected exception) is an error
    message, never every row's `error` status."""
    import cxraug.prep.inspect as inspect
    import cxraug.preprocess as pre

    def broken(*_: object, **__: object) -> object:
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(pre, "load_image", broken)
    monkeypatch.setattr(inspect, "decode_displayed", broken)
    shutil.copytree(base, tmp_path, dirs_exist_ok=True)
    ws = tmp_path / "ws"
    manifest = (ws / "manifest.csv").read_bytes()
    extra = [f"folder:{tmp_path / 'src'}", "--force"] if command == "collect" else []
    r = cli(command, *extra, "-w", ws, "--workers", "1")
    assert r.exit_code == 3, r.output  # type: ignore[attr-defined]
    assert "failed the same way (" in said(r) and "no status was written" in said(r)
    assert (ws / "manifest.csv").read_bytes() == manifest
    assert not (ws / "manifest.csv.bak").exists()


def test_fifo_posing_as_an_image_is_an_error_row_not_a_hang(tmp_path: Path) -> None:
    src = phantoms(tmp_path / "src", {"covid": ["c0.png", "c1.png"], "normal": ["n0.png"]})
    os.mkfifo(src / "normal" / "fifo.png")
    r = subprocess.run([sys.executable, "-m", "cxraug", "collect", f"folder:{src}", "-w",
                        str(tmp_path / "ws"), "--workers", "1"], cwd=REPO, text=True,
                       capture_output=True, timeout=60)  # fmt: skip
    assert r.returncode == 1, r.stderr
    rows = {Path(x.id).name: x for x in read_manifest(tmp_path / "ws" / "manifest.csv")}
    assert rows["fifo.png"].status == "error" and "FIFO" in rows["fifo.png"].reason


def test_the_longest_run_name_still_names_its_generated_images() -> None:
    """One rule for run names: the longest allowed name, the largest seed and a 9-digit image
    index still make a name (generate's RUN-sSEED-INDEX), and one character more does not."""
    stem = f"{'r' * RUN_NAME_MAX}-s{SEED_MAX}-{10**9 - 1:06d}"
    assert len(stem) <= NAME_MAX and name_problem(stem) is None
    assert name_problem(f"{'r' * 96}-s0-000000") is not None  # what generate used to refuse


def test_consoles_escape_names_but_keep_their_own_colours() -> None:
    """The one place output is produced escapes what a name carries (ESC, CSI, CR, BEL, bidi
    override, markup stays text) and leaves rich's own colour codes working."""
    import io

    from rich.table import Table

    from cxraug.core import ui

    buf = io.StringIO()
    console = ui._SafeConsole(file=buf, markup=False, force_terminal=True, color_system="standard",
                              width=200)  # fmt: skip
    name = "a\x1b[2Jb\rc\x9bd\x07e\u202ef[bold]g"
    console.print(ui.tagged("error:", "bold red", name))
    table = Table()
    table.add_column("id")
    table.add_row(name)
    console.print(table)
    console.print(name, highlight=False)
    text = buf.getvalue()
    shown = "a\\x1b[2Jb\\rc\\x9bd\\x07e\\u202ef[bold]g"
    assert text.count(shown) == 3, text
    assert "\x1b[2J" not in text and "\x9b" not in text and "\x07" not in text
    assert "\x1b[1;31merror:\x1b[0m" in text  # rich's own style codes survive
    assert ui.one_line("x\ny\tz\x1b") == "x\\ny\\tz\\x1b"


def test_help_shows_the_range_the_options_are_checked_against() -> None:
    r = cli("generate", "--help")
    assert r.exit_code == 0 and f"Must be in [0, {SEED_MAX}]" in said(r)
