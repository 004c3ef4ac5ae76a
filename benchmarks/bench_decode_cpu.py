"""CPU decode throughput of the runtime behind `mmmamba generate` against transformers' Llama.

    python benchmarks/bench_decode_cpu.py --out benchmarks/results/decode_cpu_smollm2.json

A Llama-family teacher of SmolLM2-135M's shapes (30 layers, hidden 576, 9 heads / 3 KV heads,
head_dim 64, FFN 1536, vocabulary 49152, tied embeddings) with random weights, written as a
transformers directory and loaded by our loader; the linear student and the hybrid (attention
kept in the first layer of every block of 4) are seeded from it. Each model gets one random prompt
of each context length and greedily generates ``--new-tokens`` tokens:

- ours: ``mmmamba_cli.runtime.generate`` (what `mmmamba generate` calls), a step callback stamps
  each new token;
- transformers: ``LlamaForCausalLM.generate`` (SDPA attention, its default KV cache), a logits
  processor stamps each new token.

Decode tokens/s = (new tokens - 1) / (last stamp - first stamp): the prefill is before the first
stamp and reported on its own. Speed does not depend on the weight values. One run per cell.

``--decode-only``: no prefill; each model's cache is filled with random state for the context
(KV of every position for attention layers, conv and SSM states for Mamba layers) and the
runtime's decoder (ours) / ``generate`` over a filled ``DynamicCache`` (transformers) decodes
``--new-tokens`` tokens; ``--repeats`` rounds interleave every model and length, so load from
other processes hits all cells alike; the median is reported.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

from mmmamba_cli.bench.env import environment, load_average
from mmmamba_cli.bench.models import SMOLLM2_135M
from mmmamba_cli.io.load import build_model, load_model
from mmmamba_cli.model.layout import every, layer_types_for
from mmmamba_cli.runtime import SamplingSettings, generate
from mmmamba_cli.seed import seed_state



def now() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): on a shared machine the CPU clock leaves out the
    time spent waiting for a core, so with one thread it is the steadier measure of the work."""
    return time.perf_counter(), time.process_time()


class Stamp(LogitsProcessor):
    def __init__(self):
        self.times: list[tuple[float, float]] = []

    def __call__(self, input_ids, scores):
        self.times.append(now())
        return scores


def rates(t0: tuple[float, float], stamps: list[tuple[float, float]]) -> dict:
    n = len(stamps)
    (w0, c0), (w1, c1), (wn, cn) = t0, stamps[0], stamps[-1]
    return {"prefill_s": w1 - w0, "prefill_cpu_s": c1 - c0, "new_tokens": n,
            "decode_tokens_per_s": (n - 1) / (wn - w1) if n > 1 else None,
            "decode_tokens_per_cpu_s": (n - 1) / (cn - c1) if n > 1 else None}


@torch.inference_mode()
def run_ours(model, ids: torch.Tensor, new: int) -> dict:
    stamps: list[tuple[float, float]] = []
    t0 = now()
    out = generate(model, ids, settings=SamplingSettings(max_new_tokens=new, eos_token_id=-1),
                   on_step=lambda toks: stamps.append(now()))
    assert len(out[0]) == new
    return rates(t0, stamps)


@torch.inference_mode()
def run_hf(hf, ids: torch.Tensor, new: int) -> dict:
    stamp = Stamp()
    t0 = now()
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                      do_sample=False, logits_processor=LogitsProcessorList([stamp]), pad_token_id=0)
    assert out.shape[1] == ids.shape[1] + new
    return rates(t0, stamp.times)


@torch.inference_mode()
def filled_cache(model, context: int, new: int):
    """Our cache as after a prefill of ``context`` tokens, with random state."""
    cache = model.new_cache(1, context + new + 1)
    for st in cache.layers:
        for t in vars(st).values():
            if isinstance(t, torch.Tensor):
                t.normal_(0, 0.5)
    cache.mask[:, :context] = True
    cache.next_pos.fill_(context)
    cache.slot.fill_(context)
    cache.seen = cache.max_pos = context
    return cache


@torch.inference_mode()
def decode_ours(model, context: int, new: int) -> dict:
    from mmmamba_cli.runtime import make_decoder

    model.fuse_for_decode()
    cache = filled_cache(model, context, new)
    dec, tok, stamps = make_decoder(model, cache), torch.tensor([11]), []
    for _ in range(new):
        tok = dec.step(tok).argmax(-1)
        stamps.append(now())
    return rates(stamps[0], stamps)


