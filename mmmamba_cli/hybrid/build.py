"""The hybrid's weights: a pure function of the student's and the teacher's state dicts.

Per global layer i of the new layout:

- kept (attention): the teacher's original ``layers.{i}.mixer.{q,k,v,o}_proj`` tensors, exactly;
- Mamba in the student and not kept: the student's (distilled) Mamba-2 mixer, unchanged;
- attention in the student and not kept: re-seeded from the teacher with the seed map
  (:func:`mmmamba_cli.seed.seed_state`), i.e. an undistilled Mamba-2 layer, reported as such.

Everything outside the mixers (embeddings, norms, MLPs, head) is the student's.
"""
from __future__ import annotations

import dataclasses

import torch

from ..model.compat import check_teacher
from ..model.config import ATTENTION, MAMBA, ModelConfig
from ..model.layout import layer_types_for
from ..seed import seed_state


def mixer_keys(sd: dict[str, torch.Tensor], layers) -> list[str]:
    prefixes = tuple(f"layers.{i}.mixer." for i in layers)
    return [k for k in sd if k.startswith(prefixes)] if prefixes else []


def hybrid_state(student: ModelConfig, student_sd: dict[str, torch.Tensor], teacher: ModelConfig,
                 teacher_sd: dict[str, torch.Tensor], keep: list[int], seed: int = 0):
    """(hybrid config, hybrid state dict, report) keeping attention at the global layers ``keep``."""
    check_teacher(teacher, student, "hybridize")
    keep = sorted(keep)
    was = student.layer_types
    report = {"attention_layers": keep, "previous_attention_layers": student.attention_layers,
              "added": [i for i in keep if was[i] == MAMBA],  # Mamba -> the teacher's attention
              "retained": [i for i in keep if was[i] == ATTENTION],  # attention stays (teacher's weights)
              "reseeded": [i for i in student.attention_layers if i not in keep],  # attention -> new Mamba
              "attention_differed": [], "from_teacher": [], "seeded": []}
    state = {k: v for k, v in student_sd.items() if k not in set(mixer_keys(student_sd, keep + report["reseeded"]))}
    for i in report["retained"]:
        own = {k: student_sd[k] for k in mixer_keys(student_sd, [i])}
        if any(not torch.equal(t, teacher_sd[k]) for k, t in own.items()):
            report["attention_differed"].append(i)
    for k in mixer_keys(teacher_sd, keep):
        state[k] = teacher_sd[k].clone()
        report["from_teacher"].append(k)
    if report["reseeded"]:
        only = set(report["reseeded"])
        sub = {k: teacher_sd[k] for k in mixer_keys(teacher_sd, only)}
        types = [MAMBA if i in only else ATTENTION for i in range(teacher.num_layers)]
        _, seeded, seed_report = seed_state(teacher, sub, types, seed)
        state.update(seeded)
        report["seeded"] = seed_report["moved"] + seed_report["new"]
    config = dataclasses.replace(student, layer_types=layer_types_for(keep, student.num_layers),
                                 mamba=dataclasses.replace(student.mamba), source=dict(student.source))
    return config, state, report
