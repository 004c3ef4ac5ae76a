"""CPU cost of `eval --teacher` scoring (KL, top-1 agreement, perplexities) before and after the
memory-bounded reduction, on a teacher/student pair of SmolLM2-135M's shapes (vocabulary 49152).

    python benchmarks/bench_fidelity_cpu.py --out benchmarks/results/fidelity_cpu_smollm2.json

The pair: the random-weight Llama of ``bench_decode_cpu.py`` (``bench.models.SMOLLM2_135M``) and
its seeded linear student.
Items: ``--items`` synthetic text questions of about ``--words`` words (one token each under a
word tokenizer) plus a one-word answer. ``before`` is ``evaluate/fidelity.py`` at ``--before``
(git revision; (b, l, V) logits of both models, then the masked reduction), ``after`` the current
one (final hidden states of the scored positions only, logits chunk by chunk); both run the same
model code, each in a fresh process. Memory: the scoring's peak RSS above the RSS with both models
loaded, plus both models' weights (``bench.memory.PeakMemory``), and the process's lifetime peak.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def build(tmp: Path) -> tuple[Path, Path, Path]:
    from transformers import LlamaConfig, LlamaForCausalLM

    from mmmamba_cli.bench.models import SMOLLM2_135M
    from mmmamba_cli.data.tokenizer import build_word_tokenizer
    from mmmamba_cli.io.load import load_model
    from mmmamba_cli.io.save import save_model_dir
    from mmmamba_cli.model.layout import layer_types_for
    from mmmamba_cli.seed import seed_state

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M)).save_pretrained(tmp / "llama")
    teacher, _ = load_model(tmp / "llama")
    tok = build_word_tokenizer([" ".join(f"w{i}" for i in range(2000))])
    tok.save_pretrained(str(tmp / "tok"))
    cfg, sd, _ = seed_state(teacher.config, teacher.state_dict(), layer_types_for([], teacher.config.num_layers))
    save_model_dir(tmp / "teacher", teacher.config, teacher.state_dict(), tokenizer_dir=tmp / "tok")
    save_model_dir(tmp / "linear", cfg, sd, tokenizer_dir=tmp / "tok")
    return tmp / "teacher", tmp / "linear", tmp / "tok"


def fidelity_at(rev: str | None):
    """The ``fidelity`` function of ``evaluate/fidelity.py`` at git revision ``rev`` (None: now)."""
    if rev is None:
        from mmmamba_cli.evaluate.fidelity import fidelity
        return fidelity
    src = subprocess.check_output(["git", "-C", str(ROOT), "show", f"{rev}:mmmamba_cli/evaluate/fidelity.py"])
    mod = types.ModuleType("mmmamba_cli.evaluate._fidelity_before")
    mod.__package__ = "mmmamba_cli.evaluate"
    exec(compile(src, f"{rev}:fidelity.py", "exec"), mod.__dict__)
    return mod.fidelity


def child(a) -> None:
    from mmmamba_cli.bench.memory import PeakMemory
    from mmmamba_cli.evaluate.items import EvalItem, Task
    from mmmamba_cli.io.load import load_model
    from mmmamba_cli.io.tokenizer import load_tokenizer

    torch.set_num_threads(a.threads)
    teacher, _ = load_model(a.teacher)
    student, _ = load_model(a.student)
    tok = load_tokenizer(Path(a.tok))
    g = torch.Generator().manual_seed(0)
    items = [EvalItem(str(i), " ".join(f"w{int(w)}" for w in torch.randint(0, 2000, (a.words,), generator=g)),
                      [f"w{i}"]) for i in range(a.items)]
    task = Task("synthetic", "vqa", items, "generated", "", 1)
    fn = fidelity_at(a.before if a.mode == "before" else None)
    weights = sum(p.numel() * p.element_size() for m in (teacher, student) for p in m.parameters())
    meter = PeakMemory(torch.device("cpu"), resident_bytes=weights)
    meter.start()  # peak RSS of the scoring on top of the loaded models, + both models' weights
    w0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        got = fn(teacher, student, tok, task, batch_size=a.batch_size)
    w1, c1 = time.perf_counter(), time.process_time()
    peak = meter.peak()
    life = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mode": a.mode, "items": a.items, "tokens": got["tokens"], "kl": got["kl"],
                      "seconds": w1 - w0, "cpu_seconds": c1 - c0, "seconds_per_100_items": (w1 - w0) * 100 / a.items,
                      "cpu_seconds_per_100_items": (c1 - c0) * 100 / a.items, "weight_bytes": weights,
                      "peak_bytes": peak, "memory_method": meter.method, "process_peak_rss_bytes": life}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--words", type=int, default=290)
    ap.add_argument("--batch-size", type=int, default=32, help="eval's default")
    ap.add_argument("--before", default="c8de8d2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", default="after,before")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--mode", choices=["before", "after"], help=argparse.SUPPRESS)
    ap.add_argument("--teacher", help=argparse.SUPPRESS)
    ap.add_argument("--student", help=argparse.SUPPRESS)
    ap.add_argument("--tok", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mode:
        return child(a)
    from mmmamba_cli.bench.env import environment, load_average

    teacher, student, tok = build(Path(tempfile.mkdtemp()))
    rows = []
    for mode in a.modes.split(","):
        cmd = [sys.executable, __file__, "--mode", mode, "--teacher", str(teacher), "--student", str(student),
               "--tok", str(tok), "--items", str(a.items), "--words", str(a.words),
               "--batch-size", str(a.batch_size), "--before", a.before, "--threads", str(a.threads)]
        rows.append(json.loads(subprocess.check_output(cmd, text=True).strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    result = {"command": "python " + " ".join(sys.argv), "rows": rows, "threads": a.threads,
              "environment": environment(torch.device("cpu")), "load_average_end": load_average(),
              "note": "2-core CPU shared with other jobs (wall-clock figures are upper bounds); random weights"}
    if a.out:
        a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
