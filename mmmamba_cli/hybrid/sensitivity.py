"""Measured layer sensitivity: how much the student's KL to the teacher falls when one Mamba layer
is restored to the teacher's attention.

For calibration tokens t (every real text token after the image block, as in ``mmmamba eval``'s
fidelity), with p_T, p_S the next-token distributions of teacher and student:

    KL(S)   = mean_t KL(p_T || p_S)                       (nats per token)
    drop_i  = KL(S) - KL(S with layer i := teacher attention)

Layer i keeps the student's norms and MLP; only its mixer is swapped. Layers before i are
unchanged, so each candidate reruns only layers i..N-1 from the student's cached input to layer
i (about N^2/2 layer passes per batch instead of N^2). Deterministic: eval mode, no dropout, fixed
data and order; ties rank the lower index first.

``local_sensitivity`` is the cheap variant for deep students: one pass of the student stack, and
at every Mamba layer i the teacher's attention runs on the same cached input h_i (the input layer
i sees in the hybrid). The score is the relative error of the layer's mixer output,

    err_i = sum_t ||mamba_i(h_i) - attn_i(h_i)||^2 / sum_t ||attn_i(h_i)||^2   (real tokens t)

and the layers that imitate their attention worst are restored first: about 2N layer passes per
batch instead of N^2/2 (seconds instead of tens of minutes for 30 layers on a CPU).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch

from ..data.scoring import scored_targets
from ..model.config import ATTENTION
from ..model.model import MMModel
from ..ops.divergence import token_stats


@contextlib.contextmanager
def attention_restored(student: MMModel, teacher: MMModel, i: int):
    """Temporarily give student layer i the teacher's attention mixer (shared, not copied)."""
    layer = student.layers[i]
    mixer, kind = layer.mixer, layer.kind
    layer.mixer, layer.kind = teacher.layers[i].mixer, ATTENTION
    try:
        yield layer
    finally:
        layer.mixer, layer.kind = mixer, kind


def _inputs_per_layer(model: MMModel, batch: dict, keep: bool = True) -> tuple[list[torch.Tensor], torch.Tensor, tuple]:
    """Inputs h_0..h_{N-1} of every layer (b, l, C) (``keep``), the final hidden state, the layer inputs."""
    ids, mask, pixels = batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    prep = model.layer_inputs(ids, mask)
    h, hs = model.embed(ids, pixels), []
    for i in range(len(model.layers)):
        if keep:
            hs.append(h)
        h = _layer(model, i, h, prep)
    return hs, h, prep


def _layer(model: MMModel, i: int, h: torch.Tensor, prep) -> torch.Tensor:
    return model.run_layers(h, prep, i, i + 1)


def _logits(model: MMModel, h: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """(n, V) logits at the n selected positions of h (b, l, C)."""
    return model.lm_head(model.norm(h)[sel])


def _kl_sum(lt: torch.Tensor, ls: torch.Tensor) -> float:
    return token_stats(ls, lt)["kl"]


def predicting_positions(batch: dict, image_token: int | None) -> torch.Tensor:
    """(b, l) bool: positions whose logits predict a scored token (the next one)."""
    target = scored_targets(batch["input_ids"], batch["attention_mask"], image_token)  # (b, l)
    sel = torch.zeros_like(target)
    sel[:, :-1] = target[:, 1:]
    return sel


@torch.no_grad()
def layer_sensitivity(student: MMModel, teacher: MMModel, batches: Iterable[dict],
                      progress: Callable[[int], None] | None = None) -> dict:
    """``{"baseline_kl", "tokens", "layers": [{"layer", "kl", "kl_drop", "rank"}]}`` over the
    student's Mamba layers, ranked by ``kl_drop`` (largest first)."""
    student.eval(), teacher.eval()
    candidates = student.config.mamba_layers
    device = next(student.parameters()).device
    base, sums, tokens = 0.0, dict.fromkeys(candidates, 0.0), 0
    for n, batch in enumerate(batches):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        sel = predicting_positions(batch, student.config.img_context_token_id)
        if not sel.any():
            continue
        lt = _logits(teacher, _inputs_per_layer(teacher, batch, keep=False)[1], sel)  # (n, V)
        hs, h, prep = _inputs_per_layer(student, batch)
        base += _kl_sum(lt, _logits(student, h, sel))
        for i in candidates:
            with attention_restored(student, teacher, i):
                h = hs[i]
                for j in range(i, len(student.layers)):
                    h = _layer(student, j, h, prep)
            sums[i] += _kl_sum(lt, _logits(student, h, sel))
        tokens += int(sel.sum())
        if progress is not None:
            progress(n + 1)
    return rank(base, sums, tokens)


@torch.no_grad()
def local_sensitivity(student: MMModel, teacher: MMModel, batches: Iterable[dict],
                      progress: Callable[[int], None] | None = None) -> dict:
    """``{"method": "local", "tokens", "layers": [{"layer", "error", "rank"}]}``, largest error first."""
    student.eval(), teacher.eval()
    candidates = set(student.config.mamba_layers)
    device = next(student.parameters()).device
    err, ref, tokens = dict.fromkeys(sorted(candidates), 0.0), dict.fromkeys(sorted(candidates), 0.0), 0
    for n, batch in enumerate(batches):
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        real = mask.bool()[..., None]  # (b, l, 1)
        inputs = student.layer_inputs(ids, mask)
        h = student.embed(ids, batch["pixel_values"].to(device) if batch.get("pixel_values") is not None else None)
        for i, layer in enumerate(student.layers):
            if i in candidates:
                y_s = layer.mixer_out(student.mixer_output(i, h, inputs))  # (b, l, C)
                with attention_restored(student, teacher, i) as restored:
                    y_t = restored.mixer_out(student.mixer_output(i, h, inputs))
                err[i] += float((((y_s - y_t) * real).float() ** 2).sum())
                ref[i] += float(((y_t * real).float() ** 2).sum())
            h = student.run_layers(h, inputs, i, i + 1)
        tokens += int(mask.sum())
        if progress is not None:
            progress(n + 1)
    rows = [{"layer": i, "error": err[i] / max(ref[i], 1e-30)} for i in err]
    rows.sort(key=lambda r: (-r["error"], r["layer"]))
    for r, row in enumerate(rows):
        row["rank"] = r + 1
    return {"method": "local", "tokens": tokens, "layers": rows}


def rank(base: float, sums: dict[int, float], tokens: int) -> dict:
    n = max(tokens, 1)
    rows = [{"layer": i, "kl": s / n, "kl_drop": (base - s) / n} for i, s in sums.items()]
    rows.sort(key=lambda r: (-r["kl_drop"], r["layer"]))
    for r, row in enumerate(rows):
        row["rank"] = r + 1
    return {"method": "kl", "baseline_kl": base / n, "tokens": tokens, "layers": rows}


def pick(scores: dict, k: int, already: list[int]) -> list[int]:
    """The ``k`` kept layers: the student's attention layers plus the best-ranked Mamba layers."""
    best = [row["layer"] for row in scores["layers"]][:max(0, k - len(already))]
    return sorted(already + best)
