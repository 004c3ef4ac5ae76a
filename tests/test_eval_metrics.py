"""Each metric on small fixtures with known answers."""
from __future__ import annotations

import pytest

from mmmamba_cli.evaluate import EvalItem, Task, score
from mmmamba_cli.evaluate.extract import extract_letter, extract_yes_no
from mmmamba_cli.evaluate.metrics import mme, pope
from mmmamba_cli.evaluate.normalize import normalize_answer
from mmmamba_cli.evaluate.prompts import question_text

OPTIONS = {"A": "a red circle", "B": "blue square", "C": "two cats", "D": "I don't know"}


@pytest.mark.parametrize("raw, want", [
    ("Two dogs.", "2 dogs"), ("The Red-Car", "red car"), ("3.5", "3.5"), ("1,000", "1000"),
    ("  Yes!\n", "yes"), ("dont", "don't"), ("an apple, please", "apple please"), ("none", "0"),
])
def test_normalize_answer(raw, want):
    assert normalize_answer(raw) == want


@pytest.mark.parametrize("prediction, want", [
    ("B", "B"), ("(C)", "C"), ("b.", "B"), ("D. I don't know", "D"), ("The answer is (B).", "B"),
    ("Answer: C", "C"), ("I think option D", "D"), ("blue square", "B"), ("It is a red circle.", "A"),
    ("E", None), ("A cat sat", None), ("no idea", None), ("C or D", None),
])
def test_extract_letter(prediction, want):
    assert extract_letter(prediction, OPTIONS) == want


@pytest.mark.parametrize("prediction, want", [
    ("Yes", "yes"), ("No.", "no"), ("yes, there is a cat", "yes"), ("There is no cat", "no"),
    ("It is not there", "no"), ("a cat", None),
])
def test_extract_yes_no(prediction, want):
    assert extract_yes_no(prediction) == want


def _items(answers, **kw):
    return [EvalItem(index=str(i), question="q", answers=[a], **kw) for i, a in enumerate(answers)]


def test_pope_metrics_by_hand():
    gold = ["yes", "yes", "yes", "no", "no", "no"]
    said = ["yes", "yes", "no", "yes", "no", None]  # TP 2, FN 1, FP 1, TN 1, one unreadable
    items = _items(gold)
    got = pope(items, said, [g == s for g, s in zip(gold, said)])
    assert got["accuracy"] == pytest.approx(3 / 6)
    assert got["precision"] == pytest.approx(2 / 3) and got["recall"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx(2 / 3) and got["yes_ratio"] == pytest.approx(3 / 6)
    assert got["unparsed"] == 1


def test_mme_score_by_hand():
    # category "color": image p has 2 right; image q has 1 of 2 -> acc 3/4, acc+ 1/2 -> 125 points
    # category "code_reasoning" (cognition): one image, 1 of 2 -> acc 1/2, acc+ 0 -> 50 points
    cats = ["color"] * 4 + ["code_reasoning"] * 2
    keys = ["p", "p", "q", "q", "r", "r"]
    items = [EvalItem(index=str(i), question="q", answers=["yes"], category=c, image_key=k)
             for i, (c, k) in enumerate(zip(cats, keys))]
    got = mme(items, [True, True, True, False, False, True])
    assert got == {"mme_perception": pytest.approx(125.0), "mme_cognition": pytest.approx(50.0),
                   "mme_total": pytest.approx(175.0)}


def test_score_each_kind():
    vqa = Task("t", "vqa", _items(["Two", "red car", "cat"]) + [EvalItem("3", "q", ["dog", "puppy"])],
               "x", "", 8)
    metrics, records = score(vqa, ["2", "The red car.", "dog", "Puppy"])
    assert metrics["accuracy"] == pytest.approx(3 / 4) and [r["correct"] for r in records] == [1, 1, 0, 1]

    mc_items = [EvalItem(str(i), "q", [a], options=OPTIONS, category=c)
                for i, (a, c) in enumerate([("A", "x"), ("B", "x"), ("C", "y"), ("D", "y")])]
    metrics, _ = score(Task("m", "mc", mc_items, "x", "", 8), ["A", "(C)", "two cats", "nothing"])
    assert metrics["accuracy"] == pytest.approx(2 / 4) and metrics["unparsed"] == 1
    assert metrics["by_category"] == {"x": 0.5, "y": 0.5}

    yn = Task("MME_small", "yesno", _items(["Yes", "No"], category="color"), "x", "", 8, ("mme",))
    metrics, _ = score(yn, ["yes", "yes"])
    assert metrics["accuracy"] == 0.5 and metrics["precision"] == 0.5 and metrics["recall"] == 1.0
    # each item is its own image here, so acc+ = acc = 1/2 and the category scores 100 * (1/2 + 1/2)
    assert metrics["mme_perception"] == pytest.approx(100.0) and metrics["mme_cognition"] == 0


def test_question_text_layout():
    item = EvalItem("0", "What is it?", ["A"], options={"A": "cat", "B": "dog"}, hint="A pet.")
    assert question_text(item, "Answer with the option's letter from the given choices directly.") == (
        "A pet.\nWhat is it?\nA. cat\nB. dog\nAnswer with the option's letter from the given choices directly.")
    assert question_text(EvalItem("1", "Is it red?", ["yes"]), "") == "Is it red?"
