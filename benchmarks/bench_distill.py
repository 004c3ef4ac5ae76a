"""CPU cost of the three distillation stages on the tiny recipe vs a plain teacher forward+backward.

    .venv/bin/python benchmarks/bench_distill.py --out benchmarks/results/distill_cpu.md

Every measurement runs in its own Python process so that its peak memory is its own. Setup (the
tiny teacher, its seeded student, a 24-record jsonl with text and image records) is built once in
a temporary folder, outside the timed region. A stage is timed through the real training loop
(``mmmamba_cli.distill.loop.train``: teacher side + student forward/backward + clipping + AdamW
+ metrics line), taking each step's wall time from metrics.jsonl; the baseline runs the same
micro-batches through the teacher with every parameter trainable and a next-token cross-entropy,
forward + backward only (and the same for the seeded linear student, to separate the cost of its
Mamba-2 scan from the cost of distilling). Medians over the timed steps (after warm-up), then the median over rounds;
the rounds alternate the order of the modes so that load from other processes hits all alike.
Peak memory: the process's peak resident set (VmHWM) during the timed steps, after resetting it
when setup is done, minus the resident set at that moment.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("teacher", "student", "stage1", "stage2", "stage3")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/distill_cpu.md"))
    p.add_argument("--steps", type=int, default=30, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--recipe", default="tiny", help="recipe family (recipes/NAME-stageN.yaml)")
    p.add_argument("--chunk-size", type=int, default=0, help="SSD chunk size of the student (0: the model's)")
    p.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--setup", type=Path, help=argparse.SUPPRESS)
    return p.parse_args()


def build_setup(root: Path) -> None:
    """Tiny teacher (with tokenizer), its seeded student, a jsonl of text and image records."""
    import numpy as np
    import torch
    from PIL import Image

    from mmmamba_cli.data import build_word_tokenizer
    from mmmamba_cli.io.save import save_model_dir
    from mmmamba_cli.model import MMModel, preset
    from mmmamba_cli.seed import seed_directory

    torch.manual_seed(0)
    teacher = MMModel(preset("tiny"))
    words = "what color is the shape ? it a red blue green circle square how many sides three four yes no"
    build_word_tokenizer([words]).save_pretrained(str(root / "tok"))
    save_model_dir(root / "teacher", teacher.config, teacher.state_dict(), tokenizer_dir=root / "tok")
    seed_directory(root / "teacher", root / "seed")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(24):
        q, a = ("what color is the shape ?", "it is red") if i % 3 else ("how many sides does it have ?", "four")
        rec = {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
        if i % 2:
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"img{i}.png")
            rec["image"] = f"img{i}.png"
            rec["conversations"][0]["value"] = "<image>\n" + q
        lines.append(json.dumps(rec))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak() -> int:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS
    return rss_kib("VmRSS")


def run_one(mode: str, root: Path, args) -> dict:
    import torch

    from mmmamba_cli.distill.data import load_dataset, load_tokenizer
    from mmmamba_cli.distill.schema import resolve_recipe
    from mmmamba_cli.distill.stages import STAGES
    from mmmamba_cli.io.load import load_model

    torch.set_num_threads(args.threads)
    n = int(mode[-1]) if mode.startswith("stage") else 1
    total = args.warmup + args.steps
    r = resolve_recipe(STAGES[n], args.recipe, [f"train.steps={total}", "train.save_every=0",
                                                "train.device=cpu", f"data.path={root / 'train.jsonl'}"])
    student = load_model(root / "seed")[0].float()
    teacher = load_model(root / "teacher")[0]
    if args.chunk_size:
        student.config.mamba.chunk_size = args.chunk_size  # the mixers share this settings object
    dataset, _ = load_dataset(root / "train.jsonl", r.data, load_tokenizer(root / "seed"), student.config)
    if mode in ("teacher", "student"):
        times, tokens, base = plain_steps(teacher if mode == "teacher" else student, r, dataset)
    else:
        times, tokens, base = stage_steps(n, r, student, teacher, dataset, root)
    peak = rss_kib("VmHWM") - base
    t, k = times[args.warmup:], tokens[args.warmup:]
    return {"mode": mode, "step_s": statistics.median(t), "tokens_per_step": statistics.median(k),
            "tokens_per_s": sum(k) / sum(t), "peak_extra_mib": peak / 1024, "base_rss_mib": base / 1024,
            "micro_batch": r.train.micro_batch, "global_batch": r.train.global_batch}


def stage_steps(n, r, student, teacher, dataset, root):
    from mmmamba_cli.distill.loop import TrainJob, make_accelerator, train
    from mmmamba_cli.distill.stages import STAGES

    work = Path(tempfile.mkdtemp(dir=root))
    job = TrainJob(STAGES[n], r, student, teacher, dataset, work, 0)
    acc = make_accelerator(r.train)
    base = reset_peak()
    train(job, acc)
    lines = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    return [m["step_s"] for m in lines], [m["tokens"] for m in lines], base


def plain_steps(model, r, dataset):
    """Forward + backward of one model alone, every parameter trainable, next-token CE."""
    import torch

    from mmmamba_cli.distill.data import BatchPlan, make_loader
    from mmmamba_cli.distill.losses import ce_sum, label_mask

    plan = BatchPlan(len(dataset), r.train.global_batch, r.train.micro_batch, 1, r.train.seed)
    batches = iter(make_loader(dataset, plan, 0, r.train.steps, 0, 0, 0))
    model.train().requires_grad_(True)
    base = reset_peak()
    times, tokens = [], []
    for _ in range(r.train.steps):
        micro = [next(batches) for _ in range(plan.accum)]
        count = max(1, sum(int(label_mask(b).sum()) for b in micro))
        tic = time.perf_counter()
        for b in micro:
            logits = model(b["input_ids"], b["pixel_values"], b["attention_mask"])
            (ce_sum(logits, b["labels"]) / count).backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - tic)
        tokens.append(sum(int(b["attention_mask"].sum()) for b in micro))
    return times, tokens, base


def main() -> None:
    args = parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.setup, args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_setup(root)
        results = {m: [] for m in MODES}
        for k in range(args.rounds):
            for mode in (MODES if k % 2 == 0 else MODES[::-1]):
                cmd = [sys.executable, __file__, "--one", mode, "--setup", str(root), "--steps", str(args.steps),
                       "--warmup", str(args.warmup), "--threads", str(args.threads), "--recipe", args.recipe,
                       "--chunk-size", str(args.chunk_size)]
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
                results[mode].append(json.loads(out.strip().splitlines()[-1]))
    write(args, {m: summarise(rs) for m, rs in results.items()})


def summarise(runs: list[dict]) -> dict:
    out = dict(runs[0])
    for key in ("step_s", "tokens_per_s", "peak_extra_mib", "base_rss_mib"):
        out[key] = statistics.median(r[key] for r in runs)
    return out


def write(args, res: dict) -> None:
    import torch

    from mmmamba_cli.io.save import git_sha

    base = res["teacher"]
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "git": git_sha()[:10], "python": platform.python_version(), "torch": torch.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "load_average": os.getloadavg(), "threads": args.threads, "steps": args.steps,
            "warmup": args.warmup, "rounds": args.rounds, "recipe": args.recipe,
            "student_chunk_size": args.chunk_size or "model default"}
    student = res["student"]
    rows = ["| run | tokens/step | step (ms) | tokens/s | time vs teacher fwd+bwd | time vs student fwd+bwd "
            "| peak extra RSS (MiB) |", "|---|---:|---:|---:|---:|---:|---:|"]
    label = {"teacher": "teacher fwd+bwd (CE, all params)", "student": "linear student fwd+bwd (CE, all params)"}
    for m in MODES:
        r = res[m]
        rows.append(f"| {label.get(m, m)} | {r['tokens_per_step']:.0f} | {1000 * r['step_s']:.1f} | "
                    f"{r['tokens_per_s']:.0f} | {r['step_s'] / base['step_s']:.2f}x | "
                    f"{r['step_s'] / student['step_s']:.2f}x | {r['peak_extra_mib']:.1f} |")
    text = (f"# Distillation cost on CPU: stages 1-3 vs a plain teacher forward+backward\n\n"
            f"Command (from the repo root):\n\n    .venv/bin/python benchmarks/bench_distill.py --threads {args.threads} "
            f"--out {args.out}\n\n" + "\n".join(f"- {k}: {v}" for k, v in meta.items()) +
            f"\n- batch: global {base['global_batch']}, micro {base['micro_batch']} (recipe {args.recipe}-stageN)\n\n"
            + "\n".join(rows) + "\n\n" + NOTES)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": res}, indent=2) + "\n")
    print(text)


NOTES = """A stage step = teacher side (no grad) + student forward/backward + gradient clipping + AdamW +
one metrics line; stages 1-2 run the teacher's layers and every Mamba mixer (no MLP backward, no
head), stage 3 runs both whole models and a KL over the vocabulary. The baseline is forward +
backward of one model alone (no optimizer). Baseline RSS (Python, torch, both models) is
excluded from the peak column. At this size fixed per-step overheads dominate; the numbers say
what a tiny run costs, not how HoVLE-2.6B scales.
"""


if __name__ == "__main__":
    main()
