"""Run one part of a benchmark in its own subprocess (own peak RSS, no thread interference)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_part(script: str, args: list[str]) -> dict[str, Any]:
    """`python SCRIPT --part ARGS...`; its last stdout line is the part's JSON result."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.run([sys.executable, script, "--part", *args], capture_output=True,
                       text=True, env=env)  # fmt: skip
    if p.returncode:
        raise SystemExit(f"part {args} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])
