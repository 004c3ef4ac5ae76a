"""Fidelity to the teacher: KL, top-1 agreement and perplexity against a direct computation."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_teacher
from mmmamba_cli.data import IMG_END
from mmmamba_cli.evaluate import EvalItem, Task, fidelity
from mmmamba_cli.evaluate.fidelity import teacher_forced
from test_eval_support import png_bytes, student, word_tokenizer


def _task():
    items = [EvalItem("0", "what is the color", ["red"], images=[png_bytes()], sizes=[(24, 20)]),
             EvalItem("1", "is there a cat of this shape", ["no"], images=[png_bytes((0, 9, 9))], sizes=[(24, 20)]),
             EvalItem("2", "what shape", ["circle"])]  # text only
    return Task("t", "vqa", items, "x", "", 4)


def test_fidelity_matches_direct_computation():
    t, s, tok = tiny_teacher(), student(tiny_teacher(), [1]), word_tokenizer()
    task = _task()
    kl, agree, nll, tnll, n = 0.0, 0, 0.0, 0.0, 0
    with torch.no_grad():
        for item in task.items:
            x = teacher_forced(item, task, tok, s)
            ids = torch.tensor([x["input_ids"]])
            lt = t(ids, x["pixel_values"])[0].log_softmax(-1)  # (L, V)
            ls = s(ids, x["pixel_values"])[0].log_softmax(-1)
            ends = [i for i, v in enumerate(x["input_ids"]) if v == tok.convert_tokens_to_ids(IMG_END)]
            first = ends[-1] + 1 if ends else 1  # the first scored target: text after </img>
            for pos in range(first, ids.shape[1]):
                p, q = lt[pos - 1], ls[pos - 1]
                kl += float((p.exp() * (p - q)).sum())
                agree += int(p.argmax() == q.argmax())
                nll -= float(q[ids[0, pos]])
                tnll -= float(p[ids[0, pos]])
                n += 1
    got = fidelity(t, s, tok, task, batch_size=2)  # right-padded batches of mixed lengths
    assert got["tokens"] == n
    assert got["kl"] == pytest.approx(kl / n, rel=1e-4) and got["kl"] > 0
    assert got["top1_agreement"] == pytest.approx(agree / n)
    assert got["ppl"] == pytest.approx(math.exp(nll / n), rel=1e-4)
    assert got["teacher_ppl"] == pytest.approx(math.exp(tnll / n), rel=1e-4)


def test_teacher_against_itself():
    t, tok = tiny_teacher(), word_tokenizer()
    got = fidelity(t, t, tok, _task(), batch_size=3)
    assert got["kl"] == pytest.approx(0.0, abs=1e-6) and got["top1_agreement"] == 1.0
    assert got["ppl"] == pytest.approx(got["teacher_ppl"])


def test_fidelity_logits_never_exceed_one_chunk(monkeypatch):
    """Scored rows only, ``chunk`` at a time: the same figures as one big chunk."""
    t, s, tok = tiny_teacher(), student(tiny_teacher(), [1]), word_tokenizer()
    want = fidelity(t, s, tok, _task(), batch_size=3)
    rows = []
    for m in (t, s):
        head = m.lm_head
        real = head.forward
        monkeypatch.setattr(head, "forward", lambda x, real=real: rows.append(x.shape[0]) or real(x))
    got = fidelity(t, s, tok, _task(), batch_size=3, chunk=4)
    assert rows and max(rows) <= 4 and sum(rows) == 2 * want["tokens"]
    for k in ("kl", "top1_agreement", "ppl", "teacher_ppl"):
        assert got[k] == pytest.approx(want[k], rel=1e-5)
