"""`mmmamba eval --lm-eval TASKS`: lm-evaluation-harness tasks through the ``mmmamba`` model."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError

SKIP = ("alias", "samples")


def parse_tasks(spec: str) -> list[str]:
    tasks = [t.strip() for t in spec.split(",") if t.strip()]
    if not tasks:
        raise UserError("--lm-eval needs at least one task name")
    return tasks


def task_manager(tasks: list[str], include_path: str | Path | None = None):
    """lm-eval's TaskManager: the ``include_path`` tasks alone when they are all that is asked for
    (indexing lm-eval's thousands of built-in task files takes seconds), else with the built-ins.
    Unknown names are a UserError."""
    from lm_eval.tasks import TaskManager  # deferred: lm-eval is slow to import

    if include_path is not None and not Path(include_path).is_dir():
        raise UserError(f"--include-path {include_path} is not a directory")
    if include_path is not None:
        local = TaskManager(include_path=str(include_path), include_defaults=False)
        if not _unknown(local, tasks):
            return local
    manager = TaskManager(include_path=str(include_path) if include_path is not None else None)
    unknown = _unknown(manager, tasks)
    if unknown:
        raise UserError(f"unknown lm-eval task(s): {', '.join(unknown)}"
                        + ("" if include_path else " (local task definitions need --include-path DIR)"))
    return manager


def _unknown(manager, tasks: list[str]) -> list[str]:
    known = set(manager.all_tasks)
    return [t for t in tasks if t not in known and not manager.match_tasks([t]) and not Path(t).is_file()]


def run_lm_eval(model: str | Path, tasks: list[str], include_path: str | Path | None = None,
                limit: int | None = None, batch_size: int = 8, num_fewshot: int | None = None,
                device: str | None = None, dtype: str | None = None, manager=None) -> dict:
    """``{"lm_eval": {task: {metric: value}}, "lm_eval_stderr": {...}, "versions", "n_samples"}``."""
    from lm_eval import simple_evaluate  # deferred: lm-eval is slow to import

    from ..lm_eval_model import MMambaLM  # deferred: imports lm-eval

    manager = manager or task_manager(tasks, include_path)
    lm = MMambaLM(pretrained=str(model), batch_size=batch_size, device=device, dtype=dtype)
    raw = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                          log_samples=False, bootstrap_iters=1000)
    values, stderr = {}, {}
    for task, metrics in raw["results"].items():
        for key, value in metrics.items():
            if key in SKIP or not isinstance(value, (int, float)):
                continue
            name, _, filt = key.partition(",")
            name = name if filt in ("", "none") else f"{name}[{filt}]"
            target = stderr if name.endswith("_stderr") or "_stderr[" in name else values
            target.setdefault(task, {})[name] = float(value)
    return {"kind": lm.model.config.kind, "lm_eval": values, "lm_eval_stderr": stderr,
            "versions": raw.get("versions", {}), "n_samples": raw.get("n-samples", {})}