@torch.inference_mode()
def decode_hf(hf, context: int, new: int) -> dict:
    from transformers import DynamicCache

    c = hf.config
    cache = DynamicCache(config=c)
    for i in range(c.num_hidden_layers):
        kv = torch.randn(2, 1, c.num_key_value_heads, context, c.head_dim) * 0.5
        cache.update(kv[0], kv[1], i)
    ids = torch.randint(10, c.vocab_size, (1, context + 1))
    stamp = Stamp()
    hf.generate(ids, attention_mask=torch.ones_like(ids), past_key_values=cache, max_new_tokens=new,
                min_new_tokens=new, do_sample=False, logits_processor=LogitsProcessorList([stamp]), pad_token_id=0)
    return rates(stamp.times[0], stamp.times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", default="1024,4096,16384")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--models", default="transformers,teacher,linear,hybrid")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--decode-only", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="rounds with --decode-only")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--render", action="store_true", help="only rewrite OUT's .md from OUT")
    a = ap.parse_args(argv)
    if a.render:
        a.out.with_suffix(".md").write_text(markdown(json.loads(a.out.read_text())))
        return
    torch.set_num_threads(a.threads)
    tokens = [int(t) for t in a.tokens.split(",")]
    kinds = a.models.split(",")
    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M, attn_implementation="sdpa")).eval()
    hf.save_pretrained(tmp / "llama")
    teacher, _ = load_model(tmp / "llama")
    n = teacher.config.num_layers
    models = {"teacher": teacher}
    for kind, attn in (("linear", []), ("hybrid", every(4, 0, n))):
        cfg, sd, _ = seed_state(teacher.config, teacher.state_dict(), layer_types_for(attn, n))
        models[kind] = build_model(cfg, sd, kind).eval()
    rows = []
    result = {"command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
              "shapes": SMOLLM2_135M, "threads": a.threads, "environment": environment(torch.device("cpu")),
              "note": "2-core CPU shared with other jobs (wall-clock figures are upper bounds); random weights",
              "rows": rows}
    if a.decode_only:
        return decode_only(result, hf, models, tokens, kinds, a)
    for t in tokens:
        ids = torch.randint(10, SMOLLM2_135M["vocab_size"], (1, t), generator=torch.Generator().manual_seed(t))
        for kind in kinds:
            row = {"model": kind, "tokens": t}
            row.update(run_hf(hf, ids, a.new_tokens) if kind == "transformers" else run_ours(models[kind], ids,
                                                                                              a.new_tokens))
            rows.append(row)
            print(f"{kind:>12} {t:>6} tokens: prefill {row['prefill_s']:.2f} s, decode "
                  f"{row['decode_tokens_per_s']:.1f} tok/s ({row['decode_tokens_per_cpu_s']:.1f} per CPU s)",
                  flush=True)
            result["load_average_end"] = load_average()
            a.out.write_text(json.dumps(result, indent=2) + "\n")
    a.out.with_suffix(".md").write_text(markdown(result))


def markdown(result: dict) -> str:
    """Side-by-side tables: decode tokens/s (wall, and per CPU second) and prefill seconds."""
    rows = result["rows"]
    kinds = list(dict.fromkeys(r["model"] for r in rows))
    lengths = sorted({r["tokens"] for r in rows})
    at = {(r["model"], r["tokens"]): r for r in rows}

    def table(key: str, fmt: str) -> list[str]:
        out = ["| context | " + " | ".join(kinds) + " |", "|---:|" + "---:|" * len(kinds)]
        for t in lengths:
            cells = [fmt.format(at[(k, t)][key]) if (k, t) in at and at[(k, t)].get(key) is not None else "-"
                     for k in kinds]
            out.append(f"| {t} | " + " | ".join(cells) + " |")
        return out

    env = result["environment"]
    lines = [f"# Decode throughput on CPU: {result.get('mode', 'prompt + greedy generation, one run per cell')}",
             "", f"Command: `{result['command']}`", "",
             f"Machine: {env['device'].get('name', 'CPU')}, torch threads {result['threads']}; "
             f"{result['note']}; load average at the end {result.get('load_average_end')}; "
             f"date {env.get('date')}, git {env.get('git_sha')}.", "",
             "Shapes (Llama-family, SmolLM2-135M): " + ", ".join(f"{k}={v}" for k, v in result["shapes"].items()),
             "", "`transformers` = `LlamaForCausalLM.generate` (SDPA, its KV cache); `teacher` = the same weights "
             "in our runtime; `linear`, `hybrid` = students seeded from it (hybrid: attention in layers "
             "0, 4, ..., 28).", "", "## Decode tokens per second (wall clock)", ""]
    lines += table("decode_tokens_per_s", "{:.2f}")
    lines += ["", "## Decode tokens per CPU second (the process's own CPU time: leaves out waiting for a core)", ""]
    lines += table("decode_tokens_per_cpu_s", "{:.2f}")
    if any("prefill_s" in r for r in rows):
        lines += ["", "## Prefill seconds (wall clock)", ""] + table("prefill_s", "{:.1f}")
    return "\n".join(lines) + "\n"


def decode_only(result: dict, hf, models: dict, tokens: list[int], kinds: list[str], a) -> None:
    import statistics

    samples: dict[tuple[str, int], list[dict]] = {}
    for r in range(a.repeats):
        for t in tokens:
            for kind in kinds:
                got = decode_hf(hf, t, a.new_tokens) if kind == "transformers" else decode_ours(models[kind], t,
                                                                                                 a.new_tokens)
                samples.setdefault((kind, t), []).append(got)
                print(f"round {r}: {kind:>12} {t:>6}: {got['decode_tokens_per_s']:.1f} tok/s "
                      f"({got['decode_tokens_per_cpu_s']:.1f} per CPU s)", flush=True)
    result["mode"] = "decode-only (random filled caches), median of rounds"
    for (kind, t), xs in samples.items():
        result["rows"].append({"model": kind, "tokens": t, "rounds": len(xs), "new_tokens": a.new_tokens,
                               **{k: statistics.median(x[k] for x in xs)
                                  for k in ("decode_tokens_per_s", "decode_tokens_per_cpu_s")}})
    result["load_average_end"] = load_average()
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    a.out.with_suffix(".md").write_text(markdown(result))


if __name__ == "__main__":
    main()
