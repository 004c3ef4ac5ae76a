"""How fast can the teacher's vision stem learn shapes at all? Two probes on easy-vqa.

``classifier``: the stem (patch conv, pixel shuffle, two-layer projection) under a few causal
transformer layers and a 3-way shape head on the last image token, trained on the image's shape
label alone: an upper bound on how fast the stem learns outlines when every gradient is about them.
``teacher``: the real teacher model (``MMModel``, recipe sizes) trained on "what shape" questions
alone, one per image, scored by the greedy first answer token.

    python benchmarks/teacher_probe.py classifier --steps 1000 [--patch 8 --ratio 0.5 --init 0.02 ...]
    python benchmarks/teacher_probe.py teacher --steps 1000 --batch 64 [--stem-init fan_in]

One line per 250 steps: loss, train and test shape accuracy, seconds.
"""
from __future__ import annotations

import argparse
import random
import time

import torch
import torch.nn.functional as F
from torch import nn

from mmmamba_cli.model.config import VisionSettings
from mmmamba_cli.model.embedding import pixel_shuffle
from mmmamba_cli.teacher.easyvqa_data import SHAPES, EasyVQA, question_type
from mmmamba_cli.teacher.train import STEM_INITS


def shape_labels(data: EasyVQA) -> torch.Tensor:
    """Each image's shape index from its "what shape" answer, else from a "yes" shape question; -1: none."""
    out = []
    for qa in data.qa:
        named = [a for _, a in qa if a in SHAPES] or [s for q, a in qa if a == "yes" for s in SHAPES if s in q]
        out.append(SHAPES.index(named[0]) if named else -1)
    return torch.tensor(out)


class StemClassifier(nn.Module):
    def __init__(self, a, hidden: int = 128):
        super().__init__()
        self.ratio = a.ratio
        grid = 64 // a.patch
        self.patch = nn.Conv2d(3, hidden, a.patch, a.patch)
        self.pos = nn.Parameter(torch.randn(1, grid * grid, hidden) * 0.02)
        r2 = int(round(1 / a.ratio ** 2))
        self.proj = nn.Sequential(nn.Linear(hidden * r2, a.proj_hidden), nn.GELU(), nn.Linear(a.proj_hidden, hidden))
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(hidden, 4, 3 * hidden, 0.0, batch_first=True,
                                                               norm_first=True) for _ in range(a.layers))
        self.head = nn.Linear(hidden, 3)
        if a.init:  # the teacher's init: N(0, std) matrices, zero biases
            with torch.no_grad():
                for m in (self.patch, self.proj[0], self.proj[2]):
                    m.weight.normal_(0, a.init)
                    m.bias.zero_()

    def forward(self, px: torch.Tensor) -> torch.Tensor:
        x = self.patch(px).flatten(2).transpose(1, 2) + self.pos
        x = self.proj(pixel_shuffle(x, self.ratio))
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        for layer in self.layers:
            x = layer(x, src_mask=mask, is_causal=True)
        return self.head(x[:, -1])


def augment(px: torch.Tensor, rng: random.Random) -> torch.Tensor:
    if rng.random() < 0.5:
        px = px.flip(-1)
    return torch.rot90(px, rng.randrange(4), dims=(-2, -1))


def run_classifier(a) -> None:
    v = VisionSettings(image_size=64, patch_size=a.patch, max_tiles=1, use_thumbnail=False, downsample_ratio=a.ratio)
    train, test = EasyVQA("train", v), EasyVQA("test", v)
    y_train, y_test = shape_labels(train), shape_labels(test)
    model = StemClassifier(a)
    opt = torch.optim.AdamW(model.parameters(), a.lr, betas=(0.9, 0.95), weight_decay=0.05)
    ids = [i for i in range(len(y_train)) if y_train[i] >= 0]
    rng, t0 = random.Random(0), time.time()

    @torch.no_grad()
    def accuracy(px, y):
        model.eval()
        hits = torch.cat([(model(px[s:s + 500]).argmax(-1) == y[s:s + 500])[y[s:s + 500] >= 0]
                          for s in range(0, len(y), 500)])
        model.train()
        return hits.float().mean().item()

    for step in range(a.steps):
        b = rng.sample(ids, a.batch)
        loss = F.cross_entropy(model(augment(train.pixels[b], rng)), y_train[b])
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 250 == 0:
            print(f"step {step + 1} loss {loss.item():.3f} train {accuracy(train.pixels[:1000], y_train[:1000]):.3f} "
                  f"test {accuracy(test.pixels, y_test):.3f} {time.time() - t0:.0f}s", flush=True)


def run_teacher(a) -> None:
    from mmmamba_cli.model.init import init_weights
    from mmmamba_cli.model.model import MMModel
    from mmmamba_cli.model.optim import make_optimizer
    from mmmamba_cli.teacher.easyvqa_data import easyvqa_tokenizer, first_token_accuracy, training_batch
    from mmmamba_cli.teacher.train import TeacherRecipe, fan_in_stem, teacher_config

    r = TeacherRecipe()
    r.optim.lr = a.lr
    tok = easyvqa_tokenizer()
    config = teacher_config(r.model, tok)
    model = init_weights(MMModel(config), 0)
    if a.stem_init == "fan_in":
        fan_in_stem(model, 0)
    tpt = config.vision.tokens_per_tile
    train, test = EasyVQA("train", config.vision), EasyVQA("test", config.vision)
    for d in (train, test):
        d.qa = [[(q, x) for q, x in qa if question_type(x) == "shape"] for qa in d.qa]
        d.questions = [(i, q, x) for i, qa in enumerate(d.qa) for q, x in qa]
    ids = [i for i, qa in enumerate(train.qa) if qa]
    opt = make_optimizer(dict(model.named_parameters()), r.optim)  # constant lr
    rng, t0 = random.Random(0), time.time()
    for step in range(a.steps):
        model.train()
        b = training_batch(train, rng.sample(ids, a.batch), tok, tpt, 1, rng, True)
        logits = model(b["input_ids"], b["pixel_values"], b["attention_mask"])
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), b["labels"][:, 1:].flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 250 == 0:
            acc = first_token_accuracy(model, test, tok, tpt, limit=3000)
            print(f"step {step + 1} loss {loss.item():.3f} test {acc:.3f} {time.time() - t0:.0f}s", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("probe", choices=("classifier", "teacher"))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=64, help="images per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--ratio", type=float, default=0.25, help="pixel-shuffle ratio")
    p.add_argument("--proj-hidden", type=int, default=128, help="classifier: width inside the projection")
    p.add_argument("--layers", type=int, default=4, help="classifier: transformer layers")
    p.add_argument("--init", type=float, default=0.0, help="classifier: N(0, INIT) stem weights (0: torch default)")
    p.add_argument("--stem-init", choices=STEM_INITS, default="normal",
                   help="teacher: the recipe's model.stem_init")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    (run_classifier if a.probe == "classifier" else run_teacher)(a)


if __name__ == "__main__":
    main()
