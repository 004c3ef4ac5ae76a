"""Can a teacher learn yes/no questions that need a word compared with the image? Trains on
``comparison_batch`` (one question per image; yes and no equally likely within each wording, so
neither the wording nor the answer's frequency tells the answer) and prints, every 100 steps, the
loss and the accuracy on up to 300 test questions of each (wording, answer). A model that does not
compare scores 1.00 on one answer and 0.00 on the other of each wording.

    python benchmarks/teacher_yesno_probe.py [--init shipped|scratch|DIR] [--wordings colour|colour-all|plain|all]
        [--negated-at STEP] [--direct 0.3] [--steps 1500] [--lr 2e-3] [--batch 64]

``--wordings colour``: colour plain only ("is there a red shape?"); ``colour-all``: colour plain and
negated ("is there not a red shape?"); ``plain``: colour and shape plain; ``all``: all four. ``--negated-at N`` adds the negated wordings from step N on.
"""
from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F

from mmmamba_cli.assets import default_teacher
from mmmamba_cli.data import build_prompt, collate
from mmmamba_cli.io.load import load_model
from mmmamba_cli.model.init import init_weights
from mmmamba_cli.model.model import MMModel
from mmmamba_cli.model.optim import OptimSection, make_optimizer
from mmmamba_cli.teacher.easyvqa_data import (ALL_WORDINGS, PLAIN_WORDINGS, EasyVQA, comparison_batch, comparison_pools,
                                               easyvqa_tokenizer)
from mmmamba_cli.teacher.train import fan_in_stem, load_teacher_recipe, teacher_config

WORDINGS = {"colour": ("colour plain",), "colour-all": ("colour plain", "colour negated"), "plain": PLAIN_WORDINGS,
            "all": ALL_WORDINGS}


@torch.no_grad()
def accuracy(model, data: EasyVQA, items, tok, tpt: int) -> float:
    model.eval()
    b = collate([{"input_ids": build_prompt(tok, "<image>\n" + q, [1], tpt), "pixel_values": data.pixels[i:i + 1]}
                 for i, q, _ in items], tok.pad_token_id, padding_side="left")
    logits = model(b["input_ids"], b["pixel_values"], b["attention_mask"], logits_to_keep=1)[:, -1]
    want = torch.tensor([tok.convert_tokens_to_ids(a) for _, _, a in items])
    return (logits.argmax(-1) == want).float().mean().item()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", default="shipped", help="shipped (the embedded teacher), scratch (the recipe's "
                   "model, newly initialised) or a teacher directory")
    p.add_argument("--wordings", default="colour", choices=sorted(WORDINGS))
    p.add_argument("--negated-at", type=int, default=-1)
    p.add_argument("--direct", type=float, default=0.3, help="fraction of what-colour/what-shape questions")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=64)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = easyvqa_tokenizer()
    if a.init == "scratch":
        model = MMModel(teacher_config(load_teacher_recipe().model, tok))
        init_weights(model, 0)
        fan_in_stem(model, 0)
    else:
        model, _ = load_model(default_teacher() if a.init == "shipped" else a.init)
    tpt = model.config.vision.tokens_per_tile
    train, test = EasyVQA("train", model.config.vision), EasyVQA("test", model.config.vision)
    pools, test_pools = comparison_pools(train), comparison_pools(test)
    shown = [k for k in test_pools if k != "direct" and k[0] in WORDINGS["all" if a.negated_at >= 0 else a.wordings]]
    opt = make_optimizer(dict(model.named_parameters()), OptimSection(lr=a.lr, betas=[0.9, 0.95], weight_decay=0.05,
                                                                      grad_clip=1.0, warmup=0.0, decay=0.3))
    rng, t0 = random.Random(0), time.time()
    for step in range(a.steps):
        model.train()
        wordings = ALL_WORDINGS if 0 <= a.negated_at <= step else WORDINGS[a.wordings]
        b = comparison_batch(train, pools, a.batch, tok, tpt, rng, wordings, a.direct)
        logits = model(b["input_ids"], b["pixel_values"], b["attention_mask"])
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), b["labels"][:, 1:].flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 100 == 0:
            accs = " ".join(f"{w}->{ans} {accuracy(model, test, test_pools[(w, ans)][:300], tok, tpt):.2f}"
                            for w, ans in sorted(shown))
            print(f"step {step + 1} loss {loss.item():.3f} {accs} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
