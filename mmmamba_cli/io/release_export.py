"""Write a model in a published layout: the released mmMamba one or HoVLE's.

``mmmamba-release`` holds any layer layout of a HoVLE-family model (config with
``layers_block_type``, Mamba layers packed as ``wvkqgdt``); ``hovle`` holds all-attention
models only. Everything else (a Llama-derived student, settings the released code does not
read) is refused in one line before anything is written. Import of an export is bitwise equal.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import UserError
from ..model.config import MambaSettings, ModelConfig
from .files import DEFAULT_SHARD_BYTES, atomic_dir, check_output_dir, save_safetensors, write_json_atomic
from .hovle_config import config_to_hovle
from .hovle_map import ours_to_hovle
from .load import check_loadable, load_state
from .release_config import config_to_release
from .release_map import ours_to_release
from .save import copy_tokenizer

FORMATS = ("mmmamba-release", "hovle")
# Mamba settings the released modelling code fixes (kernel-2 conv, gate-norm eps 1e-5)
RELEASE_FIXED = {"d_conv": MambaSettings().d_conv, "norm_eps": MambaSettings().norm_eps}


@dataclass
class ExportResult:
    out: Path
    format: str
    kind: str
    layer_blocks: list[str]
    files: list[str]
    notes: list[str]


def check_exportable(config: ModelConfig, fmt: str, where: str) -> None:
    """One UserError naming what ``fmt`` cannot hold, else nothing."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if config.family != "hovle" or config.vision is None or not config.num_embed_layers:
        raise UserError(f"{where}: a {config.family}-family model without HoVLE's embedding module cannot be "
                        f"written as {fmt} (that layout is HoVLE's: vision stem + embedding layers + InternLM2)")
    if fmt == "hovle" and config.mamba_layers:
        raise UserError(f"{where}: --format hovle holds attention layers only; this model has Mamba layers "
                        f"{config.mamba_layers} (use --format mmmamba-release)")
    if config.mamba_layers:
        odd = {k: getattr(config.mamba, k) for k, v in RELEASE_FIXED.items() if getattr(config.mamba, k) != v}
        if odd:
            raise UserError(f"{where}: Mamba settings {odd} cannot be written as mmmamba-release "
                            f"(its code fixes {RELEASE_FIXED})")
        biased = [i for i in config.mamba_layers if config.shape(i).attention_bias or config.shape(i).out_bias]
        if biased:
            raise UserError(f"{where}: Mamba layers {biased} have projection biases, which mmmamba-release "
                            "does not hold")


def release_caveats(config: ModelConfig) -> list[str]:
    """What the released code will do differently with this model (written anyway)."""
    notes = []
    scaled = [i for i in config.attention_layers if config.shape(i).rope_scaling]
    if scaled:
        notes.append(f"attention layers {scaled} use rope_scaling; the released code applies plain RoPE, which "
                     "differs past max_position_embeddings")
    for name, s in (("embedding", config.embed_layer), ("LLM", config.llm_layer)):
        if config.mamba_layers and s.num_kv_heads * 2 != s.num_heads:
            notes.append(f"{name} layers have {s.num_heads} heads over {s.num_kv_heads} KV heads; the released "
                         "decode sizes its conv state for exactly 2 query heads per KV head and will fail")
    return notes


def layout_state(config: ModelConfig, sd: dict[str, torch.Tensor], fmt: str) -> tuple[dict, dict]:
    """(config.json, tensors) of ``fmt`` for a model in our names (pure)."""
    if fmt == "hovle":
        tensors, cfg = ours_to_hovle(sd, config), config_to_hovle(config)
    else:
        tensors, cfg = ours_to_release(sd, config), config_to_release(config)
    head = tensors["language_model.output.weight"]
    # present in HoVLE's files and created by its code, unused by its forward (SPEC section 1); with
    # tie_word_embeddings the released code ties output.weight to tok_embeddings, so it holds the head
    tensors.setdefault("language_model.model.tok_embeddings.weight", head.clone())
    tensors.setdefault("embedding_model.vision_embeddings.class_embedding",
                       torch.zeros(1, 1, config.hidden_size, dtype=head.dtype))
    return cfg, tensors


def export_model(source: str | Path, out: str | Path, fmt: str = "mmmamba-release", force: bool = False,
                 config_path: str | Path | None = None, shard_bytes: int = DEFAULT_SHARD_BYTES,
                 log: Callable[[str], None] = lambda m: None) -> ExportResult:
    """Read ``source`` (any loadable model), write it to ``out`` in ``fmt`` atomically."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    check_output_dir(Path(out), force)  # before reading gigabytes
    config, sd, info = load_state(source, config_path)
    check_exportable(config, fmt, str(source))
    sd = dict(sd)
    check_loadable(config, sd, str(source))  # also fills a tied head
    cfg, tensors = layout_state(config, sd, fmt)
    notes = release_caveats(config) if fmt == "mmmamba-release" else []
    log(f"{source} ({info.format}, {config.kind}) -> {out} as {fmt}: {len(tensors)} tensors")
    for n in notes:
        log(f"warning: {n}")
    with atomic_dir(out, force) as tmp:
        write_json_atomic(tmp / "config.json", cfg)
        files = save_safetensors(tensors, tmp, shard_bytes)
        files += copy_tokenizer(info.tokenizer_dir, tmp)
    blocks = ["mamba2" if t == "mamba" else "mha" for t in config.layer_types]
    return ExportResult(Path(out), fmt, config.kind, blocks, ["config.json", *files], notes)
