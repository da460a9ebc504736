"""Smoke test of bench/updates.py: a quick eager SAC run prints a positive updates/s (no figure is checked)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_sac_run_prints_a_positive_rate():
    command = [sys.executable, str(ROOT / "bench" / "updates.py"), "--quick", "--no-compile", "--agents", "sac"]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = re.search(r"^sac\s+eager\s+([0-9.]+)\s+([0-9.]+)", proc.stdout, re.MULTILINE)
    assert row is not None, proc.stdout
    assert float(row.group(1)) > 0 and float(row.group(2)) > 0
    assert not re.search(r"^sac\s+compile", proc.stdout, re.MULTILINE)  # --no-compile: no compiled row
