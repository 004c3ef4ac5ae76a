"""Teacher training pieces: the typed recipe, conversations that open with the shape question, the
translation augmentation, yes/no balancing, and the layer rule (teacher training does not import distillation)."""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmmamba_cli.errors import UserError
from mmmamba_cli.teacher.easyvqa_data import (ALL_WORDINGS, PLAIN_WORDINGS, attribute_targets, comparison_batch, comparison_pools,
                                               image_attributes, image_word_targets, question_type, shift, training_batch,
                                               yes_no_balance, yes_no_wording)
from mmmamba_cli.teacher.train import TeacherRecipe, fan_in_stem, load_teacher_recipe

torch.set_num_threads(1)  # the CPU is shared: more threads are much slower here
ROOT = Path(__file__).resolve().parents[1]
BASE = "train.init_from=runs/teacher-base"  # the comparison recipe needs a base teacher


def test_shipped_recipe_loads_and_overrides_apply():
    r = load_teacher_recipe("teacher-easyvqa", ["optim.lr=1e-3", "train.steps=10", "model.patch_size=8"])
    assert isinstance(r, TeacherRecipe)
    assert (r.optim.lr, r.train.steps, r.model.patch_size) == (1e-3, 10, 8)
    assert r.optim.betas == [0.9, 0.95] and r.model.downsample_ratio == 0.25 and r.data.shape_first
    with pytest.raises(UserError) as e:
        load_teacher_recipe("teacher-easyvqa", ["train.stepz=3", "model.patch_size=5", "optim.warmup=2"])
    msg = str(e.value)
    assert "train.stepz (did you mean train.steps?)" in msg and "does not divide" in msg and "optim.warmup" in msg


def test_fan_in_stem_gives_unit_scale_image_features_and_leaves_the_rest():
    from mmmamba_cli.model.init import init_weights
    from mmmamba_cli.model.model import MMModel
    from mmmamba_cli.teacher.easyvqa_data import easyvqa_tokenizer
    from mmmamba_cli.teacher.train import ModelSection, teacher_config

    config = teacher_config(ModelSection(hidden_size=64, num_heads=2, num_kv_heads=1, intermediate_size=128,
                                         num_embed_layers=1, num_llm_layers=1), easyvqa_tokenizer())
    model = init_weights(MMModel(config), 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    px = torch.randn(8, 3, 64, 64)  # unit-scale pixels, as after the processor's normalisation
    small = model.embed.vision(px).std().item()
    fan_in_stem(model, 0)
    big = model.embed.vision(px).std().item()
    stem = model.embed.vision
    for w in (stem.patch_embedding.weight, stem.proj[0].weight, stem.proj[2].weight):
        assert abs(w.std().item() * w[0].numel() ** 0.5 - 1) < 0.1
    assert small < 0.05 < 0.2 < big  # N(0, 0.02) all through the stem: image features start ~50x too small
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"embed.vision.patch_embedding.weight", "embed.vision.proj.0.weight", "embed.vision.proj.2.weight"}
    with pytest.raises(UserError, match="model.stem_init must be one of normal, fan_in"):
        load_teacher_recipe("teacher-easyvqa", ["model.stem_init=xavier"])


def test_shift_translates_and_repeats_the_edges():
    x = torch.arange(25.0).view(1, 1, 5, 5)
    y = shift(x, 2, -1)  # down 2, left 1
    assert torch.equal(y[0, 0, 2:, :4], x[0, 0, :3, 1:])  # moved content
    assert torch.equal(y[0, 0, 0], y[0, 0, 1]) and torch.equal(y[0, 0, 0, :4], x[0, 0, 0, 1:])  # top edge repeated
    assert torch.equal(y[0, 0, :, 4], y[0, 0, :, 3])  # right edge repeated
    assert torch.equal(shift(x, 0, 0), x)


