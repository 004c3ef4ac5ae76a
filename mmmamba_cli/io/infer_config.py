"""Infer a HoVLE model config from the shapes of a bare state dict (no config.json)."""
from __future__ import annotations

import re

import torch

from ..errors import UserError
from ..model.config import LayerShape, ModelConfig, VisionSettings

_HEAD_DIMS = (128, 64, 256, 96, 80, 32, 16)


def _count(sd, prefix: str) -> int:
    idx = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def _layer_shape(sd, prefix: str, notes: list[str], where: str) -> LayerShape:
    wqkv = sd.get(f"{prefix}0.attention.wqkv.weight")
    wo = sd.get(f"{prefix}0.attention.wo.weight")
    w1 = sd.get(f"{prefix}0.feed_forward.w1.weight")
    if wqkv is None or wo is None or w1 is None:
        raise UserError(f"cannot infer the {where} layer shape: {prefix}0.attention.wqkv/wo or "
                        "feed_forward.w1 missing (pass --config)")
    q_dim = wo.shape[1]
    d = next((d for d in _HEAD_DIMS if q_dim % d == 0 and (wqkv.shape[0] - q_dim) % (2 * d) == 0), None)
    if d is None:
        raise UserError(f"cannot infer head_dim of the {where} layers (pass --config)")
    h, hkv = q_dim // d, (wqkv.shape[0] - q_dim) // (2 * d)
    notes.append(f"{where}: head_dim={d} (assumed), heads={h}, kv_heads={hkv}, ffn={w1.shape[0]}, "
                 "rope_theta=1e6 (assumed)")
    return LayerShape(num_heads=h, num_kv_heads=hkv, head_dim=d, intermediate_size=w1.shape[0],
                      rope_theta=1e6, attention_bias=f"{prefix}0.attention.wqkv.bias" in sd)


def infer_hovle_config(sd: dict[str, torch.Tensor]) -> tuple[ModelConfig, list[str]]:
    notes: list[str] = []
    if any(k.endswith("attention.wvkqgdt.weight") for k in sd):
        raise UserError("a state dict in the released mmMamba layout: its layer layout (layers_block_type) is "
                        "only in its config.json; pass --config")
    if "embedding_model.llm_text_embeddings.weight" not in sd:
        raise UserError("cannot infer a config: no HoVLE tensor names found (pass --config)")
    vocab, hidden = sd["embedding_model.llm_text_embeddings.weight"].shape
    n_emb = _count(sd, "embedding_model.encoder.")
    n_llm = _count(sd, "language_model.model.layers.")
    patch = sd["embedding_model.vision_embeddings.patch_embedding.weight"]
    pos = sd["embedding_model.vision_embeddings.position_embedding"]
    grid = int(round((pos.shape[1] - 1) ** 0.5))
    ratio = (hidden / sd["embedding_model.pixel_shuffle_proj.0.weight"].shape[1]) ** 0.5
    special = sd.get("embedding_model.special_text_embeddings.weight")
    head = sd.get("language_model.output.weight")
    head_vocab = None if head is None or head.shape[0] == vocab else int(head.shape[0])
    vision = VisionSettings(image_size=grid * patch.shape[-1], patch_size=patch.shape[-1],
                            num_channels=patch.shape[1], downsample_ratio=ratio)
    config = ModelConfig(
        hidden_size=hidden, vocab_size=vocab, num_special_embeddings=0 if special is None else special.shape[0],
        head_vocab_size=head_vocab,
        num_embed_layers=n_emb, num_llm_layers=n_llm,
        embed_layer=_layer_shape(sd, "embedding_model.encoder.", notes, "embedding"),
        llm_layer=_layer_shape(sd, "language_model.model.layers.", notes, "LLM"), vision=vision)
    notes.insert(0, f"inferred from tensor shapes: hidden={hidden}, vocab={vocab}, embedding layers={n_emb}, "
                    f"LLM layers={n_llm}, image={vision.image_size}/patch {vision.patch_size}, "
                    f"img_context_token_id={config.img_context_token_id} (HoVLE default)")
    return config, notes
