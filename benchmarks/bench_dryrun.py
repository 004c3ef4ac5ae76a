"""`mmmamba distill --dry-run` against the measured peak RSS of the same stage, on CPU.

    python benchmarks/bench_dryrun.py --out benchmarks/results/dryrun_cpu.json

For each recipe (tiny: the 4-layer test student on a small jsonl; easyvqa: the embedded teacher's
student on easy-vqa), seeds a run directory, then per stage: the dry-run estimate (in its own
process), and a real run of ``--steps`` steps in a fresh process whose peak RSS is read with
``getrusage(RUSAGE_CHILDREN)``. The data index is built before, so both see the training process
as a later stage would.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

MMMAMBA = str(Path(sys.executable).with_name("mmmamba"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def estimate(run: Path, stage: int, recipe: str, extra: list[str]) -> dict:
    code = ("import json,sys; from mmmamba_cli.distill.estimate import estimate_run; "
            f"e = estimate_run({str(run)!r}, {stage}, {recipe!r}, {extra!r}); "
            "print(json.dumps({'bytes': e.bytes, 'total': e.total}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measured(run: Path, stage: int, recipe: str, extra: list[str]) -> dict:
    """Peak RSS of `mmmamba distill` for this stage (in a child process: RUSAGE_CHILDREN is its max)."""
    cmd = [MMMAMBA, "distill", "--stage", str(stage), "-r", str(run), "--recipe", recipe, "--force", *extra]
    code = ("import resource, subprocess, json; "
            f"p = subprocess.run({cmd!r}, capture_output=True, text=True); "
            "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024; "
            "print(json.dumps({'rc': p.returncode, 'peak': peak, 'err': p.stderr[-400:]}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    if row["rc"]:
        raise RuntimeError(row["err"])
    return row


def setup(root: Path, recipe: str) -> tuple[Path, list[str]]:
    if recipe == "tiny":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from test_distill_setup import make_run

        run, data = make_run(root)
        return run, [f"data.path={data}"]
    run = root / "run"
    subprocess.run([MMMAMBA, "seed", "-r", str(run)], check=True, env=ENV, capture_output=True)
    return run, []


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--recipes", nargs="+", default=["tiny", "easyvqa"])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-dryrun-") as tmp:
        for recipe in a.recipes:
            run, extra = setup(Path(tmp) / recipe, recipe)
            extra = [*extra, f"train.steps={a.steps}", "train.save_every=0"]
            for stage in (1, 2, 3):
                m = measured(run, stage, recipe, extra)  # also writes the stage the next one starts from
                e = estimate(run, stage, recipe, extra)
                row = {"recipe": recipe, "stage": stage, "estimate_mb": e["total"] / 2**20,
                       "measured_peak_mb": m["peak"] / 2**20, "ratio": e["total"] / m["peak"],
                       "estimate_parts_mb": {k: v / 2**20 for k, v in e["bytes"].items()}}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if a.out:
        import torch

        from mmmamba_cli.bench.env import environment

        a.out.write_text(json.dumps({"rows": rows, "steps": a.steps, "env": environment(torch.device("cpu"))},
                                    indent=2))


if __name__ == "__main__":
    main()
