"""One measurement: a model at one context length -> one row of ``bench.json``.

Decoding goes through the runtime's own decoder (``runtime.make_decoder``: ``MMModel.step``, a CUDA
graph of it on CUDA), the one ``mmmamba generate`` and ``eval`` use, with fused projections.

Prefill: a fresh cache sized for the whole cell, one forward over ``tokens`` random ids keeping
only the last position's logits (the time to first token); median of ``repeats`` runs (a GPU
also gets one untimed run first, for kernel autotuning at this length). Decode: ``warmup_steps``
untimed greedy steps, then the median of ``decode_steps`` timed ones, each feeding back its own
argmax. Memory: the peak of each phase (``memory.py``). An out-of-memory error anywhere is a
result: the row says ``oom: true`` and in which phase. Any other error is kept in the row's
``error`` so the sweep's other results survive (the command then exits non-zero).
"""
from __future__ import annotations

import gc
import torch
from torch import Tensor

from ..model.model import MMModel
from .bandwidth import decode_bytes
from .memory import PeakMemory
from .models import set_attention_impl, weight_bytes
from ..runtime.decoder import make_decoder
from .settings import BenchSettings
from .timing import median, time_steps, timed


def is_oom(e: BaseException) -> bool:
    if isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        s in msg for s in ("out of memory", "can't allocate memory", "not enough memory"))


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def capacity(tokens: int, settings: BenchSettings, device: torch.device) -> int:
    """Cache slots for the prompt and every decode step."""
    return tokens + settings.sweep.warmup_steps + settings.sweep.decode_steps + 1


def runtime_decoder(model: MMModel, cache, settings: BenchSettings):
    """The runtime's decoder over ``cache`` (attention as the chosen teacher setting), and a
    description of how it decodes."""
    set_attention_impl(model, settings.models.teacher_impl)
    model.fuse_for_decode()
    dec = make_decoder(model, cache, settings.runtime.graphs)
    return dec, {"decoder": "runtime", "cuda_graph": dec.kind == "cuda-graph", "note": ""}


def random_ids(model: MMModel, tokens: int, seed: int, device: torch.device) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, model.config.vocab_size, (1, tokens), generator=g).to(device)


def _prefill(model: MMModel, ids: Tensor, tokens: int, settings: BenchSettings, device: torch.device):
    """(cache, logits, timing fields) of the last of the repeated prefills."""
    times, cache, logits = [], None, None
    for r in range(settings.sweep.repeats + (device.type == "cuda")):  # a GPU's first run is untimed
        cache = logits = None  # free the previous run's cache first
        cache = model.new_cache(1, capacity(tokens, settings, device))
        logits, t = timed(lambda: model(ids, cache=cache, logits_to_keep=1), device)
        if device.type != "cuda" or r > 0:
            times.append(t)
        if times and sum(x.wall for x in times) > settings.sweep.prefill_budget_s:
            break
    return cache, logits, {"prefill_s": median([x.wall for x in times]), "prefill_repeats": len(times),
                           "prefill_cpu_s": median([x.cpu for x in times])}


def _decode(model: MMModel, cache, first: Tensor, settings: BenchSettings, device: torch.device) -> dict:
    """Warm-up steps, then the timed ones; each step feeds back its argmax."""
    dec, how = runtime_decoder(model, cache, settings)
    box = [first]

    def one() -> None:
        box[0] = dec.step(box[0]).argmax(-1)

    try:
        for _ in range(settings.sweep.warmup_steps):
            one()
        samples = time_steps(one, settings.sweep.decode_steps, device)
    finally:
        dec.close()
    per_step = median([x.wall for x in samples])
    return {**how, "decode_s_per_token": per_step, "decode_tokens_per_s": 1.0 / per_step,
            "decode_cpu_s_per_token": median([x.cpu for x in samples]), "decode_steps": settings.sweep.decode_steps}


def measure_at_length(model: MMModel, kind: str, tokens: int, settings: BenchSettings,
                 device: torch.device, bandwidth: float | None = None) -> dict:
    row = {"model": kind, "tokens": tokens, "oom": False, "oom_phase": None, "prefill_s": None,
           "decode_s_per_token": None, "decode_tokens_per_s": None, "prefill_cpu_s": None,
           "decode_cpu_s_per_token": None, "peak_mem_bytes": None,
           "prefill_mem_bytes": None, "decode_mem_bytes": None, "cache_bytes": None,
           "weight_bytes": weight_bytes(model), "decode_bytes_per_token": decode_bytes(model, tokens)}
    if bandwidth:
        row["bw_limit_s_per_token"] = row["decode_bytes_per_token"] / bandwidth
    ids = random_ids(model, tokens, settings.seed + tokens, device)
    meter = PeakMemory(device, row["weight_bytes"])
    phase, cache, logits = "prefill", None, None
    try:
        meter.start()
        cache, logits, timing = _prefill(model, ids, tokens, settings, device)
        row.update(timing, prefill_mem_bytes=meter.peak(), cache_bytes=cache.nbytes())
        phase = "decode"
        meter.start(keep_base=True)
        row.update(_decode(model, cache, logits[:, -1].argmax(-1), settings, device), decode_mem_bytes=meter.peak())
        row["peak_mem_bytes"] = max(row["prefill_mem_bytes"], row["decode_mem_bytes"])
        if bandwidth:
            row["bw_ratio"] = row["decode_s_per_token"] / row["bw_limit_s_per_token"]
    except Exception as e:  # noqa: BLE001 - a failed cell is recorded; the sweep goes on
        row.update(oom=is_oom(e), oom_phase=phase if is_oom(e) else None, error=describe(e))
    finally:
        cache = logits = None
        set_attention_impl(model, "sdpa")
        free_memory(device)
    return row


def describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
