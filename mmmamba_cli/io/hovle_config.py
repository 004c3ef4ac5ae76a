"""HoVLE's config.json (InternVL-chat style) <-> ModelConfig.

Every switch HoVLE's public modelling code honours is either mapped or refused in one line
naming it (:data:`SWITCHES` says which and how). The embedding module's text table has
``embedding_config.llm_vocab_size`` rows; ids at or above it read the special table
(``special_token_maps``, one row per entry, row ``id - llm_vocab_size``); the output head has
``llm_config.vocab_size`` rows.
"""
from __future__ import annotations

from typing import Any

from ..errors import UserError
from ..model.config import LayerShape, ModelConfig, VisionSettings

TEMPLATES = ("internlm2-chat",)
ROPE_KINDS = ("linear", "dynamic")  # what InternLM2's attention implements
LLM_ARCHITECTURES = ("InternLM2ForCausalLM", "mmMambaForCausalLM")
# config.json switch -> how it is handled (documentation and the test of refusals)
SWITCHES = {
    "rope_scaling": "dynamic (NTK) or linear, in either module; other kinds refused",
    "special_token_maps": "separate special-token table, ids >= llm_vocab_size",
    "downsample_ratio": "pixel-shuffle ratio; the top-level and embedding values must agree",
    "force_image_size": "tile size; must equal embedding_config.image_size (the position grid)",
    "max_dynamic_patch": "most tiles per image", "min_dynamic_patch": "must be 1",
    "dynamic_image_size": "false: one tile per image, no thumbnail", "use_thumbnail": "thumbnail tile",
    "template": "only internlm2-chat", "normalize_encoder_output": "true refused",
    "use_pixel_shuffle_proj": "false refused", "pixel_shuffle_loc": "'post' refused",
    "use_ls": "true refused (HoVLE's own code refuses it)", "hidden_act": "silu only",
    "mlp_bias": "true refused", "llm_config.architectures": "InternLM2ForCausalLM only",
    "use_backbone_lora": "non-zero refused", "use_llm_lora": "non-zero refused",
}


def _refuse(switch: str, value: Any, why: str) -> UserError:
    return UserError(f"config.json: {switch}={value!r} is not supported ({why})")


def _rope(c: dict[str, Any], where: str) -> dict | None:
    scaling = c.get("rope_scaling")
    if scaling is None:
        return None
    kind = scaling.get("type", scaling.get("rope_type")) if isinstance(scaling, dict) else None
    if kind not in ROPE_KINDS or "factor" not in scaling:
        raise _refuse(f"{where}.rope_scaling", scaling, "HoVLE honours {'type': 'dynamic'|'linear', 'factor': f}")
    return {"type": kind, "factor": float(scaling["factor"])}


def _shape(c: dict[str, Any], where: str) -> LayerShape:
    if c.get("hidden_act", "silu") != "silu":
        raise _refuse(f"{where}.hidden_act", c["hidden_act"], "silu only")
    if c.get("mlp_bias", False):
        raise _refuse(f"{where}.mlp_bias", True, "the MLP has no bias")
    try:
        heads = int(c["num_attention_heads"])
        return LayerShape(
            num_heads=heads,
            num_kv_heads=int(c.get("num_key_value_heads", heads)),
            head_dim=int(c["hidden_size"]) // heads,
            intermediate_size=int(c["intermediate_size"]),
            rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)),
            rope_theta=float(c.get("rope_theta", 10000.0)),
            rope_scaling=_rope(c, where),
            max_position_embeddings=int(c.get("max_position_embeddings", 2048)),
            attention_bias=bool(c.get("attention_bias", c.get("bias", False))),
        )
    except KeyError as e:
        raise UserError(f"config.json: {where} lacks {e.args[0]!r}") from None


def is_hovle_config(d: dict[str, Any]) -> bool:
    return "embedding_config" in d and "llm_config" in d


def _check_switches(d: dict[str, Any], emb: dict[str, Any], llm: dict[str, Any]) -> None:
    if emb.get("pixel_shuffle_loc", "pre") != "pre":
        raise _refuse("embedding_config.pixel_shuffle_loc", emb["pixel_shuffle_loc"], "only 'pre'")
    if not emb.get("use_pixel_shuffle_proj", True):
        raise _refuse("embedding_config.use_pixel_shuffle_proj", False, "the projection is required")
    if emb.get("use_ls", False):
        raise _refuse("embedding_config.use_ls", True, "layer scale is not implemented, nor by HoVLE")
    if d.get("normalize_encoder_output", False):
        raise _refuse("normalize_encoder_output", True, "the LLM input is not renormalised here")
    for lora in ("use_backbone_lora", "use_llm_lora"):
        if d.get(lora):
            raise _refuse(lora, d[lora], "merge the LoRA adapters into the weights first")
    if d.get("template", "internlm2-chat") not in TEMPLATES:
        raise _refuse("template", d["template"], f"supported: {', '.join(TEMPLATES)}")
    if int(d.get("min_dynamic_patch", 1)) != 1:
        raise _refuse("min_dynamic_patch", d["min_dynamic_patch"], "tiling starts at 1 tile")
    arch = llm.get("architectures") or ["InternLM2ForCausalLM"]
    arch = arch[0] if isinstance(arch, list) else arch
    if arch not in LLM_ARCHITECTURES:
        raise _refuse("llm_config.architectures", arch, "only an InternLM2 language model")
    top, inner = d.get("downsample_ratio"), emb.get("downsample_ratio")
    if top is not None and inner is not None and float(top) != float(inner):
        raise _refuse("downsample_ratio", top, f"differs from embedding_config.downsample_ratio {inner}")
    force, image = d.get("force_image_size"), emb.get("image_size")
    if force and image and int(force) != int(image):
        raise _refuse("force_image_size", force, f"differs from embedding_config.image_size {image}, "
                                                  "the grid of the position embedding")


