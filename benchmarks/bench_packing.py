"""Packing on easy-vqa: padded slots per step and training tokens/s with ``data.pack`` off and on.

    python benchmarks/bench_packing.py --out benchmarks/results/packing_easyvqa.json

Seeds the linear student from the embedded teacher, then runs ``--stages`` (each from the seed,
``--steps`` steps of the easyvqa recipe) alternately without and with packing, ``--repeats``
times, and reports the median tokens/s of the steps after the first. The slot counts (real
tokens / rows x row length of every micro-batch of the run) come from the batches themselves and
do not depend on the machine's load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def slots(run: Path, pack: bool, steps: int) -> dict:
    """Real tokens and padded slots of the micro-batches the recipe's first ``steps`` steps see."""
    from mmmamba_cli.data import IndexSettings, collate, index_dir, open_index
    from mmmamba_cli.data.collate import pack as pack_fn
    from mmmamba_cli.distill.data import BatchPlan
    from mmmamba_cli.distill.schema import resolve_recipe
    from mmmamba_cli.distill.stages import get_stage
    from mmmamba_cli.io.load import config_from_json, read_config_json
    from mmmamba_cli.io.tokenizer import load_tokenizer

    r = resolve_recipe(get_stage(3), "easyvqa")
    config = config_from_json(read_config_json(run / "seed" / "config.json"), run / "seed")
    tok = load_tokenizer(run / "seed")
    settings = IndexSettings(r.data.image_root, r.data.max_length, r.data.long_text, r.data.strict)
    directory = index_dir(run / "data" / "easyvqa-train.jsonl", tok, config, settings, run / "data")
    dataset, _ = open_index(directory, config)
    plan = BatchPlan(len(dataset), r.train.global_batch, r.train.micro_batch, 1, r.train.seed)
    real = total = 0
    for step in range(steps):
        for items in plan.micro_batches(step, 0):
            batch = [{"input_ids": ids, "labels": None, "pixel_values": None}
                     for ids in (dataset[i]["input_ids"] for i in items)]
            out = pack_fn(batch, 0, r.data.max_length) if pack else collate(batch, 0)
            real += int(out["attention_mask"].sum())
            total += out["input_ids"].numel()
    return {"real_tokens": real, "slots": total, "padding_fraction": 1 - real / total}


def run_stage(run: Path, stage: int, pack: bool, steps: int, k: int) -> float:
    from mmmamba_cli.distill import distill_model

    out = run / f"s{stage}-pack{int(pack)}-{k}"
    distill_model(run / "seed", out, stage, "easyvqa", [f"train.steps={steps}", "train.save_every=0",
                                                        f"data.pack={str(pack).lower()}"],
                  data_dir=run / "data", force=True)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(m["tokens_per_s"] for m in metrics[1:])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--stages", type=int, nargs="+", default=[1, 3])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result = {"stages": {}}
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as tmp:
        run = Path(tmp) / "run"
        subprocess.run([str(Path(sys.executable).with_name("mmmamba")), "seed", "-r", str(run)], check=True,
                       capture_output=True)
        for stage in a.stages:
            speeds = {False: [], True: []}
            for k in range(a.repeats):
                for pack in (False, True):
                    speeds[pack].append(run_stage(run, stage, pack, a.steps, k))
                    print(stage, pack, speeds[pack][-1], flush=True)
            result["stages"][stage] = {"tokens_per_s_unpacked": speeds[False], "tokens_per_s_packed": speeds[True],
                                       "gain": statistics.median(speeds[True]) / statistics.median(speeds[False])}
        result["slots_unpacked"] = slots(run, False, a.steps)
        result["slots_packed"] = slots(run, True, a.steps)
    print(json.dumps(result, indent=1))
    if a.out:
        import torch

        from mmmamba_cli.bench.env import environment

        a.out.write_text(json.dumps({**result, "steps": a.steps, "env": environment(torch.device("cpu"))}, indent=2))


if __name__ == "__main__":
    main()
