"""Measured (`auto`) against fixed (first-of-block) hybrid placement on the embedded default.

Both start from the same linear stage-2 student, keep the same number K of attention layers and
get the same stage-3 budget (recipes/easyvqa-stage3.yaml); then both are evaluated on easy-vqa.

    .venv/bin/python benchmarks/compare_placement.py --student runs/demo/linear/stage2 --k 2
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from mmmamba_cli.assets import default_teacher
from mmmamba_cli.distill.run_dir import run_stage
from mmmamba_cli.evaluate import evaluate_models
from mmmamba_cli.hybrid import LayoutRequest, hybridize_directory
from mmmamba_cli.io.save import git_sha


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--student", default="runs/demo/linear/stage2")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--work", default="runs/placement")
    ap.add_argument("--eval-limit", type=int, default=3000)
    ap.add_argument("--out", default="benchmarks/results/placement_easyvqa")
    args = ap.parse_args()
    teacher, work = default_teacher(), Path(args.work)
    rows = {}
    for placement in ("first-of-block", "auto"):
        run = work / placement
        t0 = time.time()
        rep = hybridize_directory(args.student, run / "stage2", LayoutRequest(count=args.k, placement=placement),
                                  teacher=teacher, data="easyvqa" if placement == "auto" else None,
                                  force=True)
        run_stage(run, 3, recipe="easyvqa", force=True)
        types = json.loads((run / "stage2" / "config.json").read_text())["layer_types"]
        rows[placement] = {"kept": [i for i, t in enumerate(types) if t == "attention"], "scores": rep.get("scores"),
                           "seconds": round(time.time() - t0, 1)}
    paths = [str(teacher)] + [str(work / p / "stage3") for p in rows]
    ev = evaluate_models(paths, task="easyvqa", limit=args.eval_limit)["models"]
    teacher_acc = ev[0]["metrics"]["accuracy"]
    for (placement, row), entry in zip(rows.items(), ev[1:]):
        row.update(accuracy=entry["metrics"]["accuracy"], retention=entry["metrics"]["accuracy"] / teacher_acc)
    result = {"teacher_accuracy": teacher_acc, "k": args.k, "student": args.student, "rows": rows,
              "eval_questions": args.eval_limit, "git_sha": git_sha(), "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, 2 cores"}
    Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Hybrid placement on the embedded default: auto vs first-of-block (K={args.k})", "",
             f"Command: `.venv/bin/python benchmarks/compare_placement.py --student {args.student} --k {args.k}`",
             f"Date {result['date']}, git {result['git_sha'][:10]}, CPU ({result['machine']}).", "",
             f"Teacher accuracy (first {args.eval_limit} easy-vqa test questions): {teacher_acc:.4f}", "",
             "| placement | kept layers | accuracy | retention |", "|---|---|---|---|"]
    for placement, row in rows.items():
        lines.append(f"| {placement} | {row['kept']} | {row['accuracy']:.4f} | {row['retention']:.4f} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
