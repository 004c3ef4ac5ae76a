"""Presets are one dict; runtime choices are load-time options, never written to config.json."""
from __future__ import annotations

import json

import pytest
import torch

from mmmamba_cli.assets import default_teacher
from mmmamba_cli.io.load import load_model
from mmmamba_cli.io.save import save_model_dir
from mmmamba_cli.model.attention import Attention
from mmmamba_cli.model.config import PRESETS, ModelConfig, preset
from mmmamba_cli.model.layout import LayoutError, every, parse_layer_list

torch.set_num_threads(1)


def test_presets_are_fresh_configs_with_published_shapes():
    assert set(PRESETS) == {"hovle-2.6b", "tiny"}
    h = preset("hovle-2.6b")  # SPEC section 1: internlm2-chat-1.8b inside HoVLE-2.6B
    assert (h.hidden_size, h.vocab_size, h.num_embed_layers, h.num_llm_layers) == (2048, 92553, 8, 24)
    assert (h.llm_layer.num_heads, h.llm_layer.num_kv_heads, h.llm_layer.head_dim) == (16, 8, 128)
    assert h.vision.tokens_per_tile == 256
    a, b = preset("tiny"), preset("tiny")
    a.layer_types[0] = "mamba"
    assert b.layer_types[0] == "attention"  # no shared state between calls
    with pytest.raises(ValueError, match="choose one of: hovle-2.6b, tiny"):
        preset("huge")


def test_runtime_choices_are_not_saved_and_old_files_still_load(tmp_path):
    c = preset("tiny")
    c.mamba.impl = "torch"
    assert "impl" not in c.to_dict()["mamba"]
    old = json.loads((default_teacher() / "config.json").read_text())
    old.setdefault("mamba", {})["impl"] = "auto"  # as an earlier version wrote it
    assert ModelConfig.from_dict(old).hidden_size == old["hidden_size"]

    model, _ = load_model(default_teacher(), impl="torch", attn_impl="eager")
    assert model.config.mamba.impl == "torch"
    assert {m.impl for m in model.modules() if isinstance(m, Attention)} == {"eager"}
    save_model_dir(tmp_path / "copy", model.config, model.state_dict(), default_teacher())
    saved = json.loads((tmp_path / "copy" / "config.json").read_text())
    assert "impl" not in saved["mamba"]
    again, _ = load_model(tmp_path / "copy")
    assert again.config.mamba.impl == "auto"
    assert {m.impl for m in again.modules() if isinstance(m, Attention)} == {"sdpa"}


def test_layout_errors_name_the_input_not_a_flag():
    for call, field in ((lambda: parse_layer_list("1,1", 4), "attn_layers"),
                        (lambda: parse_layer_list("9", 4), "attn_layers"),
                        (lambda: every(0, 0, 4), "every")):
        with pytest.raises(LayoutError) as e:
            call()
        assert e.value.field == field and "--" not in str(e.value)
