"""Objectives: padding never changes a loss, the KL behaves, stage-2 targets stay put."""
from __future__ import annotations


import pytest
import torch

from conftest import image_inputs, tiny_teacher
from mmmamba_cli.data import collate
from mmmamba_cli.distill.layerwise import teacher_trace
from mmmamba_cli.distill.losses import kl_sum
from mmmamba_cli.distill.objectives import OBJECTIVES
from mmmamba_cli.distill.schema import LossSection
from mmmamba_cli.model import MMModel
from mmmamba_cli.model.layout import layer_types_for
from mmmamba_cli.seed import seed_state
from test_distill_setup import make_run

torch.set_num_threads(1)  # the CPU is shared: more threads are much slower here


def pair(attn=()):
    torch.manual_seed(0)
    t = tiny_teacher()
    cfg, sd, _ = seed_state(t.config, t.state_dict(), layer_types_for(list(attn), t.config.num_layers))
    s = MMModel(cfg)
    s.load_state_dict(sd)
    with torch.no_grad():  # move the new parameters off their init so the student is not trivial
        for i in cfg.mamba_layers:
            s.layers[i].mixer.dt_proj.weight.normal_(0, 0.05)
            s.layers[i].mixer.conv1d.weight.add_(0.1 * torch.randn_like(s.layers[i].mixer.conv1d.weight))
    return t.eval(), s.eval()


def items():
    """One image record (12 tokens) and one text record (17 tokens), labels on the last few tokens."""
    t = tiny_teacher()
    ids, px = image_inputs(t.config, 1, text_len=6, seed=1)
    text = torch.randint(10, 128, (17,), generator=torch.Generator().manual_seed(2))
    out = []
    for x, p in ((ids[0], px), (text, None)):
        labels = torch.full_like(x, -100)
        labels[-4:] = x[-4:]
        out.append({"input_ids": x, "labels": labels, "pixel_values": p})
    return out


def per_token(objective: str, teacher, student, batch, loss=LossSection()) -> dict[str, float]:
    obj = OBJECTIVES[objective]
    with torch.no_grad():
        terms = obj.student(student, loss)(batch, obj.targets(teacher, batch, student))
    masks = obj.masks(batch, loss)
    return {t: float(terms[t]) / float(masks[t.split(".")[0]].sum()) for t in terms}


def sums(objective: str, teacher, student, batch, loss=LossSection()):
    obj = OBJECTIVES[objective]
    with torch.no_grad():
        terms = obj.student(student, loss)(batch, obj.targets(teacher, batch, student))
    masks = obj.masks(batch, loss)
    return {t: (float(terms[t]), float(masks[t.split(".")[0]].sum())) for t in terms}


@pytest.mark.parametrize("objective", ["layerwise", "kl"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_does_not_change_the_loss(objective, side):
    teacher, student = pair(attn=(2,))
    a, b = items()
    alone = [sums(objective, teacher, student, collate([x], 0)) for x in (a, b)]
    expected = {t: (alone[0][t][0] + alone[1][t][0]) / (alone[0][t][1] + alone[1][t][1]) for t in alone[0]}
    padded = per_token(objective, teacher, student, collate([a, b], 0, padding_side=side))
    assert padded.keys() == expected.keys()
    for t in expected:
        assert padded[t] == pytest.approx(expected[t], rel=1e-5, abs=1e-9), t
    # the same batch with extra pad columns on both rows
    extra = dict(collate([a, b], 0, padding_side=side))
    pad = torch.zeros(2, 5, dtype=torch.long)
    join = (lambda x, p: torch.cat([x, p], 1)) if side == "right" else (lambda x, p: torch.cat([p, x], 1))
    extra.update(input_ids=join(extra["input_ids"], pad), attention_mask=join(extra["attention_mask"], pad),
                 labels=join(extra["labels"], pad - 100))
    more = per_token(objective, teacher, student, extra)
    for t in expected:
        assert more[t] == pytest.approx(expected[t], rel=1e-5, abs=1e-9), t


def test_kl_is_zero_for_the_teacher_itself_and_scales_with_temperature():
    teacher, student = pair()
    batch = collate(items(), 0)
    same = per_token("kl", teacher, teacher, batch)
    assert abs(same["kl"]) < 1e-6
    kl = per_token("kl", teacher, student, batch)["kl"]
    assert kl > 1e-4
    s, t = torch.randn(2, 3, 11), torch.randn(2, 3, 11)
    m = torch.ones(2, 3, dtype=torch.bool)
    ref = torch.nn.functional.kl_div(torch.log_softmax(s / 2, -1), torch.log_softmax(t / 2, -1), log_target=True,
                                     reduction="sum") * 4
    assert float(kl_sum(s, t, m, temperature=2.0)) == pytest.approx(float(ref), rel=1e-5)


def test_kl_tokens_labels_keeps_only_positions_that_predict_labels():
    teacher, student = pair()
    batch = collate(items(), 0)
    everything = sums("kl", teacher, student, batch)["kl"]
    labels = sums("kl", teacher, student, batch, LossSection(kl_tokens="labels"))["kl"]
    assert labels[1] == float((batch["labels"] != -100).sum()) and labels[1] < everything[1]
    assert everything[1] == float(batch["attention_mask"].sum())


def test_stage2_teacher_targets_do_not_move_while_qkv_train(tmp_path):
    """The real loading path: a teacher loaded from its files, a student whose C/B/x (born from the
    teacher's Q/K/V) train for a few steps of stage 2."""
    from mmmamba_cli.distill.loop import TrainJob, make_accelerator, train
    from mmmamba_cli.distill.pipeline import _load_student, _load_teacher
    from mmmamba_cli.distill.schema import resolve_recipe
    from mmmamba_cli.distill.stages import STAGES

    run, _ = make_run(tmp_path)
    r = resolve_recipe(STAGES[2], "tiny", ["train.steps=4", "train.save_every=0"])
    student, _ = _load_student(run / "seed")
    teacher = _load_teacher(tmp_path / "teacher", student, r)
    assert not {p.data_ptr() for p in teacher.parameters()} & {p.data_ptr() for p in student.parameters()}
    batch = collate(items(), 0)
    layers = student.config.mamba_layers
    before = teacher_trace(teacher, batch, layers)
    c_before = student.layers[0].mixer.C_proj.weight.detach().clone()
    dataset = [dict(it) for it in items()] * 4
    (tmp_path / "work").mkdir()
    train(TrainJob(STAGES[2], r, student, teacher, dataset, tmp_path / "work", 0), make_accelerator(r.train))
    after = teacher_trace(teacher, batch, layers)
    assert not torch.equal(student.layers[0].mixer.C_proj.weight, c_before)  # Q/K/V did train
    for i in layers:
        assert torch.equal(before.targets[i], after.targets[i]) and torch.equal(before.inputs[i], after.inputs[i])
    assert torch.equal(teacher.layers[0].mixer.q_proj.weight, c_before)  # the teacher's copy is the original


def test_hybrid_layers_are_not_distilled_layerwise():
    teacher, student = pair(attn=(0, 3))
    terms = per_token("layerwise", teacher, student, collate(items(), 0))
    assert sorted(terms) == ["mse", "mse.layer1", "mse.layer2"]
