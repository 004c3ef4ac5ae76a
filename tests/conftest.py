"""Tiny fixtures built in memory: no downloads."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from mmmamba_cli.io.hovle_config import config_to_hovle
from mmmamba_cli.io.hovle_map import ours_to_hovle
from mmmamba_cli.model import MMModel, preset


def tiny_config(groups: int = 2, **kw):
    c = preset("tiny")
    shape = dataclasses.replace(c.llm_layer, num_heads=4, num_kv_heads=4 // groups)
    c = dataclasses.replace(c, embed_layer=shape, llm_layer=shape, layer_types=[], **kw)
    return c


def randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.02) -> torch.nn.Module:
    """Give every parameter (norms, conv, dt too) a non-trivial value so parity tests can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "norm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("A_log"):
                p.copy_(torch.rand(p.shape, generator=g) * 2 - 1)
            elif name.endswith("dt_bias"):
                p.copy_(torch.randn(p.shape, generator=g) - 2)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (scale * 5 if "conv1d" in name else scale * 4))
    return model


def tiny_teacher(groups: int = 2, seed: int = 0) -> MMModel:
    torch.manual_seed(seed)
    return randomize(MMModel(tiny_config(groups)).eval(), seed)


def save_hovle_snapshot(model: MMModel, directory, shards: int = 3) -> None:
    """Write ``model`` in HoVLE's HF layout: config.json + index + several shards, HoVLE names."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config_to_hovle(model.config), indent=2))
    sd = ours_to_hovle(model.state_dict(), model.config)
    sd["embedding_model.vision_embeddings.class_embedding"] = torch.zeros(1, 1, model.config.hidden_size)
    sd["language_model.model.tok_embeddings.weight"] = torch.zeros_like(sd["language_model.output.weight"])
    names = sorted(sd)
    weight_map = {}
    for i in range(shards):
        part = {k: sd[k].contiguous() for k in names[i::shards]}
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, str(directory / fname))
        weight_map.update({k: fname for k in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def image_inputs(config, batch: int = 1, text_len: int = 6, seed: int = 0):
    """input_ids with one image (its context tokens in the middle) per row, and pixel values."""
    g = torch.Generator().manual_seed(seed)
    n_img = config.vision.tokens_per_tile
    ids = []
    for _ in range(batch):
        pre = torch.randint(10, config.vocab_size, (2,), generator=g)
        post = torch.randint(10, config.vocab_size, (text_len,), generator=g)
        ids.append(torch.cat([pre, torch.full((n_img,), config.img_context_token_id), post]))
    s = config.vision.image_size
    return torch.stack(ids), torch.randn(batch, 3, s, s, generator=g)


@pytest.fixture
def teacher():
    return tiny_teacher()
