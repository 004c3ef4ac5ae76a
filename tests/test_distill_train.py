"""The training loop end to end on the tiny recipe: losses fall, resume is exact, divergence stops."""
from __future__ import annotations

import json

import pytest
import torch

from mmmamba_cli.distill import NonFiniteLoss, distill_model, run_stage
from mmmamba_cli.distill.checkpoint import list_checkpoints
from mmmamba_cli.errors import UserError
from mmmamba_cli.io.load import load_model
from test_distill_setup import make_run, run_and_data  # noqa: F401 - fixture

torch.set_num_threads(1)  # the CPU is shared: more threads are much slower here


def metrics(model_dir):
    return [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]


def state(model_dir):
    return load_model(model_dir)[0].state_dict()


def test_stage1_loss_of_a_fresh_student_falls_over_50_steps(run_and_data):
    run, data = run_and_data
    out = run_stage(run, 1, "tiny", ["train.steps=50", "train.save_every=0"], data=data)
    loss = [m["loss"] for m in metrics(out)]
    assert len(loss) == 50 and all(m["tokens"] > 0 for m in metrics(out))
    assert sum(loss[-5:]) < 0.5 * sum(loss[:5])
    resolved = json.loads((out / "resolved.json").read_text())
    assert resolved["recipe"]["train"]["steps"] == 50 and resolved["git_sha"]
    assert not (run / "stage1.partial").exists()


def test_stage3_lowers_the_kl_and_keeps_what_it_does_not_train(run_and_data):
    run, data = run_and_data
    seed = run / "seed"  # stage 3 on any (student, teacher, out) triple
    out = distill_model(seed, run / "s3", 3, "tiny", {"train": {"steps": 30, "save_every": 0},
                                                      "data": {"path": str(data)}})
    kl = [m["kl"] for m in metrics(out)]
    assert sum(kl[-5:]) < 0.8 * sum(kl[:5])
    before, after = state(seed), state(out)
    for k in before:
        trained = ".mixer." in k and not k.endswith(("A_log", "dt_bias", "out_proj.weight"))
        assert torch.equal(before[k], after[k]) != trained, k
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["source"]["distill"][-1]["stage"] == 3 and cfg["source"]["teacher"].endswith("teacher")


def test_resume_gives_the_same_weights_and_metrics(tmp_path):
    run, data = make_run(tmp_path)
    over = ["train.steps=8", "train.save_every=3"]
    straight = run_stage(run, 1, "tiny", over, data=data)
    reference, ref_metrics = state(straight), metrics(straight)
    straight.rename(run / "straight")

    def stop_at_5(report):
        if report.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage(run, 1, "tiny", over, data=data, progress=stop_at_5)
    assert [p.name for p in list_checkpoints(run / "stage1.partial")] == ["step-00000003"]
    assert not (run / "stage1").exists()
    with pytest.raises(UserError, match="pass --resume"):
        run_stage(run, 1, "tiny", over, data=data)
    with pytest.raises(UserError, match="recipe changed"):
        run_stage(run, 1, "tiny", ["train.steps=9", "train.save_every=3"], data=data, resume=True)
    resumed = run_stage(run, 1, "tiny", over, data=data, resume=True)
    got = state(resumed)
    assert max(float((got[k] - reference[k]).abs().max()) for k in reference) <= 1e-6
    keys = ("step", "loss", "mse", "lr", "grad_norm", "tokens")
    got_metrics = metrics(resumed)
    assert len(got_metrics) == len(ref_metrics) == 8
    for a, b in zip(got_metrics, ref_metrics):
        assert {k: a[k] for k in keys} == pytest.approx({k: b[k] for k in keys}, rel=1e-6)


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(run_and_data, monkeypatch):
    import mmmamba_cli.distill.layerwise as layerwise

    run, data = run_and_data
    calls, real = [0], layerwise.mse_sum

    def poisoned(*args):  # 4 Mamba layers x 2 micro-batches = 8 calls per step; step 5 goes bad
        calls[0] += 1
        return real(*args) * (float("nan") if calls[0] > 32 else 1.0)

    monkeypatch.setattr(layerwise, "mse_sum", poisoned)
    with pytest.raises(NonFiniteLoss) as e:
        run_stage(run, 1, "tiny", ["train.save_every=2"], data=data)
    msg = str(e.value)
    # the weights of step 4 produced the bad loss of step 5: step 2 is the last checkpoint known good
    assert "non-finite loss (nan) at step 5" in msg and "step-00000002" in msg and "\n" not in msg
    assert not (run / "stage1").exists()
    assert [p.name for p in list_checkpoints(run / "stage1.partial")] == ["step-00000002"]
    assert (run / "stage1.partial" / "checkpoints" / "suspect-step-00000004").is_dir()
    assert len((run / "stage1.partial" / "metrics.jsonl").read_text().splitlines()) == 4
