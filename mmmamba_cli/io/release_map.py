"""Released mmMamba tensor names <-> ours, as a declarative map plus pure functions.

A Mamba layer of the release holds, under ``<layer>.attention.``: ``wvkqgdt.weight`` packed as
rows [v (Hkv*d) | k (Hkv*d) | q (H*d) | gate (H*d) | dt (H)], ``conv1d.{weight,bias}`` over
channels [v, k, q] (tap 1 = current token), ``A_log_bias`` (A = -exp), ``dt_bias``,
``g_norm_swish_gate.weight`` (one [d] RMSNorm weight shared by the heads) and ``o_proj.weight``.
That is our Mamba2 mixer exactly (x <- v, B <- k, C <- q, z <- gate). Attention ("mha") layers
and every other tensor keep HoVLE's names (:mod:`.hovle_map`).
"""
from __future__ import annotations

import torch

from ..errors import UserError
from ..model.config import LayerShape, ModelConfig
from .hovle_map import hovle_to_ours, ours_to_hovle

# our suffix inside ``layers.{i}.`` -> the release's suffix inside its layer prefix
MAMBA = {
    "mixer.conv1d.weight": "attention.conv1d.weight",
    "mixer.conv1d.bias": "attention.conv1d.bias",
    "mixer.A_log": "attention.A_log_bias",
    "mixer.dt_bias": "attention.dt_bias",
    "mixer.norm.weight": "attention.g_norm_swish_gate.weight",
    "mixer.out_proj.weight": "attention.o_proj.weight",
}
PACKED = "attention.wvkqgdt.weight"
PACKED_ROLES = ("mixer.x_proj.weight", "mixer.B_proj.weight", "mixer.C_proj.weight",
                "mixer.z_proj.weight", "mixer.dt_proj.weight")  # rows [v | k | q | gate | dt]


def packed_rows(s: LayerShape) -> list[int]:
    h, hkv, d = s.num_heads, s.num_kv_heads, s.head_dim
    return [hkv * d, hkv * d, h * d, h * d, h]


def layer_prefix(i: int, config: ModelConfig) -> str:
    n = config.num_embed_layers
    return f"embedding_model.encoder.{i}." if i < n else f"language_model.model.layers.{i - n}."


def release_to_ours(sd: dict[str, torch.Tensor], config: ModelConfig):
    """Rename a released state dict. Returns (ours, unexpected names, log of 'src -> dst')."""
    rest, out, log = dict(sd), {}, []
    for i in config.mamba_layers:
        base = layer_prefix(i, config)
        packed = rest.pop(base + PACKED, None)
        if packed is not None:
            rows = packed_rows(config.shape(i))
            if packed.ndim != 2 or packed.shape[0] != sum(rows) or packed.shape[1] != config.hidden_size:
                raise UserError(f"{base + PACKED}: shape {tuple(packed.shape)}, expected "
                                f"({sum(rows)}, {config.hidden_size}) = rows [v {rows[0]} | k {rows[1]} | "
                                f"q {rows[2]} | gate {rows[3]} | dt {rows[4]}] x hidden")
            for ours, part in zip(PACKED_ROLES, torch.split(packed, rows, dim=0)):
                out[f"layers.{i}.{ours}"] = part.contiguous()
                log.append(f"{base + PACKED}[{ours.split('.')[1]}] -> layers.{i}.{ours}")
        for ours, theirs in MAMBA.items():
            if base + theirs in rest:
                out[f"layers.{i}.{ours}"] = rest.pop(base + theirs)
                log.append(f"{base + theirs} -> layers.{i}.{ours}")
    renamed, unexpected, hlog = hovle_to_ours(rest, config)
    clash = sorted(set(renamed) & set(out))
    out.update(renamed)
    return out, unexpected + clash, log + hlog


def ours_to_release(sd: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Inverse of :func:`release_to_ours` for a HoVLE-family model of any layer layout."""
    rest, out = dict(sd), {}
    for i in config.mamba_layers:
        base, ours = layer_prefix(i, config), f"layers.{i}."
        out[base + PACKED] = torch.cat([rest.pop(ours + r) for r in PACKED_ROLES], dim=0)
        for mine, theirs in MAMBA.items():
            out[base + theirs] = rest.pop(ours + mine)
        left = sorted(k for k in rest if k.startswith(ours + "mixer."))
        if left:
            raise ValueError(f"cannot export {', '.join(left)} to the mmMamba layout")
    out.update(ours_to_hovle(rest, config))
    return out


def untrained_notes(sd: dict[str, torch.Tensor], config: ModelConfig) -> list[str]:
    """Warnings for Mamba layers whose A_log is exactly its init value (ones * A_init).

    The released conversion script can drop the A_log / dt_bias trained in distillation and
    keep their init; an A_log still exactly at init (in our names) is the visible sign.
    """
    at_init = [i for i in config.mamba_layers
               if torch.equal(sd.get(f"layers.{i}.mixer.A_log", torch.empty(0)).float(),
                              torch.full((config.shape(i).num_heads,), float(config.mamba.A_init)))]
    if not at_init:
        return []
    which = "every Mamba layer" if at_init == config.mamba_layers else f"Mamba layer(s) {at_init}"
    return [f"warning: A_log of {which} is exactly its init value {config.mamba.A_init}: the checkpoint may "
            "have lost its trained A_log / dt_bias (see docs/checkpoints.md)"]


