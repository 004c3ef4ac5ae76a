"""Objectives as data: how the teacher side is computed, how the student side turns it into
loss terms, which tokens normalise each term, and each term's weight.

A term named ``"a.b"`` is normalised by the mask ``"a"``; terms without a weight are metrics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .layerwise import LayerwiseStudent, teacher_trace
from ..ops.divergence import head_ce_sum, head_kl_sum
from .losses import label_mask, nonpad_mask
from .schema import LossSection


@dataclass(frozen=True)
class Objective:
    student: Callable[[nn.Module, LossSection], nn.Module]
    """(student MMModel, loss settings) -> module with forward(batch, targets) -> {term: token sum}."""
    targets: Callable[[nn.Module, dict, nn.Module], Any]
    """(teacher, batch, student) -> the teacher side (no gradient)."""
    masks: Callable[[dict, LossSection], dict[str, torch.Tensor]]
    """(batch, loss settings) -> {mask name: (b, l) bool}; its count normalises the terms."""
    weights: Callable[[LossSection], dict[str, float]]
    layer_call: str = "forward"
    """The layer method the student side calls (what activation checkpointing wraps)."""


class KLStudent(nn.Module):
    """forward(batch, teacher side) -> {"kl": sum of KL over kl tokens, "ce": sum of CE over labels}.

    Both losses are computed from the final hidden states and the output heads in token chunks
    (``ops.divergence``): no (tokens x vocabulary) tensor is held, in the forward or the backward.
    """

    def __init__(self, student: nn.Module, loss: LossSection):
        super().__init__()
        self.student, self.loss = student, loss

    def forward(self, batch: dict, teacher: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.student(batch["input_ids"], batch.get("pixel_values"), batch.get("attention_mask"),
                         seq_idx=batch.get("seq_idx"), head=False)  # (b, l, C)
        head, (h_t, head_t) = self.student.lm_head.weight, teacher
        out = {"kl": head_kl_sum(h, head, h_t, head_t, kl_mask(batch, self.loss), self.loss.temperature)}
        if batch.get("labels") is not None:
            targets = torch.zeros_like(batch["labels"])
            targets[:, :-1] = batch["labels"][:, 1:].clamp(min=0)  # position t predicts token t + 1
            ce = head_ce_sum(h, head, targets, label_mask(batch))
            out["ce"] = ce if self.loss.ce_weight else ce.detach()
        return out


def kl_mask(batch: dict, loss: LossSection) -> torch.Tensor:
    return nonpad_mask(batch) if loss.kl_tokens == "all" else label_mask(batch) & nonpad_mask(batch)


@torch.no_grad()
def teacher_hidden(teacher: nn.Module, batch: dict, student: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's final hidden states (b, l, C) and its output head (V, C)."""
    h = teacher(batch["input_ids"], batch.get("pixel_values"), batch.get("attention_mask"),
                seq_idx=batch.get("seq_idx"), head=False)
    return h, teacher.lm_head.weight


OBJECTIVES: dict[str, Objective] = {
    "layerwise": Objective(
        student=lambda student, loss: LayerwiseStudent(student, student.config.mamba_layers),
        targets=lambda teacher, batch, student: teacher_trace(teacher, batch, student.config.mamba_layers),
        masks=lambda batch, loss: {"mse": nonpad_mask(batch)},
        weights=lambda loss: {"mse": loss.mse_factor},
        layer_call="mix",
    ),
    "kl": Objective(
        student=KLStudent,
        targets=teacher_hidden,
        masks=lambda batch, loss: {"kl": kl_mask(batch, loss), "ce": label_mask(batch) & nonpad_mask(batch)},
        weights=lambda loss: {"kl": 1.0, "ce": loss.ce_weight},
    ),
}
