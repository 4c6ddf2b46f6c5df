"""The library example runs end to end (guards the public API it shows against drift)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
def test_library_api_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("library_api", EXAMPLES / "library_api.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(tmp_path)
    out = capsys.readouterr().out
    assert "dataset: (90, 64, 64)" in out
    assert "standard=False" in out  # random features are labelled as such
    assert (tmp_path / "runs" / "lib" / "config.json").is_file()


def test_reproduce_script_is_valid_bash() -> None:
    import subprocess

    r = subprocess.run(["bash", "-n", str(EXAMPLES / "reproduce_paper.sh")], capture_output=True)
    assert r.returncode == 0, r.stderr
