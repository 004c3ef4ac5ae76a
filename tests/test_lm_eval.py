"""The lm-eval model `mmmamba`: request types against direct computations, and offline runs of a
local task definition (through `mmmamba eval --lm-eval` and through lm-eval's own command line)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from mmmamba_cli.lm_eval_model import MMambaLM, cut_at
from test_eval_cli import run
from test_eval_support import model_dirs  # noqa: F401 - fixture

MC = [{"question": "what is the color", "choices": ["red", "blue", "green"], "label": 0},
      {"question": "is there a cat", "choices": ["yes", "no"], "label": 1},
      {"question": "what shape is this", "choices": ["circle", "square"], "label": 0}]
GEN = [{"question": "what is the color of this", "answer": "red"}, {"question": "is there a dog", "answer": "no"}]
PPL = [{"text": "what is the color of the cat"}, {"text": "there a dog"}]

TASKS = {
    "tiny_mc": ("mc.jsonl", MC, """output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
metric_list:
  - metric: acc
"""),
    "tiny_gen": ("gen.jsonl", GEN, """output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["cat"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
"""),
    "tiny_ppl": ("ppl.jsonl", PPL, """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
  - metric: bits_per_byte
"""),
}


@pytest.fixture
def task_dir(tmp_path, monkeypatch):
    """Local task definitions over local jsonl files; no hub access."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    d = tmp_path / "tasks"
    d.mkdir()
    for name, (data, rows, body) in TASKS.items():
        (d / data).write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {d / data}\n"
            f"test_split: test\n{body}")
    return d


def req(*args):
    return SimpleNamespace(args=args)


def test_loglikelihood_matches_direct(model_dirs):  # noqa: F811
    lm = MMambaLM(pretrained=str(model_dirs["hybrid"]), batch_size=2, device="cpu")
    pairs = [("what is the color", " red"), ("is there", " a cat of this shape"), ("what", " no")]
    got = lm.loglikelihood([req(c, x) for c, x in pairs], disable_tqdm=True)
    for (context, cont), (logprob, greedy) in zip(pairs, got):
        ctx, full = lm.tok_encode(context), lm.tok_encode(context + cont)
        with torch.no_grad():
            lp = lm.model(torch.tensor([full[:-1]]))[0].log_softmax(-1)[len(ctx) - 1:]  # predicts full[len(ctx):]
        target = torch.tensor(full[len(ctx):])
        assert logprob == pytest.approx(float(lp.gather(-1, target[:, None]).sum()), abs=1e-4)
        assert greedy == bool((lp.argmax(-1) == target).all())


def test_loglikelihood_rolling_is_the_sum_over_tokens(model_dirs):  # noqa: F811
    lm = MMambaLM(pretrained=str(model_dirs["linear"]), device="cpu")
    text = "what is the color of the cat"
    [got] = lm.loglikelihood_rolling([req(text)], disable_tqdm=True)
    ids = [lm.prefix_token_id] + lm.tok_encode(text)
    with torch.no_grad():
        lp = lm.model(torch.tensor([ids[:-1]]))[0].log_softmax(-1)
    assert got == pytest.approx(float(lp.gather(-1, torch.tensor(ids[1:])[:, None]).sum()), abs=1e-4)
    lm.max_length = 3  # several windows: still one finite total per string
    [short] = lm.loglikelihood_rolling([req(text)], disable_tqdm=True)
    assert short < 0 and short != pytest.approx(got)


def test_generate_until_cuts_at_stop_string(model_dirs):  # noqa: F811
    from mmmamba_cli.runtime import SamplingSettings, generate

    lm = MMambaLM(pretrained=str(model_dirs["hybrid"]), batch_size=2, device="cpu")
    prompts = ["what is the color", "is there a cat of this"]
    free = lm.generate_until([req(p, {"max_gen_toks": 8}) for p in prompts], disable_tqdm=True)
    for prompt, text in zip(prompts, free):  # the same greedy answer as the model's own generate
        ids = torch.tensor([lm.tok_encode(prompt)])
        [tokens] = generate(lm.model, ids, settings=SamplingSettings(max_new_tokens=8))
        assert text == lm.tokenizer.decode(tokens, skip_special_tokens=True)
    assert free[0], "the tiny model should say something"
    stop = free[0].split()[-1]
    cut = lm.generate_until([req(p, {"max_gen_toks": 8, "until": [stop]}) for p in prompts], disable_tqdm=True)
    assert cut == [cut_at(t, [stop]) for t in free] and stop not in cut[0]
    assert cut_at("a b. c. d", [". ", "d"]) == "a b" and cut_at("abc", []) == "abc"


def test_offline_lm_eval_through_mmmamba_eval(model_dirs, task_dir, tmp_path):  # noqa: F811
    out = tmp_path / "res"
    code, text = run("eval", model_dirs["linear"], model_dirs["hybrid"], "--lm-eval", "tiny_mc,tiny_gen,tiny_ppl",
                     "--include-path", task_dir, "--out", out, "--device", "cpu")
    assert code == 0, text
    report = json.loads((out / "results.json").read_text())
    for model in report["models"]:
        assert set(model["lm_eval"]) == {"tiny_mc", "tiny_gen", "tiny_ppl"}
        assert 0 <= model["lm_eval"]["tiny_mc"]["acc"] <= 1
        assert model["lm_eval"]["tiny_ppl"]["word_perplexity"] > 1
        assert model["n_samples"]["tiny_mc"]["effective"] == 3
    assert "| lm_eval/tiny_mc/acc |" in (out / "results.md").read_text()


@pytest.mark.slow  # lm-eval's command line indexes all its built-in tasks first: ~10-20 s
def test_lm_eval_command_line_with_mmmamba_model(model_dirs, task_dir, tmp_path, monkeypatch):  # noqa: F811
    """lm-eval's own command line, in this process, with `--model mmmamba` registered."""
    from mmmamba_cli.lm_eval_model import main

    main(["--model", "mmmamba", "--model_args", f"pretrained={model_dirs['hybrid']}", "--device", "cpu",
          "--tasks", "tiny_mc", "--include_path", str(task_dir), "--output_path", str(tmp_path / "lm-out")])
    files = list((tmp_path / "lm-out").rglob("results_*.json"))
    assert len(files) == 1
    assert "acc,none" in json.loads(files[0].read_text())["results"]["tiny_mc"]


@pytest.mark.slow
def test_python_m_wrapper_in_a_fresh_process(model_dirs, task_dir, tmp_path):  # noqa: F811
    """`python -m mmmamba_cli.lm_eval_model` (lm-eval's CLI); model_args win over lm-eval's default device."""
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_DATASETS_CACHE=str(tmp_path / "c"))
    cmd = [sys.executable, "-m", "mmmamba_cli.lm_eval_model", "--model", "mmmamba", "--model_args",
           f"pretrained={model_dirs['hybrid']},device=cpu", "--tasks", "tiny_mc", "--include_path", str(task_dir),
           "--output_path", str(tmp_path / "lm-out")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(list((tmp_path / "lm-out").rglob("results_*.json"))) == 1


@pytest.mark.slow
def test_unknown_lm_eval_task_is_one_line_exit_2(model_dirs, task_dir, tmp_path):  # noqa: F811
    code, text = run("eval", model_dirs["linear"], "--lm-eval", "tiny_mc,no_such_task_xyz", "--include-path",
                     task_dir, "--out", tmp_path / "never")
    assert code == 2 and "unknown lm-eval task(s): no_such_task_xyz" in text and "\n" not in text
    assert not (tmp_path / "never").exists()
