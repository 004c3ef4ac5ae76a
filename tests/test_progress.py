"""Progress in logs: plain lines at a steady interval when stdout is not a terminal."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from rich.console import Console

from mmmamba_cli.cli.progress import make_console, step_progress
from test_distill_setup import make_run

torch.set_num_threads(1)  # the CPU is shared: more threads are much slower here
ROOT = Path(__file__).resolve().parents[1]


def _report(step, steps=100):
    return SimpleNamespace(stage="stage1", step=step, steps=steps, loss=0.5 / step, lr=1e-3, tokens_per_s=2048.0,
                           eta_s=(steps - step) * 0.1)


def test_plain_lines_first_at_the_interval_and_last():
    buf = io.StringIO()
    console = Console(file=buf, soft_wrap=True, width=200)
    with step_progress(console=console, terminal=False, every=0.2) as p:
        for step in range(1, 101):
            p(_report(step))
            time.sleep(0.005)  # 100 steps in ~0.5 s: lines at the first step, every 0.2 s, and the last
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("distill stage1: step 1/100 loss 0.5 lr 1.00e-03 2048 tok/s ETA 0:00:09")
    assert lines[-1].startswith("distill stage1: step 100/100")
    assert 3 <= len(lines) <= 8, lines
    assert all("elapsed" in line for line in lines)
    with step_progress(console=console, terminal=False, every=60) as p:  # the same stage name runs twice
        p(_report(100))
        time.sleep(1.1)
        p(_report(1))
    assert buf.getvalue().splitlines()[-1].startswith("distill stage1: step 1/100")
    assert buf.getvalue().splitlines()[-1].endswith("elapsed 0:00:00")


def test_heartbeat_keeps_the_interval_when_a_step_is_slow():
    buf = io.StringIO()
    with step_progress(console=Console(file=buf, soft_wrap=True, width=200), terminal=False, every=0.1) as p:
        p.phase("bench")
        p.log("teacher 1024 tokens: prefill 0.1 s")
        time.sleep(0.45)
    lines = [x for x in buf.getvalue().splitlines() if x.startswith("bench: running")]
    assert len(lines) >= 2 and "(last: teacher 1024 tokens: prefill 0.1 s)" in lines[-1]
    buf.truncate(0)
    buf.seek(0)
    with step_progress(console=Console(file=buf, soft_wrap=True, width=200), terminal=False, every=0.1) as p:
        p(_report(100))
        time.sleep(0.35)  # a finished stage is not repeated while the next piece of work runs
    assert len(buf.getvalue().splitlines()) == 1


def test_counts_give_a_rate_and_an_eta():
    buf = io.StringIO()
    with step_progress(console=Console(file=buf, soft_wrap=True, width=200), terminal=False, every=60) as p:
        p.count("eval linear", 0, 300)
        time.sleep(0.05)
        p.count("eval linear", 300, 300)
    last = buf.getvalue().splitlines()[-1]
    assert last.startswith("eval linear: 300/300 ") and "/s ETA 0:00:00" in last


def test_long_lines_are_not_wrapped_in_logs(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # not a terminal
    console = make_console()
    console.print("word " * 40)
    assert sys.stdout.getvalue().rstrip() == ("word " * 40).rstrip()


def test_piped_distill_prints_progress_before_the_stage_ends(tmp_path):
    run_dir, data = make_run(tmp_path)
    env = {**os.environ, "MMMAMBA_PROGRESS_INTERVAL": "0.2", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "0"}
    cmd = [sys.executable, "-m", "mmmamba_cli.distill", "--stage", "1", "-r", str(run_dir), "--recipe", "tiny",
           "--data", str(data), "train.steps=40", "train.save_every=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    seen_before_end, lines = [], []
    for line in proc.stdout:  # read as the lines arrive
        lines.append(line.rstrip("\n"))
        if line.startswith("distill stage1: step ") and not line.startswith("distill stage1: step 40/40"):
            seen_before_end.append(not (run_dir / "stage1").exists())
    assert proc.wait(timeout=300) == 0, "\n".join(lines)
    assert seen_before_end and all(seen_before_end), "\n".join(lines)
    assert any(x.startswith("distill stage1: step 40/40 loss ") for x in lines)
    assert (run_dir / "stage1" / "config.json").exists()
