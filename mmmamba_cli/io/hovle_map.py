"""HoVLE (InternVL-style) tensor names <-> ours, as a declarative map plus pure functions.

Global layer i < num_embed_layers lives at ``embedding_model.encoder.{i}``, the others at
``language_model.model.layers.{i - num_embed_layers}``. The packed ``wqkv`` rows are grouped
per KV head: view (Hkv, G + 2, d, C); queries [:, :G], key [:, -2], value [:, -1].
"""
from __future__ import annotations

import re

import torch

from ..model.config import ModelConfig

# fixed (non-layer) names: HoVLE -> ours
FIXED = {
    "embedding_model.vision_embeddings.patch_embedding.weight": "embed.vision.patch_embedding.weight",
    "embedding_model.vision_embeddings.patch_embedding.bias": "embed.vision.patch_embedding.bias",
    "embedding_model.vision_embeddings.position_embedding": "embed.vision.position_embedding",
    "embedding_model.pixel_shuffle_proj.0.weight": "embed.vision.proj.0.weight",
    "embedding_model.pixel_shuffle_proj.0.bias": "embed.vision.proj.0.bias",
    "embedding_model.pixel_shuffle_proj.2.weight": "embed.vision.proj.2.weight",
    "embedding_model.pixel_shuffle_proj.2.bias": "embed.vision.proj.2.bias",
    "embedding_model.llm_text_embeddings.weight": "embed.embed_tokens.weight",
    "embedding_model.special_text_embeddings.weight": "embed.special.weight",
    "language_model.model.norm.weight": "norm.weight",
    "language_model.output.weight": "lm_head.weight",
}
# present in HoVLE files but unused by the model (SPEC section 1)
UNUSED = ("embedding_model.vision_embeddings.class_embedding", "language_model.model.tok_embeddings.weight")
# per-layer names: HoVLE suffix -> our suffix (wqkv is split separately)
LAYER = {
    "attention.wo.weight": "mixer.o_proj.weight",
    "attention.wo.bias": "mixer.o_proj.bias",
    "feed_forward.w1.weight": "mlp.w1.weight",
    "feed_forward.w2.weight": "mlp.w2.weight",
    "feed_forward.w3.weight": "mlp.w3.weight",
    "attention_norm.weight": "attention_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
}
_LAYER_RE = re.compile(r"^(embedding_model\.encoder|language_model\.model\.layers)\.(\d+)\.(.+)$")


def split_wqkv(w: torch.Tensor, h: int, hkv: int, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed (( H + 2*Hkv) * d, ...) -> q (H*d, ...), k (Hkv*d, ...), v (Hkv*d, ...)."""
    g = h // hkv
    rest = w.shape[1:]
    w = w.reshape(hkv, g + 2, d, *rest)  # (kv, G+2, d, C)
    q = w[:, :g].reshape(h * d, *rest)  # query head index = kv*G + g
    return q, w[:, -2].reshape(hkv * d, *rest), w[:, -1].reshape(hkv * d, *rest)


def pack_wqkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, h: int, hkv: int, d: int) -> torch.Tensor:
    g = h // hkv
    rest = q.shape[1:]
    parts = [q.reshape(hkv, g, d, *rest), k.reshape(hkv, 1, d, *rest), v.reshape(hkv, 1, d, *rest)]
    return torch.cat(parts, 1).reshape((h + 2 * hkv) * d, *rest)


def hovle_to_ours(sd: dict[str, torch.Tensor], config: ModelConfig):
    """Rename a HoVLE state dict. Returns (ours, unexpected_names, log of 'src -> dst')."""
    out, unexpected, log = {}, [], []
    for name, t in sd.items():
        if name in FIXED:
            out[FIXED[name]] = t
            log.append(f"{name} -> {FIXED[name]}")
            continue
        if name in UNUSED:
            continue
        m = _LAYER_RE.match(name)
        if not m:
            unexpected.append(name)
            continue
        idx = int(m.group(2)) + (0 if m.group(1).startswith("embedding") else config.num_embed_layers)
        suffix, prefix = m.group(3), f"layers.{idx}."
        if idx >= config.num_layers:
            unexpected.append(name)
        elif suffix in ("attention.wqkv.weight", "attention.wqkv.bias"):
            s = config.shape(idx)
            kind = suffix.rsplit(".", 1)[1]
            for role, part in zip("qkv", split_wqkv(t, s.num_heads, s.num_kv_heads, s.head_dim)):
                out[f"{prefix}mixer.{role}_proj.{kind}"] = part
                log.append(f"{name}[{role}] -> {prefix}mixer.{role}_proj.{kind}")
        elif suffix in LAYER:
            out[prefix + LAYER[suffix]] = t
            log.append(f"{name} -> {prefix + LAYER[suffix]}")
        else:
            unexpected.append(name)
    return out, unexpected, log


def ours_to_hovle(sd: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Inverse of :func:`hovle_to_ours` for an all-attention model (used to export teachers)."""
    inv_fixed = {v: k for k, v in FIXED.items()}
    inv_layer = {v: k for k, v in LAYER.items()}
    out = {}
    for name, t in sd.items():
        if name in inv_fixed:
            out[inv_fixed[name]] = t
            continue
        m = re.match(r"^layers\.(\d+)\.(.+)$", name)
        if not m:
            raise ValueError(f"cannot export tensor {name} to HoVLE layout")
        i, suffix = int(m.group(1)), m.group(2)
        base = (f"embedding_model.encoder.{i}." if i < config.num_embed_layers
                else f"language_model.model.layers.{i - config.num_embed_layers}.")
        if suffix in inv_layer:
            out[base + inv_layer[suffix]] = t
        elif re.match(r"mixer\.q_proj\.(weight|bias)$", suffix):
            kind = suffix.rsplit(".", 1)[1]
            s = config.shape(i)
            parts = [sd[f"layers.{i}.mixer.{r}_proj.{kind}"] for r in "qkv"]
            out[base + f"attention.wqkv.{kind}"] = pack_wqkv(*parts, s.num_heads, s.num_kv_heads, s.head_dim)
        elif not re.match(r"mixer\.[kv]_proj\.", suffix):
            raise ValueError(f"cannot export tensor {name} to HoVLE layout (only attention layers)")
    return out
