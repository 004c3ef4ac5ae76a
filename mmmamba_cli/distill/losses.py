"""Loss terms as *sums over tokens*; the loop divides each by its global token count.

Summing here and dividing once by the number of tokens of the whole global batch (all
micro-batches, all processes) makes every loss a true per-token mean that does not depend on
how the batch is split, on sequence length, or on padding (pads are never counted).

Token choice for the KL (``kl_tokens``): ``all`` (default) averages over every non-pad position,
image and prompt positions included, because the student must reproduce the teacher's whole
next-token distribution wherever it will later be asked for one; ``labels`` keeps only the
positions that predict a supervised (assistant) token.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.template import IGNORE_INDEX
from ..ops.divergence import kl_sum

__all__ = ["ce_sum", "kl_sum", "label_mask", "mse_sum", "nonpad_mask"]


def nonpad_mask(batch: dict) -> torch.Tensor:
    """(b, l) bool: real tokens."""
    mask = batch.get("attention_mask")
    return torch.ones_like(batch["input_ids"], dtype=torch.bool) if mask is None else mask.bool()


def label_mask(batch: dict) -> torch.Tensor:
    """(b, l) bool: positions t whose next token t+1 is supervised (labels are not shifted)."""
    labels = batch.get("labels")
    out = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    if labels is not None:
        out[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return out


def mse_sum(y_student: torch.Tensor, y_teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over masked tokens of the mean squared error over features.

    y_* (b, l, h*d): per-head mixer outputs before W_O; mask (b, l) bool.
    """
    err = (y_student.float() - y_teacher.float()).pow(2).mean(-1)  # (b, l)
    return (err * mask).sum()


def ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token cross-entropy over supervised positions; logits (b, l, V), labels (b, l)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX, reduction="sum")
