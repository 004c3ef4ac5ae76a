"""Fidelity on plain text: each model's next-token distribution against the teacher's, on every
token of held-out prose (``{"text": ...}`` jsonl records, or a .txt file cut at blank lines).

Texts are encoded the way distillation encodes ``{"text"}`` records (the tokenizer's own BOS/EOS
convention) and cut to ``max_length`` tokens. Every position that predicts a next token is scored:

- ``kl``: mean KL(p_T || p_S) in nats per token; ``top1_agreement``: argmax p_S == argmax p_T;
- ``ppl`` / ``teacher_ppl``: exp(mean NLL of the actual next token) of the model and the teacher.

The teacher runs once per batch and every model is scored against those logits, so the teacher's
pass and each model's pass are timed separately (``seconds``, ``tokens_per_second``).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..data import collate
from ..errors import UserError
from ..io.pretrained import load_pretrained as load_for_eval
from ..model.compat import check_vocabulary
from ..model.model import MMModel
from ..ops.divergence import token_stats
from .report import model_labels

TEXT_SUFFIXES = (".txt", ".jsonl")


def is_text_task(spec: str | Path) -> bool:
    """A .txt file, or a .jsonl file whose first record has a "text" field."""
    path = Path(spec)
    if not path.is_file() or path.suffix not in TEXT_SUFFIXES:
        return False
    if path.suffix == ".txt":
        return True
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError:
                    return False
                return isinstance(obj, dict) and "text" in obj and "conversations" not in obj
    return False


def read_texts(path: str | Path, limit: int | None = None) -> list[str]:
    """The texts of a ``{"text"}`` jsonl file (a bad line is a UserError naming it) or a .txt file."""
    path = Path(path)
    if path.suffix == ".txt":
        texts = [p.strip() for p in path.read_text(encoding="utf-8", errors="replace").split("\n\n") if p.strip()]
    else:
        texts = []
        for n, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise UserError(f"{path} line {n}: not JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"].strip():
                raise UserError(f"{path} line {n}: a text record needs a non-empty string field \"text\"")
            texts.append(obj["text"])
    if not texts:
        raise UserError(f"{path}: no text")
    return texts[:limit] if limit else texts


def encode_texts(texts: list[str], tokenizer, max_length: int) -> list[list[int]]:
    """Token ids of every text (cut to ``max_length``); texts of fewer than 2 tokens are dropped."""
    out = [tokenizer.encode(t)[:max_length] for t in texts]
    return [ids for ids in out if len(ids) >= 2]


@torch.no_grad()
def text_fidelity(teacher: MMModel, models: dict[str, MMModel], sequences: list[list[int]], batch_size: int = 8,
                  pad_token_id: int = 0, progress: Callable[[int, int], None] | None = None,
                  cache: dict | None = None) -> dict:
    """``{"teacher": {"ppl", "seconds", ...}, "models": {label: {"kl", "top1_agreement", "ppl",
    "teacher_ppl", "tokens", "seconds", "tokens_per_second"}}}`` over ``sequences``.

    ``cache``: a dict kept by the caller between calls on the same sequences; the teacher's logits
    of each batch are stored there and reused (its pass then takes no time).
    """
    if not sequences:
        raise UserError("no text of at least 2 tokens to score")
    device = next(teacher.parameters()).device
    sums = {k: {"kl": 0.0, "agree": 0.0, "nll": 0.0, "teacher_nll": 0.0, "tokens": 0, "seconds": 0.0}
            for k in models}
    teacher_s, tokens = 0.0, 0
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # similar lengths share a batch
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        b = collate([{"input_ids": sequences[i], "labels": sequences[i], "pixel_values": None} for i in idx],
                    pad_token_id, padding_side="right")
        ids, mask = b["input_ids"].to(device), b["attention_mask"].to(device)
        sel = mask.bool()[:, 1:]  # (b, L-1): position t predicts token t+1, when that token is real
        t0 = time.perf_counter()
        if cache is not None and start in cache:
            lt = cache[start]
        else:
            lt = teacher(ids, None, mask)[:, :-1]  # (b, L-1, V)
            if cache is not None:
                cache[start] = lt
        teacher_s += time.perf_counter() - t0
        for label, model in models.items():
            t0 = time.perf_counter()
            ls = model(ids, None, mask)[:, :-1]
            s = sums[label]
            s["seconds"] += time.perf_counter() - t0
            stats = token_stats(ls, lt, sel, targets=ids[:, 1:])
            for k in ("kl", "agree", "nll", "teacher_nll", "tokens"):
                s[k] += stats[k]
            del ls
        tokens += int(sel.sum())
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))
    scored = int(sum(len(s) for s in sequences))
    out = {"texts": len(sequences), "tokens": tokens,
           "teacher": {"seconds": round(teacher_s, 3), "tokens_per_second": round(scored / max(teacher_s, 1e-9), 1)},
           "models": {}}
    for label, s in sums.items():
        n = max(s["tokens"], 1)
        out["models"][label] = {"kl": s["kl"] / n, "top1_agreement": s["agree"] / n, "ppl": math.exp(s["nll"] / n),
                                "teacher_ppl": math.exp(s["teacher_nll"] / n), "tokens": s["tokens"],
                                "seconds": round(s["seconds"], 3),
                                "tokens_per_second": round(scored / max(s["seconds"], 1e-9), 1)}
    if models:
        out["teacher"]["ppl"] = next(iter(out["models"].values()))["teacher_ppl"]
    return out


def evaluate_text(models: list[str | Path], path: str | Path, teacher: str | Path, limit: int | None = None,
                  batch_size: int = 8, max_length: int = 1024, device: str | None = None, dtype: str | None = None,
                  log: Callable[[str], None] | None = None) -> dict:
    """``mmmamba eval MODELS --teacher T --task TEXT``: the report of :func:`text_fidelity`, one
    column per model (the teacher's own perplexity first), in ``evaluate_models``' report shape."""
    log = log or (lambda message: None)
    if teacher is None:
        raise UserError(f"--task {path} is plain text: give --teacher to measure KL, top-1 agreement and perplexity")
    ref, tokenizer, _ = load_for_eval(teacher, device, dtype)
    sequences = encode_texts(read_texts(path, limit), tokenizer, max_length)
    log(f"{path}: {len(sequences)} texts, {sum(map(len, sequences))} tokens (at most {max_length} per text)")
    loaded = {}
    for label, p in zip(model_labels(models), models):
        model, _, _ = load_for_eval(p, device, dtype)
        check_vocabulary(ref.config, model.config, str(p))
        loaded[label] = model
        log(f"{label}: {model.config.kind}, {model.num_params() / 1e6:.1f}M parameters")
    pad = next((p for p in (ref.config.pad_token_id, tokenizer.pad_token_id, ref.config.eos_token_id)
                if p is not None), 0)
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        log(f"scored {done}/{total} texts ({time.perf_counter() - t0:.0f} s)")

    out = text_fidelity(ref, loaded, sequences, batch_size, pad, progress)
    log(f"teacher pass {out['teacher']['seconds']:.1f} s; " + "; ".join(
        f"{k} pass {v['seconds']:.1f} s" for k, v in out["models"].items()))
    rows = [{"label": "teacher", "path": str(teacher), "kind": ref.config.kind,
             "fidelity": {"ppl": out["teacher"]["ppl"], "seconds": out["teacher"]["seconds"],
                          "tokens_per_second": out["teacher"]["tokens_per_second"]}}]
    for (label, m), p in zip(out["models"].items(), models):
        rows.append({"label": label, "path": str(p), "kind": loaded[label].config.kind, "fidelity": m})
    return {"task": {"name": Path(path).stem, "kind": "text", "items": len(sequences), "source": str(path),
                     "tokens": out["tokens"], "max_length": max_length},
            "models": rows, "teacher": str(teacher)}
