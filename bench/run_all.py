"""Run every benchmark in bench/ one after another (`make bench`; `--quick` for short runs).

Each bench prints its own table and writes its numbers; bench/RESULTS.md collects them with
the machine they were measured on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ["collect.py", "preprocess.py", "train_step.py", "conv_step.py", "refine_step.py",
           "d_bands.py", "filter.py", "fid.py"]


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for name in BENCHES:
        script = here / name
        if not script.is_file():
            print(f"[skip] {name}: not present")
            continue
        print(f"\n=== {name} ===", flush=True)
        rc = subprocess.call([sys.executable, str(script), *sys.argv[1:]])
        if rc != 0:
            failed.append(f"{name} (exit {rc})")
    if failed:
        print("failed: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
