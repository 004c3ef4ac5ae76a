"""Peak RSS per process of a 2-process stage-3 run on CPUs: DDP vs FSDP (``train.sharding=fsdp``).

    nice python benchmarks/bench_fsdp_cpu.py --scales 1 16 --out benchmarks/results/fsdp_cpu.json

For each width scale k the embedded tiny teacher is rebuilt k times wider (hidden 64k, 4k heads
of 16, MLP 128k; 4 layers, vocabulary 128), seeded into a student, and stage 3 of the tiny recipe
runs for a few steps on 2 processes (torchrun, gloo, fp32) once replicated (DDP) and once with
the student sharded. Every process reports (MiB) its resident set after the imports; its peak
while loading the models and setting up (the student is loaded whole, then sharded); its resident
set after setup; its peak during the training steps (the high-water mark is reset after setup);
and its peak after gathering and writing the final model, counted from the reset.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = {"ddp": "none", "fsdp": "fsdp"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/fsdp_cpu.json"))
    p.add_argument("--scales", type=int, nargs="+", default=[1, 16])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--setup", type=Path, help=argparse.SUPPRESS)
    return p.parse_args()


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def build_setup(root: Path, scale: int) -> None:
    """A k-times wider tiny teacher, its seeded student as run/stage2, a jsonl of text records."""
    import torch

    from mmmamba_cli.data import build_word_tokenizer
    from mmmamba_cli.io.save import save_model_dir
    from mmmamba_cli.model import MMModel
    from mmmamba_cli.model.config import PRESETS, ModelConfig
    from mmmamba_cli.seed import seed_directory

    spec = json.loads(json.dumps(PRESETS["tiny"]))
    layer = {**spec["llm_layer"], "num_heads": 4 * scale, "num_kv_heads": 2 * scale, "intermediate_size": 128 * scale}
    spec.update(hidden_size=64 * scale, embed_layer=layer, llm_layer=dict(layer))
    spec.pop("vision")  # the default vision settings instead (the text records never use them)
    torch.manual_seed(0)
    teacher = MMModel(ModelConfig.from_dict(spec))
    words = "what color is the shape ? it a red blue green circle square how many sides three four yes no"
    build_word_tokenizer([words]).save_pretrained(str(root / "tok"))
    save_model_dir(root / "teacher", teacher.config, teacher.state_dict(), tokenizer_dir=root / "tok")
    seed_directory(root / "teacher", root / "run" / "seed")
    shutil.copytree(root / "run" / "seed", root / "run" / "stage2")  # stage 3 starts from the seeded student
    qa = [("what color is the shape ?", "it is red"), ("how many sides does it have ?", "four")]
    lines = [json.dumps({"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]})
             for i in range(24) for q, a in [qa[i % 2]]]
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")


def run_one(mode: str, root: Path, steps: int) -> None:
    """One process of a 2-process run (under torchrun): stage 3, then its memory as JSON."""
    import torch

    import mmmamba_cli.distill.loop as loop
    from mmmamba_cli.distill import run_stage

    torch.set_num_threads(1)
    base, seen = rss_kib("VmRSS"), {}
    setup, train = loop._setup, loop.train

    def timed_setup(*a, **k):  # the steps' peak starts once the models are loaded and the student sharded
        out = setup(*a, **k)
        gc.collect()
        seen["load_peak"], seen["after_setup"] = rss_kib("VmHWM"), rss_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS
        return out

    def timed_train(*a, **k):  # before the final model is gathered and written
        out = train(*a, **k)
        seen["steps_peak"] = rss_kib("VmHWM")
        return out

    loop._setup, loop.train = timed_setup, timed_train
    import mmmamba_cli.distill.pipeline as pipeline
    pipeline.train = timed_train
    run = root / f"run-{mode}"
    rank = int(os.environ.get("RANK", "0"))
    over = [f"train.steps={steps}", "train.save_every=0", f"train.sharding={MODES[mode]}"]
    out = run_stage(run, 3, "tiny", over, data=root / "train.jsonl")
    summary = json.loads((out / "train_summary.json").read_text()) if rank == 0 else {}
    (root / f"{mode}-{rank}.json").write_text(json.dumps({
        "mode": mode, "rank": rank, "rss_after_imports_mib": base / 1024,
        "peak_rss_loading_mib": seen["load_peak"] / 1024, "rss_after_setup_mib": seen["after_setup"] / 1024,
        "peak_rss_steps_mib": seen["steps_peak"] / 1024, "peak_rss_after_mib": rss_kib("VmHWM") / 1024,
        "local_param_fraction": summary.get("local_param_fraction"), "sharding": summary.get("sharding")}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    args = parse_args()
    if args.one:
        run_one(args.one, args.setup, args.steps)
        return
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    rows = []
    for scale in args.scales:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            build_setup(root, scale)
            n_params = sum(p.numel() for p in __import__("mmmamba_cli.io.load", fromlist=["load_model"])
                           .load_model(root / "run" / "seed")[0].parameters())
            for mode in MODES:
                shutil.copytree(root / "run", root / f"run-{mode}")
                cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port()), __file__,
                       "--one", mode, "--setup", str(root), "--steps", str(args.steps)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode:
                    sys.exit(proc.stderr[-3000:])
                for rank in (0, 1):
                    row = json.loads((root / f"{mode}-{rank}.json").read_text())
                    rows.append({"scale": scale, "student_params": n_params, **row})
                    print(json.dumps(rows[-1]))
    load = os.getloadavg()
    args.out.write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "date": datetime.datetime.now().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}",
        "torch": __import__("torch").__version__,
        "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_"), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
