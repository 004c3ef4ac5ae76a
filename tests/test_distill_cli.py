"""`mmmamba distill` end to end on the tiny recipe, and its one-line errors (exit code 2)."""
from __future__ import annotations

import json

import pytest
import torch

from mmmamba_cli.io.load import load_model
from mmmamba_cli.runtime import SamplingSettings, generate
from test_distill_setup import make_jsonl, run_and_data  # noqa: F401 - fixture
from test_hovle_io import run

torch.set_num_threads(1)  # the CPU is shared: more threads are much slower here


def test_stage_all_chains_the_run_directory(run_and_data):
    run_dir, data = run_and_data
    code, out = run("distill", "--stage", "all", "-r", run_dir, "--recipe", "tiny", "--data", data, "train.steps=4")
    assert code == 0, out
    for n in (1, 2, 3):
        model, info = load_model(run_dir / f"stage{n}")
        assert model.config.kind == "linear" and (run_dir / f"stage{n}" / "tokenizer.json").exists()
        src = model.config.source["distill"]
        assert [d["stage"] for d in src] == list(range(1, n + 1))
        assert src[-1]["from"] == str((run_dir / ("seed" if n == 1 else f"stage{n - 1}")).resolve())
        assert len((run_dir / f"stage{n}" / "metrics.jsonl").read_text().splitlines()) == 4
        assert not (run_dir / f"stage{n}.partial").exists()
    ids = torch.tensor([[7, 12, 13, 8, 7, 11]])
    assert len(generate(model, ids, settings=SamplingSettings(max_new_tokens=3))[0]) <= 3
    # stage 2 kept stage 1's values of what it does not train (out_proj) and trained A_log
    s1, s2 = load_model(run_dir / "stage1")[0].state_dict(), load_model(run_dir / "stage2")[0].state_dict()
    assert torch.equal(s1["layers.0.mixer.out_proj.weight"], s2["layers.0.mixer.out_proj.weight"])
    assert not torch.equal(s1["layers.0.mixer.C_proj.weight"], s2["layers.0.mixer.C_proj.weight"])
    # finished stages are not redone silently; --resume skips them
    code, msg = run("distill", "--stage", "1", "-r", run_dir, "--recipe", "tiny", "--data", data)
    assert code == 2 and "already exists" in msg
    code, out = run("distill", "--stage", "all", "-r", run_dir, "--recipe", "tiny", "--data", data, "--resume",
                    "train.steps=4")
    assert code == 0 and out.count("skipping") == 3, out


def test_bad_inputs_get_one_line_and_exit_code_2(run_and_data, tmp_path):
    run_dir, data = run_and_data
    cases = [
        (("--stage", "1", "-r", tmp_path / "nope", "--recipe", "tiny", "--data", data), "does not exist"),
        (("--stage", "2", "-r", run_dir, "--recipe", "tiny", "--data", data), "stage 1's result"),
        (("--stage", "1", "-r", run_dir, "--recipe", "tiny", "--data", data, "train.stpes=3"),
         "unknown key train.stpes (did you mean train.steps?)"),
        (("--stage", "1", "-r", run_dir, "--recipe", "tiny", "--data", tmp_path / "missing.jsonl"), "not found"),
        (("--stage", "4", "-r", run_dir), "choose one of 1, 2, 3, all"),
        (("--stage", "1", "-r", run_dir, "--recipe", "nope"), "unknown recipe 'nope'"),
        (("--stage", "1", "-r", run_dir, "--recipe", "tiny", "--data", data, "optim.lr=fast"),
         "optim.lr: expected a number"),
    ]
    bad_recipe = tmp_path / "typo.yaml"
    bad_recipe.write_text("optim:\n  learning_rate: 1e-3\n")
    cases.append((("--stage", "1", "-r", run_dir, "--recipe", bad_recipe, "--data", data),
                  "unknown key optim.learning_rate"))
    corrupt = make_jsonl(tmp_path / "corrupt", 8, bad=True)
    cases.append((("--stage", "1", "-r", run_dir, "--recipe", "tiny", "--data", corrupt, "--strict"), "line 3"))
    for args, expected in cases:
        code, msg = run("distill", *args)
        assert code == 2, (args, msg)
        assert expected in msg and "\n" not in msg.strip(), (args, msg)
    code, msg = run("distill", "--stage", "1", "-r", run_dir, "--recipe", "tiny", "--data", data,
                    "train.precision=fp8", "train.micro_batch=3")  # every problem at once
    assert code == 2 and "train.precision: 'fp8' is not one of" in msg
    assert "global_batch 4 is not a multiple of train.micro_batch 3" in msg
    assert not (run_dir / "stage1").exists() and not (run_dir / "stage1.partial").exists()


def test_unreadable_records_are_skipped_and_counted_without_strict(run_and_data, tmp_path):
    run_dir, _ = run_and_data
    corrupt = make_jsonl(tmp_path / "corrupt", 12, bad=True)
    code, out = run("distill", "--stage", "1", "-r", run_dir, "--recipe", "tiny", "--data", corrupt, "train.steps=2")
    assert code == 0, out
    stats = json.loads((run_dir / "stage1" / "resolved.json").read_text())["data_stats"]
    assert (stats["kept"], stats["bad"], stats["bad_lines"]) == (10, 2, [3, 5])
    assert "skipped 2 unreadable (lines [3, 5])" in " ".join(out.split())


def test_data_path_easyvqa_is_written_once_into_the_run_dir(tmp_path):
    from mmmamba_cli.distill.data import resolve_data_path
    from mmmamba_cli.errors import UserError

    path = resolve_data_path("easyvqa:test", tmp_path / "data")
    first = json.loads(path.read_text().splitlines()[0])
    assert path == tmp_path / "data" / "easyvqa-test.jsonl" and set(first) >= {"image", "conversations"}
    stamp = path.stat().st_mtime_ns
    assert resolve_data_path("easyvqa:test", tmp_path / "data").stat().st_mtime_ns == stamp
    for spec, msg in ((None, "no training data"), ("easyvqa:dev", "splits are train and test"),
                      ("easyvqa:test:many", "positive integer")):
        with pytest.raises(UserError, match=msg):
            resolve_data_path(spec, tmp_path)
    # a subset: N questions spread over the whole split (its images), not the first N
    full = [json.loads(x) for x in path.read_text().splitlines()]
    sub = resolve_data_path("easyvqa:test:100", tmp_path / "data")
    assert sub == tmp_path / "data" / "easyvqa-test-100.jsonl"
    rows = [json.loads(x) for x in sub.read_text().splitlines()]
    assert len(rows) == 100 and rows[0] == full[0] and rows[-1] == full[99 * len(full) // 100]
    assert len({r["image"] for r in rows}) > 90


def test_an_image_that_does_not_decode_stops_the_run_with_one_line(run_and_data, tmp_path):
    run_dir, _ = run_and_data
    data = make_jsonl(tmp_path / "d", 8)
    for png in (tmp_path / "d" / "images").glob("*.png"):  # valid header, truncated pixel data
        png.write_bytes(png.read_bytes()[:60])
    code, msg = run("distill", "--stage", "1", "-r", run_dir, "--recipe", "tiny", "--data", data, "train.steps=3")
    assert code == 2 and "cannot decode image" in msg and "line " in msg, msg
