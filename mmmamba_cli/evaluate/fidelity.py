"""Fidelity of a student to its teacher on held-out items, teacher-forced.

Each item becomes prompt + reference answer + EOS. Scored positions: every real text token after
the image block (the question, the assistant header, the answer and its EOS), predicted from the
tokens before it. With p_T, p_S the teacher's and student's next-token distributions there:

- ``kl``: mean over scored tokens of KL(p_T || p_S) (nats per token);
- ``top1_agreement``: fraction of scored tokens where argmax p_S == argmax p_T;
- ``ppl`` / ``teacher_ppl``: exp(mean negative log-likelihood of the actual token) of each model.

Memory stays bounded whatever the vocabulary and the lengths: each model runs one forward to its
final hidden state, only the scored positions' rows are kept, and their logits are made and
reduced ``chunk`` rows at a time (``ops.divergence.token_stats``), never as (b, l, V) tensors
(256 rows: a few (256, V) fp32 temporaries, ~50 MB each at a 49k vocabulary).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..data import collate
from ..data.scoring import scored_targets
from ..model.compat import check_vocabulary
from ..model.model import MMModel
from ..ops.divergence import token_stats
from .items import EvalItem, Task
from .predict import batches, pad_id
from .prompts import prompt_inputs


def teacher_forced(item: EvalItem, task: Task, tokenizer, model: MMModel) -> dict:
    """Prompt + first reference answer + EOS as one sequence."""
    x = prompt_inputs(item, task.suffix, tokenizer, model.config)
    answer = tokenizer.encode(item.answers[0], add_special_tokens=False)
    x["input_ids"] = x["input_ids"] + answer + [model.config.eos_token_id]
    return x


@torch.no_grad()
def fidelity(teacher: MMModel, student: MMModel, tokenizer, task: Task, batch_size: int = 16,
             progress: Callable[[int, int], None] | None = None, chunk: int = 256) -> dict[str, float]:
    check_vocabulary(teacher.config, student.config, "student")
    device = next(student.parameters()).device
    sums = {"kl": 0.0, "agree": 0.0, "nll": 0.0, "teacher_nll": 0.0}
    count, done = 0, 0
    for idx in batches(task.items, student.config, batch_size):
        b = collate([teacher_forced(task.items[i], task, tokenizer, student) for i in idx],
                    pad_id(student, tokenizer), padding_side="right")
        ids, mask = b["input_ids"].to(device), b["attention_mask"].to(device)
        pixels = b["pixel_values"].to(device) if b["pixel_values"] is not None else None
        target = scored_targets(ids, mask, student.config.img_context_token_id)  # (b, L)
        sel = target[:, 1:]  # positions 0..L-2 predicting a scored token
        tgt = ids[:, 1:][sel]  # (n,)
        ht = teacher.final_hidden(ids, pixels, mask)[:, :-1][sel]  # (n, C)
        hs = student.final_hidden(ids, pixels, mask)[:, :-1][sel]
        stats = _chunked_stats(teacher, student, ht, hs, tgt, chunk)
        for k in sums:
            sums[k] += stats[k]
        count += stats["tokens"]
        done += len(idx)
        if progress is not None:
            progress(done, len(task.items))
    n = max(count, 1)
    return {"kl": sums["kl"] / n, "top1_agreement": sums["agree"] / n, "ppl": math.exp(sums["nll"] / n),
            "teacher_ppl": math.exp(sums["teacher_nll"] / n), "tokens": count}


def _chunked_stats(teacher: MMModel, student: MMModel, ht: torch.Tensor, hs: torch.Tensor, tgt: torch.Tensor,
                   chunk: int) -> dict[str, float]:
    """token_stats over rows of hidden states (n, C), logits made ``chunk`` rows at a time."""
    out = {"kl": 0.0, "agree": 0.0, "nll": 0.0, "teacher_nll": 0.0, "tokens": 0}
    for i in range(0, ht.shape[0], chunk):
        lt, ls = teacher.lm_head(ht[i:i + chunk]), student.lm_head(hs[i:i + chunk])  # (c, V)
        for k, v in token_stats(ls, lt, targets=tgt[i:i + chunk], chunk=chunk).items():
            out[k] += v
    return out
