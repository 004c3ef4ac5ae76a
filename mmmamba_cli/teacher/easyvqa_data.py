"""easy-vqa as tensors for teacher training and fast accuracy checks.

Training examples are multi-turn: one image followed by several of its questions in random
order, every answer supervised. The image is encoded once for many questions, and the first
turn has exactly the single-question form used at evaluation time.
"""
from __future__ import annotations

import random
from collections import defaultdict
from functools import cached_property

import torch

from ..data import build_prompt, build_word_tokenizer, collate, easyvqa_records, encode_conversation
from ..data.images import load_image
from ..model.config import VisionSettings


def easyvqa_tokenizer():
    texts = [r["question"] + " " + r["answer"] for split in ("train", "test") for r in easyvqa_records(split)]
    return build_word_tokenizer(texts)


def load_images(paths: list[str], vision: VisionSettings) -> torch.Tensor:
    """(n, 3, S, S) normalised tiles, one per image (easy-vqa images are one 64x64 tile)."""
    return torch.cat([load_image(p, vision) for p in paths])


class EasyVQA:
    """One split: images as a tensor, questions grouped by image."""

    def __init__(self, split: str, vision: VisionSettings, limit_images: int | None = None):
        recs = easyvqa_records(split)
        by_image: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for r in recs:
            by_image[r["image"]].append((r["question"], r["answer"]))
        self.paths = sorted(by_image)[:limit_images]
        self.qa = [by_image[p] for p in self.paths]
        self.pixels = load_images(self.paths, vision)
        self.questions = [(i, q, a) for i, qa in enumerate(self.qa) for q, a in qa]

    @cached_property
    def attributes(self) -> list[tuple[str | None, str | None]]:
        """(colour, shape) per image, from its questions (:func:`image_attributes`)."""
        colours = {a for _, _, a in self.questions if question_type(a) == "color"}
        return [image_attributes(qa, colours) for qa in self.qa]


def training_batch(data: EasyVQA, image_ids: list[int], tokenizer, tokens_per_tile: int, max_turns: int,
                   rng: random.Random, augment: bool = True, direct_only: bool = False,
                   shape_first: bool = False, max_shift: int = 0, shape_only: bool = False,
                   keep: dict | None = None) -> dict:
    """A right-padded batch (plus ``image_ids``, the rows' images); ``direct_only`` keeps only "what
    shape/colour" questions where an image has them (a curriculum: grounding first, then the
    compositional yes/no questions).

    ``shape_first`` opens the conversation with a "what shape" question when the image has one:
    later turns can read the shape off earlier text ("what color is the circle?"), so without it
    few answers force the model to see the shape. ``max_shift`` translates the image by up to
    this many pixels (edge pixels repeated), a second augmentation besides flips and quarter turns.
    ``shape_only`` keeps only the "what shape" questions where an image has them.
    ``keep`` (from :func:`yes_no_balance`) drops each yes/no question with probability one minus
    its (wording, answer) entry, so that yes and no are equally likely within each wording.
    """
    items = []
    for i in image_ids:
        qa = list(data.qa[i])
        if direct_only:
            qa = [(q, a) for q, a in qa if question_type(a) != "yes/no"] or qa
        if shape_only:
            qa = [(q, a) for q, a in qa if question_type(a) == "shape"] or qa
        if keep:
            qa = [(q, a) for q, a in qa if rng.random() < keep.get((yes_no_wording(q), a), 1.0)] or qa
        rng.shuffle(qa)
        if shape_first:
            qa.sort(key=lambda x: question_type(x[1]) != "shape")  # stable: the rest stays shuffled
        items.append(_item(data, i, qa[:max_turns], tokenizer, tokens_per_tile, rng, augment, max_shift))
    return {**collate(items, tokenizer.pad_token_id), "image_ids": list(image_ids)}


def _item(data, i: int, qa: list[tuple[str, str]], tokenizer, tokens_per_tile: int, rng: random.Random,
          augment: bool, max_shift: int) -> dict:
    """Image ``i`` and the turns ``qa`` as one encoded, augmented training conversation."""
    conv = []
    for k, (q, a) in enumerate(qa):
        conv += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + q}, {"from": "gpt", "value": a}]
    enc = encode_conversation(tokenizer, conv, [1], tokens_per_tile)
    px = data.pixels[i:i + 1]
    if augment:  # shapes and colours are invariant under flips and quarter turns
        if rng.random() < 0.5:
            px = px.flip(-1)
        px = torch.rot90(px, rng.randrange(4), dims=(-2, -1))
    if max_shift:
        px = shift(px, rng.randint(-max_shift, max_shift), rng.randint(-max_shift, max_shift))
    return {"input_ids": enc["input_ids"], "labels": enc["labels"], "pixel_values": px}


