"""Evaluation on a CUDA device: left-padded batches stay exact, fp32 and bf16 runs end to end.
Skipped without CUDA; run with `pytest -m gpu tests/test_eval_gpu.py`."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import tiny_teacher
from mmmamba_cli.data import collate
from mmmamba_cli.evaluate import EvalItem, Task, evaluate_models, predict
from mmmamba_cli.runtime import SamplingSettings, generate
from test_eval_batch import NEVER, prompts
from test_eval_support import model_dirs, png_bytes, student, word_tokenizer  # noqa: F401 - fixture

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("attn_layers", [[], [1, 3]], ids=["linear", "hybrid"])
def test_cuda_left_padded_batch_equals_each_prompt_alone(attn_layers):
    model = student(tiny_teacher(), attn_layers).cuda()
    items = [{k: v.cuda() for k, v in it.items()} for it in prompts(model.config, lengths=(3, 40, 17, 1, 90))]
    settings = SamplingSettings(max_new_tokens=8, eos_token_id=NEVER)
    b = collate([{k: v.cpu() for k, v in it.items()} for it in items], pad_token_id=0, padding_side="left")
    batched = generate(model, b["input_ids"].cuda(), b["pixel_values"].cuda(), b["attention_mask"].cuda(), settings)
    alone = [generate(model, it["input_ids"][None], it["pixel_values"], None, settings)[0] for it in items]
    assert batched == alone


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_evaluate_models_with_teacher(model_dirs, tmp_path, dtype):  # noqa: F811
    (tmp_path / "red.png").write_bytes(png_bytes())
    rows = [{"question": q, "answer": "red", "image": "red.png"} for q in
            ["what is the color", "what shape", "is there a cat of this color", "what is this"]]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = [model_dirs[k] for k in ("teacher", "linear", "hybrid")]
    report = evaluate_models(paths, str(tmp_path / "t.jsonl"), teacher=model_dirs["teacher"], batch_size=3,
                             device="cuda", dtype=dtype, out=tmp_path / "out")
    for m in report["models"]:
        assert m["metrics"]["n"] == 4 and all(math.isfinite(v) for v in m["fidelity"].values())
    assert report["models"][0]["fidelity"]["kl"] == pytest.approx(0, abs=1e-6)


def test_cuda_predict_batch_size_invariant():
    model, tok = student(tiny_teacher(), [1]).cuda(), word_tokenizer()
    qs = ["what", "what is the color of this", "is there a cat", "what shape is this red blue green circle"]
    items = [EvalItem(str(i), q, ["cat"], images=[png_bytes((50 * i, 0, 0))], sizes=[(24, 20)])
             for i, q in enumerate(qs)]
    task = Task("t", "vqa", items, "x", "answer", max_new_tokens=5)
    assert predict(model, tok, task, batch_size=4) == predict(model, tok, task, batch_size=1)
