"""Whether a teacher fits a student: one check for distillation, hybridisation and fidelity."""
from __future__ import annotations

from ..errors import UserError
from .config import ModelConfig

SIZES = ("num_layers", "hidden_size", "vocab_size", "num_embed_layers", "img_context_token_id")
VOCABULARY = ("vocab_size", "img_context_token_id")


def differences(teacher: ModelConfig, student: ModelConfig, names: tuple[str, ...] = SIZES) -> list[str]:
    """'name teacher-value vs student-value' for each differing field, then up to 3 differing layer shapes."""
    diff = [f"{n} {getattr(teacher, n)} vs {getattr(student, n)}" for n in names
            if getattr(teacher, n) != getattr(student, n)]
    if "num_layers" in names and teacher.num_layers == student.num_layers:
        diff += [f"layer {i} shape" for i in range(student.num_layers) if teacher.shape(i) != student.shape(i)][:3]
    return diff


def check_teacher(teacher: ModelConfig, student: ModelConfig, where: str) -> None:
    """The teacher must be all attention with the student's sizes, layer by layer (one-line UserError)."""
    if teacher.mamba_layers:
        raise UserError(f"{where}: the teacher has Mamba layers {teacher.mamba_layers}; give the original "
                        "all-attention teacher (--teacher)")
    diff = differences(teacher, student)
    if diff:
        raise UserError(f"{where}: the teacher does not match the student ({', '.join(diff)})")


def check_vocabulary(teacher: ModelConfig, student: ModelConfig, where: str) -> None:
    """Comparing next-token distributions needs only the same vocabulary and image token."""
    diff = differences(teacher, student, VOCABULARY)
    if diff:
        raise UserError(f"{where}: the vocabulary differs from the teacher's ({', '.join(diff)})")