class _Data:
    """Two images' questions, as EasyVQA holds them."""
    qa = [[("is there a red shape?", "yes"), ("what color is the shape?", "red"), ("what shape is present?", "circle"),
           ("does the image contain a circle?", "yes")],
          [("what color is the triangle?", "blue"), ("is there a circle?", "no")]]
    pixels = torch.zeros(2, 3, 8, 8)


_TOK = type("Tok", (), {"pad_token_id": 0})()


def _conversations(monkeypatch, image_ids, seeds, **options) -> list[list[dict]]:
    """The conversations training_batch encodes for ``image_ids``, once per seed."""
    import mmmamba_cli.teacher.easyvqa_data as m

    seen = []
    monkeypatch.setattr(m, "encode_conversation", lambda tok, conv, tiles, tpt: seen.append(conv) or
                        {"input_ids": [1, 2], "labels": [-100, 2]})
    for seed in range(seeds):
        training_batch(_Data(), image_ids, _TOK, 4, 3, random.Random(seed), augment=False, **options)
    return seen


def test_shape_question_opens_every_conversation_that_has_one(monkeypatch):
    seen = _conversations(monkeypatch, [0, 1], 10, shape_first=True)
    firsts = [conv[0]["value"] for conv in seen[0::2]]
    assert all(f == "<image>\nwhat shape is present?" for f in firsts)
    assert {question_type(c[1]["value"]) for conv in seen[1::2] for c in [conv[:2]]} <= {"color", "yes/no"}
    seen = _conversations(monkeypatch, [0], 10, shape_first=False)
    assert len({conv[0]["value"] for conv in seen}) > 1  # without it the first question varies


def test_shape_phase_trains_the_shape_question_alone(monkeypatch):
    seen = _conversations(monkeypatch, [0, 1], 5, shape_only=True)
    assert all(conv == [{"from": "human", "value": "<image>\nwhat shape is present?"},
                        {"from": "gpt", "value": "circle"}] for conv in seen[0::2])
    assert all(len(conv) == 4 for conv in seen[1::2])  # no shape question: the image keeps its others


def test_wordings_of_easyvqa_yes_no_questions():
    assert yes_no_wording("does the image contain a green shape?") == "colour plain"
    assert yes_no_wording("is there not a black shape in the image?") == "colour negated"
    assert yes_no_wording("is no gray shape present?") == "colour negated"
    assert yes_no_wording("is there a circle?") == "shape plain"
    assert yes_no_wording("is no triangle present?") == "shape negated"


class _Skewed:
    """60 images, each with one colour question answered "no" 9 times in 10 and one shape question
    answered "yes" 3 times in 4 (easy-vqa's skew is of this kind)."""

    def __init__(self):
        self.qa = [[("is there a red shape?", "yes" if i % 10 == 0 else "no"),
                    ("is there not a circle?", "no" if i % 4 == 0 else "yes"),
                    ("what shape is present?", "circle")] for i in range(60)]
        self.questions = [(i, q, a) for i, qa in enumerate(self.qa) for q, a in qa]
        self.pixels = torch.zeros(60, 3, 8, 8)


def test_yes_no_balance_makes_yes_and_no_equally_likely_within_each_wording(monkeypatch):
    data = _Skewed()
    keep = yes_no_balance(data)
    assert keep[("colour plain", "yes")] == 1.0 and keep[("colour plain", "no")] == pytest.approx(6 / 54)
    assert keep[("shape negated", "no")] == 1.0 and keep[("shape negated", "yes")] == pytest.approx(15 / 45)
    import mmmamba_cli.teacher.easyvqa_data as m

    seen = []
    monkeypatch.setattr(m, "encode_conversation", lambda tok, conv, tiles, tpt: seen.append(conv) or
                        {"input_ids": [1, 2], "labels": [-100, 2]})
    rng = random.Random(0)
    for _ in range(40):
        training_batch(data, list(range(60)), _TOK, 4, 3, rng, augment=False, keep=keep)
    counts: dict = {}
    for conv in seen:
        for human, gpt in zip(conv[0::2], conv[1::2]):
            q, a = human["value"].removeprefix("<image>\n"), gpt["value"]
            key = (yes_no_wording(q) if question_type(a) == "yes/no" else q, a)
            counts[key] = counts.get(key, 0) + 1
    for w in ("colour plain", "shape negated"):
        yes, no = counts[(w, "yes")], counts[(w, "no")]
        assert 0.4 < yes / (yes + no) < 0.6, (w, yes, no)  # 0.1 and 0.75 without balancing
    assert counts[("what shape is present?", "circle")] == 40 * 60  # other questions are all kept
    seen.clear()
    training_batch(data, list(range(60)), _TOK, 4, 3, random.Random(0), augment=False)
    assert sum(len(c) for c in seen) == 60 * 3 * 2  # without ``keep`` nothing is dropped


