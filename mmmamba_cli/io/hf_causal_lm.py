"""Load a local transformers causal-LM directory of the Llama family (Llama, Mistral, Qwen2).

No ``trust_remote_code`` and no transformers import: config.json is read as JSON and the tensors
are renamed by a declarative map into our names. The result is a text-only teacher
(``num_embed_layers=0``, ``vision=None``, ``family="llama"``) that seeds exactly like HoVLE.

Family differences that matter here: Llama's ``attention_bias`` covers q/k/v/o; Qwen2 always has
q/k/v biases and no o bias; Mistral has none. RoPE: plain, linear, dynamic NTK or llama3
(Llama 3.1) scaling; other kinds (yarn, longrope, ...) are refused. Sliding-window attention
(Mistral, Qwen2 with ``use_sliding_window``) is not implemented: attention is always full,
which is identical up to the window length, and a note says so.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..model.config import LayerShape, ModelConfig
from .files import INDEX, SINGLE, read_state_dir, read_state_file
from .load_info import LoadInfo

SUPPORTED = ("llama", "mistral", "qwen2")
ROPE_KINDS = ("default", "linear", "dynamic", "llama3")
BIN_SINGLE, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"

# transformers name -> our name
TOP_MAP = {
    "model.embed_tokens.weight": "embed.embed_tokens.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "lm_head.weight",
}
# inside ``model.layers.{i}.`` -> inside ``layers.{i}.``
LAYER_MAP = {
    "self_attn.q_proj": "mixer.q_proj",
    "self_attn.k_proj": "mixer.k_proj",
    "self_attn.v_proj": "mixer.v_proj",
    "self_attn.o_proj": "mixer.o_proj",
    "mlp.gate_proj": "mlp.w1",
    "mlp.up_proj": "mlp.w3",
    "mlp.down_proj": "mlp.w2",
    "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm",
}
IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")  # old checkpoints' buffers
_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)")


def load_hf_causal_lm_state(path: str | Path, d: dict[str, Any]):
    """(ModelConfig, state dict in our names, LoadInfo) for a Llama / Mistral / Qwen2 directory."""
    path = Path(path)
    notes: list[str] = []
    config = config_from_hf(d, path, notes)
    sd = hf_to_ours(read_hf_weights(path), path)
    notes.insert(0, f"{d['model_type']} teacher: {config.num_llm_layers} layers, hidden {config.hidden_size}, "
                    f"heads {config.llm_layer.num_heads}/{config.llm_layer.num_kv_heads}, head_dim "
                    f"{config.llm_layer.head_dim}, vocab {config.vocab_size}")
    return config, sd, LoadInfo(str(path), "hf-causal-lm", notes, tokenizer_dir=path)


# ---- config ----------------------------------------------------------------------------
def config_from_hf(d: dict[str, Any], path: Path, notes: list[str]) -> ModelConfig:
    """config.json of a supported family -> ModelConfig; every unsupported setting is one UserError."""
    kind = d.get("model_type")
    if kind not in SUPPORTED:
        arch = ", ".join(d.get("architectures") or []) or "none listed"
        raise UserError(f"{path}: unsupported model_type {kind!r} (architectures: {arch}); supported: "
                        f"transformers causal LMs of type {', '.join(SUPPORTED)}, HoVLE snapshots, mmmamba models")
    try:
        hidden, heads = int(d["hidden_size"]), int(d["num_attention_heads"])
        head_dim = int(d.get("head_dim") or hidden // heads)
        theta, scaling = _rope(d)
        qkv_bias = kind == "qwen2" or bool(d.get("attention_bias", False))
        shape = LayerShape(
            num_heads=heads, num_kv_heads=int(d.get("num_key_value_heads") or heads), head_dim=head_dim,
            intermediate_size=int(d["intermediate_size"]), rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=theta, rope_scaling=scaling,
            max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
            attention_bias=qkv_bias, o_bias=False if kind == "qwen2" else None)
        problems = _unsupported(d, shape)
        if problems:
            raise UserError(f"{path / 'config.json'}: " + "; ".join(problems))
        _note_window(d, notes)
        return ModelConfig(
            hidden_size=hidden, vocab_size=int(d["vocab_size"]), num_special_embeddings=0,
            num_embed_layers=0, num_llm_layers=int(d["num_hidden_layers"]), embed_layer=shape, llm_layer=shape,
            rms_norm_eps=shape.rms_norm_eps, vision=None, img_context_token_id=None,
            bos_token_id=_first(d.get("bos_token_id")), eos_token_id=pick_eos(d.get("eos_token_id"), path, notes),
            pad_token_id=_first(d.get("pad_token_id")), template="tokenizer", system_prompt="", family="llama",
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)))
    except KeyError as e:
        raise UserError(f"{path / 'config.json'}: missing key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise UserError(f"{path / 'config.json'}: {e}") from None


def _rope(d: dict[str, Any]) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling or None) from the 4.x keys or 5.x ``rope_parameters``."""
    params = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
    theta = float(params.pop("rope_theta", d.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ROPE_KINDS:
        raise ValueError(f"rope type {kind!r} is not supported (supported: {', '.join(ROPE_KINDS)})")
    if float(params.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError("partial_rotary_factor != 1 is not supported")
    if kind == "default":
        return theta, None
    params["rope_type"] = kind
    params.pop("type", None)
    return theta, params


def _unsupported(d: dict[str, Any], shape: LayerShape) -> list[str]:
    problems = []
    if d.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {d['hidden_act']!r} is not supported (only silu)")
    if d.get("mlp_bias"):
        problems.append("mlp_bias true is not supported")
    if shape.num_heads % shape.num_kv_heads:
        problems.append(f"num_attention_heads {shape.num_heads} not divisible by num_key_value_heads "
                        f"{shape.num_kv_heads}")
    return problems


def _note_window(d: dict[str, Any], notes: list[str]) -> None:
    window = d.get("sliding_window")
    used = d.get("use_sliding_window", d["model_type"] == "mistral")
    if window and used:
        notes.append(f"sliding_window {window} ignored: attention is full (identical for sequences up to "
                     f"{window} tokens)")


def _first(value):
    return value[0] if isinstance(value, list) and value else value


def pick_eos(value, path: Path, notes: list[str]) -> int | None:
    """One EOS id for our own generate; for a list, the tokenizer's ``eos_token`` if it is in the list."""
    if not isinstance(value, list):
        return value
    if not value:
        return None
    chosen = _tokenizer_eos(path)
    chosen = chosen if chosen in value else value[0]
    notes.append(f"eos_token_id list {value}: mmmamba's generate stops at {chosen}; transformers' generate "
                 "uses generation_config.json")
    return chosen


def _tokenizer_eos(path: Path) -> int | None:
    try:
        tc = json.loads((path / "tokenizer_config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    eos = tc.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    ids = {v.get("content"): int(k) for k, v in (tc.get("added_tokens_decoder") or {}).items() if isinstance(v, dict)}
    return ids.get(eos)


# ---- weights ---------------------------------------------------------------------------
def read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    """safetensors (single or sharded) first, then ``pytorch_model.bin`` (single or sharded)."""
    if (path / INDEX).exists() or (path / SINGLE).exists():
        return read_state_dir(path)
    if (path / BIN_INDEX).exists():
        try:
            shards = sorted(set(json.loads((path / BIN_INDEX).read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{path / BIN_INDEX} is not a valid index ({e})") from None
        sd: dict[str, torch.Tensor] = {}
        for shard in shards:
            if not (path / shard).exists():
                raise UserError(f"missing shard {shard} listed in {path / BIN_INDEX}")
            sd.update(read_state_file(path / shard))
        return sd
    if (path / BIN_SINGLE).exists():
        return read_state_file(path / BIN_SINGLE)
    raise UserError(f"{path} has no {SINGLE}, {INDEX}, {BIN_SINGLE} or {BIN_INDEX}")


def hf_to_ours(sd: dict[str, torch.Tensor], where: Path | str = "") -> dict[str, torch.Tensor]:
    """Rename by TOP_MAP / LAYER_MAP; unknown tensors are one UserError naming them."""
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    for name, t in sd.items():
        if name in TOP_MAP:
            out[TOP_MAP[name]] = t
            continue
        m = _LAYER.fullmatch(name)
        if m and m.group(2) in LAYER_MAP:
            out[f"layers.{m.group(1)}.{LAYER_MAP[m.group(2)]}.{m.group(3)}"] = t
        elif not IGNORED.fullmatch(name):
            unexpected.append(name)
    if unexpected:
        raise UserError(f"{where}: unexpected tensor(s) for a Llama-family model: {', '.join(sorted(unexpected)[:8])}")
    return out
