"""The easy-vqa data set (64x64 images of one coloured shape, one-word answers) as InternVL records."""
from __future__ import annotations

import json
import os
from pathlib import Path

import easy_vqa

SPLITS = ("train", "test")


def easyvqa_records(split: str = "train") -> list[dict]:
    """``{"image": absolute path, "conversations": [human, gpt], "question", "answer"}`` per question."""
    if split not in SPLITS:
        raise ValueError(f"unknown easy-vqa split {split!r}; choose one of: {', '.join(SPLITS)}")
    questions, answers, image_ids = getattr(easy_vqa, f"get_{split}_questions")()
    paths = getattr(easy_vqa, f"get_{split}_image_paths")()  # image id -> path
    return [{"image": os.path.abspath(paths[image_id]),
             "conversations": [{"from": "human", "value": "<image>\n" + question},
                               {"from": "gpt", "value": answer}],
             "question": question, "answer": answer}
            for question, answer, image_id in zip(questions, answers, image_ids)]


def write_easyvqa_jsonl(split: str, path: str | Path, limit: int | None = None) -> Path:
    """Write the split as jsonl (atomically: a temporary name, then rename); returns the path.

    ``limit``: only this many questions, evenly spaced over the split (so over all its images).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    records = easyvqa_records(split)
    if limit is not None and limit < len(records):
        records = [records[i * len(records) // limit] for i in range(limit)]
    with tmp.open("w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    tmp.replace(path)
    return path


def easyvqa_answers() -> list[str]:
    """The 13 possible answers (shapes, colours, yes/no), in the package's order."""
    return easy_vqa.get_answers()
