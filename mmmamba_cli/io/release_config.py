"""The released mmMamba config.json (``hustvl/mmMamba-linear`` / ``-hybrid``) <-> ModelConfig.

It is HoVLE's config with ``model_type`` "mmMamba_chat", sub-config types "mmMamba_embedding" /
"mmMamba", and in each sub-config ``layers_block_type``: "mamba2" | "mha" per layer. Global
layer i < num_embed_layers is embedding layer i, the others LLM layer i - num_embed_layers.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..errors import UserError
from ..model.config import ATTENTION, MAMBA, ModelConfig
from .hovle_config import config_from_hovle, config_to_hovle, is_hovle_config

TOP_TYPE, EMBED_TYPE, LLM_TYPE = "mmMamba_chat", "mmMamba_embedding", "mmMamba"
BLOCKS = {"mamba2": MAMBA, "mha": ATTENTION}
# the file names the released remote code is published under (not shipped here)
AUTO_MAP = {"AutoConfig": "configuration_mmMamba_chat.mmMambaChatConfig",
            "AutoModel": "modeling_mmMamba_chat.mmMambaChatModel",
            "AutoModelForCausalLM": "modeling_mmMamba_chat.mmMambaChatModel"}
LLM_AUTO_MAP = {"AutoConfig": "configuration_mmMamba.mmMambaConfig",
                "AutoModel": "modeling_mmMamba.mmMambaForCausalLM",
                "AutoModelForCausalLM": "modeling_mmMamba.mmMambaForCausalLM"}


def is_release_config(d: dict[str, Any]) -> bool:
    if d.get("model_type") == TOP_TYPE:
        return True
    if not is_hovle_config(d):
        return False
    emb, llm = d["embedding_config"], d["llm_config"]
    return (emb.get("model_type") == EMBED_TYPE or llm.get("model_type") == LLM_TYPE
            or "layers_block_type" in emb or "layers_block_type" in llm)


def _blocks(sub: dict[str, Any], where: str) -> list[str]:
    types = sub.get("layers_block_type")
    if types is None:
        raise UserError(f"config.json: {where}.layers_block_type is missing (the mmMamba layout needs one "
                        "'mamba2' or 'mha' per layer)")
    n = sub.get("num_hidden_layers")
    if not isinstance(types, list) or len(types) != n:
        raise UserError(f"config.json: {where}.layers_block_type must list one entry per layer "
                        f"({n}), got {types!r}"[:200])
    bad = sorted({t for t in types if t not in BLOCKS}, key=str)
    if bad:
        raise UserError(f"config.json: {where}.layers_block_type has unknown block type(s) {bad} "
                        f"(expected {' | '.join(BLOCKS)})")
    return [BLOCKS[t] for t in types]


def config_from_release(d: dict[str, Any]) -> ModelConfig:
    """The released code's math: its "mha" layers use plain RoPE (rope_theta), whatever
    ``rope_scaling`` says, so the import drops it (:func:`release_notes` says so)."""
    if not is_hovle_config(d):
        raise UserError("config.json: an mmMamba_chat config needs embedding_config and llm_config")
    types = _blocks(d["embedding_config"], "embedding_config") + _blocks(d["llm_config"], "llm_config")
    c = config_from_hovle(d).with_layer_types(types)
    c.embed_layer = replace(c.embed_layer, rope_scaling=None)
    c.llm_layer = replace(c.llm_layer, rope_scaling=None)
    return c


def release_notes(d: dict[str, Any]) -> list[str]:
    """What the import changes on purpose, for the user."""
    scaled = [k for k in ("embedding_config", "llm_config") if (d.get(k) or {}).get("rope_scaling")]
    if not scaled:
        return []
    return [f"{', '.join(scaled)}.rope_scaling ignored: the released code's attention layers use plain RoPE "
            "(it matters only past max_position_embeddings)"]


def config_to_release(c: ModelConfig) -> dict[str, Any]:
    """The released layout's config.json for a HoVLE-family model of any layer layout."""
    d = config_to_hovle(c)
    names = {v: k for k, v in BLOCKS.items()}
    types = [names[t] for t in c.layer_types]
    d.update(model_type=TOP_TYPE, architectures=["mmMambaChatModel"], auto_map=dict(AUTO_MAP))
    d["embedding_config"].update(model_type=EMBED_TYPE, layers_block_type=types[:c.num_embed_layers])
    d["llm_config"].update(model_type=LLM_TYPE, architectures=["mmMambaForCausalLM"], auto_map=dict(LLM_AUTO_MAP),
                           layers_block_type=types[c.num_embed_layers:])
    return d
