"""`evaluate_models`: every model on one task (and, with a teacher, its fidelity), side by side."""
from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..io.files import check_output_dir
from ..io.pretrained import check_model_path
from ..io.pretrained import load_pretrained as load_for_eval
from ..io.save import git_sha
from .fidelity import fidelity
from .items import Task
from .kinds import score
from .lm_eval_run import parse_tasks, run_lm_eval, task_manager
from .predict import predict
from .report import model_labels, write_results
from .tasks import load_task
from .text import evaluate_text, is_text_task


def evaluate_models(models: list[str | Path], task: str | Task = "easyvqa", kind: str | None = None,
                    image_root: str | Path | None = None, teacher: str | Path | None = None,
                    limit: int | None = None, batch_size: int = 32, max_new_tokens: int | None = None,
                    suffix: str | None = None, out: str | Path | None = None, force: bool = False,
                    device: str | None = None, dtype: str | None = None,
                    log: Callable[[str], None] | None = None,
                    progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Evaluate ``models`` (paths) on ``task``; returns the report (also written to ``out``).

    ``progress(label, done, total)`` follows each model's items as they are answered.

    Report: ``{"task", "models": [{"label", "path", "kind", "metrics", "fidelity"?, "seconds",
    "items_per_second"}], "teacher", "git_sha", "torch", "date"}``.
    """
    log = log or (lambda message: None)
    if out is not None:
        check_output_dir(Path(out), force)  # fail before the work, not after it
    for path in [*models, *([teacher] if teacher is not None else [])]:
        check_model_path(path)
    if not isinstance(task, Task) and is_text_task(task):  # plain text: fidelity to the teacher only
        report = evaluate_text(models, task, teacher, limit, batch_size, device=device, dtype=dtype, log=log)
        report.update(git_sha=git_sha(), torch=torch.__version__, date=time.strftime("%Y-%m-%d %H:%M:%S"))
        if out is not None:
            write_results(out, report, None, force)
        return report
    if not isinstance(task, Task):
        task = load_task(task, kind, image_root, limit, suffix, max_new_tokens)
    ref = load_for_eval(teacher, device, dtype)[0] if teacher is not None else None
    labels = model_labels(models)
    results, predictions = [], {}
    for label, path in zip(labels, models):
        model, tokenizer, _ = load_for_eval(path, device, dtype)
        log(f"{label}: {model.config.kind}, {model.num_params() / 1e6:.1f}M parameters, {len(task.items)} items")
        t0 = time.perf_counter()
        answers = predict(model, tokenizer, task, batch_size,
                          progress=(lambda done, total: progress(f"eval {label}", done, total)) if progress else None)
        seconds = time.perf_counter() - t0
        metrics, records = score(task, answers)
        entry = {"label": label, "path": str(path), "kind": model.config.kind, "metrics": metrics,
                 "seconds": round(seconds, 3), "items_per_second": round(len(task.items) / max(seconds, 1e-9), 2)}
        if ref is not None:
            entry["fidelity"] = fidelity(ref, model, tokenizer, task, batch_size)
        results.append(entry)
        predictions[label] = records
        log(f"{label}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        del model
        gc.collect()
    report = {"task": task.describe(), "models": results, "teacher": str(teacher) if teacher else None,
              "git_sha": git_sha(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if out is not None:
        write_results(out, report, predictions, force)
    return report


def lm_eval_models(models: list[str | Path], tasks: str | list[str], include_path: str | Path | None = None,
                   limit: int | None = None, batch_size: int = 8, num_fewshot: int | None = None,
                   out: str | Path | None = None, force: bool = False, device: str | None = None,
                   dtype: str | None = None, log: Callable[[str], None] | None = None) -> dict:
    """lm-eval ``tasks`` (names or a comma-separated string) for every model, as one report."""
    log = log or (lambda message: None)
    if out is not None:
        check_output_dir(Path(out), force)
    for path in models:
        check_model_path(path)
    tasks = parse_tasks(tasks) if isinstance(tasks, str) else list(tasks)
    manager = task_manager(tasks, include_path)
    results = []
    for label, path in zip(model_labels(models), models):
        log(f"{label}: lm-eval {', '.join(tasks)}")
        t0 = time.perf_counter()
        entry = {"label": label, "path": str(path)}
        entry.update(run_lm_eval(path, tasks, include_path, limit, batch_size, num_fewshot, device, dtype, manager))
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        results.append(entry)
    report = {"task": None, "lm_eval_tasks": tasks, "include_path": str(include_path) if include_path else None,
              "models": results, "git_sha": git_sha(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if out is not None:
        write_results(out, report, None, force)
    return report
