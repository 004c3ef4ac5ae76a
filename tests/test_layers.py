"""The layer rule (pyproject.toml [tool.importlinter]) holds, and the check catches a back-edge."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def lint(root: Path) -> subprocess.CompletedProcess:
    """lint-imports on the package under ``root`` with ``root``'s pyproject.toml, no cache."""
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", LINT, str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_package_keeps_its_layers():
    res = lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


@pytest.mark.parametrize("module,line,edge", [
    ("model/layout.py", "from ..cli import common", "mmmamba_cli.model.layout -> mmmamba_cli.cli.common"),
    ("hybrid/build.py", "from ..evaluate import fidelity", "mmmamba_cli.hybrid.build -> mmmamba_cli.evaluate"),
    ("lm_eval_model.py", "from .distill import stages", "mmmamba_cli.lm_eval_model -> mmmamba_cli.distill"),
], ids=["upward", "between-features", "integration"])
def test_a_planted_back_edge_breaks_the_contract(tmp_path, module, line, edge):
    shutil.copytree(ROOT / "mmmamba_cli", tmp_path / "mmmamba_cli",
                    ignore=lambda d, names: [n for n in names if n == "__pycache__" or d.endswith("assets")
                                             and n == "teacher"])  # code only, not the weights
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "mmmamba_cli" / module
    target.write_text(target.read_text() + f"\n{line}  # planted\n")
    res = lint(tmp_path)
    assert res.returncode != 0 and "BROKEN" in res.stdout, res.stdout + res.stderr
    assert edge in res.stdout, res.stdout
