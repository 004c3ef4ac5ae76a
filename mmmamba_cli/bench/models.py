"""The benchmarked models: teacher, linear student and hybrid, at a preset's or a directory's shapes.

Speed and memory do not depend on the weight values, so the variants are randomly initialised
(:func:`mmmamba_cli.model.init.init_weights`). With ``--model DIR``
the variant of DIR's own kind runs DIR's weights and the others random weights of its shapes.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from ..io.load import config_from_json, load_model, read_config_json
from ..model.attention import set_attention_impl  # noqa: F401 - part of this module's API
from ..model.config import ModelConfig, preset
from ..model.init import init_weights
from ..model.layout import every, layer_types_for
from ..model.model import MMModel

# transformers ``LlamaConfig`` fields of a Llama-family model of SmolLM2-135M's shapes (the CPU
# benchmarks against transformers' own Llama, benchmarks/bench_*_cpu.py)
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, rope_theta=100000.0,
                    rms_norm_eps=1e-5, tie_word_embeddings=True,
                    max_position_embeddings=32768)  # 8192 in SmolLM2; raised so 16K is in range

# kind -> the global layers kept as softmax attention, given the number of layers
VARIANTS: dict[str, Callable[[int], list[int]]] = {
    "teacher": lambda n: list(range(n)),
    "linear": lambda n: [],
    "hybrid": lambda n: every(4, 0, n),  # the paper's placement: first layer of every block of 4
}


def base_config(size: str, model_dir: Path | None) -> ModelConfig:
    """The shapes every variant shares: a size preset, or a model directory's config.json."""
    if model_dir is None:
        return preset(size)
    path = Path(model_dir) / "config.json"
    return config_from_json(read_config_json(path), path)


def variant_config(base: ModelConfig, kind: str, impl: str = "auto") -> ModelConfig:
    n = base.num_layers
    cfg = base.with_layer_types(layer_types_for(VARIANTS[kind](n), n))
    cfg.mamba = dataclasses.replace(base.mamba, impl=impl)  # not shared with the base config
    return cfg


def build_variant(base: ModelConfig, kind: str, device: torch.device, dtype: torch.dtype,
                  impl: str = "auto", seed: int = 0, model_dir: Path | None = None) -> MMModel:
    """An eval-mode model of ``kind``; DIR's weights when DIR holds that kind, else random."""
    cfg = variant_config(base, kind, impl)
    if model_dir is not None and base.kind == kind:
        model, _ = load_model(model_dir, dtype=dtype, device=device, impl=impl)
    else:
        with torch.device("meta"):
            model = MMModel(cfg).to(dtype)
        model = init_weights(model.to_empty(device=device), seed)
    return model.eval().requires_grad_(False)


def weight_bytes(model: MMModel) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())
