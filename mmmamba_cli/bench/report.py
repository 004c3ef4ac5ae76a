"""Derived numbers (ratios against the teacher, log-log slopes, the paper's figures) and bench.md."""
from __future__ import annotations

import math

# SPEC section 5: RTX 4090, next-token decode at 103K context, and the fixed-prompt test
PAPER = {
    "tokens": 103000,
    "decode_ms": {"teacher": 142.65, "linear": 6.94, "hybrid": 10.54},
    "mem_gb": {"teacher": 21.69, "linear": 5.22, "hybrid": 8.64},
    "speedup": {"linear": 20.6, "hybrid": 13.5},
    "mem_change": {"linear": -0.758, "hybrid": -0.602},
    "fixed_prompt_tokens_per_s": {"teacher": 33.0, "linear": 132.4, "hybrid": 134.8},
}
MiB = 1024 ** 2


def ok(row: dict | None) -> bool:
    return row is not None and not row.get("oom") and row.get("decode_s_per_token") is not None


def add_ratios(rows: list[dict]) -> None:
    """Speed-ups (teacher time / model time) and memory changes (model / teacher - 1) per length."""
    teacher = {r["tokens"]: r for r in rows if r["model"] == "teacher"}
    for r in rows:
        t = teacher.get(r["tokens"])
        if r["model"] == "teacher" or not ok(r) or not ok(t):
            continue
        r["decode_speedup"] = t["decode_s_per_token"] / r["decode_s_per_token"]
        r["prefill_speedup"] = t["prefill_s"] / r["prefill_s"]
        r["peak_mem_change"] = r["peak_mem_bytes"] / t["peak_mem_bytes"] - 1
        r["decode_mem_change"] = r["decode_mem_bytes"] / t["decode_mem_bytes"] - 1


def loglog_slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x (cost ~ length^slope)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else None


SLOPES = {"prefill": "prefill_s", "decode": "decode_s_per_token",  # wall clock (device time on CUDA)
          "prefill_cpu": "prefill_cpu_s", "decode_cpu": "decode_cpu_s_per_token"}  # CPU seconds (CPU only)


def slopes(rows: list[dict]) -> dict[str, dict]:
    out = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        good = [r for r in rows if r["model"] == model and ok(r)]
        xs = [r["tokens"] for r in good]
        out[model] = {key: loglog_slope(xs, [r.get(field) for r in good]) for key, field in SLOPES.items()}
        out[model].update(from_tokens=min(xs) if xs else None, to_tokens=max(xs) if xs else None,
                          points=len(good))
    return out


def paper_comparison(rows: list[dict]) -> dict | None:
    """Our ratios at the paper's 103K context if measured, else at the longest length all models ran."""
    by = {(r["model"], r["tokens"]): r for r in rows}
    lengths = sorted({r["tokens"] for r in rows if ok(r) and ok(by.get(("teacher", r["tokens"])))})
    if not lengths:
        return None
    n = PAPER["tokens"] if PAPER["tokens"] in lengths else lengths[-1]
    ours = {m: {k: by[(m, n)].get(k) for k in ("decode_speedup", "decode_mem_change", "peak_mem_change")}
            for m in ("linear", "hybrid") if ok(by.get((m, n)))}
    return {"tokens": n, "ours": ours, "paper": {m: {"decode_speedup": PAPER["speedup"][m],
                                                    "mem_change": PAPER["mem_change"][m]} for m in ours}}


def _f(x, fmt: str = "{:.3g}", scale: float = 1.0) -> str:
    return "-" if x is None else fmt.format(x * scale)


def _oom(r: dict) -> str:
    if r["oom"]:
        return f"yes ({r['oom_phase']})"
    return f"no; failed: {r['error']}" if r.get("error") else "no"


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


def markdown(result: dict) -> str:
    sections = [_header(result), _cells(result["rows"]), _ratios(result["rows"]), _slopes(result["slopes"]),
                _paper(result.get("paper_comparison")), _fixed(result.get("fixed_prompt") or []),
                ["## How this was measured", "", METHOD]]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def _header(result: dict) -> list[str]:
    env, s = result["environment"], result["settings"]
    dev, v = env["device"], env["versions"]
    lines = [f"# mmmamba bench: {dev['name']}", "",
             f"- date {env['date']}, git `{env['git_sha'][:12]}`, torch {v['torch']}, triton {v.get('triton')}, "
             f"mamba-ssm {v.get('mamba-ssm')} (kernels {'used' if env['mamba_kernels'] else 'not available'})",
             f"- models at `{s['models']['model_dir'] or s['models']['size']}` shapes, dtype {result['dtype']}, "
             f"device {dev['type']}"
             + (f" ({dev.get('threads')} threads of {dev.get('cpu_count')} cores)" if dev["type"] == "cpu" else ""),
             f"- teacher attention `{s['models']['teacher_impl']}`; decode: {result['decode_mode']}",
             f"- memory: {result['memory_method']}",
             f"- command: `{result.get('command', 'mmmamba bench')}`"]
    if dev["type"] == "cpu":
        lines.append(f"- machine load average (1/5/15 min) at start {env['load_average_start']}, "
                     f"end {result.get('load_average_end')}: a shared machine, other jobs were running")
    return lines


