"""Per-item judging and per-task metrics of the three task kinds.

A judge maps (generated text, item) -> (what was read from the answer, correct?); a summary maps
the judged items to named metrics. Fractions are in [0, 1]; MME scores are in points.
"""
from __future__ import annotations

from collections import defaultdict

from .extract import extract_letter, extract_yes_no
from .items import EvalItem
from .normalize import normalize_answer

# MME's cognition subtasks; every other category counts as perception
MME_COGNITION = frozenset({"commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"})


# ---- judges --------------------------------------------------------------------------------
def judge_vqa(prediction: str, item: EvalItem) -> tuple[str | None, bool]:
    """Normalised exact match against any reference answer."""
    got = normalize_answer(prediction)
    return got, got in {normalize_answer(a) for a in item.answers}


def judge_mc(prediction: str, item: EvalItem) -> tuple[str | None, bool]:
    letter = extract_letter(prediction, item.options)
    return letter, letter is not None and letter in item.answers


def judge_yes_no(prediction: str, item: EvalItem) -> tuple[str | None, bool]:
    got = extract_yes_no(prediction)
    return got, got is not None and got == normalize_answer(item.answers[0])


# ---- summaries -----------------------------------------------------------------------------
def accuracy(items: list[EvalItem], read: list[str | None], correct: list[bool]) -> dict[str, float]:
    n = len(items)
    out = {"accuracy": sum(correct) / n if n else 0.0, "n": n}
    unparsed = sum(r is None for r in read)
    if unparsed:
        out["unparsed"] = unparsed
    return out


def pope(items: list[EvalItem], read: list[str | None], correct: list[bool]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 with "yes" as the positive class, and the yes ratio.

    An answer that says neither yes nor no is wrong and is not a "yes"."""
    gold_yes = [normalize_answer(it.answers[0]) == "yes" for it in items]
    said_yes = [r == "yes" for r in read]
    tp = sum(g and s for g, s in zip(gold_yes, said_yes))
    fp = sum(s and not g for g, s in zip(gold_yes, said_yes))
    fn = sum(g and not s for g, s in zip(gold_yes, said_yes))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out = accuracy(items, read, correct)
    out.update(precision=precision, recall=recall, f1=f1, yes_ratio=sum(said_yes) / len(items) if items else 0.0)
    return out


def by_category(items: list[EvalItem], correct: list[bool]) -> dict[str, float]:
    """Accuracy per category (empty when the items have no categories)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for it, ok in zip(items, correct):
        if it.category:
            groups[it.category].append(ok)
    return {c: sum(v) / len(v) for c, v in sorted(groups.items())}


def mme(items: list[EvalItem], correct: list[bool]) -> dict[str, float]:
    """MME scores: per category acc + acc+ (both questions of an image right), in percent points,
    summed over perception and cognition categories."""
    acc: dict[str, list[bool]] = defaultdict(list)
    per_image: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for it, ok in zip(items, correct):
        acc[it.category].append(ok)
        per_image[(it.category, it.image_key or it.index)].append(ok)
    plus: dict[str, list[bool]] = defaultdict(list)
    for (cat, _), oks in per_image.items():
        plus[cat].append(all(oks))
    score = {c: 100 * (sum(acc[c]) / len(acc[c]) + sum(plus[c]) / len(plus[c])) for c in acc}
    perception = sum(v for c, v in score.items() if c not in MME_COGNITION)
    cognition = sum(v for c, v in score.items() if c in MME_COGNITION)
    return {"mme_perception": perception, "mme_cognition": cognition, "mme_total": perception + cognition}
