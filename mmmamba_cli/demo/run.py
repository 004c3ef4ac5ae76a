"""`mmmamba demo`: the whole method on the embedded default teacher, end to end.

Layout of the run directory::

    linear/seed, linear/stage1, linear/stage2, linear/stage3   # the linear student
    hybrid/stage2 (hybridized linear/stage2), hybrid/stage3    # the hybrid student
    eval/  bench/  report.md  report.png  report.json  resolved.json
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .recipe import DemoRecipe


def run_demo(recipe: DemoRecipe, out: str | Path, force: bool = False,
             log: Callable[[str], None] = print, progress: Callable | None = None) -> dict:
    """Run the pipeline into ``out`` and return the report (also written as report.json).

    ``progress`` receives the distillation stages' per-step reports (``distill.StepReport``).
    """
    from ..assets import default_teacher
    from ..io.files import check_output_dir, write_json_atomic
    from ..io.save import git_sha
    from ..recipe import to_dict

    import torch

    torch.set_num_threads(1)  # the default models are tiny: one thread is as fast, and robust on a busy CPU
    out = Path(out)
    check_output_dir(out, force)
    if out.exists():
        import shutil
        shutil.rmtree(out)
    out.mkdir(parents=True)
    teacher = Path(recipe.teacher) if recipe.teacher else default_teacher()
    write_json_atomic(out / "resolved.json", {"command": "demo", "recipe": to_dict(recipe), "teacher": str(teacher),
                                              "git_sha": git_sha(), "date": time.strftime("%Y-%m-%d %H:%M")})
    timings: dict[str, float] = {}

    def timed(name: str, fn, *a, **kw):
        t0 = time.time()
        log(f"[{name}] ...")
        res = fn(*a, **kw)
        timings[name] = round(time.time() - t0, 1)
        log(f"[{name}] done in {timings[name]:.0f} s")
        return res

    linear, hybrid = out / "linear", out / "hybrid"
    timed("seed", _seed, teacher, linear / "seed", recipe.seed)
    for stage in (1, 2, 3):
        timed(f"linear stage {stage}", _distill, linear, stage, recipe, log, progress)
    timed("hybridize", _hybridize, linear / "stage2", hybrid / "stage2", teacher, recipe.hybrid.every, recipe.seed)
    timed("hybrid stage 3", _distill, hybrid, 3, recipe, log, progress)
    models = {"teacher": teacher, "linear": linear / "stage3", "hybrid": hybrid / "stage3"}
    if recipe.eval.seeded:
        models["seeded"] = linear / "seed"
    ev = timed("eval", _evaluate, models, teacher, out / "eval", recipe.eval.limit, log)
    bench = (timed("bench", _bench, teacher, recipe.bench.tokens, out / "bench", log)
             if recipe.bench.enabled else None)
    from .report import build_report, write_report

    report = build_report(models, ev, bench, timings, recipe)
    write_report(report, out)
    return report


def _seed(teacher: Path, out: Path, seed: int) -> None:
    from ..seed import seed_directory

    seed_directory(teacher, out, seed=seed)


def _distill(run_dir: Path, stage: int, recipe: DemoRecipe, log, progress) -> Path:
    from ..distill.run_dir import run_stage

    return run_stage(run_dir, stage, recipe=recipe.distill.recipe,
                     overrides=list(recipe.distill.overrides), progress=progress, log=log)


def _hybridize(student: Path, out: Path, teacher: Path, every: int, seed: int) -> None:
    from ..hybrid import LayoutRequest, hybridize_directory

    hybridize_directory(student, out, LayoutRequest(every=every, offset=0), teacher=teacher, seed=seed)


def _evaluate(models: dict[str, Path], teacher: Path, out: Path, limit, log) -> dict:
    """easy-vqa test accuracy of every model; entries keyed by our labels (teacher, linear, ...)."""
    from ..evaluate import evaluate_models

    labels = list(models)
    report = evaluate_models([str(models[k]) for k in labels], task="easyvqa", limit=limit, out=out, force=True,
                             log=log)
    return {label: entry for label, entry in zip(labels, report["models"])}


def _bench(teacher: Path, tokens: list[int], out: Path, log) -> dict:
    from ..bench.runner import run_bench, write_results
    from ..bench.settings import bench_settings

    settings = bench_settings({"sweep": {"tokens": list(tokens)}, "models": {"model_dir": str(teacher)},
                               "fixed_prompt": {"enabled": False}})
    result = run_bench(settings, log=log, command="mmmamba demo")
    write_results(result, out, force=True)
    return result