COLOURS = {"red", "blue", "green"}


def test_image_attributes_come_from_direct_answers_else_from_yes_no_answers_that_name_them():
    assert image_attributes([("what color is the shape?", "red"), ("what shape is present?", "circle")],
                            COLOURS) == ("red", "circle")
    assert image_attributes([("is there a blue shape?", "yes"), ("is no triangle present?", "no")],
                            COLOURS) == ("blue", "triangle")
    # "no" to a plain question and "yes" to a negated one only say what the image lacks
    assert image_attributes([("is there a blue shape?", "no"), ("is there not a circle?", "yes")],
                            COLOURS) == (None, None)
    assert image_attributes([("is there not a red shape?", "no"), ("what color is the circle?", "green")],
                            COLOURS) == ("green", None)  # the direct answer wins


class _WordTok:
    ids = {"red": 7, "circle": 8}

    def convert_tokens_to_ids(self, w):
        return self.ids[w]


def test_image_word_targets_label_image_tokens_alternately_with_colour_and_shape():
    IMG = 5
    ids = torch.tensor([[1, 5, 5, 5, 5, 2, 3], [1, 5, 5, 5, 5, 2, 0]])
    t = image_word_targets(ids, [("red", "circle"), (None, "circle")], _WordTok(), IMG)
    assert t.tolist() == [[-100, 7, 8, 7, 8, -100, -100], [-100, -100, 8, -100, 8, -100, -100]]


def test_tie_embeddings_shares_one_table_for_input_and_output():
    from mmmamba_cli.model.model import MMModel
    from mmmamba_cli.teacher.train import teacher_config

    tok = type("T", (), {"__len__": lambda self: 50, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
                         "convert_tokens_to_ids": lambda self, t: 49})()
    small = load_teacher_recipe("teacher-easyvqa", ["model.hidden_size=32", "model.num_heads=2", "model.num_kv_heads=1",
                                                    "model.num_embed_layers=1", "model.num_llm_layers=1", "data.attribute_layer=-1"]).model
    for tie in (True, False):
        small.tie_embeddings = tie
        m = MMModel(teacher_config(small, tok))
        assert (m.lm_head.weight is m.embed.embed_tokens.weight) == tie


def test_image_word_loss_and_compare_steps_must_not_be_negative():
    with pytest.raises(UserError, match="data.image_word_loss"):
        load_teacher_recipe("teacher-easyvqa", ["data.image_word_loss=-1"])
    with pytest.raises(UserError, match="data.compare_steps"):
        load_teacher_recipe("teacher-easyvqa", ["data.compare_steps=-5"])


def _pairs(seen: list[list[dict]]) -> list[tuple[str, str]]:
    """(question, answer) of every one-question conversation, the image placeholder checked and dropped."""
    assert all(len(conv) == 2 and conv[0]["value"].startswith("<image>\n") for conv in seen)
    return [(conv[0]["value"].removeprefix("<image>\n"), conv[1]["value"]) for conv in seen]


