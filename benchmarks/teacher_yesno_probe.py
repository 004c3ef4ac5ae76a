"""Can a teacher learn colour yes/no questions when the wording's prior stops paying? Trains it on
balanced colour yes/no questions alone (yes and no equally likely within each wording, one question
per conversation) and prints the training loss and the accuracy on the first 1,000 colour yes/no
test questions every 50 steps. A loss that stays at log 2 per answer (~0.35 per supervised token:
the answer and the end of turn) means the answer does not depend on the image.

    python benchmarks/teacher_yesno_probe.py [MODEL_DIR] [--lr 2e-3] [--steps 450] [--batch 64]
"""
from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F

from mmmamba_cli.assets import default_teacher
from mmmamba_cli.io.load import load_model
from mmmamba_cli.model.optim import OptimSection, make_optimizer
from mmmamba_cli.teacher.easyvqa_data import (EasyVQA, easyvqa_tokenizer, first_token_accuracy, question_type,
                                               training_batch, yes_no_balance, yes_no_wording)


def colour_yes_no(q: str, a: str) -> bool:
    return question_type(a) == "yes/no" and yes_no_wording(q).startswith("colour")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default=None, help="teacher directory (default: the embedded one)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--steps", type=int, default=450)
    p.add_argument("--batch", type=int, default=64)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model, _ = load_model(a.model or default_teacher())
    tok, tpt = easyvqa_tokenizer(), model.config.vision.tokens_per_tile
    train, test = EasyVQA("train", model.config.vision), EasyVQA("test", model.config.vision)
    keep = yes_no_balance(train)
    train.qa = [[(q, x) for q, x in qa if colour_yes_no(q, x)] for qa in train.qa]
    images = [i for i, qa in enumerate(train.qa) if qa]
    test.questions = [x for x in test.questions if colour_yes_no(x[1], x[2])][:1000]
    opt = make_optimizer(dict(model.named_parameters()), OptimSection(lr=a.lr, betas=[0.9, 0.95], weight_decay=0.05,
                                                                      grad_clip=1.0, warmup=0.0, decay=0.3))
    rng, t0 = random.Random(0), time.time()
    for step in range(a.steps):
        model.train()
        b = training_batch(train, rng.sample(images, a.batch), tok, tpt, 1, rng, keep=keep)
        logits = model(b["input_ids"], b["pixel_values"], b["attention_mask"])
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), b["labels"][:, 1:].flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 50 == 0:
            acc = first_token_accuracy(model, test, tok, tpt)
            print(f"step {step + 1} loss {loss.item():.4f} test colour yes/no {acc:.3f} "
                  f"({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
