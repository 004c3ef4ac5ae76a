"""`mmmamba eval`: teacher, linear and hybrid side by side on a benchmark, their fidelity to the
teacher, or lm-eval tasks; one column per model."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import DEFAULT_RUN_DIR, Force, Out, TrustRemoteCode, console
from .progress import step_progress

Models = Annotated[list[Path], typer.Argument(
    help="Model directories (or state-dict files) to compare, one column each.", show_default=False)]


def command(
    models: Models,
    task: Annotated[Optional[str], typer.Option(
        "--task", "-t", help="easyvqa (built-in test split), a .jsonl file, or a VLM-evaluation-kit .tsv file "
                             "(MME, POPE, MMBench, ScienceQA, ...), or plain text ({\"text\"} jsonl or .txt, "
                             "with --teacher). Default: easyvqa, unless --lm-eval.")] = None,
    kind: Annotated[Optional[str], typer.Option(
        "--kind", help="vqa (normalised exact match) | mc (option letters) | yesno (POPE metrics); "
                       "default: guessed from the data.")] = None,
    image_root: Annotated[Optional[Path], typer.Option(
        "--image-root", help="Folder that relative image paths start from (default: the task file's).")] = None,
    teacher: Annotated[Optional[Path], typer.Option(
        "--teacher", help="Teacher model: adds per-token KL, top-1 agreement and perplexity on the task's items.")]
    = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="Use only the first N items.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Prompts per batch (left-padded).")] = 32,
    max_new_tokens: Annotated[Optional[int], typer.Option(
        "--max-new-tokens", help="Answer length limit (default: the task kind's).")] = None,
    suffix: Annotated[Optional[str], typer.Option(
        "--suffix", help="Text appended to every question (default: the task kind's; '' for none).")] = None,
    lm_eval: Annotated[Optional[str], typer.Option(
        "--lm-eval", help="Comma-separated lm-eval task names to run through the 'mmmamba' lm-eval model.")] = None,
    include_path: Annotated[Optional[Path], typer.Option(
        "--include-path", help="Folder of extra lm-eval task definitions (YAML).")] = None,
    num_fewshot: Annotated[Optional[int], typer.Option("--num-fewshot", help="lm-eval few-shot examples.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: auto).")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="float32 | bfloat16 | float16 (default: stored).")]
    = None,
    out: Out = None,
    run_dir: Annotated[Path, typer.Option("--run-dir", "-r", help="Results go to RUN/eval/<task> without --out.")]
    = DEFAULT_RUN_DIR,
    force: Force = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Evaluate models on a benchmark (and their fidelity to a teacher) or on lm-eval tasks."""
    from ..errors import UserError
    from ..evaluate import evaluate_models, lm_eval_models
    from ..evaluate.report import table
    from ..io.files import check_output_dir
    from ..io.tokenizer import allow_remote_code

    if not models:
        raise UserError("give at least one MODEL")
    if lm_eval is not None and teacher is not None and task is None:
        raise UserError("--teacher measures fidelity on a --task; it does not apply to --lm-eval alone")
    both = lm_eval is not None and task is not None
    done = []  # (report, output directory)
    task = (task or "easyvqa") if task is not None or lm_eval is None else None
    targets = {}
    if task is not None:
        targets["task"] = (out or run_dir / "eval") / Path(task).stem if both or out is None else out
    if lm_eval is not None:
        targets["lm_eval"] = (out or run_dir / "eval") / "lm-eval" if both or out is None else out
    for target in targets.values():
        check_output_dir(target, force)  # every output location before any work
    with step_progress() as progress, allow_remote_code(trust_remote_code):
        common = dict(limit=limit, batch_size=batch_size, force=force, device=device, dtype=dtype, log=progress.log)
        if task is not None:  # first: bad task data fails fast
            done.append((evaluate_models(models, task, kind=kind, image_root=image_root, teacher=teacher,
                                         max_new_tokens=max_new_tokens, suffix=suffix, out=targets["task"],
                                         progress=progress.count, **common), targets["task"]))
        if lm_eval is not None:
            progress.phase("lm-eval")
            done.append((lm_eval_models(models, lm_eval, include_path=include_path, num_fewshot=num_fewshot,
                                        out=targets["lm_eval"], **common), targets["lm_eval"]))
    for report, target in done:
        console.print(_rich_table(report, table))
        console.print(f"results -> [bold]{target}[/] (results.json, results.md)")


def _rich_table(report: dict, table) -> Table:
    labels, rows = table(report)
    t = report.get("task")
    title = f"{t['name']} ({t['kind']}, {t['items']} items)" if t else "lm-eval: " + ", ".join(report["lm_eval_tasks"])
    grid = Table(title=title)
    grid.add_column("metric")
    for label in labels:
        grid.add_column(label, justify="right")
    for name, values in rows:
        grid.add_row(name, *values)
    return grid
