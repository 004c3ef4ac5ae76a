"""Two CPU processes with the student sharded (FSDP2 over gloo, ``train.sharding=fsdp``) give the
single-process result for the same global batch, and their checkpoints resume in one process.

Launched like the DDP test (test_distill_multiproc.py): `accelerate launch --multi_gpu
--num_processes 2` with `train.device: cpu`; an interrupted run goes through torchrun, whose
agent stops the other process when the main one is interrupted. Stage 3 runs with
micro_batch 1, so each process accumulates two micro-batches per step (the first without the
gradient reduce-scatter).

Tolerance as in the DDP test: every logged metric within a relative 1e-5 and every weight within
1e-5 (measured: 6e-8 in stage 1, 2.4e-7 in stage 3). The runs are not bitwise equal as DDP's are
(the global gradient norm is summed from per-shard parts, relative ~1e-7), and AdamW's normalised
update magnifies such last-bit differences on gradient elements near zero: chained through stage 2
they reached 5.8e-5 on one weight, so stage 3 of both runs starts from the same stage-2 student.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmmamba_cli.distill import run_stage, run_stages
from mmmamba_cli.distill.checkpoint import list_checkpoints
from mmmamba_cli.io.load import load_model
from test_distill_multiproc import free_port
from test_distill_setup import make_run

torch.set_num_threads(1)  # the CPU is shared: more threads are much slower here
pytestmark = pytest.mark.slow  # several multi-process runs: about a minute on a quiet 2-core machine
STEPS = 4
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
FSDP = ["train.sharding=fsdp"]

STOP_AT_5 = """
import sys
from mmmamba_cli.distill import run_stage

def stop_at_5(report):
    if report.step == 5:
        raise KeyboardInterrupt

run_stage(sys.argv[1], 1, "tiny", sys.argv[3:], data=sys.argv[2], progress=stop_at_5)
"""


def launch(*args: str) -> None:
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "mmmamba_cli.distill", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def metrics(model_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (model_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same(one: Path, two: Path, keys=("loss", "lr", "grad_norm", "tokens")) -> None:
    m1, m2 = metrics(one), metrics(two)
    assert len(m1) == len(m2)
    for a, b in zip(m1, m2):
        for key in keys:
            assert b[key] == pytest.approx(a[key], rel=1e-5), (one.name, a["step"], key)
    s1, s2 = (load_model(d)[0].state_dict() for d in (one, two))
    assert s1.keys() == s2.keys()
    assert max(float((s1[k] - s2[k]).abs().max()) for k in s1) <= 1e-5


def test_fsdp_two_processes_match_one_process_on_stages_1_and_3(tmp_path):
    run1, data = make_run(tmp_path)
    over = [f"train.steps={STEPS}", "stage3.train.micro_batch=1", *FSDP]
    run_stages(run1, (1, 2, 3), "tiny", over, data=data)  # one process: fsdp asked, nothing to shard
    run2 = tmp_path / "run2"
    shutil.copytree(run1 / "seed", run2 / "seed")
    common = ["-r", str(run2), "--recipe", "tiny", "--data", str(data), f"train.steps={STEPS}", *FSDP]
    launch("--stage", "1", *common)
    shutil.copytree(run1 / "stage2", run2 / "stage2")  # stage 3 of both runs starts from the same student
    launch("--stage", "3", *common, "train.micro_batch=1")
    for n in (1, 3):
        one, two = (json.loads((r / f"stage{n}" / "train_summary.json").read_text()) for r in (run1, run2))
        assert (one["processes"], two["processes"]) == (1, 2)
        assert (one["sharding"], two["sharding"]) == ("none", "fsdp")
        assert one["local_param_fraction"] == [1.0]
        # each process held about half of the student's parameters while it trained
        assert len(two["local_param_fraction"]) == 2 and all(0.4 < f < 0.6 for f in two["local_param_fraction"])
        assert sum(two["local_param_fraction"]) == pytest.approx(1.0)
        assert len(metrics(run1 / f"stage{n}")) == STEPS
        assert_same(run1 / f"stage{n}", run2 / f"stage{n}")


def test_fsdp_checkpoint_resumes_in_one_process_and_back(tmp_path):
    run, data = make_run(tmp_path)
    over = ["train.steps=8", "train.save_every=3", *FSDP]
    straight = run_stage(run, 1, "tiny", over, data=data)
    straight.rename(run / "straight")
    script = tmp_path / "stop_at_5.py"
    script.write_text(STOP_AT_5)

    # two sharded processes stop at step 5; one process resumes from their step-3 checkpoint
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port()), str(script),
                           str(run), str(data), *over], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr, proc.stderr[-3000:]
    ckpts = list_checkpoints(run / "stage1.partial")
    assert [p.name for p in ckpts] == ["step-00000003"]
    assert json.loads((ckpts[0] / "state.json").read_text())["processes"] == 2
    resumed = run_stage(run, 1, "tiny", over, data=data, resume=True)
    assert_same(run / "straight", resumed)
    shutil.rmtree(resumed)

    # and back: one process stops at step 5, two sharded processes resume
    with pytest.raises(KeyboardInterrupt):
        run_stage(run, 1, "tiny", over, data=data,
                  progress=lambda r: (_ for _ in ()).throw(KeyboardInterrupt) if r.step == 5 else None)
    launch("--stage", "1", "-r", str(run), "--recipe", "tiny", "--data", str(data), "--resume", *over)
    summary = json.loads((run / "stage1" / "train_summary.json").read_text())
    assert (summary["resumed_from"], summary["processes"], summary["sharding"]) == (3, 2, "fsdp")
    assert_same(run / "straight", run / "stage1")
