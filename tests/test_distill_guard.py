"""The divergence guard names a checkpoint that is really good, and --resume with a lower
optim.lr continues from it without NaN; runs that fail before any checkpoint leave no stale work."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mmmamba_cli.distill import NonFiniteLoss, run_stage
from mmmamba_cli.distill.checkpoint import list_checkpoints
from mmmamba_cli.distill.guard import DivergenceGuard
from mmmamba_cli.errors import UserError
from test_distill_setup import run_and_data  # noqa: F401 - fixture

torch.set_num_threads(1)


def test_blow_up_names_a_finite_checkpoint_and_a_lower_lr_resumes(run_and_data, monkeypatch):
    import mmmamba_cli.model.optim as optim

    run, data = run_and_data
    real = optim.wsd_factor
    # the 4th update (0-based step 3) uses a 1e8 x learning rate: the weights it saves at step 4 are
    # finite but huge, exactly what a too-high optim.lr does; step 5's loss then explodes
    monkeypatch.setattr(optim, "wsd_factor", lambda step, *a: real(step, *a) * (1e8 if step == 3 else 1.0))
    with pytest.raises(NonFiniteLoss) as e:
        run_stage(run, 1, "tiny", ["train.steps=8", "train.save_every=2"], data=data)
    msg = str(e.value)
    assert "at step 5" in msg and "\n" not in msg
    work = run / "stage1.partial"
    named = [p for p in list_checkpoints(work) if str(p) in msg]
    assert [p.name for p in named] == ["step-00000002"]
    suspect = load_file(str(work / "checkpoints" / "suspect-step-00000004" / "trainable.safetensors"))
    assert max(float(t.abs().max()) for t in suspect.values()) > 1e3  # what used to be called "good"
    good = load_file(str(named[0] / "trainable.safetensors"))
    assert all(bool(torch.isfinite(t).all()) and float(t.abs().max()) < 1e3 for t in good.values())

    monkeypatch.setattr(optim, "wsd_factor", real)
    with pytest.raises(UserError, match="recipe changed"):  # an unrelated change is still refused
        run_stage(run, 1, "tiny", ["train.steps=8", "train.save_every=2", "train.seed=5"], data=data, resume=True)
    out = run_stage(run, 1, "tiny", ["train.steps=8", "train.save_every=2", "optim.lr=1e-3"], data=data,
                    resume=True)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, 9))
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in lines[2:])
    assert json.loads((out / "train_summary.json").read_text())["resumed_from"] == 2
    assert not work.exists()


def test_lr_1e6_stops_with_no_stale_partial_and_a_clear_line(run_and_data):
    run, data = run_and_data
    with pytest.raises(NonFiniteLoss) as e:
        run_stage(run, 1, "tiny", ["train.steps=8", "train.save_every=0", "optim.lr=1e6"], data=data)
    assert "no checkpoint predates it" in str(e.value) and "\n" not in str(e.value)
    assert not (run / "stage1.partial").exists()  # nothing to resume: the next run is not blocked
    out = run_stage(run, 1, "tiny", ["train.steps=2", "train.save_every=0"], data=data)
    assert (out / "config.json").exists()


def test_guard_explosion_threshold_and_off_switch(tmp_path):
    g = DivergenceGuard("stage1", tmp_path, factor=10.0)
    for loss in (5.0, 4.0, 6.0, 30.0):  # 30 < 10 x median
        g.check_loss(1, loss)
    with pytest.raises(NonFiniteLoss, match="exploded"):
        g.check_loss(5, 400.0)
    off = DivergenceGuard("stage1", tmp_path, factor=0.0)
    off.check_loss(1, 1.0)
    off.check_loss(2, 1e12)
    with pytest.raises(NonFiniteLoss, match="non-finite loss"):
        off.check_loss(3, float("nan"))
    with pytest.raises(NonFiniteLoss, match="non-finite weights"):
        off.check_weights(4, {"w": torch.tensor([1.0, float("inf")])})


def test_stale_partial_without_checkpoint_neither_blocks_nor_hides(run_and_data):
    """A work dir left with no checkpoint (e.g. killed at step 1) is stale: a new run with another
    recipe starts over, and the message about an existing output mentions it."""
    run, data = run_and_data
    stale = run / "stage1.partial"
    stale.mkdir()
    (stale / "recipe.json").write_text(json.dumps({"recipe": {"optim": {"lr": 123.0}}}))
    out = run_stage(run, 1, "tiny", ["train.steps=2", "train.save_every=0"], data=data, resume=True)
    assert (out / "config.json").exists() and not stale.exists()
    stale.mkdir()
    with pytest.raises(UserError, match="stale stage1.partial"):
        run_stage(run, 1, "tiny", ["train.steps=2"], data=data)


@pytest.mark.parametrize("damage", ["state.json", "state.pt", "trainable.safetensors"])
def test_damaged_checkpoint_is_one_line(tmp_path, damage):
    from mmmamba_cli.distill.checkpoint import load_checkpoint, save_checkpoint

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    path = save_checkpoint(tmp_path, 2, {"w": w}, opt.state_dict(), sched, [{}], 2, keep=2)
    assert float(load_checkpoint(path)["trainable"]["w"].sum()) == 3.0
    (path / damage).write_bytes(b"\x00garbage")
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
