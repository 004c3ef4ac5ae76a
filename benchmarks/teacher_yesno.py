"""Where a teacher fails yes/no questions on easy-vqa: accuracy by what is asked (colour or shape),
negated or not ("not", "no <colour> shape"), and the true answer; then whether the answer depends
on the word asked about: for each image, the yes-minus-no logit of "is there a <colour> shape?" for
every colour (and "does the image contain a <shape>?" for every shape). A teacher that compares
the word with the image gives its largest value to the image's own colour (shape).

    python benchmarks/teacher_yesno.py [MODEL_DIR] [--limit 3000] [--images 200]
"""
from __future__ import annotations

import argparse
import collections

import torch

from mmmamba_cli.assets import default_teacher
from mmmamba_cli.data import build_prompt, collate
from mmmamba_cli.io.load import load_model
from mmmamba_cli.teacher.easyvqa_data import (SHAPES, EasyVQA, easyvqa_tokenizer, first_token_accuracy,
                                               question_type, yes_no_wording)

TEMPLATES = {"color": "is there a {} shape?", "shape": "does the image contain a {}?"}


@torch.no_grad()
def word_sensitivity(model, data: EasyVQA, tok, kind: str, words: list[str], images: int) -> tuple[float, float, int]:
    """(share of images whose own word gets the largest yes-minus-no logit, mean spread of that
    logit across the words, images measured) over the first ``images`` images with a ``kind`` answer."""
    tpt, yes, no = model.config.vision.tokens_per_tile, *tok.convert_tokens_to_ids(["yes", "no"])
    truth = [(i, a) for i, qa in enumerate(data.qa) for a in {a for _, a in qa if question_type(a) == kind}][:images]
    top = spread = 0.0
    for i, a in truth:
        items = [{"input_ids": build_prompt(tok, "<image>\n" + TEMPLATES[kind].format(w), [1], tpt),
                  "pixel_values": data.pixels[i:i + 1]} for w in words]
        b = collate(items, tok.pad_token_id, padding_side="left")
        lg = model(b["input_ids"], b["pixel_values"], b["attention_mask"], logits_to_keep=1)[:, -1]
        gap = lg[:, yes] - lg[:, no]
        top += int(words[int(gap.argmax())] == a)
        spread += float(gap.max() - gap.min())
    return top / len(truth), spread / len(truth), len(truth)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default=None, help="teacher directory (default: the embedded one)")
    p.add_argument("--limit", type=int, default=3000, help="first yes/no questions of the test split")
    p.add_argument("--images", type=int, default=200, help="test images for the word-sensitivity table")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model, _ = load_model(a.model or default_teacher())
    tok, v = easyvqa_tokenizer(), model.config.vision
    test = EasyVQA("test", v)
    yes_no = [x for x in test.questions if question_type(x[2]) == "yes/no"][:a.limit]
    groups = collections.defaultdict(list)
    for i, q, ans in yes_no:
        groups[f"{yes_no_wording(q)} -> {ans}"].append((i, q, ans))
    print("| question | n | accuracy | example |\n|---|---|---|---|")
    for k, g in sorted(groups.items()):
        test.questions = g
        print(f"| {k} | {len(g)} | {first_token_accuracy(model, test, tok, v.tokens_per_tile):.3f} | {g[0][1]} |",
              flush=True)
    colours = sorted({a for qa in test.qa for _, a in qa if question_type(a) == "color"})
    print("\n| asked word | words | images | own word gets the largest yes-no logit | mean spread of that logit |\n"
          "|---|---|---|---|---|")
    for kind, words in (("color", colours), ("shape", list(SHAPES))):
        share, spread, n = word_sensitivity(model, test, tok, kind, words, a.images)
        print(f"| {kind} ({TEMPLATES[kind].format('...')}) | {len(words)} | {n} | {share:.3f} "
              f"(chance {1 / len(words):.3f}) | {spread:.2f} |", flush=True)


if __name__ == "__main__":
    main()
