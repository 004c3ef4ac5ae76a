"""The released mmMamba layout (hustvl/mmMamba-linear, -hybrid): import, export, bad input.

Checkpoints are written by an independent writer (tests/hovle_reference.py, from the published
names) and our logits are compared with a plain-PyTorch forward of the layout's math.
"""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_teacher
from hovle_reference import HEADS, N_EMB, hovle_config, inputs, random_tensors, reference_logits, write_dir
from mmmamba_cli.cli.main import app
from mmmamba_cli.errors import UserError
from mmmamba_cli.io.load import build_model, load_model, load_state
from mmmamba_cli.io.save import save_model_dir
from mmmamba_cli.model.layout import layer_types_for
from mmmamba_cli.seed import seed_state

torch.set_num_threads(1)
runner = CliRunner()
BLOCKS = {"linear": ["mamba2"] * 4, "hybrid": ["mha", "mamba2", "mha", "mamba2"]}


def run(*args):
    """Invoke the CLI the way the console script does (UserError -> exit 2)."""
    res = runner.invoke(app, list(map(str, args)), catch_exceptions=True)
    if isinstance(res.exception, UserError):
        return 2, str(res.exception)
    return res.exit_code, res.output + (repr(res.exception) if res.exception and res.exit_code else "")


def released(tmp_path, kind: str, special: int = 0, name: str = "release"):
    cfg = hovle_config(special=special, blocks=BLOCKS[kind])
    tensors = random_tensors(cfg, seed=len(name) + special)
    return cfg, tensors, write_dir(tmp_path / name, cfg, tensors, shards=3)


