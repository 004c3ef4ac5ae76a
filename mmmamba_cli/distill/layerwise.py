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

from ..model.model import LayerInputs
from .losses import mse_sum, nonpad_mask


@dataclass
class Trace:
    """What the teacher hands the student for one micro-batch."""

    inputs: dict[int, torch.Tensor]   # layer -> residual stream entering it (b, l, C)
    targets: dict[int, torch.Tensor]  # layer -> attention output per head, before W_O (b, l, h*d)
    layer_inputs: LayerInputs         # positions, RoPE and masks of the batch (shared by both models; seq_idx for packed rows)


@torch.no_grad()
def teacher_trace(teacher: nn.Module, batch: dict, layers: list[int]) -> Trace:
    """Run the teacher up to the last layer in ``layers``, keeping each such layer's input and target."""
    ids = batch["input_ids"]
    h = teacher.embed(ids, batch.get("pixel_values"))  # (b, l, C)
    li = teacher.layer_inputs(ids, batch.get("attention_mask"), batch.get("seq_idx"))
    inputs, targets, wanted = {}, {}, set(layers)
    for i, h_in, y in teacher.trace_mixers(h, li, stop=max(layers) + 1):  # the teacher's output flows on
        if i in wanted:
            inputs[i], targets[i] = h_in, y  # (b, l, C), (b, l, h*d)
    return Trace(inputs, targets, li)


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
            y = self.student.mixer_output(i, trace.inputs[i], trace.layer_inputs)
            sums[i] = mse_sum(y, trace.targets[i], mask)
        out = {"mse": torch.stack(list(sums.values())).mean()}
        out.update({f"mse.layer{i}": s.detach() for i, s in sums.items()})
        return out
