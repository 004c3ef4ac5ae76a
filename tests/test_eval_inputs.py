"""Task inputs: evaluation-kit TSV files (base64 images, options, shared images), jsonl, easy-vqa."""
from __future__ import annotations

import base64
import csv
import json

import pytest

from mmmamba_cli.errors import UserError
from mmmamba_cli.evaluate import load_task
from mmmamba_cli.evaluate.items import open_image
from test_eval_support import b64_png, png_bytes


def write_tsv(path, header, rows):
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(header)
        w.writerows(rows)
    return path


def mmbench_like(tmp_path):
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"]
    rows = [[0, "What colour is it?", "", "red", "blue", "green", "", "A", "color", b64_png((255, 0, 0))],
            [1, "Which shape?", "Look closely.", "circle", "square", "", "", "B", "shape", b64_png((0, 0, 255))],
            # the answer as option text; the image shared with row 1
            [2, "Colour again?", "nan", "red", "blue", "", "", "blue", "color", "1"]]
    return write_tsv(tmp_path / "MMBench_tiny.tsv", header, rows)


def test_tsv_with_base64_images_and_options(tmp_path):
    task = load_task(str(mmbench_like(tmp_path)))
    assert task.kind == "mc" and task.name == "MMBench_tiny" and len(task.items) == 3
    first, second, third = task.items
    assert first.options == {"A": "red", "B": "blue", "C": "green"}  # empty D skipped
    assert second.options == {"A": "circle", "B": "square"} and second.hint == "Look closely."
    assert third.hint == "" and third.answers == ["B"]  # option text -> letter
    assert first.images == [png_bytes((255, 0, 0))] and first.sizes == [(24, 20)]
    assert third.images == second.images and third.image_key == "1" == second.image_key
    assert open_image(third.images[0], "x").getpixel((0, 0)) == (0, 0, 255)
    assert task.suffix == "Answer with the option's letter from the given choices directly."
    assert [it.category for it in task.items] == ["color", "shape", "color"]


def test_tsv_yes_no_kind_and_mme_metrics(tmp_path):
    rows = [[0, "Is it red? Please answer yes or no.", "Yes", "color", b64_png()],
            [1, "Is it blue? Please answer yes or no.", "No", "color", "0"]]
    task = load_task(str(write_tsv(tmp_path / "MME.tsv", ["index", "question", "answer", "category", "image"], rows)))
    assert task.kind == "yesno" and task.extra_metrics == ("mme",)
    assert task.suffix == "Answer the question using a single word or phrase."
    assert task.items[1].image_key == "0"


def test_tsv_image_path_column_and_limit(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(png_bytes())
    rows = [[i, "what is it?", "cat", "a.png"] for i in range(5)]
    path = write_tsv(tmp_path / "vqa.tsv", ["index", "question", "answer", "image_path"], rows)
    task = load_task(str(path), image_root=tmp_path / "imgs", limit=2)
    assert task.kind == "vqa" and len(task.items) == 2
    assert task.items[0].images == [str(tmp_path / "imgs" / "a.png")]


@pytest.mark.parametrize("header, row, message", [
    (["index", "question", "image"], [0, "q", ""], "missing column(s) answer"),
    (["index", "question", "answer", "image"], [0, "q", "yes", "not*base64" * 10], "cannot decode the base64 image"),
    (["index", "question", "answer", "image"], [0, "q", "yes", base64.b64encode(b"x" * 80).decode()],
     "cannot decode image"),
    (["index", "question", "answer", "image"], [0, "q", "yes", "7"], "refers to index 7"),
    (["index", "question", "answer", "A", "B"], [0, "q", "E", "x", "y"], "answer among their letters"),
])
def test_tsv_bad_input_is_one_line_user_error(tmp_path, header, row, message):
    path = write_tsv(tmp_path / "bad.tsv", header, [row])
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_task(str(path))
    assert "\n" not in str(err.value)


def test_jsonl_both_formats(tmp_path):
    (tmp_path / "cat.png").write_bytes(png_bytes())
    lines = [{"question": "what is it?", "answer": ["cat", "kitten"], "image": "cat.png", "category": "animal"},
             {"image": "cat.png", "conversations": [{"from": "human", "value": "<image>\nwhat colour?"},
                                                    {"from": "gpt", "value": "red"}]},
             {"question": "pick", "options": ["cat", "dog"], "answer": "dog"}]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    task = load_task(str(path), kind="vqa")
    a, b, c = task.items
    assert a.answers == ["cat", "kitten"] and a.images == [str(tmp_path / "cat.png")] and a.category == "animal"
    assert b.question == "<image>\nwhat colour?" and b.answers == ["red"]
    assert c.options == {"A": "cat", "B": "dog"} and c.answers == ["B"]
    assert load_task(str(path), limit=1).kind == "vqa"


@pytest.mark.parametrize("spec, kind, message", [
    ("mmbench", None, "unknown task"), ("missing.tsv", None, "no such file"), ("easyvqa", "essay", "unknown task kind"),
])
def test_unknown_task_or_kind(spec, kind, message):
    with pytest.raises(UserError, match=message):
        load_task(spec, kind)


def test_jsonl_bad_lines(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "a", "image": "nope.png"}\n')
    with pytest.raises(UserError, match="line 1: image not found"):
        load_task(str(path))
    path.write_text('{"question": "q"\n')
    with pytest.raises(UserError, match="line 1: bad JSON"):
        load_task(str(path))


def test_easyvqa_builtin():
    task = load_task("easyvqa", limit=5)
    assert task.kind == "vqa" and task.suffix == "" and task.max_new_tokens == 3 and len(task.items) == 5
    assert all(it.images and it.sizes[0] == (64, 64) for it in task.items)
    assert {it.category for it in task.items} <= {"shape", "color", "yes/no"}
