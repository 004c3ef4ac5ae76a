"""Every shipped distillation recipe loads, validates, and opens with the command that runs it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmmamba_cli.distill import STAGES, resolve_recipe
from mmmamba_cli.recipe import RECIPE_DIRS, read_yaml

DISTILL = sorted(p for d in RECIPE_DIRS if d.is_dir() for p in d.glob("*-stage[123].yaml"))


def test_the_expected_recipes_ship():
    names = {p.stem for p in DISTILL}
    assert {f"{family}-stage{n}" for family in ("hovle", "tiny", "easyvqa") for n in (1, 2, 3)} <= names


@pytest.mark.parametrize("path", DISTILL, ids=lambda p: p.stem)
def test_distill_recipe_loads_for_its_stage(path: Path):
    n = int(re.search(r"stage([123])$", path.stem).group(1))
    r = resolve_recipe(STAGES[n], path)
    assert r.stage == n
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "distill" in first and f"--stage {n}" in first
    assert set(read_yaml(path)) <= {"stage", "teacher", "data", "optim", "train", "loss"}


@pytest.mark.parametrize("n", [1, 2, 3])
def test_hovle_recipes_carry_the_paper_values(n):
    r = resolve_recipe(STAGES[n], "hovle")
    paper = {1: (1e-3, 20_000, 128), 2: (5e-4, 20_000, 128), 3: (5e-5, 20_000, 64)}[n]
    assert (r.optim.lr, r.train.steps, r.train.global_batch) == paper
    assert (r.optim.betas, r.optim.weight_decay, r.optim.warmup, r.optim.decay) == ([0.9, 0.999], 0.05, 0.1, 0.1)
    assert r.train.precision == "bf16" and r.loss.mse_factor == 1000.0 and r.loss.temperature == 1.0
    # the stage table's defaults are the same paper values: no recipe needed to get them
    d = resolve_recipe(STAGES[n], None)
    assert (d.optim.lr, d.train.steps, d.train.global_batch) == paper