PLAIN_WORDINGS = ("colour plain", "shape plain")
ALL_WORDINGS = PLAIN_WORDINGS + ("colour negated", "shape negated")
STAGED_WORDINGS = ("colour plain", "shape plain", "colour negated", "shape negated")


def comparison_pools(data) -> dict:
    """``data``'s questions for :func:`comparison_batch`: {"direct": [(image, q, a)], (wording, answer):
    [(image, q, a)], ...} for the "what colour / what shape" questions and each yes/no wording and answer."""
    pools: dict = defaultdict(list)
    for i, q, a in data.questions:
        pools["direct" if question_type(a) != "yes/no" else (yes_no_wording(q), a)].append((i, q, a))
    return dict(pools)


def comparison_batch(data, pools: dict, n: int, tokenizer, tokens_per_tile: int, rng: random.Random,
                     wordings=ALL_WORDINGS, direct_frac: float = 0.3, augment: bool = True,
                     max_shift: int = 0) -> dict:
    """``n`` one-question conversations that can only be answered by comparing a word with the image.

    A fraction ``direct_frac`` are "what colour / what shape" questions (they keep the image grounded);
    the rest are yes/no questions whose wording (from ``wordings``) and then answer are drawn uniformly,
    so neither the wording nor the answer's frequency tells the answer: easy-vqa's own mix answers
    "does the image contain a green shape?" with "no" 88% of the time, a prior a small teacher settles
    on instead of comparing. ``pools`` comes from :func:`comparison_pools`. The batch's
    ``image_ids`` name each row's image.
    """
    n_direct = round(n * direct_frac)
    picks = [rng.choice(pools["direct"]) for _ in range(n_direct)]
    wordings = [w for w in wordings if (w, "yes") in pools and (w, "no") in pools]
    if not wordings and n > n_direct:
        raise ValueError("no yes/no wording with both answers in the data")
    picks += [rng.choice(pools[(rng.choice(wordings), rng.choice(("yes", "no")))]) for _ in range(n - n_direct)]
    return {**collate([_item(data, i, [(q, a)], tokenizer, tokens_per_tile, rng, augment, max_shift)
                       for i, q, a in picks], tokenizer.pad_token_id), "image_ids": [i for i, _, _ in picks]}


