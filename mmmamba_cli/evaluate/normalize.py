"""Answer normalisation of the VQA benchmarks, used for open-ended exact match.

The usual VQA steps: lower case; periods dropped unless they are a decimal point; commas
between digits dropped (``1,000`` -> ``1000``); other punctuation becomes a space; number words
up to ten become digits; the articles a/an/the are removed; apostrophe-less contractions get
their apostrophe back (``dont`` -> ``don't``); whitespace collapsed.
"""
from __future__ import annotations

import re

NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
# negative and pronoun contractions written without their apostrophe
CONTRACTIONS = {w.replace("'", ""): w for w in (
    "aren't", "can't", "couldn't", "didn't", "doesn't", "don't", "hadn't", "hasn't", "haven't", "isn't",
    "mightn't", "mustn't", "shouldn't", "wasn't", "weren't", "won't", "wouldn't", "i'm", "i've", "i'd",
    "you're", "you've", "they're", "they've", "we're", "we've", "that's", "what's", "where's", "who's",
    "there's", "let's", "how's")}

_PERIOD = re.compile(r"(?<!\d)\.|\.(?!\d)")      # a period that is not between two digits
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")
_PUNCT = re.compile(r"[;/\[\]\"{}()=+\\_\->< @`,?!:*#%&|~^$]")


def normalize_answer(text: str) -> str:
    """``"Two dogs."`` -> ``"2 dogs"``; ``"The Red-Car"`` -> ``"red car"``."""
    text = text.replace("\n", " ").replace("\t", " ").strip().lower()
    text = _DIGIT_COMMA.sub("", _PERIOD.sub("", text))
    text = _PUNCT.sub(" ", text)
    words = [NUMBER_WORDS.get(w, w) for w in text.split() if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)
