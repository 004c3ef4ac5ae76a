"""Where the embedded teacher fails on shape questions: accuracy by true shape, the confusions, and
accuracy by the shape's area (pixels that differ from the background corner), on easy-vqa test.

    python benchmarks/teacher_shapes.py [TEACHER_DIR]     (default: the embedded teacher)
"""
from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import torch
from PIL import Image

from mmmamba_cli.assets import TEACHER_DIR
from mmmamba_cli.data import build_prompt, collate
from mmmamba_cli.io.load import load_model
from mmmamba_cli.teacher.easyvqa_data import SHAPES, EasyVQA, answer_token_ids, easyvqa_tokenizer, question_type


def shape_area(path: str) -> float:
    """Fraction of pixels that differ clearly from the top-left (background) pixel."""
    x = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return float((np.abs(x - x[0, 0]).sum(-1) > 60).mean())


@torch.no_grad()
def main(teacher: str) -> None:
    torch.set_num_threads(1)
    model, _ = load_model(teacher)
    model.eval()
    tok = easyvqa_tokenizer()
    test = EasyVQA("test", model.config.vision)
    tpt = model.config.vision.tokens_per_tile
    qs = [(i, q, a) for i, q, a in test.questions if question_type(a) == "shape"]
    rows = []  # (area, true shape, predicted token, correct)
    for s in range(0, len(qs), 256):
        chunk = qs[s:s + 256]
        items = [{"input_ids": build_prompt(tok, "<image>\n" + q, [1], tpt), "pixel_values": test.pixels[i:i + 1]}
                 for i, q, _ in chunk]
        b = collate(items, tok.pad_token_id, padding_side="left")
        pred = model(b["input_ids"], b["pixel_values"], b["attention_mask"], logits_to_keep=1)[:, -1].argmax(-1)
        want = answer_token_ids(tok, [a for _, _, a in chunk])
        for (i, _, a), p, w in zip(chunk, pred.tolist(), want.tolist()):
            rows.append((shape_area(test.paths[i]), a, tok.convert_ids_to_tokens(p), p == w))
    rows.sort()
    n = len(rows)
    print(f"{n} shape questions, accuracy {sum(r[3] for r in rows) / n:.3f}")
    for shape in SHAPES:
        mine = [r for r in rows if r[1] == shape]
        print(f"  {shape}: {sum(r[3] for r in mine) / len(mine):.3f} of {len(mine)}")
    for k in range(4):
        part = rows[k * n // 4:(k + 1) * n // 4]
        print(f"  area quartile {k + 1} ({part[0][0]:.3f}-{part[-1][0]:.3f}): {sum(r[3] for r in part) / len(part):.3f}")
    print("  (true, predicted) counts:", Counter((r[1], r[2]) for r in rows).most_common(9))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(TEACHER_DIR))
