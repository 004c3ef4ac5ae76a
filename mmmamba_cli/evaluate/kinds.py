"""The task kinds as data: prompt suffix, answer length, judge and summary of each."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UserError
from .items import EvalItem, Task
from .metrics import accuracy, by_category, judge_mc, judge_vqa, judge_yes_no, mme, pope

# the prompt suffixes of the common VLM evaluation kits (LLaVA-style)
SHORT_ANSWER = "Answer the question using a single word or phrase."
OPTION_LETTER = "Answer with the option's letter from the given choices directly."


@dataclass(frozen=True)
class TaskKind:
    name: str
    description: str
    suffix: str
    max_new_tokens: int
    judge: Callable[[str, EvalItem], tuple[str | None, bool]]
    summary: Callable[[list[EvalItem], list[str | None], list[bool]], dict]


KINDS: dict[str, TaskKind] = {k.name: k for k in (
    TaskKind("vqa", "open VQA, normalised exact match", SHORT_ANSWER, 16, judge_vqa, accuracy),
    TaskKind("mc", "multiple choice, option letters", OPTION_LETTER, 8, judge_mc, accuracy),
    TaskKind("yesno", "yes/no, POPE metrics", SHORT_ANSWER, 8, judge_yes_no, pope),
)}
EXTRA_METRICS = {"mme": mme}


def get_kind(name: str) -> TaskKind:
    if name not in KINDS:
        raise UserError(f"unknown task kind {name!r}; choose one of: {', '.join(KINDS)}")
    return KINDS[name]


def score(task: Task, predictions: list[str]) -> tuple[dict, list[dict]]:
    """(metrics, one record per item) for the generated answers of ``task``'s items."""
    kind = get_kind(task.kind)
    judged = [kind.judge(p, it) for p, it in zip(predictions, task.items)]
    read, correct = [r for r, _ in judged], [ok for _, ok in judged]
    metrics = kind.summary(task.items, read, correct)
    categories = by_category(task.items, correct)
    if len(categories) > 1:
        metrics["by_category"] = categories
    for name in task.extra_metrics:
        metrics.update(EXTRA_METRICS[name](task.items, correct))
    records = [{"index": it.index, "prediction": p, "read": r, "answers": it.answers, "correct": ok}
               for it, p, r, ok in zip(task.items, predictions, read, correct)]
    return metrics, records
