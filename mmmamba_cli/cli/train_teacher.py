"""`mmmamba train-teacher`: retrain the embedded default teacher on easy-vqa."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import Force, console


def command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output model directory.")] = Path("runs/teacher"),
    recipe: Annotated[str, typer.Option(help="Recipe name in recipes/ or a YAML path.")] = "teacher-easyvqa",
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value recipe overrides, e.g. train.steps=300 optim.lr=1e-3.")] = None,
    force: Force = False,
) -> None:
    """Train the tiny HoVLE-architecture teacher on the easy-vqa train split and report test accuracy."""
    from ..io.files import check_output_dir
    from ..teacher.train import load_teacher_recipe, train_teacher

    r = load_teacher_recipe(recipe, overrides)
    check_output_dir(out, force)  # before the training, not after it
    report = train_teacher(r, out, force=force, log=lambda m: console.print(m, highlight=False, markup=False))
    types = ", ".join(f"{k} {v:.4f}" for k, v in report["test_accuracy_by_type"].items())
    console.print(f"test accuracy [bold]{report['test_accuracy']:.4f}[/] ({types}) -> {out}")
