"""A student directory's config and the teacher it records, read before any weight (fail fast)."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..model.config import ModelConfig
from .load import config_from_json, read_config_json, source_format


def student_config(path: str | Path, where: str | None = None) -> ModelConfig:
    """The config of an mmmamba model with Mamba layers; ``where`` names it in errors (default: the path)."""
    path, where = Path(path), where or str(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{where}: not a model directory (no config.json)")
    d = read_config_json(path / "config.json")
    if source_format(d) not in ("mmmamba", "mmmamba-release"):
        raise UserError(f"{where}: not an mmmamba model (seed one first: `mmmamba seed --attn-layers ...`)")
    config = config_from_json(d, path / "config.json")
    if not config.mamba_layers:
        raise UserError(f"{where}: has no Mamba-2 layer; a seeded student is needed (`mmmamba seed`), not a teacher")
    return config


def recorded_teacher(config: ModelConfig, teacher: str | Path | None, student: str | Path,
                     ) -> tuple[Path, Path | None]:
    """(teacher path, its config.json for a bare state-dict file): ``teacher`` or the one the student records."""
    if teacher is not None:
        if not Path(teacher).exists():
            raise UserError(f"teacher {teacher} does not exist")
        return Path(teacher), None
    recorded = config.source.get("teacher")
    if not recorded:
        raise UserError(f"{student}/config.json records no teacher; give --teacher PATH")
    if not Path(recorded).exists():
        raise UserError(f"the teacher {recorded} recorded in {student}/config.json does not exist; "
                        "give --teacher PATH")
    cfg = config.source.get("teacher_config")
    return Path(recorded), Path(cfg) if cfg else None
