"""`mmmamba info`: what a model directory or checkpoint holds."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import ConfigPath, console


def command(
    model: Annotated[Path, typer.Argument(help="Model directory or state-dict file.")],
    config: ConfigPath = None,
) -> None:
    """Show a model's kind, layer layout, sizes and per-sequence decode-state memory."""
    import torch

    from ..io.load import check_loadable, load_state
    from ..model.cache import state_bytes

    cfg, sd, info = load_state(model, config)
    check_loadable(cfg, dict(sd), str(model))
    params = sum(t.numel() for t in sd.values())
    s = cfg.llm_layer
    weights = next((t for t in sd.values() if t.is_floating_point()), None)
    dtype = weights.dtype if weights is not None else torch.float32
    sizes = state_bytes(cfg, dtype.itemsize)  # the cache is made in the weights' dtype (SSM state fp32)
    dname = str(dtype).removeprefix("torch.")
    t = Table(show_header=False, box=None)
    rows = [("source", f"{info.source} ({info.format})"), ("kind", cfg.kind), ("parameters", f"{params:,}"),
            ("layers", f"{cfg.num_layers} ({cfg.num_embed_layers} embedding + {cfg.num_llm_layers} LLM)"),
            ("layout", _layout(cfg)),
            ("attention layers", str(cfg.attention_layers or "none")),
            ("mamba layers", str(cfg.mamba_layers or "none")),
            ("hidden / heads / kv heads / head dim", f"{cfg.hidden_size} / {s.num_heads} / {s.num_kv_heads} / "
                                                     f"{s.head_dim}"),
            ("vocabulary (text / special / head)", f"{cfg.vocab_size} / {cfg.num_special_embeddings} / "
                                                   f"{cfg.output_vocab_size}"),
            ("vision", "none" if cfg.vision is None else
             f"{cfg.vision.image_size}px tiles, {cfg.vision.tokens_per_tile} tokens each"),
            (f"KV cache per token ({dname})", f"{sizes['kv_per_token']:,} bytes"),
            ("Mamba state per sequence", f"{sizes['conv'] + sizes['ssm']:,} bytes (conv {dname}, SSM fp32)")]
    rows += [("note", n) for n in info.notes]
    for k, v in rows:
        t.add_row(f"[bold]{k}", v)
    console.print(t)


def _layout(cfg) -> str:
    """One letter per global layer, A = attention, M = Mamba-2, grouped by module."""
    letters = "".join("A" if t == "attention" else "M" for t in cfg.layer_types)
    n = cfg.num_embed_layers
    return f"embedding {letters[:n]} | LLM {letters[n:]}" if n else letters