@pytest.mark.parametrize("kind", list(BLOCKS))
@pytest.mark.parametrize("with_image", [True, False], ids=["image+text", "text-only"])
def test_logits_equal_independent_forward(tmp_path, kind, with_image):
    cfg, tensors, path = released(tmp_path, kind, special=2)
    model, info = load_model(path)
    assert info.format == "mmmamba-release" and model.config.kind == kind
    assert model.config.layer_types == ["mamba" if b == "mamba2" else "attention" for b in BLOCKS[kind]]
    ids, pix = inputs(cfg, with_image)
    with torch.no_grad():
        ours = model(ids, pix)
    want = reference_logits(cfg, tensors, ids, pix)
    assert ours.shape == want.shape
    assert (ours - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("kind", list(BLOCKS))
@pytest.mark.parametrize("with_image", [True, False], ids=["image+text", "text-only"])
def test_decode_after_prefill_matches_full_forward(tmp_path, kind, with_image):
    cfg, tensors, path = released(tmp_path, kind)
    model, _ = load_model(path)
    ids, pix = inputs(cfg, with_image, seed=1)
    want = reference_logits(cfg, tensors, ids, pix)
    n = ids.shape[1] - 4
    with torch.no_grad():
        cache = model.new_cache(1, capacity=4)
        steps = [model(ids[:, :n], pix, cache=cache)]
        steps += [model(ids[:, t:t + 1], cache=cache) for t in range(n, ids.shape[1])]
    assert (torch.cat(steps, 1) - want).abs().max().item() < 1e-5


def test_untrained_a_log_warns(tmp_path):
    cfg = hovle_config(blocks=BLOCKS["hybrid"])
    tensors = random_tensors(cfg)
    for k in tensors:
        if k.endswith("A_log_bias"):
            tensors[k] = torch.ones(HEADS)  # exactly the init: what a lossy conversion leaves
    _, _, info = load_state(write_dir(tmp_path / "r", cfg, tensors))
    assert any("A_log" in n and "init" in n for n in info.notes)
    _, _, info = load_state(released(tmp_path, "hybrid")[2])
    assert not any("A_log" in n for n in info.notes)


def student(kind: str, dtype=torch.float32):
    teacher = tiny_teacher()
    types = layer_types_for([] if kind == "linear" else [0, 2], teacher.config.num_layers)
    config, sd, _ = seed_state(teacher.config, teacher.state_dict(), types)
    g = torch.Generator().manual_seed(3)
    sd = {k: (v + 0.1 * torch.randn(v.shape, generator=g) if "mixer" in k else v).to(dtype) for k, v in sd.items()}
    return config, sd


@pytest.mark.parametrize("kind,dtype", [("linear", torch.float32), ("hybrid", torch.bfloat16)])
def test_export_import_round_trip_is_bitwise(tmp_path, kind, dtype):
    config, sd = student(kind, dtype)
    config.system_prompt = "Answer briefly."
    src = save_model_dir(tmp_path / "student", config, sd)
    out = tmp_path / "exported"
    code, text = run("export", src, "-o", out, "--format", "mmmamba-release", "--shard-gb", "0.00001")
    assert code == 0, text
    d = json.loads((out / "config.json").read_text())
    assert d["model_type"] == "mmMamba_chat" and d["llm_config"]["model_type"] == "mmMamba"
    n_emb = config.num_embed_layers
    blocks = ["mha" if t == "attention" else "mamba2" for t in config.layer_types]
    assert d["embedding_config"]["layers_block_type"] == blocks[:n_emb]
    assert d["llm_config"]["layers_block_type"] == blocks[n_emb:]
    assert len(list(out.glob("model-*.safetensors"))) > 1  # sharded
    got_cfg, got, info = load_state(out)
    assert info.format == "mmmamba-release" and got_cfg.layer_types == config.layer_types
    assert dict(got_cfg.to_dict(), source={}) == dict(config.to_dict(), source={})  # every field but provenance
    assert set(got) == set(sd)
    assert all(got[k].dtype == sd[k].dtype and torch.equal(got[k], sd[k]) for k in sd)
    ids = torch.randint(10, config.vocab_size, (1, 7))
    with torch.no_grad():
        a = build_model(config, dict(sd), "src").float()(ids)
        b = build_model(got_cfg, got, "exported").float()(ids)
    assert torch.equal(a, b)
    code, text = run("export", src, "-o", out)  # never overwritten without --force
    assert code == 2 and "--force" in text


def test_export_reads_what_the_released_code_reads(tmp_path):
    """Exporting a released directory gives back the same tensor names, shapes and values."""
    cfg, tensors, path = released(tmp_path, "hybrid", special=2)
    out = tmp_path / "again"
    assert run("export", path, "-o", out)[0] == 0
    index = json.loads((out / "model.safetensors.index.json").read_text()) if (
        out / "model.safetensors.index.json").exists() else None
    from safetensors.torch import load_file

    files = sorted(out.glob("*.safetensors"))
    back = {k: v for f in files for k, v in load_file(str(f)).items()}
    assert index is None or set(index["weight_map"]) == set(back)
    learned = {k for k in tensors if not k.endswith(("tok_embeddings.weight", "class_embedding"))}
    assert learned <= set(back) and set(back) == set(tensors)
    assert all(torch.equal(back[k], tensors[k]) for k in learned)
    head = back["language_model.output.weight"]  # what the released code ties to when tie_word_embeddings
    assert torch.equal(back["language_model.model.tok_embeddings.weight"], head)
    d = json.loads((out / "config.json").read_text())
    assert d["embedding_config"]["llm_vocab_size"] == cfg["embedding_config"]["llm_vocab_size"]
    assert d["llm_config"]["vocab_size"] == cfg["llm_config"]["vocab_size"]


def test_export_hovle_format_for_teachers_only(tmp_path):
    teacher = tiny_teacher()
    src = save_model_dir(tmp_path / "teacher", teacher.config, teacher.state_dict())
    assert run("export", src, "-o", tmp_path / "hovle", "--format", "hovle")[0] == 0
    cfg, sd, info = load_state(tmp_path / "hovle")
    assert info.format == "hovle" and all(torch.equal(sd[k], v) for k, v in teacher.state_dict().items())
    config, sd = student("linear")
    lin = save_model_dir(tmp_path / "linear", config, sd)
    code, text = run("export", lin, "-o", tmp_path / "bad", "--format", "hovle")
    assert code == 2 and "Mamba layers" in text and "\n" not in text
    code, text = run("export", lin, "-o", tmp_path / "bad", "--format", "gguf")
    assert code == 2 and "--format" in text
    assert not (tmp_path / "bad").exists()


def test_export_refuses_a_llama_derived_student(tmp_path):
    from mmmamba_cli.model.config import LayerShape, ModelConfig
    from mmmamba_cli.model.model import MMModel

    shape = LayerShape(num_heads=2, num_kv_heads=1, head_dim=8, intermediate_size=32, rope_theta=1e4)
    config = ModelConfig(hidden_size=16, vocab_size=40, num_embed_layers=0, num_llm_layers=2, embed_layer=shape,
                         llm_layer=shape, vision=None, img_context_token_id=None, family="llama",
                         layer_types=["mamba", "mamba"])
    src = save_model_dir(tmp_path / "llama-student", config, MMModel(config).state_dict())
    code, text = run("export", src, "-o", tmp_path / "out")
    assert code == 2 and "llama" in text and "\n" not in text
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_info_shows_layer_layout(tmp_path):
    *_, path = released(tmp_path, "hybrid")
    code, text = run("info", path)
    assert code == 0, text
    assert "mmmamba-release" in text and "hybrid" in text
    assert "[0, 2]" in text and "[1, 3]" in text  # attention layers, mamba layers
    assert "embedding AM | LLM AM" in text


def _no_blocks(p):
    d = json.loads((p / "config.json").read_text())
    del d["llm_config"]["layers_block_type"]
    (p / "config.json").write_text(json.dumps(d))


def _short_blocks(p):
    d = json.loads((p / "config.json").read_text())
    d["embedding_config"]["layers_block_type"] = ["mamba2"]
    (p / "config.json").write_text(json.dumps(d))


def _odd_block(p):
    d = json.loads((p / "config.json").read_text())
    d["llm_config"]["layers_block_type"][0] = "rwkv"
    (p / "config.json").write_text(json.dumps(d))


def _rewrite(p, name, fn):
    from safetensors.torch import load_file, save_file

    index = json.loads((p / "model.safetensors.index.json").read_text())
    shard = index["weight_map"][name]
    sd = load_file(str(p / shard))
    sd[name] = fn(sd[name])
    save_file(sd, str(p / shard))


def _wrong_packed(p):
    _rewrite(p, f"language_model.model.layers.{3 - N_EMB}.attention.wvkqgdt.weight", lambda t: t[:-1])


def _drop_shard(p):
    (p / "model-00002-of-00003.safetensors").unlink()


def _drop_dt_bias(p):
    from safetensors.torch import load_file, save_file

    index = json.loads((p / "model.safetensors.index.json").read_text())
    name = "embedding_model.encoder.1.attention.dt_bias"
    shard = index["weight_map"].pop(name)
    sd = load_file(str(p / shard))
    del sd[name]
    save_file(sd, str(p / shard))
    (p / "model.safetensors.index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("damage,needle", [
    (_no_blocks, "llm_config.layers_block_type is missing"),
    (_short_blocks, "one entry per layer"),
    (_odd_block, "'rwkv'"),
    (_wrong_packed, "wvkqgdt.weight: shape"),
    (_drop_shard, "missing shard model-00002"),
    (_drop_dt_bias, "layers.1.mixer.dt_bias"),
])
@pytest.mark.parametrize("command", ["export", "info"])
def test_bad_release_one_line_error_nothing_written(tmp_path, damage, needle, command):
    *_, path = released(tmp_path, "hybrid")
    damage(path)
    out = tmp_path / "out"
    code, text = run(command, path, *(["-o", out] if command == "export" else []))
    assert code == 2, text
    assert needle in text and "\n" not in text.strip()
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_distill_continues_from_a_released_directory(tmp_path):
    """Stage 3 on new data from a directory in the released layout (here our export of a seed)."""
    import shutil

    from test_distill_setup import make_jsonl, make_teacher_dir
    from mmmamba_cli.seed import seed_directory

    teacher = make_teacher_dir(tmp_path)
    seed_directory(teacher, tmp_path / "seed")
    run_dir = tmp_path / "run"
    assert run("export", tmp_path / "seed", "-o", run_dir / "stage2")[0] == 0
    assert (run_dir / "stage2" / "tokenizer.json").exists()
    data = make_jsonl(tmp_path, 8)
    code, text = run("distill", "--stage", "3", "-r", run_dir, "--recipe", "tiny", "--data", data,
                     "--teacher", teacher, "train.steps=2")
    assert code == 0, text
    model, info = load_model(run_dir / "stage3")
    assert model.config.kind == "linear" and info.format == "mmmamba"
    shutil.rmtree(run_dir / "stage3")
    code, text = run("distill", "--stage", "3", "-r", run_dir, "--recipe", "tiny", "--data", data, "train.steps=2")
    assert code == 2 and "--teacher" in text  # the released config records no teacher


