"""A run directory chains the stages: ``RUN/seed`` -> ``RUN/stage1`` -> ``RUN/stage2`` -> ``RUN/stage3``.

Each stage reads the previous entry by itself (``Stage.source``); ``RUN/data`` holds generated
data files (easy-vqa). Recipes of every requested stage are validated before the first one runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..recipe import merge, parse_overrides
from .loop import StepReport
from .pipeline import distill_model, has_checkpoints, work_dir_for
from .schema import DistillRecipe, default_recipe, resolve_recipe, split_stage_overrides
from .stages import STAGES, Stage, get_stage


def cli_overrides(data=None, image_root=None, strict: bool | None = None, overrides=None) -> dict:
    """Options (--data, --image-root, --strict) plus ``key=value`` overrides as one override dict."""
    opts = {"path": str(data) if data is not None else None,
            "image_root": str(image_root) if image_root is not None else None, "strict": strict}
    section = {k: v for k, v in opts.items() if v is not None}
    return merge({"data": section} if section else {}, parse_overrides(overrides))


def check_run_dir(run_dir: Path) -> None:
    if not Path(run_dir).is_dir():
        raise UserError(f"run directory {run_dir} does not exist; create it with `mmmamba seed -r {run_dir}`")


def check_source(run_dir: Path, stage: Stage) -> Path:
    """The model directory ``stage`` starts from, or a UserError saying which command makes it."""
    source = run_dir / stage.source
    if (source / "config.json").exists():
        return source
    if stage.source == "seed":
        raise UserError(f"{run_dir} has no seed/ model; create it with `mmmamba seed -r {run_dir}`")
    prev = int(stage.source.removeprefix("stage"))
    partial = " (it was interrupted: finish it with --resume)" if has_checkpoints(work_dir_for(source)) else ""
    raise UserError(f"{stage.name} starts from stage {prev}'s result {source}, which does not exist{partial}; "
                    f"run `mmmamba distill --stage {prev} -r {run_dir}` first")


def _config_of(model_dir: Path):
    from ..io.load import config_from_json, read_config_json

    return config_from_json(read_config_json(model_dir / "config.json"), model_dir / "config.json")


def _run_config(run_dir: Path):
    """The config of the first model found in the run directory (they all share the vision setting)."""
    for name in ("seed", "stage1", "stage2", "stage3"):
        if (run_dir / name / "config.json").exists():
            return _config_of(run_dir / name)
    return None


def run_stage(run_dir: str | Path, stage: int, recipe: DistillRecipe | dict | str | None = None, overrides=None, *,
              data=None, image_root=None, strict: bool | None = None, teacher=None, resume: bool = False,
              force: bool = False, progress: Callable[[StepReport], None] | None = None,
              log: Callable[[str], None] | None = None) -> Path:
    """Run one stage inside ``run_dir``; returns its final model directory ``run_dir/stage{N}``."""
    run_dir, st = Path(run_dir), get_stage(stage)
    check_run_dir(run_dir)
    source = check_source(run_dir, st)
    if recipe is None:
        recipe = default_recipe(_config_of(source))
    r = resolve_recipe(st, recipe, cli_overrides(data, image_root, strict, overrides))
    return distill_model(source, run_dir / st.name, st, r, teacher=teacher, resume=resume, force=force,
                         data_dir=run_dir / "data", progress=progress, log=log)


def run_stages(run_dir: str | Path, stages=(1, 2, 3), recipe=None, overrides=None, *, data=None, image_root=None,
               strict: bool | None = None, teacher=None, resume: bool = False, force: bool = False,
               progress=None, log=None) -> list[Path]:
    """Run several stages in order (``--stage all``). With ``resume``, finished stages are skipped
    and an interrupted one continues."""
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    overrides, per_stage = split_stage_overrides(overrides, tuple(stages))
    if recipe is None:
        recipe = default_recipe(_run_config(run_dir))
    recipes = {n: resolve_recipe(get_stage(n), recipe, merge(cli_overrides(data, image_root, strict, overrides),
                                                             parse_overrides(per_stage.get(n))))
               for n in stages}  # every error before any work
    outs = []
    for n in stages:
        out = run_dir / STAGES[n].name
        if resume and not force and (out / "config.json").exists() and not has_checkpoints(work_dir_for(out)):
            if log:
                log(f"{out} is complete; skipping stage {n}")
            outs.append(out)
            continue
        outs.append(run_stage(run_dir, n, recipes[n], teacher=teacher, resume=resume, force=force,
                              progress=progress, log=log))
    return outs
