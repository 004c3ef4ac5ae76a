"""An English text corpus that every Python installation carries: the help topics of the Python
documentation (``pydoc_data.topics``: the Language Reference and Library sections that
``help("TOPIC")`` prints, about 465k characters of technical prose).

Topics are split by name into a training part and a held-out part (every ``held_out_every``-th
topic in sorted order), so no held-out sentence is seen in training. Each part is cut into
``{"text": ...}`` records of at most ``max_tokens`` tokens, on paragraph boundaries where possible.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

SOURCE = "pydoc_data.topics (Python %s documentation help topics)"


def topics() -> dict[str, str]:
    from pydoc_data.topics import topics as t

    return dict(sorted(t.items()))


def split_topics(held_out_every: int = 8) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts), by topic name."""
    train, held = [], []
    for n, (_, text) in enumerate(topics().items()):
        (held if n % held_out_every == held_out_every // 2 else train).append(text)
    return train, held


def _paragraphs(text: str) -> list[str]:
    paras = [re.sub(r"[ \t]+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    return [p for p in paras if len(p) > 1]


def chunk_texts(texts: list[str], tokenizer, max_tokens: int) -> list[str]:
    """Greedy packing of paragraphs into pieces of at most ``max_tokens`` tokens (long paragraphs
    are cut by words)."""
    out: list[str] = []
    for text in texts:
        cur, cur_n = [], 0
        for para in _paragraphs(text):
            pieces = [para]
            if len(tokenizer.encode(para, add_special_tokens=False)) > max_tokens:
                words, pieces, buf = para.split(" "), [], []
                for w in words:
                    if buf and len(tokenizer.encode(" ".join(buf + [w]), add_special_tokens=False)) > max_tokens:
                        pieces.append(" ".join(buf))
                        buf = []
                    buf.append(w)
                if buf:
                    pieces.append(" ".join(buf))
            for piece in pieces:
                n = len(tokenizer.encode(piece, add_special_tokens=False)) + 2  # + separator, BOS/EOS slack
                if cur and cur_n + n > max_tokens:
                    out.append("\n\n".join(cur))
                    cur, cur_n = [], 0
                cur.append(piece)
                cur_n += n
        if cur:
            out.append("\n\n".join(cur))
    return out


def write_corpus(out_dir: Path, tokenizer, max_tokens: int = 256, held_out_every: int = 8) -> dict:
    """``train.jsonl`` and ``heldout.jsonl`` in ``out_dir``; returns their record and token counts."""
    import sys

    out_dir.mkdir(parents=True, exist_ok=True)
    train, held = split_topics(held_out_every)
    stats = {"source": SOURCE % sys.version.split()[0], "max_tokens": max_tokens, "held_out_every": held_out_every}
    for name, texts in (("train", train), ("heldout", held)):
        pieces = chunk_texts(texts, tokenizer, max_tokens)
        with (out_dir / f"{name}.jsonl").open("w") as f:
            for p in pieces:
                f.write(json.dumps({"text": p}) + "\n")
        stats[name] = {"topics": len(texts), "records": len(pieces),
                       "tokens": sum(len(tokenizer.encode(p, add_special_tokens=False)) for p in pieces)}
    return stats
