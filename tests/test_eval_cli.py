"""`mmmamba eval` end to end on tiny models: results files, one column per model, bad input -> exit 2."""
from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from mmmamba_cli.cli.main import app
from mmmamba_cli.errors import UserError
from mmmamba_cli.evaluate import evaluate_models
from test_eval_support import b64_png, model_dirs, png_bytes  # noqa: F401 - model_dirs is a fixture

runner = CliRunner()


def run(*args):
    """Invoke the CLI the way the console script does (UserError -> exit 2, one line)."""
    res = runner.invoke(app, list(map(str, args)), catch_exceptions=True)
    if isinstance(res.exception, UserError):
        return 2, str(res.exception)
    return res.exit_code, res.output + (repr(res.exception) if res.exception and res.exit_code else "")


@pytest.fixture
def jsonl_task(tmp_path):
    (tmp_path / "red.png").write_bytes(png_bytes())
    rows = [{"question": q, "answer": a, "image": "red.png", "category": c}
            for q, a, c in [("what is the color", "red", "color"), ("what shape", "circle", "shape"),
                            ("is there a cat", "no", "yes/no"), ("what is this", "square", "shape")]]
    path = tmp_path / "mini.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_three_models_with_teacher(model_dirs, jsonl_task, tmp_path):  # noqa: F811
    out = tmp_path / "res"
    code, text = run("eval", model_dirs["teacher"], model_dirs["linear"], model_dirs["hybrid"], "--task", jsonl_task,
                     "--teacher", model_dirs["teacher"], "--batch-size", 3, "--out", out)
    assert code == 0, text
    report = json.loads((out / "results.json").read_text())
    assert [m["label"] for m in report["models"]] == ["teacher", "linear", "hybrid"]
    assert [m["kind"] for m in report["models"]] == ["teacher", "linear", "hybrid"]
    assert report["task"]["items"] == 4 and report["task"]["kind"] == "vqa"
    same = report["models"][0]["fidelity"]
    assert same["kl"] == pytest.approx(0, abs=1e-6) and same["top1_agreement"] == 1.0
    assert all(m["fidelity"]["kl"] > 0 for m in report["models"][1:])
    assert all(0 <= m["metrics"]["accuracy"] <= 1 for m in report["models"])
    table = (out / "results.md").read_text().splitlines()
    assert table[2] == "| metric | teacher | linear | hybrid |"
    assert any(line.startswith("| fidelity/kl | 0.0000 |") for line in table)
    assert any(line.startswith("| by_category/shape |") for line in table)
    preds = (out / "predictions" / "hybrid.jsonl").read_text().splitlines()
    assert len(preds) == 4 and set(json.loads(preds[0])) >= {"index", "prediction", "correct"}
    assert "teacher" in text and "hybrid" in text  # the Rich table

    code, msg = run("eval", model_dirs["linear"], "--task", jsonl_task, "--out", out)
    assert code == 2 and "already exists" in msg  # never overwritten silently
    assert json.loads((out / "results.json").read_text()) == report


def test_easyvqa_builtin_is_quick(model_dirs):  # noqa: F811
    report = evaluate_models([model_dirs["linear"], model_dirs["hybrid"]], task="easyvqa", limit=12, batch_size=6)
    assert [m["metrics"]["n"] for m in report["models"]] == [12, 12]
    assert report["task"]["max_new_tokens"] == 3 and report["task"]["suffix"] == ""


def _tsv(path, header, row):
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(header)
        w.writerow(row)
    return path


def test_bad_input_one_line_exit_2(model_dirs, tmp_path):  # noqa: F811
    linear = model_dirs["linear"]
    missing = _tsv(tmp_path / "a.tsv", ["index", "question", "image"], [0, "q", b64_png()])
    broken = _tsv(tmp_path / "b.tsv", ["index", "question", "answer", "image"], [0, "q", "yes", "@@@" * 30])
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text('{"model_type": "bert"}')
    cases = [((linear, "--task", "mmbench"), "unknown task"),
             ((linear, "--task", missing), "missing column(s) answer"),
             ((linear, "--task", broken), "cannot decode the base64 image"),
             ((tmp_path / "empty", "--task", "easyvqa"), "not a model directory"),
             ((tmp_path / "junk", "--task", "easyvqa"), "unsupported model_type 'bert'"),
             ((tmp_path / "nowhere", "--task", "easyvqa"), "does not exist"),
             ((linear, "--kind", "essay"), "unknown task kind"),
             ((linear, "--lm-eval", "x", "--include-path", tmp_path / "nodir"), "is not a directory")]
    for args, message in cases:
        code, text = run("eval", *args, "--out", tmp_path / "never")
        assert code == 2, (args, text)
        assert message in text and "\n" not in text, (args, text)
    assert not (tmp_path / "never").exists()