def test_single_file_needs_and_takes_its_config(tmp_path):
    from safetensors.torch import save_file

    cfg, tensors, path = released(tmp_path, "hybrid", special=2)
    save_file(tensors, str(tmp_path / "mm.safetensors"))
    code, text = run("info", tmp_path / "mm.safetensors")
    assert code == 2 and "--config" in text
    model, _ = load_model(tmp_path / "mm.safetensors", config_path=path / "config.json")
    ids, pix = inputs(cfg)
    with torch.no_grad():
        assert (model(ids, pix) - reference_logits(cfg, tensors, ids, pix)).abs().max().item() < 1e-5


def test_hybridize_a_released_linear_model(tmp_path):
    teacher_cfg = hovle_config()
    teacher = random_tensors(teacher_cfg, seed=5)
    write_dir(tmp_path / "hovle", teacher_cfg, teacher)
    cfg = hovle_config(blocks=BLOCKS["linear"])
    tensors = {k: teacher.get(k, v) if "attention." not in k else v for k, v in random_tensors(cfg).items()}
    write_dir(tmp_path / "linear", cfg, tensors)
    out = tmp_path / "hybrid"
    code, text = run("hybridize", tmp_path / "linear", "-o", out, "--attn-layers", "0,2", "--teacher",
                     tmp_path / "hovle")
    assert code == 0, text
    model, _ = load_model(out)
    assert model.config.attention_layers == [0, 2] and model.config.mamba_layers == [1, 3]
    back = model.state_dict()
    _, lin, _ = load_state(tmp_path / "linear")
    assert torch.equal(back["layers.1.mixer.x_proj.weight"], lin["layers.1.mixer.x_proj.weight"])
    assert torch.equal(back["layers.2.mixer.o_proj.weight"], teacher["language_model.model.layers.0.attention.wo.weight"])


