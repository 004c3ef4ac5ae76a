"""Two CPU processes (DDP over gloo) give the single-process result for the same global batch.

Launcher note: with accelerate 1.x, `accelerate launch --cpu --num_processes 2` starts ONE process
unless MPI is set up (`--mpirun_hostfile`); `--multi_gpu --num_processes 2` starts two through
torchrun, and the recipe's `train.device: cpu` keeps them on the CPU (gloo). `torchrun
--nproc_per_node 2 -m mmmamba_cli.distill ...` works the same way.

Tolerance: every logged metric within a relative 1e-5 and every weight within 1e-5. The global
batch is cut into the same micro-batches either way and each loss term is divided by the token
count of the whole global batch, so only the order of the floating-point gradient sums may differ
(on this machine the results are bitwise equal).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmmamba_cli.distill import run_stages
from mmmamba_cli.io.load import load_model
from test_distill_setup import make_run

torch.set_num_threads(1)  # the CPU is shared: more threads are much slower here
STEPS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_on_stages_1_2_3(tmp_path):
    run1, data = make_run(tmp_path)
    run2 = tmp_path / "run2"
    shutil.copytree(run1 / "seed", run2 / "seed")
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "mmmamba_cli.distill", "--stage", "all", "-r", str(run2), "--recipe", "tiny", "--data", str(data),
           f"train.steps={STEPS}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_stages(run1, (1, 2, 3), "tiny", [f"train.steps={STEPS}"], data=data)
    for n in (1, 2, 3):
        one, two = (json.loads((r / f"stage{n}" / "train_summary.json").read_text()) for r in (run1, run2))
        assert (one["processes"], two["processes"]) == (1, 2)
        m1, m2 = ([json.loads(x) for x in (r / f"stage{n}" / "metrics.jsonl").read_text().splitlines()]
                  for r in (run1, run2))
        assert len(m1) == len(m2) == STEPS
        for a, b in zip(m1, m2):
            for key in ("loss", "lr", "grad_norm", "tokens"):
                assert b[key] == pytest.approx(a[key], rel=1e-5), (n, a["step"], key)
        s1, s2 = (load_model(r / f"stage{n}")[0].state_dict() for r in (run1, run2))
        assert max(float((s1[k] - s2[k]).abs().max()) for k in s1) <= 1e-5
