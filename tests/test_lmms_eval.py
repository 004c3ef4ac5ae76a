"""The lmms-eval model `mmmamba`: an offline run of a local image-question task through lmms-eval's
own evaluator, checked against our evaluation of the same items, and its loglikelihood."""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("lmms_eval")
from mmmamba_cli.assets import TEACHER_DIR  # noqa: E402

torch.set_num_threads(1)  # the CPU is shared: more threads are much slower here
pytestmark = pytest.mark.skipif(not (TEACHER_DIR / "config.json").exists(), reason="embedded teacher not built")

UTILS = '''from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc):
    return doc["question"]
'''


def _task_dir(tmp_path, records):
    d = tmp_path / "tasks"
    d.mkdir()
    (d / "items.jsonl").write_text("".join(json.dumps({"image": r["image"], "question": r["question"],
                                                       "answer": r["answer"]}) + "\n" for r in records))
    (d / "utils.py").write_text(UTILS)
    (d / "local_vqa.yaml").write_text(f"""task: mmmamba_local_vqa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {d / 'items.jsonl'}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 3
  until: ["\\n"]
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""")
    return d


@pytest.mark.slow  # ~50 s: lmms-eval's evaluator and our evaluation of the same items
def test_local_task_through_lmms_eval_matches_our_evaluation(tmp_path, monkeypatch):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from mmmamba_cli.data import easyvqa_records
    from mmmamba_cli.evaluate import evaluate_models
    from mmmamba_cli.lmms_eval_model import register

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    records = easyvqa_records("test")[:24]
    tasks = _task_dir(tmp_path, records)
    register()
    out = simple_evaluate(model="mmmamba", model_args=f"pretrained={TEACHER_DIR},batch_size=8",
                          tasks=["mmmamba_local_vqa"], task_manager=TaskManager(include_path=str(tasks)),
                          log_samples=True, device="cpu")
    samples = out["samples"]["mmmamba_local_vqa"]
    theirs = {s["doc_id"]: s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"]
              for s in samples}
    assert sorted(theirs) == list(range(24))
    ours = evaluate_models([TEACHER_DIR], "easyvqa", limit=24, out=tmp_path / "ours")
    preds = [json.loads(x) for x in (tmp_path / "ours" / "predictions" / "teacher.jsonl").read_text().splitlines()]
    assert [theirs[i] for i in range(24)] == [p["prediction"] for p in preds]  # the same prompts and answers
    em = out["results"]["mmmamba_local_vqa"]["exact_match,none"]
    assert em == pytest.approx(ours["models"][0]["metrics"]["accuracy"])
    assert em > 0.5  # the embedded teacher answers most easy-vqa questions


def test_loglikelihood_of_the_greedy_answer(tmp_path):
    from PIL import Image

    from mmmamba_cli.data import easyvqa_records
    from mmmamba_cli.lmms_eval_model import MMambaLMMS

    lm = MMambaLMMS(pretrained=str(TEACHER_DIR), device="cpu")
    rec = easyvqa_records("test")[0]
    lm.task_dict = {"t": {"test": {0: rec}}}
    visual = lambda doc: [Image.open(doc["image"]).convert("RGB")]  # noqa: E731
    req = SimpleNamespace(args=(rec["question"], {"max_new_tokens": 2}, visual, 0, "t", "test"))
    greedy = lm.generate_until([req])[0]
    other = "yes" if greedy != "yes" else "no"
    (lp_g, is_g), (lp_o, is_o) = lm.loglikelihood([
        SimpleNamespace(args=(rec["question"], greedy, visual, 0, "t", "test")),
        SimpleNamespace(args=(rec["question"], other, visual, 0, "t", "test"))])
    assert is_g and not is_o and lp_g > lp_o and lp_g <= 0
