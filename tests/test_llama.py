"""Llama-family teachers (Llama / Mistral / Qwen2) and students loaded through transformers' Auto classes.

Every model is a tiny random one built from a config and saved with ``save_pretrained``: no downloads.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from conftest import image_inputs, save_hovle_snapshot, tiny_teacher
from mmmamba_cli.cli.main import app
from mmmamba_cli.errors import UserError
from mmmamba_cli.io.hf_causal_lm import hf_to_ours
from mmmamba_cli.io.load import load_model
from mmmamba_cli.runtime import SamplingSettings, generate
from mmmamba_cli.seed import seed_directory

transformers = pytest.importorskip("transformers")
runner = CliRunner()

TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
# each family stresses something different: llama3 RoPE scaling + all-four biases; Qwen2's q/k/v-only
# biases + tied embeddings; Mistral's head_dim != hidden / heads
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(
        attention_bias=True, rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                              "original_max_position_embeddings": 32})),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(head_dim=32)),
}


def randomize_hf(model, seed=0):
    """Weights large enough that logits, RoPE and biases all matter (HF's 0.02 init is nearly flat)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """family -> (transformers model, its save_pretrained directory)."""
    torch.manual_seed(0)
    out = {}
    for family, (cfg_name, cls_name, extra) in FAMILIES.items():
        config = getattr(transformers, cfg_name)(**TINY, **extra)
        model = randomize_hf(getattr(transformers, cls_name)(config))
        path = tmp_path_factory.mktemp(family)
        model.save_pretrained(path)
        out[family] = (model, path)
    return out


def seeded(hf_dirs, family, tmp_path, attn_layers=None, perturb=True):
    """A student seeded from the family's teacher; new parameters moved off their init so tests can fail."""
    out = tmp_path / f"{family}-student"
    seed_directory(hf_dirs[family][1], out, attn_layers)
    if perturb:
        from safetensors.torch import load_file, save_file

        sd = load_file(str(out / "model.safetensors"))
        g = torch.Generator().manual_seed(1)
        for name in sd:
            if any(k in name for k in ("conv1d", "dt_proj", "dt_bias", "A_log")):
                sd[name] = sd[name] + 0.3 * torch.randn(sd[name].shape, generator=g)
        save_file(sd, str(out / "model.safetensors"))
    return out


# ---- teacher loading and seeding ---------------------------------------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
def test_teacher_logits_equal_transformers(hf_dirs, family):
    hf, path = hf_dirs[family]
    ours, info = load_model(path)
    assert info.format == "hf-causal-lm" and ours.config.family == "llama" and ours.config.vision is None
    ids = torch.randint(0, TINY["vocab_size"], (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = hf(ids).logits, ours(ids)
    assert want.std() > 0.5  # non-trivial logits
    assert (want - got).abs().max().item() < 1e-4
    assert any("sliding_window 4096 ignored" in n for n in info.notes) == (family == "mistral")


def test_llama3_rope_scaling_is_applied(hf_dirs):
    """Dropping the llama3 scaling must break parity: the test above really checks it."""
    hf, path = hf_dirs["llama"]
    ours, _ = load_model(path)
    ours.config.llm_layer.rope_scaling = None
    ids = torch.randint(0, TINY["vocab_size"], (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max().item() > 1e-2


def _variant(src, dst, change: dict, drop=()):
    """A copy of a saved model directory with config.json edited (weights linked, not copied)."""
    dst.mkdir()
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text()) | change
    (dst / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k not in drop}))
    return dst


def test_transformers4_style_rope_keys(hf_dirs, tmp_path):
    """Checkpoints written by transformers 4.x keep rope_theta / rope_scaling at the top level."""
    hf, path = hf_dirs["llama"]
    params = dict(json.loads((path / "config.json").read_text())["rope_parameters"])
    legacy = _variant(path, tmp_path / "legacy", {"rope_theta": params.pop("rope_theta"), "rope_scaling": params},
                      drop=("rope_parameters",))
    ours, _ = load_model(legacy)
    ids = torch.randint(0, TINY["vocab_size"], (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max().item() < 1e-4


def test_eos_list_prefers_the_tokenizer_eos(tmp_path):
    from mmmamba_cli.io.hf_causal_lm import config_from_hf

    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|eot|>", "added_tokens_decoder": {"9": {"content": "<|eot|>"}, "2": {"content": "</s>"}}}))
    d = {"model_type": "llama", **TINY, "eos_token_id": [2, 9]}
    notes = []
    assert config_from_hf(d, tmp_path, notes).eos_token_id == 9 and "[2, 9]" in notes[0]
    (tmp_path / "tokenizer_config.json").unlink()
    assert config_from_hf(d, tmp_path, []).eos_token_id == 2


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_seeded_qkvo_equal_source_weights(hf_dirs, family, tmp_path):
    hf, path = hf_dirs[family]
    out = seeded(hf_dirs, family, tmp_path, perturb=False)
    student, _ = load_model(out)
    assert student.config.kind == "linear"
    sd, src = student.state_dict(), hf.state_dict()
    for i in range(TINY["num_hidden_layers"]):
        a, m = f"model.layers.{i}.self_attn.", f"layers.{i}.mixer."
        for hf_name, ours in (("q_proj", "C_proj"), ("k_proj", "B_proj"), ("v_proj", "x_proj"), ("o_proj", "out_proj")):
            assert torch.equal(sd[m + ours + ".weight"], src[a + hf_name + ".weight"])
            assert (m + ours + ".bias" in sd) == (a + hf_name + ".bias" in src)
            if a + hf_name + ".bias" in src:
                assert torch.equal(sd[m + ours + ".bias"], src[a + hf_name + ".bias"])
    if family == "qwen2":  # q/k/v biases, no o bias
        assert "layers.0.mixer.C_proj.bias" in sd and "layers.0.mixer.out_proj.bias" not in sd
    report = json.loads((out / "seed_report.json").read_text())
    n_bias = 3 if family == "qwen2" else 4
    assert len(report["moved"]) == (4 + n_bias) * TINY["num_hidden_layers"]
    assert len(report["new"]) == 7 * TINY["num_hidden_layers"]


@pytest.mark.parametrize("attn_layers", [None, "1"])
def test_prefill_decode_equals_full_forward(hf_dirs, tmp_path, attn_layers):
    student, _ = load_model(seeded(hf_dirs, "qwen2", tmp_path, attn_layers))
    ids = torch.randint(3, TINY["vocab_size"], (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = student(ids)
        cache = student.new_cache(2, capacity=4)
        steps = [student(ids[:, :13], cache=cache)] + [student(ids[:, t:t + 1], cache=cache) for t in range(13, 20)]
    assert (torch.cat(steps, 1) - full).abs().max().item() < 1e-4


def test_weights_from_pytorch_model_bin(hf_dirs, tmp_path):
    hf, path = hf_dirs["mistral"]
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((path / "config.json").read_text())
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    ours, _ = load_model(tmp_path / "bin")
    ids = torch.randint(0, TINY["vocab_size"], (1, 9))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max().item() < 1e-4


# ---- errors --------------------------------------------------------------------------------
def run(*args):
    """The CLI as the console script runs it: a UserError is one line and exit code 2."""
    res = runner.invoke(app, list(map(str, args)))
    if isinstance(res.exception, UserError):
        return 2, str(res.exception)
    return res.exit_code, res.output


def _gpt2_dir(path):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                                                  "n_embd": 64, "n_layer": 2, "n_head": 4}))
    return path


def test_unsupported_architecture_one_line_error(tmp_path):
    out = tmp_path / "student"
    code, text = run("seed", _gpt2_dir(tmp_path / "gpt2"), "-o", out)
    assert code == 2 and "\n" not in text.strip()
    assert "'gpt2'" in text and all(f in text for f in ("llama", "mistral", "qwen2"))
    assert not out.exists()


@pytest.mark.parametrize("change,needle", [
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "rope type 'yarn'"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"mlp_bias": True}, "mlp_bias"),
])
def test_unsupported_settings_are_named(hf_dirs, tmp_path, change, needle):
    with pytest.raises(UserError, match=needle):
        load_model(_variant(hf_dirs["llama"][1], tmp_path / "llama", change))


def test_unexpected_tensor_is_named():
    with pytest.raises(UserError, match="model.layers.0.self_attn.q_norm.weight"):
        hf_to_ours({"model.layers.0.self_attn.q_norm.weight": torch.ones(2)}, "x")


# ---- transformers Auto classes ---------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_automodel_loads_student_and_generate_matches_ours(hf_dirs, tmp_path, family):
    out = seeded(hf_dirs, family, tmp_path, attn_layers="0")
    model, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert type(model).__name__ == "MMMambaForCausalLM"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ours, _ = load_model(out)
    ids = torch.randint(3, TINY["vocab_size"], (2, 8), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    ids[1, :3], mask[1, :3] = 0, 0  # left padding
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask))
    got = model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, eos_token_id=None,
                         pad_token_id=0)
    want = generate(ours, ids, attention_mask=mask, settings=SamplingSettings(max_new_tokens=10, eos_token_id=-1))
    assert got[:, ids.shape[1]:].tolist() == want


