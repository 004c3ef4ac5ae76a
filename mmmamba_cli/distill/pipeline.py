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
from ..io.tokenizer import load_tokenizer
from ..recipe import to_dict
from .data import load_dataset, resolve_data_path
from .loop import METRICS, StepReport, TrainJob, make_accelerator, train
from .schema import DistillRecipe, default_recipe, resolve_recipe
from .stages import Stage, get_stage

# recipe keys that may change when resuming (they do not change the numbers)
RESUME_FREE = {"train.save_every", "train.keep_checkpoints", "train.threads", "data.num_workers", "data.strict",
               "data.image_root"}


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
    config = _student_config(Path(student), stage)
    r = resolve_recipe(stage, recipe if recipe is not None else default_recipe(config), overrides)
    if teacher is not None:
        r = dataclasses.replace(r, teacher=str(teacher))
    out, work = Path(out), work_dir_for(Path(out))
    _check_dirs(stage, out, work, resume, force)
    teacher_path = _teacher_path(r, config.source, Path(student))
    if r.train.threads:
        torch.set_num_threads(r.train.threads)
    accelerator = make_accelerator(r.train)
    main = accelerator.is_main_process
    data_path = resolve_data_path(r.data.path, Path(data_dir) if data_dir else out.parent / "data", main)
    accelerator.wait_for_everyone()
    dataset, stats = load_dataset(data_path, r.data, load_tokenizer(Path(student)), config, log if main else None)
    student_model, student_dtype = _load_student(Path(student))
    teacher_model = _load_teacher(teacher_path, student_model, r)
    resolved = {"command": "distill", "stage": stage.number, "student": str(Path(student).resolve()),
                "teacher": str(teacher_path), "data": str(data_path), "out": str(out),
                "recipe": to_dict(r), "data_stats": dataclasses.asdict(stats), "git_sha": _git_sha()}
    if main:
        _prepare_work(work, resume, resolved)
    accelerator.wait_for_everyone()
    pad = student_model.config.pad_token_id if student_model.config.pad_token_id is not None else 0
    job = TrainJob(stage, r, student_model, teacher_model, dataset, work, pad)
    summary = train(job, accelerator, resume, progress, log if main else None)
    if main:
        _write_output(out, work, student_model, student_dtype, Path(student), resolved, summary, force)
    accelerator.wait_for_everyone()
    return out


def _check_dirs(stage: Stage, out: Path, work: Path, resume: bool, force: bool) -> None:
    if out.exists() and not force:
        hint = " (the stage already finished)" if resume else ""
        raise UserError(f"output directory {out} already exists{hint}; use --force to run {stage.name} again")
    if work.exists() and not (resume or force):
        raise UserError(f"an interrupted run of {stage.name} is in {work}; pass --resume to continue it "
                        "or --force to start over")


def _student_config(path: Path, stage: Stage):
    """The student's config (read before any weights, so bad input fails fast)."""
    from ..io.load import config_from_json, read_config_json

    config = config_from_json(read_config_json(path / "config.json"), path / "config.json")
    if not config.mamba_layers:
        raise UserError(f"{path} has no Mamba-2 layer: {stage.name} needs a seeded student "
                        "(`mmmamba seed`), not a teacher")
    return config


def _load_student(path: Path):
    """(model in fp32 for training, the dtype it was stored in)."""
    from ..io.load import load_model

    model, _ = load_model(path)
    dtype = next(model.parameters()).dtype
    return model.float(), dtype


def _teacher_path(r: DistillRecipe, source: dict, student: Path) -> Path:
    path = r.teacher or source.get("teacher")
    if not path:
        raise UserError(f"{student}/config.json records no teacher; pass --teacher PATH")
    if not Path(path).exists():
        raise UserError(f"teacher {path} (recorded in {student}/config.json) not found; pass --teacher PATH")
    return Path(path)


def _load_teacher(path: Path, student, r: DistillRecipe):
    from ..io.load import load_model

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(r.train.precision, torch.float32)
    model, _ = load_model(path, dtype=dtype)
    c, s = model.config, student.config
    if c.mamba_layers:
        raise UserError(f"teacher {path} has Mamba layers {c.mamba_layers}; the teacher must be all attention")
    mine = (c.num_layers, c.hidden_size, c.vocab_size, c.num_embed_layers)
    theirs = (s.num_layers, s.hidden_size, s.vocab_size, s.num_embed_layers)
    if mine != theirs:
        raise UserError(f"teacher {path} (layers, hidden, vocab, embedding layers) = {mine} does not match "
                        f"the student's {theirs}")
    return model


def _prepare_work(work: Path, resume: bool, resolved: dict) -> None:
    """Fresh runs start from an empty work dir; a resume must use the same recipe (but RESUME_FREE)."""
    if work.exists() and not resume:
        shutil.rmtree(work)
    saved = work / "recipe.json"
    if resume and saved.exists():
        before = _flat(json.loads(saved.read_text())["recipe"])
        now = _flat(resolved["recipe"])
        diff = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k not in RESUME_FREE)
        if diff:
            changes = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in diff)
            raise UserError(f"cannot resume {work}: the recipe changed ({changes}); use --force to start over")
    work.mkdir(parents=True, exist_ok=True)
    from ..io.files import write_json_atomic

    write_json_atomic(saved, resolved)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _write_output(out: Path, work: Path, student, dtype, student_dir: Path, resolved: dict, summary: dict,
                  force: bool) -> None:
    from ..io.files import atomic_dir
    from ..io.save import write_model_files

    config = dataclasses.replace(student.config, source=dict(student.config.source))
    config.source["teacher"] = resolved["teacher"]
    config.source.setdefault("distill", [])
    config.source["distill"] = [*config.source["distill"], {"stage": resolved["stage"], "from": resolved["student"],
                                                            "steps": summary["steps"]}]
    state = {k: v.detach().to(dtype) for k, v in student.state_dict().items()}
    with atomic_dir(out, force) as tmp:
        write_model_files(tmp, config, state, student_dir,
                          {"resolved.json": resolved, "train_summary.json": summary})
        if (work / METRICS).exists():
            shutil.copy2(work / METRICS, tmp / METRICS)
    shutil.rmtree(work, ignore_errors=True)


def _git_sha() -> str:
    from ..io.save import git_sha

    return git_sha()
