"""The whole pipeline on the embedded default teacher, at reduced steps and data."""
from __future__ import annotations

import json

import pytest

from mmmamba_cli.assets import TEACHER_DIR

pytestmark = pytest.mark.skipif(not (TEACHER_DIR / "config.json").exists(), reason="embedded teacher not built")


def test_demo_pipeline_end_to_end(tmp_path):
    from mmmamba_cli.data import easyvqa_records
    from mmmamba_cli.io.load import load_model
    from mmmamba_cli.demo import DemoRecipe, demo_recipe_from, run_demo

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in easyvqa_records("train")[:1500]))
    recipe = demo_recipe_from("demo", [f"distill.overrides=[data.path={data}, train.steps=25, train.save_every=0]",
                                       "eval.limit=300", "bench.tokens=[64, 256]"])
    assert isinstance(recipe, DemoRecipe) and recipe.distill.recipe == "easyvqa"
    out = tmp_path / "demo"
    report = run_demo(recipe, out, log=lambda m: None)
    for sub in ("linear/seed", "linear/stage1", "linear/stage2", "linear/stage3", "hybrid/stage2",
                "hybrid/stage3"):
        model, _ = load_model(out / sub)
        assert model.config.kind == ("hybrid" if sub.startswith("hybrid") else "linear")
    assert load_model(out / "hybrid/stage3")[0].config.attention_layers == [0, 4]
    for name in ("report.json", "report.md", "report.png", "resolved.json"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "report.json").read_text())
    for kind in ("teacher", "linear", "hybrid", "seeded"):
        assert 0 <= saved[kind]["accuracy"] <= 1 and saved[kind]["retention"] is not None
        assert set(saved[kind]["by_type"]) == {"color", "shape", "yes/no"}
    # the per-type accuracies agree with the predictions the evaluation wrote, recounted here
    preds = [json.loads(x) for x in (out / "eval" / "predictions" / "teacher.jsonl").read_text().splitlines()]
    shape = [p for p in preds if p["answers"][0] in ("circle", "rectangle", "triangle")]
    assert abs(saved["teacher"]["by_type"]["shape"] - sum(p["correct"] for p in shape) / len(shape)) < 1e-9
    md = (out / "report.md").read_text()
    assert "| shape questions |" in md and "| decode state MB @ 256 |" in md
    assert saved["linear"]["accuracy"] > saved["seeded"]["accuracy"]  # distillation did something
    assert {r["model"] for r in saved["bench"]["rows"]} == {"teacher", "linear", "hybrid"}
    assert report["teacher"]["retention"] == 1.0
