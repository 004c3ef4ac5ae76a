"""HoVLE's config.json (InternVL-chat style) <-> ModelConfig."""
from __future__ import annotations

from typing import Any

from ..errors import UserError
from ..model.config import LayerShape, ModelConfig, VisionSettings


def _shape(c: dict[str, Any], where: str) -> LayerShape:
    try:
        heads = int(c["num_attention_heads"])
        return LayerShape(
            num_heads=heads,
            num_kv_heads=int(c.get("num_key_value_heads", heads)),
            head_dim=int(c["hidden_size"]) // heads,
            intermediate_size=int(c["intermediate_size"]),
            rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)),
            rope_theta=float(c.get("rope_theta", 10000.0)),
            rope_scaling=c.get("rope_scaling"),
            max_position_embeddings=int(c.get("max_position_embeddings", 2048)),
            attention_bias=bool(c.get("attention_bias", c.get("bias", False))),
        )
    except KeyError as e:
        raise UserError(f"config.json: {where} lacks {e.args[0]!r}") from None


def is_hovle_config(d: dict[str, Any]) -> bool:
    return "embedding_config" in d and "llm_config" in d


def config_from_hovle(d: dict[str, Any]) -> ModelConfig:
    emb, llm = d["embedding_config"], d["llm_config"]
    if emb.get("pixel_shuffle_loc", "pre") != "pre":
        raise UserError("config.json: pixel_shuffle_loc 'post' is not supported (only 'pre')")
    if not emb.get("use_pixel_shuffle_proj", True):
        raise UserError("config.json: use_pixel_shuffle_proj false is not supported")
    try:
        if int(emb.get("llm_hidden_size", llm["hidden_size"])) != int(llm["hidden_size"]):
            raise UserError("config.json: embedding llm_hidden_size differs from llm hidden_size")
        image_size = int(d.get("force_image_size") or emb.get("image_size", 448))
        vision = VisionSettings(
            image_size=image_size, patch_size=int(emb.get("patch_size", 14)),
            num_channels=int(emb.get("num_channels", 3)),
            downsample_ratio=float(d.get("downsample_ratio", emb.get("downsample_ratio", 0.5))),
            max_tiles=int(d.get("max_dynamic_patch", 12)),
            use_thumbnail=bool(d.get("use_thumbnail", True)),
        )
        special = emb.get("special_token_maps") or {}
        return ModelConfig(
            hidden_size=int(llm["hidden_size"]),
            vocab_size=int(emb.get("llm_vocab_size", llm["vocab_size"])),
            num_special_embeddings=len(special),
            num_embed_layers=int(emb["num_hidden_layers"]),
            num_llm_layers=int(llm["num_hidden_layers"]),
            embed_layer=_shape(emb, "embedding_config"),
            llm_layer=_shape(llm, "llm_config"),
            rms_norm_eps=float(llm.get("rms_norm_eps", 1e-6)),
            vision=vision,
            img_context_token_id=int(emb.get("img_context_token_id", 92546)),
            bos_token_id=llm.get("bos_token_id", 1), eos_token_id=d.get("eos_token_id", 92542),
            pad_token_id=llm.get("pad_token_id", 2),
            template=d.get("template", "internlm2-chat"),
            tie_word_embeddings=bool(llm.get("tie_word_embeddings", False)),
        )
    except KeyError as e:
        raise UserError(f"config.json: missing key {e.args[0]!r}") from None


def _shape_dict(s: LayerShape, hidden: int, layers: int) -> dict[str, Any]:
    return {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": s.num_heads,
            "num_key_value_heads": s.num_kv_heads, "intermediate_size": s.intermediate_size,
            "rms_norm_eps": s.rms_norm_eps, "rope_theta": s.rope_theta, "rope_scaling": s.rope_scaling,
            "max_position_embeddings": s.max_position_embeddings, "attention_bias": s.attention_bias,
            "bias": s.attention_bias, "hidden_act": "silu"}


def config_to_hovle(c: ModelConfig) -> dict[str, Any]:
    """A HoVLE-style config.json for an all-attention model (inverse of config_from_hovle)."""
    v = c.vision
    emb = _shape_dict(c.embed_layer, c.hidden_size, c.num_embed_layers)
    emb.update(llm_vocab_size=c.vocab_size, llm_hidden_size=c.hidden_size, image_size=v.image_size,
               patch_size=v.patch_size, num_channels=v.num_channels, downsample_ratio=v.downsample_ratio,
               use_pixel_shuffle_proj=True, img_context_token_id=c.img_context_token_id,
               special_token_maps={f"<special_{i}>": c.vocab_size + i for i in range(c.num_special_embeddings)},
               pixel_shuffle_loc="pre", architectures=["HolisticEmbedding"])
    llm = _shape_dict(c.llm_layer, c.hidden_size, c.num_llm_layers)
    llm.update(vocab_size=c.vocab_size, bos_token_id=c.bos_token_id, pad_token_id=c.pad_token_id,
               tie_word_embeddings=c.tie_word_embeddings, architectures=["InternLM2ForCausalLM"])
    return {"architectures": ["HoVLE"], "model_type": "hovle", "embedding_config": emb, "llm_config": llm,
            "template": c.template, "downsample_ratio": v.downsample_ratio, "force_image_size": v.image_size,
            "max_dynamic_patch": v.max_tiles, "use_thumbnail": v.use_thumbnail, "eos_token_id": c.eos_token_id}
