"""Files shipped inside the package: the embedded tiny HoVLE teacher and its tokenizer."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError

TEACHER_DIR = Path(__file__).resolve().parent / "teacher"


def default_teacher() -> Path:
    """The embedded teacher directory (a HoVLE-architecture model trained on easy-vqa)."""
    if not (TEACHER_DIR / "config.json").exists():
        raise UserError("a TEACHER is required: the embedded default teacher is not available in this install")
    return TEACHER_DIR
