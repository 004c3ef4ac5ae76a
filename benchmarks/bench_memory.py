"""Peak memory of the stage-3 loss and of activation checkpointing, on CPU (peak RSS per process).

    python benchmarks/bench_memory.py --out benchmarks/results/memory_cpu.json

Every case runs in a fresh process; the figure is its peak RSS minus the RSS once the inputs
exist, so it is what the loss (or the forward/backward) itself adds.

- ``kl``: KL(teacher || student) summed over n tokens at the HoVLE vocabulary (92,553) and a tiny
  hidden size (8), forward + backward. ``logits``: the logits of both models materialised
  (student with a gradient) and the chunked ``kl_sum`` on them; ``hidden``: ``head_kl_sum`` from
  hidden states and head weights (default chunk: 2^23 logits, 90 tokens at this vocabulary).
- ``ckpt``: one stage-3 forward + backward of the linear student seeded from the embedded teacher
  on a batch of random tokens, with and without ``train.activation_checkpointing``.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

VOCAB, HIDDEN = 92553, 8


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def case_kl(mode: str, tokens: int) -> dict:
    import torch

    from mmmamba_cli.ops.divergence import head_kl_sum, kl_sum

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    h_s = torch.randn(tokens, HIDDEN, generator=g, requires_grad=True)
    h_t = torch.randn(tokens, HIDDEN, generator=g)
    w = torch.randn(VOCAB, HIDDEN, generator=g) * 0.1
    w_t = torch.randn(VOCAB, HIDDEN, generator=g) * 0.1
    base = rss_mb()
    t0 = time.perf_counter()
    if mode == "logits":
        loss = kl_sum(h_s @ w.T, h_t @ w_t.T)
    else:
        loss = head_kl_sum(h_s, w, h_t, w_t)
    loss.backward()
    return {"case": "kl", "mode": mode, "tokens": tokens, "vocab": VOCAB, "hidden": HIDDEN,
            "loss": float(loss), "seconds": time.perf_counter() - t0, "base_mb": base,
            "added_peak_mb": peak_mb() - base, "one_fp32_logits_mb": tokens * VOCAB * 4 / 2**20}


def case_ckpt(on: bool, batch: int, length: int) -> dict:
    import torch

    from mmmamba_cli.assets import TEACHER_DIR
    from mmmamba_cli.distill.checkpointing import checkpoint_layers
    from mmmamba_cli.distill.objectives import OBJECTIVES
    from mmmamba_cli.distill.schema import LossSection
    from mmmamba_cli.io.load import build_model, load_model
    from mmmamba_cli.model.layout import layer_types_for
    from mmmamba_cli.seed import seed_state

    torch.set_num_threads(1)
    teacher, _ = load_model(TEACHER_DIR)
    teacher = teacher.float().eval()
    config, sd, _ = seed_state(teacher.config, teacher.state_dict(), layer_types_for([], teacher.config.num_layers))
    student = build_model(config, sd, "bench").float()
    obj, loss_cfg = OBJECTIVES["kl"], LossSection()
    if on:
        checkpoint_layers(student, obj.layer_call)
    ids = torch.randint(9, config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0))
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": None, "pixel_values": None}
    targets = obj.targets(teacher, b, student)
    module = obj.student(student, loss_cfg)
    base = rss_mb()
    t0 = time.perf_counter()
    terms = module(b, targets)
    terms["kl"].backward()
    return {"case": "ckpt", "checkpointing": on, "batch": batch, "length": length, "layers": config.num_layers,
            "hidden": config.hidden_size, "kl": float(terms["kl"]), "seconds": time.perf_counter() - t0,
            "base_mb": base, "added_peak_mb": peak_mb() - base,
            "grad_norm": float(torch.stack([p.grad.norm() for p in student.parameters() if p.grad is not None]).norm())}


def run(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--case", *args], capture_output=True, text=True)
    if out.returncode:
        return {"case": args, "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path)
    p.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--kl-tokens", type=int, nargs="+", default=[1024, 8192])
    p.add_argument("--logits-max-tokens", type=int, default=1024, help="largest n for the materialised-logits case")
    p.add_argument("--ckpt", type=int, nargs=2, default=[4, 2048], metavar=("BATCH", "LENGTH"))
    a = p.parse_args()
    if a.case:
        kind, *rest = a.case
        row = case_kl(rest[0], int(rest[1])) if kind == "kl" else case_ckpt(rest[0] == "on", int(rest[1]), int(rest[2]))
        print(json.dumps(row))
        return
    rows = []
    for n in a.kl_tokens:
        for mode in ("hidden", "logits"):
            if mode == "logits" and n > a.logits_max_tokens:
                continue
            rows.append(run(["kl", mode, str(n)]))
            print(json.dumps(rows[-1]), flush=True)
    for on in ("off", "on"):
        rows.append(run(["ckpt", on, str(a.ckpt[0]), str(a.ckpt[1])]))
        print(json.dumps(rows[-1]), flush=True)
    if a.out:
        import torch

        from mmmamba_cli.bench.env import environment

        a.out.write_text(json.dumps({"rows": rows, "env": environment(torch.device("cpu"))}, indent=2))


if __name__ == "__main__":
    main()
