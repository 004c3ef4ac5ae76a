"""A teacher directory with a planted ``tokenization_*.py`` + ``auto_map``: no command runs it
without ``--trust-remote-code``, and seeded students carry no Python files."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from conftest import save_hovle_snapshot, tiny_teacher
from test_tokenizer_native import internlm2_dir, train_sp

pytest.importorskip("sentencepiece")
torch.set_num_threads(1)
SPECIALS = ["<|im_start|>", "<|im_end|>", "<IMG_CONTEXT>", "<img>", "</img>"]  # ids 3..7: <IMG_CONTEXT> = 5


def cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """The console script in-process: (exit code, stderr)."""
    from mmmamba_cli.cli.common import run_app
    from mmmamba_cli.cli.main import app

    monkeypatch.setattr(sys, "argv", ["mmmamba", *map(str, args)])
    monkeypatch.delenv("MMMAMBA_DEBUG", raising=False)
    monkeypatch.delenv("MMMAMBA_TRUST_REMOTE_CODE", raising=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_app(app)
    return e.value.code or 0, capsys.readouterr().err


@pytest.fixture
def planted(tmp_path):
    """A HoVLE-layout teacher whose tokenizer directory ships code that leaves a mark when run."""
    teacher = tmp_path / "teacher"
    save_hovle_snapshot(tiny_teacher(), teacher, shards=2)
    proto = train_sp(True, vocab=60, byte_fallback=False, user_defined=SPECIALS)
    internlm2_dir(teacher, proto, {t: 3 + i for i, t in enumerate(SPECIALS)})
    cfg = json.loads((teacher / "tokenizer_config.json").read_text())
    (teacher / "tokenizer_config.json").write_text(json.dumps({**cfg, "eos_token": "<|im_end|>"}))
    return teacher, tmp_path / "teacher-RAN"


def test_no_command_runs_planted_code(planted, tmp_path, monkeypatch, capsys):
    teacher, marker = planted
    code, err = cli(monkeypatch, capsys, "seed", teacher, "-o", tmp_path / "student")
    assert code == 0, err
    student = tmp_path / "student"
    assert not list(student.glob("*.py"))
    assert "auto_map" not in json.loads((student / "tokenizer_config.json").read_text())
    for model in (teacher, student):
        code, err = cli(monkeypatch, capsys, "generate", model, "-p", "what color", "--max-new-tokens", 3)
        assert code == 0, err
    task = tmp_path / "task.jsonl"
    task.write_text(json.dumps({"question": "what color", "answer": "red"}) + "\n")
    code, err = cli(monkeypatch, capsys, "eval", teacher, student, "--task", task, "--kind", "vqa",
                    "-o", tmp_path / "eval", "--max-new-tokens", 2)
    assert code == 0, err
    assert not marker.exists()
    # the opt-in really reaches the tokenizer: now the planted file runs (and fails, as written)
    code, err = cli(monkeypatch, capsys, "generate", teacher, "-p", "hi", "--trust-remote-code")
    assert marker.exists() and code == 2 and len(err.strip().splitlines()) == 1


def test_trusted_seed_carries_the_code(planted, tmp_path, monkeypatch, capsys):
    teacher, _ = planted
    code, err = cli(monkeypatch, capsys, "seed", teacher, "-o", tmp_path / "s", "--trust-remote-code")
    assert code == 0, err
    assert (tmp_path / "s" / "tokenization_internlm2.py").exists()


@pytest.mark.slow
def test_distill_hybridize_and_bench_never_run_a_planted_student(planted, tmp_path, monkeypatch, capsys):
    """A student handed over with code planted in it (auto_map included) is read as data too."""
    from test_distill_setup import make_jsonl

    teacher, _ = planted
    run = tmp_path / "run"
    code, err = cli(monkeypatch, capsys, "seed", teacher, "-r", run)
    assert code == 0, err
    cfg = json.loads((teacher / "tokenizer_config.json").read_text())
    (run / "seed" / "tokenizer_config.json").write_text(json.dumps(cfg))  # auto_map back in
    marker = tmp_path / "student-RAN"
    (run / "seed" / "tokenization_internlm2.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    data = make_jsonl(tmp_path / "data", n=8)
    code, err = cli(monkeypatch, capsys, "distill", "--stage", "1", "-r", run, "--recipe", "tiny", "--data", data,
                    "train.steps=1", "train.save_every=0")
    assert code == 0, err
    code, err = cli(monkeypatch, capsys, "hybridize", run / "seed", "-o", tmp_path / "hyb", "--count", 1,
                    "--placement", "auto", "--data", data, "--calib-samples", 2, "--batch-size", 2)
    assert code == 0, err
    code, err = cli(monkeypatch, capsys, "bench", "--model", run / "seed", "--models", "linear", "--tokens", 16,
                    "--steps", 1, "--warmup", 0, "--repeats", 1, "--new-tokens", 2, "-o", tmp_path / "bench")
    assert code == 0, err
    assert not marker.exists()
    assert not list((run / "stage1").glob("*.py")) and not list((tmp_path / "hyb").glob("*.py"))
