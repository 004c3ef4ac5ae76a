"""`mmmamba train-teacher`: a tiny run writes a complete teacher directory; bad input fails before training."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mmmamba_cli.cli.main import app
from mmmamba_cli.errors import UserError
from mmmamba_cli.io.load import load_model

torch.set_num_threads(1)
runner = CliRunner()
TINY = ["train.steps=2", "model.hidden_size=32", "model.num_heads=2", "model.num_kv_heads=1",
        "model.intermediate_size=64", "model.num_embed_layers=1", "model.num_llm_layers=1", "data.attribute_layer=-1", "train.batch_images=2",
        "train.eval_every=1000", "train.threads=1"]


def run(*args):
    res = runner.invoke(app, list(map(str, args)), catch_exceptions=True)
    if isinstance(res.exception, UserError):
        return 2, str(res.exception)
    return res.exit_code, res.output


@pytest.mark.slow  # about 15 s of CPU: the final accuracy runs over the whole easy-vqa test split
def test_tiny_run_writes_a_loadable_teacher(tmp_path):
    out = tmp_path / "teacher"
    code, text = run("train-teacher", "-o", out, *TINY)
    assert code == 0, text
    report = json.loads((out / "train_report.json").read_text())
    model, _ = load_model(out)
    assert model.config.kind == "teacher" and model.config.num_layers == 2 and model.config.hidden_size == 32
    assert report["steps"] == 2 and report["params"] == sum(p.numel() for p in model.parameters())
    assert 0.0 <= report["test_accuracy"] <= 1.0 and report["test_questions"] > 0
    assert (out / "tokenizer.json").exists() or (out / "tokenizer_config.json").exists()
    code, text = run("train-teacher", "-o", out, *TINY)  # taken: refused before any training
    assert code == 2 and "already exists" in text


def test_bad_input_fails_before_training(tmp_path):
    code, text = run("train-teacher", "-o", tmp_path / "t", "stepz=3")
    assert code == 2 and "stepz" in text and "\n" not in text.strip(), text
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    code, text = run("train-teacher", "-o", taken, *TINY)
    assert code == 2 and "already exists" in text and (taken / "keep.txt").read_text() == "mine"


@pytest.mark.slow  # about 15 s of CPU, like the run above
def test_tiny_run_with_balanced_yes_no_image_word_loss_and_tied_embeddings(tmp_path):
    out = tmp_path / "teacher"
    code, text = run("train-teacher", "-o", out, *TINY, "data.balance_yes_no=true", "data.image_word_loss=0.5",
                     "model.tie_embeddings=true", "data.max_turns=1")
    assert code == 0, text
    model, _ = load_model(out)
    assert model.lm_head.weight.data_ptr() == model.embed.embed_tokens.weight.data_ptr()
    recipe = json.loads((out / "train_report.json").read_text())["recipe"]
    assert recipe["data"]["image_word_loss"] == 0.5 and recipe["data"]["balance_yes_no"] is True


@pytest.mark.slow  # about 15 s of CPU
def test_tiny_comparison_stage_continues_a_teacher_and_saves_no_attribute_heads(tmp_path):
    base = tmp_path / "base"
    assert run("train-teacher", "-o", base, *TINY)[0] == 0
    out = tmp_path / "compared"
    code, text = run("train-teacher", "--recipe", "teacher-easyvqa-compare", "-o", out, *TINY, "train.steps=4",
                     "data.compare_steps=3", f"train.init_from={base}")
    assert code == 0, text
    from safetensors.torch import load_file
    before, after = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(before) == set(after)  # the training-only heads are not saved
    assert any(not torch.equal(before[k], after[k]) for k in before)
    recipe = json.loads((out / "train_report.json").read_text())["recipe"]
    assert recipe["data"]["attribute_loss"] == 1.0 and recipe["train"]["init_from"] == str(base)