def _cells(rows: list[dict]) -> list[str]:
    head = ["model", "tokens", "prefill s", "decode ms/token", "decode tok/s", "peak MiB", "decode MiB",
            "cache MiB", "BW floor ms", "x floor", "OOM"]
    body = [[r["model"], str(r["tokens"]), _f(r["prefill_s"]), _f(r["decode_s_per_token"], scale=1e3),
             _f(r["decode_tokens_per_s"], "{:.1f}"), _f(r["peak_mem_bytes"], "{:.0f}", 1 / MiB),
             _f(r["decode_mem_bytes"], "{:.0f}", 1 / MiB), _f(r["cache_bytes"], "{:.1f}", 1 / MiB),
             _f(r.get("bw_limit_s_per_token"), scale=1e3), _f(r.get("bw_ratio"), "{:.2f}"), _oom(r)] for r in rows]
    return ["## Per model and context length", ""] + _table(head, body)


def _ratios(rows: list[dict]) -> list[str]:
    head = ["model", "tokens", "decode speed-up", "prefill speed-up", "peak memory", "decode-phase memory"]
    body = [[r["model"], str(r["tokens"]), f"{r['decode_speedup']:.2f}x", f"{r['prefill_speedup']:.2f}x",
             _pct(r["peak_mem_change"]), _pct(r["decode_mem_change"])] for r in rows if "decode_speedup" in r]
    return ["## Against the teacher at the same length", ""] + _table(head, body) if body else []


def _slopes(slopes_: dict) -> list[str]:
    head = ["model", "prefill slope", "decode slope", "prefill slope, CPU s", "decode slope, CPU s", "lengths"]
    body = [[m] + [_f(sl[k], "{:.3f}") for k in SLOPES]
            + [f"{sl['from_tokens']}..{sl['to_tokens']} ({sl['points']} points)"] for m, sl in slopes_.items()]
    return ["## Scaling: log-log slope of cost against context length", ""] + _table(head, body)


def _paper(pc: dict | None) -> list[str]:
    if not pc or not pc["ours"]:
        return []
    head = ["model", "decode speed-up: paper / ours", "memory change: paper / ours (peak, decode phase)"]
    body = [[m, f"{pc['paper'][m]['decode_speedup']}x / {_f(o['decode_speedup'], '{:.2f}')}x",
             f"{_pct(pc['paper'][m]['mem_change'])} / {_pct(o['peak_mem_change'])}, {_pct(o['decode_mem_change'])}"]
            for m, o in pc["ours"].items()]
    title = f"## The paper's ratios (103K context, RTX 4090) and ours at {pc['tokens']} tokens"
    return [title, ""] + _table(head, body)


def _fixed(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    head = ["model", "prompt tokens", "new tokens", "generate() total s", "tok/s", "paper tok/s"]
    body = [[r["model"], str(r.get("prompt_tokens", "-")), str(r.get("new_tokens", "-")), _f(r.get("total_s")),
             _f(r.get("tokens_per_s"), "{:.1f}"), str(PAPER["fixed_prompt_tokens_per_s"].get(r["model"]))]
            + ([f"{'out of memory' if r.get('oom') else 'failed'}: {r['error']}"] if r.get("error") else [])
            for r in rows]
    notes = sorted({r["prompt"] for r in rows if "prompt" in r})
    return (["## Fixed prompt: one image, \"Describe the image specifically\", greedy new tokens", ""]
            + _table(head, body) + ["", f"Prompt ids: {'; '.join(notes) or '-'}."])


METHOD = """\
- Inputs (random token ids, caches sized for the whole cell) are built outside the timed regions;
  device work is synchronised before and after every host-timed region.
- Prefill = one forward over the prompt keeping only the last position's logits (time to first
  token), median of the timed repeats; on a GPU one untimed run at each length comes first.
- Decode = greedy steps at that context, each feeding back its argmax: warm-up steps first, then
  the median of the timed steps (CUDA events per step on a GPU). The decoder is the runtime's,
  the one `mmmamba generate` and `eval` use: `MMModel.step` with fused projection weights and the
  cache bookkeeping on the device, replayed as one CUDA graph on a GPU (unless --graphs off).
- Memory: peak of each phase (prefill, decode); "peak" is the larger of the two. "cache" is the
  KV / conv + SSM state allocated for the cell. Ratios compare with the teacher at the same length.
- BW floor = bytes a decode step must read (weights touched by the token, Mamba states read and
  written, the KV cache of attention layers) / the card's memory bandwidth; "x floor" = measured /
  floor.
- On a CPU every region is also timed in process CPU seconds, which leave out the time spent
  waiting for a core while other jobs run; the "CPU s" slopes use those.
- Slopes are least-squares fits of log(cost) on log(length) over the lengths that did not run out
  of memory: 1 is linear, 0 is flat.
- An out-of-memory error is a result (OOM column); longer lengths of that model are then skipped
  and recorded as out of memory too."""
