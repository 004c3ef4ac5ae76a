"""`mmmamba hybridize` as library functions: choose the kept layers, write the hybrid directory."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import UserError
from ..io.files import check_output_dir
from ..io.load import build_model, load_state
from ..io.save import git_sha, save_model_dir
from ..io.student import recorded_teacher
from ..io.student import student_config as read_student_config
from ..io.tokenizer import load_tokenizer
from ..model.config import ModelConfig
from ..model.compat import check_teacher
from ..model.device import resolve_device, resolve_dtype
from .build import hybrid_state
from .calibration import EASYVQA, calibration_batches, calibration_items
from .placement import AUTO, LayoutRequest, check_count, resolve_layers
from .sensitivity import layer_sensitivity, local_sensitivity, pick

DEFAULT_CALIB_SAMPLES = 64
SCORES = ("auto", "kl", "local")
KL_MAX_LAYERS = 8  # auto: the exact KL (about N^2/2 layer passes) up to this many Mamba layers, else local
REPORT = "hybridize_report.json"


def student_config(student: str | Path) -> ModelConfig:
    """The student's config alone (cheap: weights are not read); it must have Mamba layers."""
    return read_student_config(student, f"STUDENT {student}")


def check_auto(k: int, config: ModelConfig) -> None:
    """``auto`` ranks the student's Mamba layers; its attention layers stay, so K must cover them."""
    check_count(k, config.num_layers)
    if k < len(config.attention_layers):
        raise UserError(f"--count {k} is below the student's {len(config.attention_layers)} attention layers "
                        f"{config.attention_layers}; auto only adds layers (use --attn-layers to drop some)")


def calibration_source(data, config: ModelConfig, student: str | Path) -> str | Path:
    """``--data``, else the student's own kind of data: easy-vqa for a vision model, the data its
    last distillation stage trained on for a text-only one (recorded in ``resolved.json``)."""
    if data is not None:
        return data
    if config.vision is not None:
        return EASYVQA
    resolved = Path(student) / "resolved.json"
    recorded = json.loads(resolved.read_text()).get("data") if resolved.is_file() else None
    if recorded and Path(recorded).is_file():
        return Path(recorded)
    raise UserError(f"STUDENT {student} is a text-only model and records no training data: give --data "
                    "FILE.jsonl ({\"text\"} or chat records) for --placement auto")


def measure(student_cfg, student_sd, teacher_cfg, teacher_sd, tokenizer_dir, k: int, data=None,
            calib_samples: int | None = None, seed: int = 0, device=None, dtype=None, batch_size: int = 8,
            log: Callable[[str], None] | None = None, score: str = "auto") -> tuple[list[int], dict]:
    """``auto``: (kept layers, scores) from the student's and teacher's state dicts.

    ``score``: ``kl`` (exact KL drop per restored layer), ``local`` (mixer-output error on cached
    layer inputs, one pass) or ``auto`` (kl up to KL_MAX_LAYERS Mamba layers, else local).
    """
    if score not in SCORES:
        raise UserError(f"--score {score!r}: choose one of {', '.join(SCORES)}")
    check_auto(k, student_cfg)
    tokenizer = load_tokenizer(tokenizer_dir, tokenizer_dir)
    items, summary = calibration_items(data or EASYVQA, tokenizer, student_cfg,
                                       calib_samples or DEFAULT_CALIB_SAMPLES, seed)
    pad = next(p for p in (student_cfg.pad_token_id, tokenizer.pad_token_id, 0) if p is not None)
    batches = calibration_batches(items, pad, batch_size)
    where, dt = resolve_device(device), resolve_dtype(dtype)
    student = build_model(student_cfg, dict(student_sd), "student", dt, where)
    teacher = build_model(teacher_cfg, dict(teacher_sd), "teacher", dt, where)
    if score == "auto":
        score = "kl" if len(student_cfg.mamba_layers) <= KL_MAX_LAYERS else "local"
    if log:
        log(f"calibration: {summary['used']} records of {summary['data']} ({summary['tokens']} tokens), "
            f"{len(student_cfg.mamba_layers)} candidate layers, score {score}")
    run = layer_sensitivity if score == "kl" else local_sensitivity
    scores = run(student, teacher, batches, progress=(lambda n: log(f"batch {n}/{len(batches)}")) if log else None)
    scores["calibration"] = summary
    return pick(scores, k, student_cfg.attention_layers), scores


