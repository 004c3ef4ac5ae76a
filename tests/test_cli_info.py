"""`mmmamba info`: kind, layer layout and parameter count, checked against the files themselves."""
from __future__ import annotations

import json
import math

import torch
from safetensors import safe_open
from typer.testing import CliRunner

from mmmamba_cli.assets import default_teacher
from mmmamba_cli.cli.main import app
from mmmamba_cli.errors import UserError

torch.set_num_threads(1)
runner = CliRunner()


def run(*args):
    res = runner.invoke(app, list(map(str, args)), catch_exceptions=True, terminal_width=200)
    if isinstance(res.exception, UserError):
        return 2, str(res.exception)
    return res.exit_code, res.output


def file_facts(directory):
    """(parameter count, layer count) read straight from model.safetensors and config.json."""
    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    config = json.loads((directory / "config.json").read_text())
    return params, config["num_embed_layers"] + config["num_llm_layers"]


def test_info_of_the_teacher_and_a_seeded_hybrid(tmp_path):
    teacher = default_teacher()
    params, layers = file_facts(teacher)
    code, out = run("info", teacher)
    assert code == 0, out
    assert "teacher" in out and f"{params:,}" in out and "mamba layers" in out
    assert str(list(range(layers))) in out  # every layer is attention

    student = tmp_path / "hybrid"
    code, out = run("seed", teacher, "-o", student, "--attn-layers", "0,4")
    assert code == 0, out
    params, layers = file_facts(student)
    code, out = run("info", student)
    assert code == 0, out
    assert "hybrid" in out and f"{params:,}" in out
    assert "[0, 4]" in out and str([i for i in range(layers) if i not in (0, 4)]) in out


def test_info_bad_path_is_one_line(tmp_path):
    code, text = run("info", tmp_path / "nope")
    assert code == 2 and "does not exist" in text and "\n" not in text.strip(), text
