"""Where a teacher fails yes/no questions on easy-vqa: accuracy by what is asked (colour or shape),
negated or not ("not", "no <colour> shape"), and the true answer.

    python benchmarks/teacher_yesno.py [MODEL_DIR] [--limit 3000]
"""
from __future__ import annotations

import argparse
import collections

import torch

from mmmamba_cli.assets import default_teacher
from mmmamba_cli.io.load import load_model
from mmmamba_cli.teacher.easyvqa_data import (EasyVQA, easyvqa_tokenizer, first_token_accuracy, question_type,
                                               yes_no_wording)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default=None, help="teacher directory (default: the embedded one)")
    p.add_argument("--limit", type=int, default=3000, help="first yes/no questions of the test split")
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


if __name__ == "__main__":
    main()
