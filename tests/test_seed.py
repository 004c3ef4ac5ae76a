"""Seeding: inherited weights are exact; new parameters follow the init table."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_teacher
from mmmamba_cli.io.hovle_map import hovle_to_ours, ours_to_hovle
from mmmamba_cli.model.layout import layer_types_for
from mmmamba_cli.seed import seed_state


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_seeded_qkvo_equal_grouped_wqkv_split(groups):
    t = tiny_teacher(groups)
    c = t.config
    hovle = ours_to_hovle(t.state_dict(), c)
    ours, unexpected, _ = hovle_to_ours(hovle, c)
    assert not unexpected
    cfg, sd, report = seed_state(c, ours, layer_types_for([], c.num_layers))
    s = c.llm_layer
    h, hkv, d, g = s.num_heads, s.num_kv_heads, s.head_dim, s.num_heads // s.num_kv_heads
    for i in range(c.num_layers):
        base = (f"embedding_model.encoder.{i}" if i < c.num_embed_layers
                else f"language_model.model.layers.{i - c.num_embed_layers}")
        w = hovle[f"{base}.attention.wqkv.weight"].view(hkv, g + 2, d, c.hidden_size)  # SPEC layout
        q = torch.stack([w[head // g, head % g] for head in range(h)])  # query head = kv*G + g
        assert torch.equal(sd[f"layers.{i}.mixer.C_proj.weight"], q.reshape(h * d, -1))
        assert torch.equal(sd[f"layers.{i}.mixer.B_proj.weight"], w[:, -2].reshape(hkv * d, -1))
        assert torch.equal(sd[f"layers.{i}.mixer.x_proj.weight"], w[:, -1].reshape(hkv * d, -1))
        assert torch.equal(sd[f"layers.{i}.mixer.out_proj.weight"], hovle[f"{base}.attention.wo.weight"])
    assert len(report["moved"]) == 4 * c.num_layers


def test_new_parameters_follow_init_table():
    t = tiny_teacher()
    c = t.config
    cfg, sd, report = seed_state(c, t.state_dict(), layer_types_for([1], c.num_layers), seed=3)
    assert cfg.layer_types[1] == "attention" and cfg.kind == "hybrid"
    assert "layers.1.mixer.q_proj.weight" in sd and "layers.1.mixer.conv1d.weight" not in sd
    for i in cfg.mamba_layers:
        p = f"layers.{i}.mixer."
        conv = sd[p + "conv1d.weight"]  # (channels, 1, d_conv)
        assert torch.equal(conv[:, 0, -1], torch.ones(conv.shape[0]))
        assert torch.equal(conv[:, 0, :-1], torch.zeros(conv.shape[0], conv.shape[2] - 1))
        assert torch.equal(sd[p + "conv1d.bias"], torch.zeros(conv.shape[0]))
        assert torch.equal(sd[p + "dt_proj.weight"], torch.zeros_like(sd[p + "dt_proj.weight"]))
        A = -torch.exp(sd[p + "A_log"])
        assert torch.allclose(A, torch.full_like(A, -math.e))
        dt = torch.nn.functional.softplus(sd[p + "dt_bias"])
        assert dt.min() >= 1e-3 - 1e-7 and dt.max() <= 0.1 + 1e-6
        bound = 2 ** -2.5 * math.sqrt(6 / sum(sd[p + "z_proj.weight"].shape))
        z = sd[p + "z_proj.weight"]
        assert z.abs().max() <= bound + 1e-7 and z.std() > bound / 4
        assert torch.equal(sd[p + "norm.weight"], torch.ones_like(sd[p + "norm.weight"]))
    names = {n["name"] for n in report["new"]}
    assert len(names) == 7 * len(cfg.mamba_layers)


def test_seed_is_deterministic():
    t = tiny_teacher()
    lt = layer_types_for([], t.config.num_layers)
    a = seed_state(t.config, t.state_dict(), lt, seed=1)[1]
    b = seed_state(t.config, t.state_dict(), lt, seed=1)[1]
    assert all(torch.equal(a[k], b[k]) for k in a)
