"""`mmmamba distill`: run distillation stages inside a run directory, with a Rich progress bar."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from .common import DEFAULT_RUN_DIR, Force, RunDir, console, err_console, run_app

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
        "--data", help="Training data: InternVL-style jsonl, or easyvqa:train.")] = None,
    image_root: Annotated[Optional[Path], typer.Option(
        "--image-root", help="Folder relative image paths start from (default: the jsonl's folder).")] = None,
    teacher: Annotated[Optional[Path], typer.Option(
        "--teacher", help="Teacher model (default: the one recorded when the student was seeded).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted stage from its last checkpoint (skip finished stages).")] = False,
    strict: Annotated[Optional[bool], typer.Option(
        "--strict/--no-strict", help="Stop at the first unreadable record instead of skipping it.")] = None,
    force: Force = False,
) -> None:
    """Distil a seeded student in 3 stages: layer-wise MSE (1, 2), then end-to-end KL (3)."""
    from ..distill import run_stages
    from ..errors import UserError

    if stage not in STAGE_CHOICES:
        raise UserError(f"--stage {stage!r}: choose one of {', '.join(STAGE_CHOICES)}")
    stages = (1, 2, 3) if stage == "all" else (int(stage),)
    with _progress_view() as progress:
        try:
            outs = run_stages(run_dir, stages, recipe, overrides, data=data, image_root=image_root, strict=strict,
                              teacher=teacher, resume=resume, force=force, progress=progress,
                              log=lambda m: progress.log(m))
        except KeyboardInterrupt:
            err_console.print(f"interrupted; continue with `mmmamba distill --stage {stage} -r {run_dir} --resume`")
            raise typer.Exit(130) from None
    from accelerate import PartialState

    if PartialState().is_main_process:
        for out in outs:
            console.print(f"-> [bold]{out}[/]")


class _progress_view:
    """Rich progress bar fed by the library's StepReport callback (only the main process gets calls)."""

    def __enter__(self):
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                            TextColumn("{task.completed}/{task.total}  loss {task.fields[loss]:.4g}  "
                                       "lr {task.fields[lr]:.2e}  {task.fields[tps]:.0f} tok/s  ETA {task.fields[eta]}"),
                            console=console, transient=False)
        self.tasks: dict[str, int] = {}
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def __call__(self, r) -> None:
        if r.stage not in self.tasks:
            self.tasks[r.stage] = self.bar.add_task(r.stage, total=r.steps, loss=0.0, lr=0.0, tps=0.0, eta="?")
        eta = f"{int(r.eta_s // 3600)}:{int(r.eta_s % 3600 // 60):02d}:{int(r.eta_s % 60):02d}"
        self.bar.update(self.tasks[r.stage], completed=r.step, loss=r.loss, lr=r.lr, tps=r.tokens_per_s, eta=eta)

    def log(self, message: str) -> None:
        self.bar.console.print(f"[dim]{message}", highlight=False)


def main() -> None:
    """Entry point of `python -m mmmamba_cli.distill`: this command alone, errors as one line."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(command)
    run_app(app)