def test_released_attention_uses_plain_rope(tmp_path):
    """The released "mha" layers apply plain RoPE whatever rope_scaling says; so do we, with a note."""
    cfg = hovle_config(blocks=BLOCKS["hybrid"])
    cfg["llm_config"].update(rope_scaling={"type": "dynamic", "factor": 2.0}, max_position_embeddings=8)
    tensors = random_tensors(cfg)
    model, info = load_model(write_dir(tmp_path / "r", cfg, tensors))
    assert any("rope_scaling ignored" in n for n in info.notes)
    ids, pix = inputs(cfg)  # 13 tokens, past max_position_embeddings
    plain = dict(cfg, llm_config=dict(cfg["llm_config"], rope_scaling=None))
    with torch.no_grad():
        assert (model(ids, pix) - reference_logits(plain, tensors, ids, pix)).abs().max().item() < 1e-5


def test_export_warns_what_the_released_code_does_differently(tmp_path):
    import dataclasses

    from mmmamba_cli.io.release_export import export_model

    config, sd = student("hybrid")
    config.llm_layer = dataclasses.replace(config.llm_layer, rope_scaling={"type": "dynamic", "factor": 2.0})
    src = save_model_dir(tmp_path / "s", config, sd)
    lines = []
    r = export_model(src, tmp_path / "out", log=lines.append)
    assert any("plain RoPE" in n for n in r.notes) and any(line.startswith("warning:") for line in lines)


def test_eval_and_generate_read_an_exported_release_like_its_source(tmp_path):
    """The embedded teacher and its release-layout export score and answer the same."""
    from mmmamba_cli.assets import default_teacher
    from mmmamba_cli.evaluate import evaluate_models

    out = tmp_path / "teacher-release"
    assert run("export", default_teacher(), "-o", out)[0] == 0
    report = evaluate_models([default_teacher(), out], task="easyvqa", limit=6, batch_size=6)
    a, b = (m["metrics"] for m in report["models"])
    assert a["n"] == b["n"] == 6 and a == b
    said = [run("generate", m, "--prompt", "what color is the shape?", "--max-new-tokens", "3")
            for m in (default_teacher(), out)]
    assert said[0][0] == said[1][0] == 0 and said[0][1].strip() == said[1][1].strip()


def test_hovle_size_release_shapes_match_the_published_table():
    """At HoVLE-2.6B shapes (meta tensors, no memory) the export has SPEC section 7's shapes."""
    from mmmamba_cli.io.release_map import ours_to_release
    from mmmamba_cli.model.config import preset
    from mmmamba_cli.model.model import MMModel

    config = preset("hovle-2.6b").with_layer_types(layer_types_for(list(range(0, 32, 4)), 32))
    with torch.device("meta"):
        sd = MMModel(config).state_dict()
    out = ours_to_release(sd, config)
    mamba, mha = "language_model.model.layers.1.attention.", "language_model.model.layers.0.attention."
    want = {"wvkqgdt.weight": (6160, 2048), "conv1d.weight": (4096, 1, 2), "conv1d.bias": (4096,),
            "A_log_bias": (16,), "dt_bias": (16,), "g_norm_swish_gate.weight": (128,), "o_proj.weight": (2048, 2048)}
    assert {k: tuple(out[mamba + k].shape) for k in want} == want
    assert tuple(out[mha + "wqkv.weight"].shape) == (4096, 2048) and mha + "wvkqgdt.weight" not in out
    assert tuple(out["embedding_model.encoder.1.attention.wvkqgdt.weight"].shape) == (6160, 2048)
