"""Turning a generated answer into what a task scores: an option letter or yes/no."""
from __future__ import annotations

import re

from .normalize import normalize_answer

# tried in order; each captures one upper-case letter
_LETTER_PATTERNS = (
    re.compile(r"^\s*[\(\[]?([A-Z])[\)\]]?\s*[.:]?\s*$"),                   # "B", "(B)", "B."
    re.compile(r"^\s*[\(\[]?([A-Z])[\)\].:,]"),                              # "B. cat", "(B) cat"
    re.compile(r"(?i:answer|choice)\s*(?i:is|:)?\s*(?i:option\s*)?[\(\[]?([A-Z])\b"),  # "answer is (B)"
    re.compile(r"\b(?i:option)\s*[\(\[]?([A-Z])\b"),                          # "... option B"
)


def extract_letter(prediction: str, options: dict[str, str]) -> str | None:
    """The option letter a free-form answer picks, or None.

    1. a leading letter (``"B"``, ``"(B) cat"``, ``"b."``); 2. ``"answer is B"``; 3. exactly one
    valid letter standing alone in the text; 4. the answer equals (after VQA normalisation) one
    option's text, or contains exactly one option's text.
    """
    letters = set(options)
    text = prediction.strip()
    if len(text.rstrip(".)")) == 1 and text[0].upper() in letters:  # a bare lower-case letter too
        return text[0].upper()
    for pattern in _LETTER_PATTERNS:
        m = pattern.search(text)
        if m and m.group(1).upper() in letters:
            return m.group(1).upper()
    alone = {c for c in re.findall(r"(?<![A-Za-z'])([A-Z])(?![A-Za-z'])", text) if c in letters}
    if len(alone) == 1 and "I" not in alone and "A" not in alone:  # the pronoun / article, not options
        return alone.pop()
    norm = normalize_answer(text)
    texts = {k: normalize_answer(v) for k, v in options.items() if normalize_answer(v)}
    exact = [k for k, v in texts.items() if v == norm]
    if len(exact) == 1:
        return exact[0]
    inside = [k for k, v in texts.items() if re.search(rf"\b{re.escape(v)}\b", norm)]
    return inside[0] if len(inside) == 1 else None


def extract_yes_no(prediction: str) -> str | None:
    """``"yes"`` or ``"no"``: the first of those words in the answer; else ``"no"`` when it
    says "not"; None when it says neither (counted as wrong)."""
    words = normalize_answer(prediction).split()
    for w in words:
        if w in ("yes", "no"):
            return w
    return "no" if "not" in words else None
