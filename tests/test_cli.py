"""The `cxraug` entry point as a whole: version, command list, help of every command, and the
documented exit codes (README.md and cxraug.core.errors must agree)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxraug import __version__
from cxraug.cli import app
from cxraug.core import errors

COMMANDS = ("collect", "preprocess", "train", "generate", "filter", "fid", "evaluate", "export")
runner = CliRunner()


def test_version() -> None:
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0
    assert r.output.strip() == f"cxraug {__version__}"


def test_help_lists_every_stage() -> None:
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    registered = [c.name for c in app.registered_commands]
    assert registered == list(COMMANDS)  # pipeline order, and no command left out of COMMANDS
    summary = " ".join((app.info.help or "").split())  # the text above the command list
    for c in COMMANDS:
        assert re.search(rf"\b{c}\b", r.output), c
        assert re.search(rf"\b{c}\b", summary), f"the app's help omits {c}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "--workspace" in r.output or command == "fid"


def test_unknown_command_is_a_usage_error() -> None:
    r = runner.invoke(app, ["frobnicate"])
    assert r.exit_code == errors.EXIT_USAGE


def test_readme_documents_the_exit_codes() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", readme, flags=re.M))
    codes = {v for k, v in vars(errors).items()
             if k.startswith("EXIT_") and isinstance(v, int)}  # every EXIT_* code
    assert {0, 1, 2, 3, 4, 5, 6, 7, 130} <= codes
    assert {int(c) for c in table} == codes


def test_app_help_names_every_exit_code() -> None:
    """`cxraug --help` lists each EXIT_* code with its words (core/errors.EXIT_WORDS)."""
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    text = " ".join(r.output.replace("│", " ").split())
    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_") and isinstance(v, int)}
    assert set(errors.EXIT_WORDS) == codes
    for code, words in errors.EXIT_WORDS.items():
        assert f"{code} {words}" in text


def test_python_dash_m_and_quiet_help() -> None:
    """`python -m cxraug` works, and --help does not start TensorFlow (no log noise, fast)."""
    r = subprocess.run([sys.executable, "-m", "cxraug", "train", "--help"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0
    assert "ITERATIONS" in r.stdout
    assert "oneDNN" not in r.stderr and "cuda" not in r.stderr.lower()


def test_tensorflow_start_up_is_quiet_but_can_be_shown() -> None:
    code = ("import cxraug.train, cxraug.generate; from cxraug.core.tf_setup import tf; "
            "tf.ones(1)")
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=180)  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert "oneDNN" not in quiet.stderr, quiet.stderr
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=180, env={**os.environ,
                                            "CXRAUG_TF_VERBOSE": "1"})  # fmt: skip
    assert loud.returncode == 0
    assert "oneDNN" in loud.stderr  # the lines exist: we only hide them by default


@pytest.mark.parametrize(
    ("exc", "code", "prefix"),
    [(errors.InputError("bad row 3"), 3, "error:"),
     (errors.NumericError("NaN loss"), 5, "error:"),
     (OSError(28, "No space left on device", "/ws/manifest.csv"), 6,
      "error: system error on /ws/manifest.csv: No space left on device (ENOSPC); free space"),
     (PermissionError(13, "Permission denied", "/ro/processed"), 6,
      "error: system error on /ro/processed: Permission denied (EACCES); check that you may"),
     (OSError(30, "Read-only file system", "/ro/runs"), 6,
      "error: system error on /ro/runs: Read-only file system (EROFS); that file system is "
      "read-only")],
)  # fmt: skip
def test_handle_errors_maps_exit_codes_and_prefix(exc: Exception, code: int, prefix: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from cxraug.cli import handle_errors

    def boom() -> None:
        raise exc

    with pytest.raises(typer.Exit) as ei:
        handle_errors(boom)()
    assert ei.value.exit_code == code
    text = capsys.readouterr().err
    if isinstance(exc, errors.CxrError):
        assert text.startswith(f"{prefix} {exc}")
    else:  # one line (no traceback), what failed, where, what to do
        assert " ".join(text.split()).startswith(prefix), text
        assert "Traceback" not in text and text.count("\n") == 1, text


def test_interruption_is_not_called_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from cxraug.cli import handle_errors
    from cxraug.train import TrainingInterrupted

    def stop() -> None:
        raise TrainingInterrupted("training interrupted at iteration 7; checkpoint saved")

    with pytest.raises(typer.Exit) as ei:
        handle_errors(stop)()
    assert ei.value.exit_code == errors.EXIT_INTERRUPTED
    assert capsys.readouterr().err.startswith("interrupted: training interrupted at iteration 7")


def test_a_path_option_does_not_swallow_the_next_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fid ... --sheet --json` once wrote a PNG named `--json` and printed no JSON."""
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["fid", "a", "b", "-w", str(tmp_path), "--sheet", "--json"])
    assert r.exit_code == 2, r.output
    assert "--sheet --json: looks like an option" in r.output
    assert not (tmp_path / "--json").exists()
    # a file whose name starts with '-' is still reachable with its folder
    r = runner.invoke(app, ["fid", "a", "b", "-w", str(tmp_path), "--sheet",
                            str(tmp_path / "-s.png")])  # fmt: skip
    assert "looks like an option" not in r.output


@pytest.mark.parametrize(
    "bad",
    [["--seeds", "0"], ["--bootstrap", "99"], ["--size", "513"], ["--val-fraction", "0.9"],
     ["--steps", "x"], ["--frobnicate"]],
)  # fmt: skip
def test_evaluate_refuses_a_bad_option_before_anything_is_written(
    tmp_path: Path, bad: list[str]
) -> None:
    """A number out of its range (or not a number, or an unknown option) is a usage error,
    exit 2, before the workspace is read or written: no evaluations/ folder, no lock file."""
    r = runner.invoke(app, ["evaluate", "-w", str(tmp_path), *bad])
    assert r.exit_code == errors.EXIT_USAGE, r.output
    assert bad[0] in r.output
    assert list(tmp_path.iterdir()) == []


def test_evaluate_help_names_its_outputs_and_skip_exit_code() -> None:
    r = runner.invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", r.output).split())  # rich's boxes out
    for option in ("--arms", "--seeds", "--cues", "--name", "--force", "--json"):
        assert option in text, option
    assert "evaluations/NAME/" in text and "Exit 1 when an arm or a test set had to be" in text
