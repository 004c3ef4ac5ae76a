"""HoVLE snapshot round trip and bad-input handling of `mmmamba seed`."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import image_inputs, save_hovle_snapshot, tiny_teacher
from mmmamba_cli.cli.main import app
from mmmamba_cli.errors import UserError
from mmmamba_cli.io.load import load_model, load_state

runner = CliRunner()


def run(*args):
    """Invoke the CLI the way the console script does (UserError -> exit 2)."""
    import mmmamba_cli.cli.main as m

    try:
        res = runner.invoke(app, list(map(str, args)), catch_exceptions=True)
    except SystemExit as e:  # pragma: no cover
        return e.code, ""
    if isinstance(res.exception, UserError):
        return 2, str(res.exception)
    return res.exit_code, res.output + (repr(res.exception) if res.exception and res.exit_code else "")


@pytest.fixture
def snapshot(tmp_path):
    t = tiny_teacher()
    save_hovle_snapshot(t, tmp_path / "hovle", shards=3)
    return t, tmp_path / "hovle"


def test_snapshot_round_trip_reproduces_logits(snapshot):
    t, path = snapshot
    assert len(list(path.glob("*.safetensors"))) == 3
    loaded, info = load_model(path)
    assert info.format == "hovle"
    ids, pix = image_inputs(t.config)
    with torch.no_grad():
        assert torch.equal(t(ids, pix), loaded(ids, pix))


def test_single_file_with_inferred_config(snapshot, tmp_path):
    from mmmamba_cli.io.files import read_state_dir

    t, path = snapshot
    torch.save(read_state_dir(path), tmp_path / "hovle.ckpt")
    loaded, info = load_model(tmp_path / "hovle.ckpt")
    assert any("inferred" in n for n in info.notes)
    assert loaded.config.num_layers == t.config.num_layers
    got, want = loaded.config.llm_layer, t.config.llm_layer
    assert got.num_heads // got.num_kv_heads == want.num_heads // want.num_kv_heads
    assert any("assumed" in n for n in info.notes)  # head_dim is not visible in shapes: said so
    with_config, _ = load_model(tmp_path / "hovle.ckpt", config_path=path / "config.json")
    ids, pix = image_inputs(t.config)
    with torch.no_grad():
        assert torch.equal(t(ids, pix), with_config(ids, pix))


def test_seed_cli_writes_student(snapshot, tmp_path):
    _, path = snapshot
    out = tmp_path / "student"
    code, text = run("seed", path, "-o", out, "--attn-layers", "0,2")
    assert code == 0, text
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["layer_types"] == ["attention", "mamba", "attention", "mamba"]
    report = json.loads((out / "seed_report.json").read_text())
    assert report["moved"] and report["new"]
    model, _ = load_model(out)
    assert model.config.kind == "hybrid"
    code, text = run("seed", path, "-o", out)  # existing output is never overwritten silently
    assert code == 2 and "--force" in text
    assert json.loads((out / "config.json").read_text())["layer_types"][0] == "attention"
    code, text = run("seed", path, "-o", out, "--force")
    assert code == 0, text
    assert json.loads((out / "config.json").read_text())["layer_types"][0] == "mamba"


def _drop_shard(p):
    (p / "model-00002-of-00003.safetensors").unlink()


def _drop_tensor(p):
    idx = json.loads((p / "model.safetensors.index.json").read_text())
    from safetensors.torch import load_file, save_file
    name = "model-00001-of-00003.safetensors"
    sd = load_file(str(p / name))
    victim = sorted(sd)[0]
    del sd[victim]
    save_file(sd, str(p / name))
    del idx["weight_map"][victim]
    (p / "model.safetensors.index.json").write_text(json.dumps(idx))


def _extra_tensor(p):
    from safetensors.torch import load_file, save_file
    name = "model-00001-of-00003.safetensors"
    sd = load_file(str(p / name))
    sd["language_model.model.layers.0.attention.bogus.weight"] = torch.zeros(2)
    save_file(sd, str(p / name))
    idx = json.loads((p / "model.safetensors.index.json").read_text())
    idx["weight_map"]["language_model.model.layers.0.attention.bogus.weight"] = name
    (p / "model.safetensors.index.json").write_text(json.dumps(idx))


def _shape_mismatch(p):
    cfg = json.loads((p / "config.json").read_text())
    cfg["llm_config"]["intermediate_size"] += 8
    (p / "config.json").write_text(json.dumps(cfg))


def _corrupt_config(p):
    (p / "config.json").write_text("{not json")


@pytest.mark.parametrize("damage,needle", [
    (_drop_shard, "missing shard model-00002"),
    (_drop_tensor, "missing tensor"),
    (_extra_tensor, "attention.bogus.weight"),
    (_shape_mismatch, "shape mismatch"),
    (_corrupt_config, "not valid JSON"),
])
def test_bad_snapshot_one_line_error_no_output(snapshot, tmp_path, damage, needle):
    _, path = snapshot
    damage(path)
    out = tmp_path / "student"
    code, text = run("seed", path, "-o", out)
    assert code == 2
    assert needle in text and "\n" not in text.strip()
    assert not out.exists() and not list(tmp_path.glob(".student*"))


@pytest.mark.parametrize("spec", ["0,9", "-1", "1,1", "a,b"])
def test_attn_layers_out_of_range(snapshot, tmp_path, spec):
    _, path = snapshot
    out = tmp_path / "student"
    code, text = run("seed", path, "-o", out, "--attn-layers", spec)
    assert code == 2 and "--attn-layers" in text
    assert not out.exists()


def test_missing_teacher_path(tmp_path):
    code, text = run("seed", tmp_path / "nope", "-o", tmp_path / "out")
    assert code == 2 and "does not exist" in text


def test_large_models_are_written_in_shards_that_load_back(tmp_path):
    from mmmamba_cli.io.save import save_model_dir

    t = tiny_teacher()
    out = save_model_dir(tmp_path / "sharded", t.config, t.state_dict(), shard_bytes=200_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and not (out / "model.safetensors").exists()
    loaded, _ = load_model(out)
    ids, pix = image_inputs(t.config)
    with torch.no_grad():
        assert torch.equal(t(ids, pix), loaded(ids, pix))


# ---- snapshots written independently (published names), with and without a special table ----
@pytest.mark.parametrize("special", [0, 3], ids=["no-special-table", "special-table"])
def test_independent_snapshot_seeds_and_reproduces_reference(tmp_path, special):
    from hovle_reference import TEXT_VOCAB, hovle_config, inputs, random_tensors, reference_logits, write_dir

    cfg = hovle_config(special=special)
    tensors = random_tensors(cfg, seed=special)
    path = write_dir(tmp_path / "hovle", cfg, tensors, shards=3)
    model, info = load_model(path)
    assert info.format == "hovle"
    assert model.config.vocab_size == TEXT_VOCAB and model.config.num_special_embeddings == special
    assert model.lm_head.weight.shape[0] == TEXT_VOCAB + special  # head rows: llm_config.vocab_size
    for with_image in (True, False):
        ids, pix = inputs(cfg, with_image)
        assert bool((ids >= TEXT_VOCAB).any()) == bool(special)
        with torch.no_grad():
            ours = model(ids, pix)
        assert (ours - reference_logits(cfg, tensors, ids, pix)).abs().max().item() < 1e-5
    out = tmp_path / "student"
    code, text = run("seed", path, "-o", out, "--attn-layers", "0")
    assert code == 0, text
    student, _ = load_model(out)
    assert student.config.kind == "hybrid" and student.lm_head.weight.shape[0] == TEXT_VOCAB + special
    assert torch.equal(student.embed.special.weight, tensors["embedding_model.special_text_embeddings.weight"]) \
        if special else student.embed.special is None


def _set(path: str, value):
    def change(d):
        *parents, key = path.split(".")
        for p in parents:
            d = d[p]
        d[key] = value
    return change


REFUSALS = [
    (_set("llm_config.rope_scaling", {"type": "yarn", "factor": 2.0}), "llm_config.rope_scaling"),
    (_set("embedding_config.rope_scaling", {"type": "dynamic"}), "embedding_config.rope_scaling"),
    (_set("normalize_encoder_output", True), "normalize_encoder_output"),
    (_set("embedding_config.use_pixel_shuffle_proj", False), "use_pixel_shuffle_proj"),
    (_set("embedding_config.pixel_shuffle_loc", "post"), "pixel_shuffle_loc"),
    (_set("embedding_config.use_ls", True), "use_ls"),
    (_set("template", "Hermes-2"), "template"),
    (_set("downsample_ratio", 0.25), "downsample_ratio"),
    (_set("force_image_size", 32), "force_image_size"),
    (_set("min_dynamic_patch", 2), "min_dynamic_patch"),
    (_set("llm_config.hidden_act", "gelu"), "hidden_act"),
    (_set("llm_config.mlp_bias", True), "mlp_bias"),
    (_set("llm_config.architectures", ["Phi3ForCausalLM"]), "architectures"),
    (_set("use_llm_lora", 16), "use_llm_lora"),
    (_set("use_backbone_lora", 8), "use_backbone_lora"),
]


@pytest.mark.parametrize("change,needle", REFUSALS)
def test_unsupported_switch_refused_in_one_line(tmp_path, change, needle):
    from hovle_reference import hovle_config, random_tensors, write_dir

    cfg = hovle_config(special=2)
    tensors = random_tensors(cfg)
    change(cfg)
    path = write_dir(tmp_path / "hovle", cfg, tensors)
    out = tmp_path / "student"
    code, text = run("seed", path, "-o", out)
    assert code == 2, text
    assert needle in text and "not supported" in text and "\n" not in text.strip()
    assert not out.exists() and not list(tmp_path.glob(".student*"))


def test_supported_switches_are_honoured():
    from hovle_reference import hovle_config
    from mmmamba_cli.io.hovle_config import config_from_hovle

    cfg = hovle_config(max_dynamic_patch=6, use_thumbnail=True)
    cfg["llm_config"]["rope_scaling"] = {"type": "dynamic", "factor": 2.0}
    cfg["embedding_config"]["rope_scaling"] = {"type": "linear", "factor": 4.0}
    c = config_from_hovle(cfg)
    assert (c.vision.max_tiles, c.vision.use_thumbnail) == (6, True)
    assert c.llm_layer.rope_scaling == {"type": "dynamic", "factor": 2.0}
    assert c.embed_layer.rope_scaling == {"type": "linear", "factor": 4.0}
    one = config_from_hovle(hovle_config(max_dynamic_patch=6, use_thumbnail=True, dynamic_image_size=False))
    assert (one.vision.max_tiles, one.vision.use_thumbnail) == (1, False)


@pytest.mark.parametrize("llm,emb", [({"type": "dynamic", "factor": 2.0}, None),
                                     (None, {"type": "linear", "factor": 3.0}),
                                     ({"type": "linear", "factor": 2.0}, {"type": "dynamic", "factor": 4.0})])
def test_rope_scaling_matches_reference(tmp_path, llm, emb):
    """Dynamic NTK past max_position_embeddings and linear scaling, as InternLM2 computes them."""
    from hovle_reference import hovle_config, inputs, random_tensors, reference_logits, write_dir

    cfg = hovle_config()
    for key, scaling in (("llm_config", llm), ("embedding_config", emb)):
        cfg[key].update(rope_scaling=scaling, max_position_embeddings=8)  # the inputs are 13 tokens long
    tensors = random_tensors(cfg)
    model, _ = load_model(write_dir(tmp_path / "hovle", cfg, tensors))
    ids, pix = inputs(cfg)
    plain = dict(cfg, llm_config=dict(cfg["llm_config"], rope_scaling=None),
                 embedding_config=dict(cfg["embedding_config"], rope_scaling=None))
    with torch.no_grad():
        ours = model(ids, pix)
    assert (ours - reference_logits(cfg, tensors, ids, pix)).abs().max().item() < 1e-5
    assert (ours - reference_logits(plain, tensors, ids, pix)).abs().max().item() > 1e-3  # scaling matters


def test_bare_file_with_special_table_infers_both_vocabularies(tmp_path):
    from safetensors.torch import save_file

    from hovle_reference import TEXT_VOCAB, hovle_config, random_tensors

    save_file(random_tensors(hovle_config(special=3)), str(tmp_path / "hovle.safetensors"))
    config, _, info = load_state(tmp_path / "hovle.safetensors")
    assert (config.vocab_size, config.num_special_embeddings, config.output_vocab_size) == (TEXT_VOCAB, 3,
                                                                                           TEXT_VOCAB + 3)
    assert any("inferred" in n for n in info.notes)


@pytest.mark.parametrize("case", ["tied-to-tok-embeddings", "head-only-in-tok-embeddings", "tied-to-text-table"])
def test_hovle_tie_means_the_head_is_tok_embeddings(tmp_path, case):
    """HoVLE's tie_word_embeddings ties output to the LLM's tok_embeddings; ours ties to the text table."""
    from hovle_reference import hovle_config, inputs, random_tensors, reference_logits, write_dir

    cfg = hovle_config()
    cfg["llm_config"]["tie_word_embeddings"] = True
    tensors = random_tensors(cfg)
    tensors["language_model.model.tok_embeddings.weight"] = tensors["language_model.output.weight"]
    if case == "head-only-in-tok-embeddings":
        head = tensors.pop("language_model.output.weight")
    if case == "tied-to-text-table":
        tensors["language_model.output.weight"] = tensors["embedding_model.llm_text_embeddings.weight"]
    model, info = load_model(write_dir(tmp_path / "hovle", cfg, tensors))
    assert model.config.tie_word_embeddings == (case == "tied-to-text-table")
    if case == "head-only-in-tok-embeddings":
        tensors["language_model.output.weight"] = head
    ids, pix = inputs(cfg)
    want = reference_logits(cfg, tensors, ids, pix)
    with torch.no_grad():  # the text table as head gives logits near 10: compare relative to their size
        assert (model(ids, pix) - want).abs().max().item() < 1e-5 * max(1.0, want.abs().max().item())


def test_every_switch_is_covered():
    """Each switch HoVLE's code honours is mapped (tested above) or has a refusal case here."""
    from mmmamba_cli.io.hovle_config import SWITCHES

    refused = {needle for _, needle in REFUSALS}
    for switch in SWITCHES:
        name = switch.split(".")[-1]
        assert any(name in needle for needle in refused) or name in {"special_token_maps", "max_dynamic_patch", "dynamic_image_size",
                                           "use_thumbnail"}, switch
