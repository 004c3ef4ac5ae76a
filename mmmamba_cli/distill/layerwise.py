"""Stages 1-2: the paired teacher/student per-layer forward (SPEC section 3).

The teacher runs its own layers end to end, so the residual stream every student mixer sees is
the teacher's (layers are distilled independently). For each Mamba layer i of the student the
target is the teacher's attention output per head before W_O, y_t = Attn_i(norm(h_i)), and the
student's mixer output per head after its gate, y_s = Mamba_i(norm(h_i)), is pulled towards it.

The teacher is loaded from its own files, so its Q/K/V are separate frozen tensors: in stage 2,
where the student's C/B/x projections (born from those same Q/K/V) train, the targets stay put.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .losses import mse_sum, nonpad_mask


@dataclass
class Trace:
    """What the teacher hands the student for one micro-batch."""

    inputs: dict[int, torch.Tensor]   # layer -> residual stream entering it (b, l, C)
    targets: dict[int, torch.Tensor]  # layer -> attention output per head, before W_O (b, l, h*d)
    ropes: dict
    key_mask: torch.Tensor | None
    valid: torch.Tensor | None
    seq_idx: torch.Tensor | None = None  # packed rows


@torch.no_grad()
def teacher_trace(teacher: nn.Module, batch: dict, layers: list[int]) -> Trace:
    """Run the teacher up to the last layer in ``layers``, keeping each such layer's input and target."""
    ids = batch["input_ids"]
    h = teacher.embed(ids, batch.get("pixel_values"))  # (b, l, C)
    seq_idx = batch.get("seq_idx")
    ropes, key_mask, valid = teacher.prepare(ids, batch.get("attention_mask"), None, seq_idx)
    inputs, targets, wanted = {}, {}, set(layers)
    for i, layer in enumerate(teacher.layers[: max(layers) + 1]):
        y = layer.mix(h, teacher.rope_for(ropes, i), key_mask, valid, None, seq_idx)  # (b, l, h*d)
        if i in wanted:
            inputs[i], targets[i] = h, y
        h = h + layer.mixer_out(y)  # the teacher's output flows on
        h = h + layer.mlp(layer.ffn_norm(h))
    return Trace(inputs, targets, ropes, key_mask, valid, seq_idx)


class LayerwiseStudent(nn.Module):
    """forward(batch, trace) -> {"mse": mean over Mamba layers of the token-summed MSE,
    "mse.layer{i}": each layer's token-summed MSE (a metric)}."""

    def __init__(self, student: nn.Module, layers: list[int]):
        super().__init__()
        self.student = student
        self.mamba_layers = list(layers)

    def forward(self, batch: dict, trace: Trace) -> dict[str, torch.Tensor]:
        mask = nonpad_mask(batch)  # (b, l): pads never count
        sums = {}
        for i in self.mamba_layers:
            rope = self.student.rope_for(trace.ropes, i)
            y = self.student.layers[i].mix(trace.inputs[i], rope, trace.key_mask, trace.valid, None, trace.seq_idx)
            sums[i] = mse_sum(y, trace.targets[i], mask)
        out = {"mse": torch.stack(list(sums.values())).mean()}
        out.update({f"mse.layer{i}": s.detach() for i, s in sums.items()})
        return out
