"""Fixtures for the distillation tests (a tiny teacher, its tokenizer, a tiny jsonl, a seeded run
directory) and checks that the fixtures themselves are what the other tests assume."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_teacher

torch.set_num_threads(1)  # the CPU is shared: more threads are much slower here

WORDS = ("what color is the shape in this picture ? it a red blue green circle square triangle "
         "yes no how many sides does have three four none describe image please answer briefly :")
QUESTIONS = [("what color is the shape ?", "it is red"), ("how many sides does a triangle have ?", "three"),
             ("is it a circle ?", "yes"), ("describe the image please", "a green square"),
             ("answer briefly : what shape is it ?", "a blue circle"), ("does a square have four sides ?", "yes")]


def make_teacher_dir(root: Path, seed: int = 0) -> Path:
    """The tiny random HoVLE-architecture teacher in our format, with a word tokenizer (ids < 128)."""
    from mmmamba_cli.data import build_word_tokenizer
    from mmmamba_cli.io.save import save_model_dir

    teacher = tiny_teacher(seed=seed)
    out = root / "teacher"
    tok_dir = root / "tokenizer"
    build_word_tokenizer([WORDS]).save_pretrained(str(tok_dir))
    save_model_dir(out, teacher.config, teacher.state_dict(), tokenizer_dir=tok_dir)
    return out


def write_png(path: Path, seed: int, size=(32, 32)) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path.name


def make_jsonl(root: Path, n: int = 24, bad: bool = False, name: str = "train.jsonl") -> Path:
    """``n`` records: text-only and one-image conversations (some multi-turn); ``bad`` adds a line
    of broken JSON (line 3) and a record naming a missing image (line 5)."""
    rng = random.Random(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        q, a = QUESTIONS[i % len(QUESTIONS)]
        turns = [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        if i % 4 == 3:  # multi-turn
            q2, a2 = QUESTIONS[(i + 1) % len(QUESTIONS)]
            turns += [{"from": "human", "value": q2}, {"from": "gpt", "value": a2}]
        rec = {"conversations": turns}
        if i % 2:  # an image record
            rec["image"] = "images/" + write_png(root / "images" / f"img{i}.png", i, (rng.choice([24, 32, 48]), 32))
            turns[0]["value"] = "<image>\n" + turns[0]["value"]
        lines.append(json.dumps(rec))
    if bad:
        lines[2] = '{"conversations": [broken'
        lines[4] = json.dumps({"image": "images/missing.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat color is it ?"}, {"from": "gpt", "value": "red"}]})
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


def make_run(root: Path) -> tuple[Path, Path]:
    """(run dir with seed/, data jsonl)."""
    from mmmamba_cli.seed import seed_directory

    teacher = make_teacher_dir(root)
    run = root / "run"
    seed_directory(teacher, run / "seed")
    return run, make_jsonl(root)


@pytest.fixture
def run_and_data(tmp_path):
    return make_run(tmp_path)


def test_tokenizer_ids_fit_the_tiny_vocab(tmp_path):
    from transformers import AutoTokenizer

    from mmmamba_cli.data import IMG_CONTEXT

    teacher = make_teacher_dir(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(teacher))
    assert len(tok) < 128
    assert tok.convert_tokens_to_ids(IMG_CONTEXT) == 5 and tok.pad_token_id == 0
    assert tok.unk_token_id not in tok.encode(" ".join(q + " " + a for q, a in QUESTIONS), add_special_tokens=False)


def test_jsonl_fixture_loads_with_images_and_skips_bad_lines(tmp_path):
    from transformers import AutoTokenizer

    from mmmamba_cli.data import load_sft_dataset

    teacher = make_teacher_dir(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(teacher))
    cfg = tiny_teacher().config
    ds, stats = load_sft_dataset(make_jsonl(tmp_path, 12, bad=True), tok, cfg, max_length=64)
    assert (stats.kept, stats.bad, stats.bad_lines) == (10, 2, [3, 5])
    items = [ds[i] for i in range(len(ds))]
    assert any(it["pixel_values"] is not None for it in items) and any(it["pixel_values"] is None for it in items)
    assert max(len(it["input_ids"]) for it in items) <= 64
