"""Stage-3 recipe variants at one token budget: each starts from the same stage-2 student of a
``bench_llm.py`` run, trains with the ``llm`` recipe plus its overrides, and is scored on the
run's held-out texts (KL, top-1 agreement, perplexity against the teacher).

    python benchmarks/llm_stage3_variants.py --bench runs/bench-llm --student hybrid --steps 30 \
        --out runs/variants base= lr1e-3=optim.lr=1e-3 "ce=loss.ce_weight=0.5"

A variant is ``NAME=`` followed by comma-separated ``key=value`` overrides (none: the recipe as it
is). One json line per variant goes to OUT/variants.jsonl; a finished variant is not rerun.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_llm import Scorer, stage_row  # noqa: E402

from mmmamba_cli.distill import distill_model  # noqa: E402


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition("=")
    overrides, item = [], ""
    for part in rest.split(","):  # "a=[x,y],b=1": a comma inside brackets belongs to the value
        item = f"{item},{part}" if item else part
        if item.count("[") == item.count("]"):
            overrides.append(item)
            item = ""
    return name, [o for o in overrides if o]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="+", help="NAME=key=value,key=value ...")
    p.add_argument("--bench", type=Path, required=True, help="a bench_llm.py --out directory")
    p.add_argument("--student", choices=("linear", "hybrid"), default="hybrid")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    done = {json.loads(x)["name"] for x in (a.out / "variants.jsonl").read_text().splitlines()} \
        if (a.out / "variants.jsonl").exists() else set()
    score = Scorer(a.bench / "teacher", a.bench / "data" / "heldout.jsonl", 6, 2 * a.seq)
    common = [f"train.global_batch={a.batch}", f"train.micro_batch={min(a.batch, 4)}", f"data.max_length={a.seq + 8}",
              "train.save_every=0", f"train.threads={a.threads}", f"train.steps={a.steps}",
              f"data.path={a.bench / 'data' / 'train.jsonl'}"]
    for name, overrides in map(parse_variant, a.variants):
        if name in done:
            continue
        t0 = time.time()
        dst = a.out / name
        distill_model(a.bench / a.student / "stage2", dst, 3, "llm", [*common, *overrides], force=True)
        m = score(dst)
        row = {"name": name, "student": a.student, "set": overrides, **stage_row(dst), "kl": m["kl"],
               "top1": m["top1_agreement"], "ppl": m["ppl"], "teacher_ppl": m["teacher_ppl"],
               "wall": round(time.time() - t0, 1)}
        print(json.dumps(row), flush=True)
        with (a.out / "variants.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
