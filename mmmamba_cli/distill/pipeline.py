"""Distil one stage on an arbitrary (student, teacher, output) triple.

While it runs, a stage lives in ``OUT.partial/`` (``recipe.json``, ``metrics.jsonl``,
``checkpoints/``); when it finishes, ``OUT/`` appears at once as a complete, loadable model
directory (every tensor, tokenizer files, ``resolved.json`` with the recipe and git SHA,
``metrics.jsonl``, ``train_summary.json``) and ``OUT.partial/`` is removed.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Callable

import torch

from ..errors import UserError
from ..io.files import atomic_dir, write_json_atomic
from ..io.load import load_model
from ..io.save import git_sha, write_model_files
from ..io.student import recorded_teacher, student_config
from ..io.tokenizer import load_tokenizer
from ..model.compat import check_teacher
from ..model.device import resolve_dtype
from ..recipe import to_dict
from ..io.files import check_writable_parent
from .checkpoint import list_checkpoints
from .data import load_dataset, resolve_data_path
from .guard import AFTER_DIVERGENCE, diverged_before
from .loop import METRICS, StepReport, TrainJob, make_accelerator, train
from .schema import DistillRecipe, default_recipe, resolve_recipe
from .sharding import full_tensors
from .stages import Stage, get_stage

# recipe keys that may change when resuming (they do not change the numbers)
RESUME_FREE = {"train.save_every", "train.keep_checkpoints", "train.threads", "data.num_workers", "data.strict",
               "data.image_root", "data.num_proc", "data.cache_dir", "train.sharding"}


def work_dir_for(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".partial")


def distill_model(student: str | Path, out: str | Path, stage: int | Stage, recipe=None, overrides=None, *,
                  teacher: str | Path | None = None, resume: bool = False, force: bool = False,
                  data_dir: str | Path | None = None, progress: Callable[[StepReport], None] | None = None,
                  log: Callable[[str], None] | None = None) -> Path:
    """Run ``stage`` on the student model directory ``student``; the result is the model directory ``out``.

    ``recipe``: a DistillRecipe, a dict, a recipe name or path, or None (``llm`` for a text-only
    student, else the stage's defaults);
    ``overrides``: ``["optim.lr=1e-4", ...]`` or a dict, applied last. ``teacher`` replaces the
    teacher recorded in the student's config. Returns ``out``.
    """
    stage = stage if isinstance(stage, Stage) else get_stage(stage)
    config = student_config(Path(student))  # read before any weights: bad input fails fast
    r = resolve_recipe(stage, recipe if recipe is not None else default_recipe(config), overrides)
    if teacher is not None:
        r = dataclasses.replace(r, teacher=str(teacher))
    stage = stage.with_roles(r.train.trains)
    out, work = Path(out), work_dir_for(Path(out))
    _check_dirs(stage, out, work, resume, force)
    teacher_path, _ = recorded_teacher(config, r.teacher, Path(student))
    if r.train.threads:
        torch.set_num_threads(r.train.threads)
    accelerator = make_accelerator(r.train)
    main = accelerator.is_main_process
    data_dir = Path(data_dir) if data_dir else out.parent / "data"
    data_path = resolve_data_path(r.data.path, data_dir, main)
    accelerator.wait_for_everyone()
    dataset, stats = load_dataset(data_path, r.data, load_tokenizer(Path(student)), config,
                                  Path(r.data.cache_dir) if r.data.cache_dir else data_dir, accelerator,
                                  log if main else None)
    student_model, student_dtype = _load_student(Path(student))
    teacher_model = _load_teacher(teacher_path, student_model, r)
    resolved = {"command": "distill", "stage": stage.number, "student": str(Path(student).resolve()),
                "teacher": str(teacher_path), "data": str(data_path), "out": str(out),
                "recipe": to_dict(r), "data_stats": dataclasses.asdict(stats), "git_sha": git_sha()}
    if main:
        _prepare_work(work, resume, resolved)
    accelerator.wait_for_everyone()
    pad = student_model.config.pad_token_id if student_model.config.pad_token_id is not None else 0
    job = TrainJob(stage, r, student_model, teacher_model, dataset, work, pad)
    try:
        summary = train(job, accelerator, resume, progress, log if main else None)
    except BaseException:
        if main:
            drop_stale_work(work)
        raise
    weights = student_model.state_dict()
    if summary.get("sharding", "none") != "none":  # every process gathers the shards; the main process writes
        weights = full_tensors(weights, keep=main)
    if main:
        _write_output(out, work, student_model.config, weights, student_dtype, Path(student), resolved, summary,
                      force)
    accelerator.wait_for_everyone()
    return out


def _check_dirs(stage: Stage, out: Path, work: Path, resume: bool, force: bool) -> None:
    if out.exists() and not force:
        hint = " (the stage already finished)" if resume else ""
        if work.exists():
            hint += f" (and a stale {work.name} from an interrupted run is next to it)"
        raise UserError(f"output directory {out} already exists{hint}; use --force to run {stage.name} again")
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is a file, not a directory")
    if has_checkpoints(work) and not (resume or force):
        raise UserError(f"an interrupted run of {stage.name} is in {work}; pass --resume to continue it "
                        "or --force to start over")
    check_writable_parent(out)


def has_checkpoints(work: Path) -> bool:
    """A work directory worth resuming holds at least one checkpoint; one without is stale."""
    return Path(work).is_dir() and bool(list_checkpoints(work))


def drop_stale_work(work: Path) -> None:
    """A run that failed before its first checkpoint leaves nothing to resume: remove its work dir."""
    if Path(work).is_dir() and not has_checkpoints(work):
        shutil.rmtree(work, ignore_errors=True)


def _load_student(path: Path):
    """(model in fp32 for training, the dtype it was stored in)."""
    model, _ = load_model(path)
    dtype = next(model.parameters()).dtype
    return model.float(), dtype


def _load_teacher(path: Path, student, r: DistillRecipe):
    dtype = resolve_dtype(r.train.precision) if r.train.precision != "no" else torch.float32
    model, _ = load_model(path, dtype=dtype)
    check_teacher(model.config, student.config, f"teacher {path}")
    return model


def _prepare_work(work: Path, resume: bool, resolved: dict) -> None:
    """Fresh runs start from an empty work dir; a resume must use the same recipe (but RESUME_FREE)."""
    if work.exists() and not (resume and has_checkpoints(work)):
        shutil.rmtree(work)  # a fresh start, or a stale work dir with nothing to resume
    saved = work / "recipe.json"
    if resume and saved.exists():
        before = _flat(json.loads(saved.read_text())["recipe"])
        now = _flat(resolved["recipe"])
        free = RESUME_FREE | (AFTER_DIVERGENCE if diverged_before(work) else set())
        diff = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k not in free)
        if diff:
            changes = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in diff)
            raise UserError(f"cannot resume {work}: the recipe changed ({changes}); use --force to start over")
    work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(saved, resolved)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _write_output(out: Path, work: Path, student_config, weights: dict, dtype, student_dir: Path, resolved: dict,
                  summary: dict, force: bool) -> None:
    config = dataclasses.replace(student_config, source=dict(student_config.source))
    config.source["teacher"] = resolved["teacher"]
    config.source.setdefault("distill", [])
    config.source["distill"] = [*config.source["distill"], {"stage": resolved["stage"], "from": resolved["student"],
                                                            "steps": summary["steps"]}]
    state = {k: v.detach().to(dtype) for k, v in weights.items()}
    with atomic_dir(out, force) as tmp:
        write_model_files(tmp, config, state, student_dir,
                          {"resolved.json": resolved, "train_summary.json": summary})
        if (work / METRICS).exists():
            shutil.copy2(work / METRICS, tmp / METRICS)
    shutil.rmtree(work, ignore_errors=True)
