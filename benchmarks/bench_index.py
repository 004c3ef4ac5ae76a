"""Data index benchmark: build rate, opening from the cache, memory while reading.

    python benchmarks/bench_index.py --records 200000 --out benchmarks/results/index_cpu.json

Writes a synthetic VLM-SFT jsonl (3 question/answer turns per record, each record naming one of
``--images`` PNG files of mixed sizes), builds the index with the embedded teacher's tokenizer and
config (internlm2-chat template), then, each in a fresh process: opens the index from the cache
(the second stage / second process case) and reads ``--read`` items through a DataLoader,
reporting the peak RSS. Run it for 20K and 200K records to see whether memory grows with the data.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = "what is the color of shape circle square triangle red blue green yes no left right".split()
SIZES = [(64, 64), (320, 240), (1024, 768), (448, 448), (800, 1200), (1920, 1080), (96, 512)]


def write_data(folder: Path, records: int, images: int, seed: int = 0) -> Path:
    from PIL import Image

    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        Image.new("RGB", SIZES[i % len(SIZES)], (i % 256, 80, 160)).save(folder / "images" / f"{i}.png")
    path = folder / "train.jsonl"
    with path.open("w") as f:
        for _ in range(records):
            turns = []
            for t in range(3):
                q = " ".join(rng.choices(WORDS, k=rng.randint(6, 20))) + "?"
                a = " ".join(rng.choices(WORDS, k=rng.randint(3, 30))) + "."
                turns += [{"from": "human", "value": ("<image>\n" if t == 0 else "") + q}, {"from": "gpt", "value": a}]
            f.write(json.dumps({"image": f"images/{rng.randrange(images)}.png", "conversations": turns}) + "\n")
    return path


def teacher():
    from mmmamba_cli.assets import TEACHER_DIR
    from mmmamba_cli.io.load import config_from_json, read_config_json
    from mmmamba_cli.io.tokenizer import load_tokenizer

    config = config_from_json(read_config_json(TEACHER_DIR / "config.json"), TEACHER_DIR / "config.json")
    return load_tokenizer(TEACHER_DIR), config


def build(path: Path, cache: Path, num_proc: int) -> dict:
    from mmmamba_cli.data import IndexSettings, build_index, open_index

    tok, config = teacher()
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    directory = build_index(path, tok, config, IndexSettings(max_length=4096), cache, num_proc)
    seconds = time.perf_counter() - t0
    cpu = _cpu_s() - cpu0
    _, stats = open_index(directory, config)
    return {"records": stats.lines, "kept": stats.kept, "tokens": stats.tokens, "build_s": seconds,
            "records_per_s": stats.lines / seconds, "cpu_s": cpu,
            "records_per_cpu_s": stats.lines / cpu, "load_average_after": list(os.getloadavg()), "index": str(directory),
            "index_mb": sum(f.stat().st_size for f in directory.iterdir()) / 2**20}


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the map workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _rss() -> dict:
    """Resident memory now: anonymous (held by the process) and file-backed (mapped files, reclaimable)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def open_and_read(path: Path, cache: Path, read: int) -> dict:
    """In this (fresh) process: time from start to an open index, then read items, peak RSS."""
    t0 = time.perf_counter()
    import torch

    from mmmamba_cli.data import IndexSettings, collate, index_dir, open_index

    imported = time.perf_counter() - t0
    tok, config = teacher()
    t_index = time.perf_counter()
    directory = index_dir(path, tok, config, IndexSettings(max_length=4096), cache)
    dataset, stats = open_index(directory, config)
    index_s = time.perf_counter() - t_index
    opened = time.perf_counter() - t0
    rss_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_open_split = _rss()
    g = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, sampler=torch.utils.data.RandomSampler(
        dataset, generator=g, num_samples=read), collate_fn=lambda b: collate(b, 0))
    t1, tokens = time.perf_counter(), 0
    for batch in loader:
        tokens += int(batch["attention_mask"].sum())
    return {"open_s": opened, "imports_s": imported, "index_open_s": index_s, "read_items": read, "read_s": time.perf_counter() - t1, "tokens_read": tokens,
            "rss_after_open_mb": rss_open, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "after_open_mb": rss_open_split, "after_read_mb": _rss(),
            "dataset_len": len(dataset)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, nargs="+", default=[20000, 200000])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--num-proc", type=int, default=0)
    p.add_argument("--read", type=int, default=2000)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--workdir", type=Path, default=None, help="keep the data here (default: a temporary folder)")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(open_and_read(Path(a.child[0]), Path(a.child[1]), a.read)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        for n in a.records:
            folder = (a.workdir or Path(tmp)) / f"r{n}"
            t0 = time.perf_counter()
            path = folder / "train.jsonl"
            if not path.exists():
                path = write_data(folder, n, a.images)
            print(f"data: {n} records ({time.perf_counter() - t0:.1f} s)", flush=True)
            row = {"records_requested": n, "images": a.images, **build(path, folder / "cache", a.num_proc)}
            print(json.dumps(row), flush=True)
            for k in range(2):  # a second stage / a second process: a fresh interpreter each time
                t0 = time.perf_counter()
                out = subprocess.run([sys.executable, __file__, "--read", str(a.read), "--child", str(path),
                                      str(folder / "cache")], capture_output=True, text=True, check=True)
                child = json.loads(out.stdout.strip().splitlines()[-1])
                child["process_wall_s"] = time.perf_counter() - t0
                row[f"reopen_{k}"] = child
                print(json.dumps(child), flush=True)
            rows.append(row)
    if a.out:
        from mmmamba_cli.bench.env import environment

        import torch

        a.out.write_text(json.dumps({"rows": rows, "env": environment(torch.device("cpu"))}, indent=2))


if __name__ == "__main__":
    main()
