"""The sweep: every model over every context length, then the fixed prompt; results written atomically."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..io.files import atomic_dir, write_json_atomic
from .bandwidth import card_bandwidth
from .context_length import describe, free_memory, is_oom, measure_at_length, random_ids
from .env import environment, load_average
from .fixed_prompt import run_fixed_prompt
from .memory import PeakMemory
from .models import base_config, build_variant
from .plot import plot
from .report import add_ratios, markdown, paper_comparison, slopes
from ..errors import UserError
from .settings import BenchSettings


def _warm_up(model, settings: BenchSettings, device: torch.device) -> None:
    """One short prefill and a few decode steps: lazy initialisation, kernel compilation. Running
    out of memory here is left for the cells to record."""
    n = min(256, settings.sweep.tokens[0])
    try:
        cache = model.new_cache(1, n + 8)
        logits = model(random_ids(model, n, settings.seed, device), cache=cache, logits_to_keep=1)
        for _ in range(4):
            logits = model.step(logits[:, -1].argmax(-1), cache)[:, None]
    except Exception as e:  # noqa: BLE001
        if not is_oom(e):
            raise
    finally:
        cache = logits = None
        free_memory(device)


def _fixed_prompt(model, kind: str, settings: BenchSettings, device: torch.device) -> dict:
    try:
        return run_fixed_prompt(model, kind, settings, device, settings.model_dir)
    except Exception as e:  # noqa: BLE001 - recorded like a failed cell
        return {"model": kind, "oom": is_oom(e), "error": describe(e)}
    finally:
        free_memory(device)


def _skipped(kind: str, tokens: int, after: int) -> dict:
    return {"model": kind, "tokens": tokens, "oom": True, "oom_phase": "skipped",
            "error": f"not run: out of memory at {after} tokens", "prefill_s": None,
            "decode_s_per_token": None, "decode_tokens_per_s": None, "peak_mem_bytes": None,
            "prefill_mem_bytes": None, "decode_mem_bytes": None, "cache_bytes": None}


def decode_mode(rows: list[dict]) -> str:
    """How the decode steps actually ran (the fast path can fall back per model)."""
    modes = {}
    for r in rows:
        if not r.get("decoder"):
            continue
        m = ", ".join(["runtime: MMModel.step, fused projections"] + ["CUDA graph"] * bool(r.get("cuda_graph")))
        modes.setdefault(m, []).append(r["model"])
    return "; ".join(f"{m} [{', '.join(dict.fromkeys(ks))}]" for m, ks in modes.items()) or "-"


def memory_method(device: torch.device) -> str:
    meter = PeakMemory(device)
    if device.type != "cuda":
        meter.start()
    return meter.method


def run_bench(settings: BenchSettings, log: Callable[[str], None] = print, command: str = "") -> dict:
    """Measure and return the result dictionary (``bench.json``'s content)."""
    errors = settings.check()
    if errors:
        raise UserError("bench settings: " + "; ".join(errors))
    device, dtype = settings.resolved_device(), settings.resolved_dtype()
    if settings.runtime.threads or device.type == "cpu":
        # batch-1 decode ops are too small to split, and on a shared machine threads wait on each other
        torch.set_num_threads(settings.runtime.threads or 1)
    env = environment(device)
    bandwidth = settings.runtime.bandwidth or (card_bandwidth(env["device"]["name"]) if device.type == "cuda" else None)
    base = base_config(settings.models.size, settings.model_dir)
    rows, fixed = [], []
    with torch.inference_mode():
        for kind in settings.models.kinds:
            log(f"building {kind} ({settings.model_dir or settings.models.size}, {dtype}, {device})")
            model = build_variant(base, kind, device, dtype, settings.models.impl, settings.seed, settings.model_dir)
            _warm_up(model, settings, device)
            oom_at = None
            for tokens in settings.sweep.tokens:
                if oom_at is not None:
                    rows.append(_skipped(kind, tokens, oom_at))
                    continue
                row = measure_at_length(model, kind, tokens, settings, device, bandwidth)
                rows.append(row)
                log(_line(row))
                if row["oom"]:
                    oom_at = tokens
            if settings.fixed_prompt.enabled:
                fixed.append(_fixed_prompt(model, kind, settings, device))
                log(f"{kind} fixed prompt: {fixed[-1].get('tokens_per_s') or 0:.1f} tok/s")
            del model
            free_memory(device)
    add_ratios(rows)
    return {"environment": env, "settings": settings.to_dict(), "dtype": str(dtype).removeprefix("torch."),
            "bandwidth_bytes_per_s": bandwidth, "decode_mode": decode_mode(rows),
            "memory_method": memory_method(device),
            "command": command or "mmmamba bench", "load_average_end": load_average(),
            "rows": rows, "slopes": slopes(rows), "paper_comparison": paper_comparison(rows),
            "fixed_prompt": fixed}


def _line(r: dict) -> str:
    if r["oom"]:
        return f"{r['model']:>8} {r['tokens']:>7} tokens: out of memory ({r['oom_phase']})"
    if r.get("error"):
        return f"{r['model']:>8} {r['tokens']:>7} tokens: FAILED {r['error']}"
    return (f"{r['model']:>8} {r['tokens']:>7} tokens: prefill {r['prefill_s']:.4g} s, decode "
            f"{r['decode_s_per_token'] * 1e3:.4g} ms/token, peak {r['peak_mem_bytes'] / 2 ** 20:.0f} MiB")


def failures(result: dict) -> list[str]:
    """Errors other than running out of memory, one line each."""
    cells = [f"{r['model']} at {r['tokens']} tokens: {r['error']}" for r in result["rows"]
             if r.get("error") and not r["oom"]]
    return cells + [f"{r['model']} fixed prompt: {r['error']}" for r in result["fixed_prompt"]
                    if r.get("error") and not r.get("oom")]


def write_results(result: dict, out: Path, force: bool = False) -> Path:
    """bench.json, bench.md and bench.png in ``out``, all or nothing."""
    with atomic_dir(out, force) as tmp:
        write_json_atomic(tmp / "bench.json", result)
        (tmp / "bench.md").write_text(markdown(result))
        plot(result, tmp / "bench.png")
    return Path(out)