def test_comparison_batch_draws_wordings_and_answers_uniformly(monkeypatch):
    import mmmamba_cli.teacher.easyvqa_data as m

    data = _Skewed()  # colour plain answered "no" 9 times in 10, shape negated "yes" 3 in 4
    pools = comparison_pools(data)
    assert len(pools["direct"]) == 60 and len(pools[("colour plain", "no")]) == 54
    seen = []
    monkeypatch.setattr(m, "encode_conversation", lambda tok, conv, tiles, tpt: seen.append(conv) or
                        {"input_ids": [1, 2], "labels": [-100, 2]})
    monkeypatch.setattr(m, "collate", lambda items, pad: {"items": items})
    rng = random.Random(0)
    batch = comparison_batch(data, pools, 2000, _TOK, 4, rng, ALL_WORDINGS, direct_frac=0.25, augment=False)
    items = batch["items"]
    assert [data.qa[i] for i in batch["image_ids"]] == [data.qa[i] for i in batch["image_ids"]] and len(batch["image_ids"]) == 2000
    assert len(items) == 2000 and all(it["pixel_values"].shape == (1, 3, 8, 8) for it in items)
    pairs = _pairs(seen)
    assert sum(question_type(a) != "yes/no" for _, a in pairs) == 500
    counts: dict = {}
    for q, a in pairs:
        if question_type(a) == "yes/no":
            counts[(yes_no_wording(q), a)] = counts.get((yes_no_wording(q), a), 0) + 1
    assert set(counts) == {(w, a) for w in ("colour plain", "shape negated") for a in ("yes", "no")}
    for n in counts.values():  # 1,500 yes/no questions over 2 wordings x 2 answers
        assert 300 < n < 450, counts
    seen.clear()
    comparison_batch(data, pools, 400, _TOK, 4, rng, PLAIN_WORDINGS, direct_frac=0.0, augment=False)
    assert {yes_no_wording(q) for q, _ in _pairs(seen)} == {"colour plain"}  # the negated wording left out


def test_training_phases_run_in_order(monkeypatch):
    """shape questions, direct questions, comparison (plain wordings, then all), then the full mix."""
    import mmmamba_cli.teacher.easyvqa_data as m
    from mmmamba_cli.teacher.train import _batch

    d = load_teacher_recipe("teacher-easyvqa", ["data.shape_steps=2", "data.curriculum_steps=2",
                                                "data.compare_steps=4", "data.max_turns=3"]).data
    data = _Skewed()
    pools = comparison_pools(data)
    seen = []
    monkeypatch.setattr(m, "encode_conversation", lambda tok, conv, tiles, tpt: seen.append(conv) or
                        {"input_ids": [1, 2], "labels": [-100, 2]})
    monkeypatch.setattr(m, "collate", lambda items, pad: {"items": items})
    rng = random.Random(0)
    by_step = []
    for step in range(10):
        seen.clear()
        _batch(d, step, data, pools, list(range(60)), _TOK, 4, rng, None)
        by_step.append([(c[0::2], c[1::2]) for c in seen])
    kinds = lambda convs: {question_type(g["value"]) for _, gs in convs for g in gs}
    wordings = lambda convs: {yes_no_wording(h["value"]) for hs, gs in convs for h, g in zip(hs, gs)
                              if question_type(g["value"]) == "yes/no"}
    assert all(kinds(by_step[s]) == {"shape"} for s in (0, 1))
    assert all("yes/no" not in kinds(by_step[s]) for s in (2, 3))
    assert all(len(hs) == 1 for s in range(8) for hs, _ in by_step[s])  # one question per conversation
    assert all(wordings(by_step[s]) == {"colour plain"} for s in (4, 5))
    assert wordings(by_step[6]) | wordings(by_step[7]) == {"colour plain", "shape negated"}
    assert all(len(hs) == 3 for s in (8, 9) for hs, _ in by_step[s])  # the full mix: several turns


def test_teacher_training_does_not_import_distillation():
    code = ("import sys, mmmamba_cli.teacher.train; "
            "bad = [m for m in sys.modules if m.startswith('mmmamba_cli.distill')]; assert not bad, bad")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]