def shift(px: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(n, 3, S, S) translated by (dy, dx) pixels; uncovered pixels repeat the nearest edge."""
    m = max(abs(dy), abs(dx))
    if not m:
        return px
    S = px.shape[-1]
    padded = torch.nn.functional.pad(px, (m, m, m, m), mode="replicate")
    return padded[..., m - dy:m - dy + S, m - dx:m - dx + S]


def answer_token_ids(tokenizer, answers: list[str]) -> torch.Tensor:
    return torch.tensor([tokenizer.convert_tokens_to_ids(a) for a in answers])


SHAPES = ("circle", "rectangle", "triangle")
COLOURS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")


def question_type(answer: str) -> str:
    return "yes/no" if answer in ("yes", "no") else "shape" if answer in SHAPES else "color"


def image_attributes(qa: list[tuple[str, str]], colours: set[str]) -> tuple[str | None, str | None]:
    """(colour, shape) of one image as its questions tell them: a direct answer, else a yes/no
    answer that names it ("is there a red shape? yes", "is no circle present? no"); None if untold."""
    found: dict[str, str] = {}
    for q, a in sorted(qa, key=lambda x: question_type(x[1]) == "yes/no"):  # direct answers first
        kind = question_type(a)
        if kind != "yes/no":
            found.setdefault(kind, a)
            continue
        if (a == "yes") == negated(q):
            continue  # says what the image lacks
        for w in q.rstrip("?").split():
            if w in colours or w in SHAPES:
                found.setdefault("shape" if w in SHAPES else "color", w)
    return found.get("color"), found.get("shape")


def image_word_targets(input_ids: torch.Tensor, attributes: list, tokenizer, image_token_id: int) -> torch.Tensor:
    """(b, L) targets for an auxiliary loss on the image tokens: image token k of row r is labelled with
    the row's colour word (even k) or shape word (odd k); -100 elsewhere or where the word is unknown."""
    out = torch.full_like(input_ids, -100)
    for r, words in enumerate(attributes):
        pos = (input_ids[r] == image_token_id).nonzero().flatten()
        for k, w in enumerate(words):
            if w is not None:
                out[r, pos[k::2]] = tokenizer.convert_tokens_to_ids(w)
    return out


def attribute_targets(input_ids: torch.Tensor, labels: torch.Tensor, attributes: list, tokenizer) -> torch.Tensor:
    """(3, b, L) targets for the auxiliary attribute loss: at every position that predicts an answer
    word, the colour or shape word its question names (the last one after the turn's ``user`` token;
    -100 for "what color is the shape?"), the row's image colour and its image shape (-100 where
    unknown); -100 at every other position. ``attributes`` are the rows' (colour, shape) pairs."""
    vocab = tokenizer.get_vocab()
    words = {vocab[w] for w in vocab if w in SHAPES or w in COLOURS}
    answers = words | {vocab["yes"], vocab["no"]}
    user = vocab["user"]
    out = torch.full((3, *input_ids.shape), -100, dtype=torch.long)
    ids, nxt = input_ids.tolist(), labels[:, 1:].tolist()
    for r, (row, ahead) in enumerate(zip(ids, nxt)):
        colour, shape = (vocab[w] if w is not None else -100 for w in attributes[r])
        named = -100
        for pos, (t, a) in enumerate(zip(row, ahead)):
            named = -100 if t == user else t if t in words else named
            if a in answers:
                out[:, r, pos] = torch.tensor([named, colour, shape])
    return out


def negated(question: str) -> bool:
    """Whether a yes/no question asks about absence ("is there not a ...", "is no ... present")."""
    words = question.rstrip("?").split()
    return "not" in words or "no" in words


def yes_no_wording(question: str) -> str:
    """What a yes/no question asks about, "colour" or "shape", and whether it is negated:
    "colour plain", "shape negated", ..."""
    words = question.rstrip("?").split()
    return f"{'shape' if any(s in words for s in SHAPES) else 'colour'} {'negated' if negated(question) else 'plain'}"


def yes_no_balance(data: EasyVQA) -> dict[tuple[str, str], float]:
    """Keep probabilities {(wording, answer): p} that make yes and no equally frequent within each
    wording of ``data``'s yes/no questions: the minority answer keeps all, the majority the ratio.
    easy-vqa asks "does the image contain a green shape?" of images with other colours 88% of the
    time, so without this the wording alone predicts the answer and the image is never looked at."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"yes": 0, "no": 0})
    for _, q, a in data.questions:
        if question_type(a) == "yes/no":
            counts[yes_no_wording(q)][a] += 1
    return {(w, a): (min(c.values()) / n if min(c.values()) else 1.0)
            for w, c in counts.items() for a, n in c.items() if n}


@torch.no_grad()
def first_token_accuracy(model, data: EasyVQA, tokenizer, tokens_per_tile: int, limit: int | None = None,
                         batch_size: int = 256, by_type: dict | None = None) -> float:
    """Greedy first answer token == the answer (every easy-vqa answer is a single token).

    ``by_type``, when given, is filled with accuracy per question type (yes/no, shape, color).
    """
    model.eval()
    qs = data.questions[:limit] if limit else data.questions
    correct = 0
    hits: dict[str, list[int]] = {}
    for s in range(0, len(qs), batch_size):
        chunk = qs[s:s + batch_size]
        items = [{"input_ids": build_prompt(tokenizer, "<image>\n" + q, [1], tokens_per_tile),
                  "pixel_values": data.pixels[i:i + 1]} for i, q, _ in chunk]
        b = collate(items, tokenizer.pad_token_id, padding_side="left")
        logits = model(b["input_ids"], b["pixel_values"], b["attention_mask"], logits_to_keep=1)[:, -1]
        want = answer_token_ids(tokenizer, [a for _, _, a in chunk])
        ok = (logits.argmax(-1) == want).tolist()
        correct += sum(ok)
        for (_, _, a), k in zip(chunk, ok):
            hits.setdefault(question_type(a), []).append(k)
    if by_type is not None:
        by_type.update({t: round(sum(v) / len(v), 4) for t, v in sorted(hits.items())})
    return correct / len(qs)


__all__ = ["ALL_WORDINGS", "COLOURS", "EasyVQA", "PLAIN_WORDINGS", "SHAPES", "STAGED_WORDINGS", "attribute_targets", "comparison_batch", "comparison_pools", "easyvqa_tokenizer", "first_token_accuracy", "image_attributes", "image_word_targets",
           "negated", "question_type", "training_batch", "yes_no_balance", "yes_no_wording"]
