"""`mmmamba distill`: run distillation stages inside a run directory, with progress (cli/progress.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import DEFAULT_RUN_DIR, Force, RunDir, TrustRemoteCode, console, err_console, run_app
from .progress import step_progress

STAGE_CHOICES = ("1", "2", "3", "all")


def command(
    stage: Annotated[str, typer.Option("--stage", "-s", help="Stage to run: 1, 2, 3 or all (1 -> 2 -> 3).")],
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Recipe overrides key=value with dotted keys, e.g. optim.lr=5e-4 train.steps=100; "
             "stageN.KEY=VALUE applies to stage N only (stage1.train.steps=100).")] = None,
    run_dir: RunDir = DEFAULT_RUN_DIR,
    recipe: Annotated[Optional[str], typer.Option(
        "--recipe", help="Recipe name in recipes/ (NAME-stageN.yaml or NAME.yaml) or a YAML path "
                         "(default: llm for a text-only model, else the stage's HoVLE paper values).")] = None,
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Training data: InternVL-style jsonl, a .txt file, a directory of shards, or easyvqa:train.")] = None,
    image_root: Annotated[Optional[Path], typer.Option(
        "--image-root", help="Folder relative image paths start from (default: the jsonl's folder).")] = None,
    teacher: Annotated[Optional[Path], typer.Option(
        "--teacher", help="Teacher model (default: the one recorded when the student was seeded).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted stage from its last checkpoint (skip finished stages).")] = False,
    strict: Annotated[Optional[bool], typer.Option(
        "--strict/--no-strict", help="Stop at the first unreadable record instead of skipping it.")] = None,
    force: Force = False,
    trust_remote_code: TrustRemoteCode = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print memory per process and tokens per step for each stage, then stop.")] = False,
    processes: Annotated[int, typer.Option(
        "--processes", help="With --dry-run: the number of training processes to plan for.")] = 1,
) -> None:
    """Distil a seeded student in 3 stages: layer-wise MSE (1, 2), then end-to-end KL (3)."""
    from ..distill import run_stages
    from ..errors import UserError
    from ..io.tokenizer import allow_remote_code

    if stage not in STAGE_CHOICES:
        raise UserError(f"--stage {stage!r}: choose one of {', '.join(STAGE_CHOICES)}")
    stages = (1, 2, 3) if stage == "all" else (int(stage),)
    if dry_run:
        from ..distill.estimate import estimate_run
        from ..distill.run_dir import cli_overrides

        extra = cli_overrides(data, image_root, strict, overrides)
        with allow_remote_code(trust_remote_code):  # the estimate reads the data with the model's tokenizer
            for n in stages:
                for line in estimate_run(run_dir, n, recipe, extra, processes, teacher).lines():
                    console.print(line, highlight=False)
        return
    with step_progress() as progress, allow_remote_code(trust_remote_code):
        try:
            outs = run_stages(run_dir, stages, recipe, overrides, data=data, image_root=image_root, strict=strict,
                              teacher=teacher, resume=resume, force=force, progress=progress,
                              log=progress.log)
        except KeyboardInterrupt:
            err_console.print(f"interrupted; continue with `mmmamba distill --stage {stage} -r {run_dir} --resume`")
            raise typer.Exit(130) from None
    from accelerate import PartialState

    if PartialState().is_main_process:
        for out in outs:
            console.print(f"-> [bold]{out}[/]")


def main() -> None:
    """Entry point of `python -m mmmamba_cli.distill`: this command alone, errors as one line."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(command)
    run_app(app)