def test_automodel_hovle_student_generates_with_image(tmp_path):
    save_hovle_snapshot(tiny_teacher(), tmp_path / "hovle")
    seed_directory(tmp_path / "hovle", tmp_path / "student", "2")
    model, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "student", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ours, _ = load_model(tmp_path / "student")
    ids, pix = image_inputs(ours.config, batch=2)
    got = model.generate(ids, pixel_values=pix, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                         do_sample=False, eos_token_id=None, pad_token_id=0)
    assert got[:, ids.shape[1]:].tolist() == generate(ours, ids, pix, settings=SamplingSettings(6, eos_token_id=-1))


@pytest.mark.parametrize("beams", [1, 3])
def test_wrapped_teacher_generates_like_transformers(hf_dirs, tmp_path, beams):
    """All layers kept as attention: our model through generate() is the original Llama, beams included."""
    hf, _ = hf_dirs["llama"]
    out = seeded(hf_dirs, "llama", tmp_path, attn_layers="0,1", perturb=False)
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    ids = torch.randint(3, TINY["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(4))
    kw = dict(max_new_tokens=12, do_sample=False, num_beams=beams, eos_token_id=None, pad_token_id=0)
    assert torch.equal(model.generate(ids, **kw), hf.generate(ids, **kw))


def test_wrapped_teacher_loss_equals_transformers(hf_dirs, tmp_path):
    hf, _ = hf_dirs["qwen2"]
    model = transformers.AutoModelForCausalLM.from_pretrained(seeded(hf_dirs, "qwen2", tmp_path, "0,1", False))
    ids = torch.randint(0, TINY["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(5))
    labels = ids.clone()
    labels[:, :4] = -100
    with torch.no_grad():
        got, want = model(ids, labels=labels).loss, hf(ids, labels=labels).loss
    assert abs(got.item() - want.item()) < 1e-5 and got.item() > 1.0


def test_save_pretrained_round_trips_through_our_loader(hf_dirs, tmp_path):
    out = seeded(hf_dirs, "qwen2", tmp_path, attn_layers="1")
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    model.save_pretrained(tmp_path / "resaved")
    again, _ = load_model(tmp_path / "resaved")
    ours, _ = load_model(out)
    assert again.config == ours.config
    ids = torch.randint(0, TINY["vocab_size"], (1, 11))
    with torch.no_grad():
        assert torch.equal(again(ids), ours(ids))


def test_import_stays_lazy():
    code = "import sys, mmmamba_cli; assert 'transformers' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_after_import_hook_runs_once(tmp_path, monkeypatch):
    from mmmamba_cli.hf.hook import AfterImport

    (tmp_path / "mm_hook_probe.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    hook, seen = AfterImport(), []
    monkeypatch.setattr(sys, "meta_path", [hook, *sys.meta_path])
    hook.add("mm_hook_probe", lambda: seen.append(sys.modules["mm_hook_probe"].VALUE + 1))
    assert not seen
    import mm_hook_probe  # noqa: F401
    assert seen == [42]
    hook.add("mm_hook_probe", lambda: seen.append(0))  # already imported: runs at once
    assert seen == [42, 0]
    monkeypatch.delitem(sys.modules, "mm_hook_probe")


# ---- distillation ------------------------------------------------------------------------------
WORDS = {"det": ["the", "a"], "adj": ["red", "big", "small", "old"], "noun": ["cat", "dog", "bird", "fish"],
         "verb": ["sees", "likes", "follows"]}


def sentences(n: int, seed: int) -> list[str]:
    """``n`` sentences "det adj noun verb det adj noun ." over a 13-word vocabulary."""
    g = torch.Generator().manual_seed(seed)

    def pick(part: str) -> str:
        return WORDS[part][int(torch.randint(len(WORDS[part]), (1,), generator=g))]

    return [" ".join(pick(p) for p in ("det", "adj", "noun", "verb", "det", "adj", "noun")) + " ." for _ in range(n)]


def mean_kl(teacher, student, ids: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over real tokens of KL(p_teacher || p_student) of the next-token distributions (nats)."""
    with torch.no_grad():
        lt = teacher(ids, attention_mask=mask).float().log_softmax(-1)  # (b, L, V)
        ls = student(ids, attention_mask=mask).float().log_softmax(-1)
    kl = (lt.exp() * (lt - ls)).sum(-1)  # (b, L)
    return float((kl * mask).sum() / mask.sum())


def test_seed_then_three_tiny_stages_lowers_kl(tmp_path):
    """A Llama teacher with a word tokenizer and text-only jsonl: stages 1-3 bring the student closer."""
    from mmmamba_cli.data import build_word_tokenizer
    from mmmamba_cli.distill.run_dir import run_stages

    train, held_out = sentences(48, seed=0), sentences(8, seed=1)
    tok = build_word_tokenizer(train + held_out)
    assert len(tok) <= TINY["vocab_size"]
    config = transformers.LlamaConfig(**{**TINY, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                                         "pad_token_id": tok.pad_token_id})
    torch.manual_seed(0)
    teacher_dir = tmp_path / "teacher"
    randomize_hf(transformers.LlamaForCausalLM(config), seed=7).save_pretrained(teacher_dir)
    tok.save_pretrained(teacher_dir)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in train))

    run = tmp_path / "run"
    seed_directory(teacher_dir, run / "seed")
    # the tiny recipes' own learning rates (1e-2, 5e-3, 1e-3); 12 steps of 4 sequences per stage
    outs = run_stages(run, (1, 2, 3), recipe="tiny", overrides=[f"data.path={data}", "train.steps=12"])
    assert [p.name for p in outs] == ["stage1", "stage2", "stage3"]

    enc = tok(held_out, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]  # (8, L), right-padded
    teacher = load_model(teacher_dir)[0]
    before = mean_kl(teacher, load_model(run / "seed")[0], ids, mask)
    after = mean_kl(teacher, load_model(run / "stage3")[0], ids, mask)
    # measured 1.42 -> 0.47 (teacher seeds 3 and 11: ratios 0.24, 0.33)
    assert after < 0.6 * before, (before, after)
