"""The built wheel installs into a fresh venv and runs from outside the checkout (.ci/wheel_smoke.sh:
`mmmamba distill --help`, the shipped recipes inside the package, a short `mmmamba demo`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # minutes: builds the wheel, installs its dependencies into a new venv (torch from disk)
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the checkout's files")
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PY"] = sys.executable
    res = subprocess.run(["bash", str(ROOT / ".ci" / "wheel_smoke.sh"), str(tmp_path / "smoke")], env=env,
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "wheel smoke: ok" in res.stdout
    assert (tmp_path / "smoke" / "elsewhere" / "demo" / "report.json").exists()
