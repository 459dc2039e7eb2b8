"""scripts/gpu_check.sh, the GPU window's one script (issue 19): its CPU path runs the same steps at
tiny sizes (the metamath twin through the default engine, eager and compiled; the autocast bench,
eager and compiled), so the script a GPU session runs has been run end to end before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def test_script_parses_and_says_how_to_use_it():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    usage = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert usage.returncode == 2 and "fetch-wheels | run OUT_DIR" in usage.stderr


@pytest.mark.e2e
def test_cpu_path_runs_every_step(tmp_path):
    env = {**os.environ, "GPU_CHECK_TINY": "1", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), "run", str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=1500)
    summary = (tmp_path / "summary.txt").read_text()
    steps = [line for line in summary.splitlines() if line.startswith("== ") and ": exit " in line]
    assert [s.split(":")[0] for s in steps] == ["== engine_default", "== engine_compiled", "== bench_vit_tiny"], summary
    assert all(": exit 0 " in s for s in steps), summary + proc.stdout[-3000:]
    assert (tmp_path / "bench_vit_tiny" / "bench.md").is_file()
    assert "torch" in summary and "done" in summary