def choose_layers(student_dir: str | Path, teacher_dir: str | Path | None = None, k: int = 8,
                  placement: str = AUTO, data: str | Path | None = None, calib_samples: int | None = None,
                  seed: int = 0, device=None, dtype=None, batch_size: int = 8,
                  log: Callable[[str], None] | None = None, score: str = "auto") -> tuple[list[int], dict | None]:
    """(kept global layers, per-layer scores or None for a rule placement) for ``--count k --placement``."""
    config = student_config(student_dir)
    keep = resolve_layers(LayoutRequest(count=k, placement=placement), config.num_layers)
    if keep is not None:
        return keep, None
    check_auto(k, config)
    tpath, tconfig = recorded_teacher(config, teacher_dir, student_dir)
    _, student_sd, info = load_state(student_dir)
    teacher_cfg, teacher_sd, _ = load_state(tpath, tconfig)
    check_teacher(teacher_cfg, config, str(tpath))
    return measure(config, student_sd, teacher_cfg, teacher_sd, info.tokenizer_dir, k,
                   calibration_source(data, config, student_dir), calib_samples, seed, device, dtype, batch_size,
                   log, score)


def hybridize_directory(student: str | Path, out: str | Path, request: LayoutRequest,
                        teacher: str | Path | None = None, data: str | Path | None = None,
                        calib_samples: int | None = None, seed: int = 0, force: bool = False, device=None,
                        batch_size: int = 8, log: Callable[[str], None] | None = None, score: str = "auto") -> dict:
    """Write ``out``: the student with attention kept at the requested layers (teacher weights).

    Returns the report (also ``out/hybridize_report.json``). All option checks run before any
    weight is read; ``out`` appears only when complete.
    """
    check_output_dir(Path(out), force)
    config = student_config(student)
    keep = resolve_layers(request, config.num_layers)
    if keep is not None and (data is not None or calib_samples is not None):
        raise UserError("--data and --calib-samples are only used by --placement auto")
    if keep is None:
        check_auto(request.count, config)
        data = calibration_source(data, config, student)
    tpath, tconfig = recorded_teacher(config, teacher, student)
    _, student_sd, info = load_state(student)
    teacher_cfg, teacher_sd, tinfo = load_state(tpath, tconfig)
    check_teacher(teacher_cfg, config, str(tpath))
    scores = None
    if keep is None:
        keep, scores = measure(config, student_sd, teacher_cfg, teacher_sd, info.tokenizer_dir, request.count,
                               data, calib_samples, seed, device, None, batch_size, log, score)
    new_cfg, state, report = hybrid_state(config, student_sd, teacher_cfg, teacher_sd, keep, seed)
    new_cfg.source.update(teacher=str(tpath.resolve()), teacher_config=str(tconfig.resolve()) if tconfig else None,
                          hybridized_from=str(Path(student).resolve()), placement=request.describe())
    if teacher is not None:
        new_cfg.source["teacher_format"] = tinfo.format
    report = {"command": "hybridize", "student": str(student), "teacher": str(tpath),
              "request": request.describe(), "kind": new_cfg.kind, **report, "scores": scores}
    resolved = {"command": "hybridize", "student": str(student), "out": str(out), "teacher": str(tpath),
                **dataclasses.asdict(request), "attention_layers": keep, "seed": seed, "git_sha": git_sha(),
                "torch": torch.__version__}
    if scores:
        resolved.update(data=str(data or EASYVQA), calib_samples=calib_samples or DEFAULT_CALIB_SAMPLES,
                        batch_size=batch_size, device=device)
    save_model_dir(out, new_cfg, state, info.tokenizer_dir, {REPORT: report, "resolved.json": resolved}, force=force)
    return report