def test_staged_comparison_adds_one_wording_per_quarter(monkeypatch):
    import mmmamba_cli.teacher.easyvqa_data as m
    from mmmamba_cli.teacher.train import _batch

    d = load_teacher_recipe("teacher-easyvqa", ["data.shape_steps=0", "data.curriculum_steps=0",
                                                "data.compare_steps=8", "data.compare_staged=true"]).data
    data = _Skewed()  # wordings: colour plain (first in the order) and shape negated (last)
    pools = comparison_pools(data)
    seen = []
    monkeypatch.setattr(m, "encode_conversation", lambda tok, conv, tiles, tpt: seen.append(conv) or
                        {"input_ids": [1, 2], "labels": [-100, 2]})
    monkeypatch.setattr(m, "collate", lambda items, pad: {"items": items})
    rng = random.Random(0)
    found = []
    for step in range(8):
        seen.clear()
        _batch(d, step, data, pools, list(range(60)), _TOK, 4, rng, None)
        found.append({yes_no_wording(q) for q, a in _pairs(seen) if question_type(a) == "yes/no"})
    assert all(f == {"colour plain"} for f in found[:6]) and found[6] == found[7] == {"colour plain", "shape negated"}


def test_comparison_batch_names_the_image_of_every_row():
    from mmmamba_cli.teacher.easyvqa_data import easyvqa_tokenizer

    data, tok = _Skewed(), easyvqa_tokenizer()
    data.pixels = torch.arange(60.0)[:, None, None, None].expand(60, 3, 8, 8).clone()  # image i is all i
    b = comparison_batch(data, comparison_pools(data), 16, tok, 4, random.Random(1), ALL_WORDINGS, augment=False)
    assert b["pixel_values"][:, 0, 0, 0].long().tolist() == b["image_ids"]


def test_attribute_targets_name_the_asked_word_and_the_image_at_each_answer_position():
    from mmmamba_cli.data import encode_conversation
    from mmmamba_cli.teacher.easyvqa_data import easyvqa_tokenizer

    tok = easyvqa_tokenizer()
    convs = [[("what color is the shape?", "green"), ("is there a red shape?", "no"), ("is no circle present?", "yes")],
             [("does the image contain a triangle?", "yes")]]
    rows = []
    for turns in convs:
        conv = []
        for k, (q, a) in enumerate(turns):
            conv += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + q}, {"from": "gpt", "value": a}]
        rows.append(encode_conversation(tok, conv, [1], 4))
    L = max(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [0] * (L - len(r["input_ids"])) for r in rows])
    labels = torch.tensor([r["labels"] + [-100] * (L - len(r["labels"])) for r in rows])
    t = attribute_targets(ids, labels, [("green", "rectangle"), (None, "triangle")], tok)
    v = tok.get_vocab()
    # the answer words sit where labels are set and are one of the easy-vqa answers
    answer_at = [[p for p in range(L) if int(labels[r, p]) in {v[a] for _, a in convs[r]}] for r in range(2)]
    assert [len(a) for a in answer_at] == [3, 1]
    want_named = [[-100, v["red"], v["circle"]], [v["triangle"]]]
    for r in range(2):
        at = [p - 1 for p in answer_at[r]]  # the position that predicts the answer
        assert t[0, r, at].tolist() == want_named[r]
        assert t[1, r, at].tolist() == [v["green"] if r == 0 else -100] * len(at)
        assert t[2, r, at].tolist() == [v["rectangle" if r == 0 else "triangle"]] * len(at)
        others = [p for p in range(L) if p not in at]
        assert (t[:, r, others] == -100).all()