def config_from_hovle(d: dict[str, Any]) -> ModelConfig:
    emb, llm = d["embedding_config"], d["llm_config"]
    _check_switches(d, emb, llm)
    try:
        hidden = int(llm["hidden_size"])
        if int(emb.get("llm_hidden_size", hidden)) != hidden or int(emb.get("hidden_size", hidden)) != hidden:
            raise UserError("config.json: embedding hidden_size / llm_hidden_size differ from llm hidden_size")
        image_size = int(d.get("force_image_size") or emb.get("image_size", 448))
        dynamic = bool(d.get("dynamic_image_size", True))
        vision = VisionSettings(
            image_size=image_size, patch_size=int(emb.get("patch_size", 14)),
            num_channels=int(emb.get("num_channels", 3)),
            downsample_ratio=float(d.get("downsample_ratio", emb.get("downsample_ratio", 0.5))),
            max_tiles=int(d.get("max_dynamic_patch", 12)) if dynamic else 1,
            use_thumbnail=bool(d.get("use_thumbnail", True)) and dynamic,
        )
        special = emb.get("special_token_maps") or {}
        head_vocab = int(llm["vocab_size"])
        text_vocab = int(emb.get("llm_vocab_size", head_vocab))
        return ModelConfig(
            hidden_size=hidden,
            vocab_size=text_vocab,
            num_special_embeddings=len(special),
            head_vocab_size=None if head_vocab == text_vocab else head_vocab,
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
            system_prompt=str(d.get("system_message", "")),
            # HoVLE ties its head to the LLM's unused tok_embeddings, never to the text table: our tie
            # (head = text table) is only possible when both have the same rows (load checks the values)
            tie_word_embeddings=bool(llm.get("tie_word_embeddings", False)) and head_vocab == text_vocab,
        )
    except KeyError as e:
        raise UserError(f"config.json: missing key {e.args[0]!r}") from None
    except ValueError as e:  # ModelConfig.validate
        raise UserError(f"config.json: {e}") from None


def _shape_dict(s: LayerShape, hidden: int, layers: int) -> dict[str, Any]:
    return {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": s.num_heads,
            "num_key_value_heads": s.num_kv_heads, "intermediate_size": s.intermediate_size,
            "rms_norm_eps": s.rms_norm_eps, "rope_theta": s.rope_theta, "rope_scaling": s.rope_scaling,
            "max_position_embeddings": s.max_position_embeddings, "attention_bias": s.attention_bias,
            "bias": s.attention_bias, "hidden_act": "silu"}


def config_to_hovle(c: ModelConfig) -> dict[str, Any]:
    """A HoVLE-style config.json for a HoVLE-family model (inverse of config_from_hovle)."""
    v = c.vision
    emb = _shape_dict(c.embed_layer, c.hidden_size, c.num_embed_layers)
    emb.update(llm_vocab_size=c.vocab_size, llm_hidden_size=c.hidden_size, image_size=v.image_size,
               patch_size=v.patch_size, num_channels=v.num_channels, downsample_ratio=v.downsample_ratio,
               use_pixel_shuffle_proj=True, img_context_token_id=c.img_context_token_id,
               special_token_maps={f"<special_{i}>": c.vocab_size + i for i in range(c.num_special_embeddings)},
               pixel_shuffle_loc="pre", use_ls=False, model_type="holistic_embedding",
               architectures=["HolisticEmbedding"])
    llm = _shape_dict(c.llm_layer, c.hidden_size, c.num_llm_layers)
    llm.update(vocab_size=c.output_vocab_size, bos_token_id=c.bos_token_id, pad_token_id=c.pad_token_id,
               tie_word_embeddings=c.tie_word_embeddings, model_type="internlm2",
               architectures=["InternLM2ForCausalLM"])
    extra = {"system_message": c.system_prompt} if c.system_prompt else {}  # ignored by HoVLE's own code
    return {**extra, "architectures": ["HoVLE"], "model_type": "hovle", "embedding_config": emb, "llm_config": llm,
            "template": c.template, "downsample_ratio": v.downsample_ratio, "force_image_size": v.image_size,
            "max_dynamic_patch": v.max_tiles, "min_dynamic_patch": 1, "dynamic_image_size": True,
            "use_thumbnail": v.use_thumbnail, "normalize_encoder_output": False, "eos_token_id": c.eos_token_id,
            "select_layer": -1, "ps_version": "v2"}  # read by the chat class, unused by HoVLE's forward