def test_attribute_heads_read_the_named_layer_and_learn_on_their_own():
    from mmmamba_cli.model.init import init_weights
    from mmmamba_cli.model.model import MMModel
    from mmmamba_cli.teacher.train import AttributeHeads, teacher_config

    tok = type("T", (), {"__len__": lambda self: 20, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
                         "convert_tokens_to_ids": lambda self, t: 19})()
    small = load_teacher_recipe("teacher-easyvqa", ["model.hidden_size=32", "model.num_heads=2", "model.num_kv_heads=1",
                                                    "model.num_embed_layers=1", "model.num_llm_layers=2"]).model
    model = MMModel(teacher_config(small, tok))
    init_weights(model, 0)
    probes = AttributeHeads(model, 1)
    seen = {}
    model.layers[1].register_forward_hook(lambda mod, i, o: seen.__setitem__("h", o))
    ids = torch.randint(3, 19, (2, 6))
    model(ids)
    assert probes.hidden is seen["h"] and probes.hidden.shape == (2, 6, 32)
    assert not any(k.startswith("heads") for k in model.state_dict())  # not part of the saved model
    targets = torch.full((3, 2, 6), -100)
    targets[0, :, 2], targets[1, :, 4], targets[2, 1, 5] = 7, 9, 11
    opt = torch.optim.Adam(probes.parameters(), lr=0.05)
    first = None
    for _ in range(30):
        model(ids)
        loss = probes.loss(targets)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 3 * 2.5 and loss.item() < 0.2 * first  # three heads at ~log(20) each, then learnt


def test_attribute_options_are_checked():
    with pytest.raises(UserError, match="data.attribute_loss"):
        load_teacher_recipe("teacher-easyvqa", ["data.attribute_loss=-0.5"])
    with pytest.raises(UserError, match="data.attribute_layer must name one of the 8 decoder layers"):
        load_teacher_recipe("teacher-easyvqa-compare", [BASE, "data.attribute_layer=-9"])
    assert load_teacher_recipe("teacher-easyvqa-compare", [BASE, "data.attribute_layer=7"]).data.attribute_layer == 7
    small = [BASE, "model.num_embed_layers=1", "model.num_llm_layers=1"]
    with pytest.raises(UserError, match="data.attribute_layer"):
        load_teacher_recipe("teacher-easyvqa-compare", small)  # -3 is not a layer of 2
    load_teacher_recipe("teacher-easyvqa-compare", small + ["data.attribute_loss=0"])  # unused: not checked


def test_comparison_recipe_continues_a_base_teacher_of_the_same_shape():
    base, compare = load_teacher_recipe("teacher-easyvqa"), load_teacher_recipe("teacher-easyvqa-compare", [BASE])
    assert compare.model == base.model  # init_from loads the base weights: the sizes must agree
    assert compare.data.attribute_loss > 0 and compare.data.compare_steps > 0
    assert compare.data.shape_steps == compare.data.curriculum_steps == 0 and compare.train.init_required
    assert base.data.attribute_loss == 0 and base.data.compare_steps == 0


def test_comparison_recipe_refuses_to_start_without_a_base_teacher():
    with pytest.raises(UserError, match="train.init_from is required"):
        load_teacher_recipe("teacher-easyvqa-compare")
    assert load_teacher_recipe("teacher-easyvqa-compare", ["train.init_from=some/dir"]).train.init_from == "some/dir"


def test_init_from_a_teacher_of_other_sizes_is_one_line_naming_the_tensor():
    from mmmamba_cli.assets import TEACHER_DIR
    from mmmamba_cli.model.model import MMModel
    from mmmamba_cli.teacher.easyvqa_data import easyvqa_tokenizer
    from mmmamba_cli.teacher.train import load_init, teacher_config

    small = load_teacher_recipe("teacher-easyvqa", ["model.hidden_size=32", "model.num_heads=2",
                                                    "model.num_kv_heads=1"]).model
    model = MMModel(teacher_config(small, easyvqa_tokenizer()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError) as e:
        load_init(model, TEACHER_DIR)
    msg = str(e.value)
    assert msg.startswith(f"train.init_from {TEACHER_DIR}: shape mismatch: embed.embed_tokens.weight (40, 128) != (40, 32)")
    assert "\n" not in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing loaded
    same = MMModel(teacher_config(load_teacher_recipe("teacher-easyvqa").model, easyvqa_tokenizer()))
    load_init(same, TEACHER_DIR)  # the shipped teacher fits the recipe it came from
