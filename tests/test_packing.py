"""Sequence packing: a packed row gives every record exactly what it gets alone (no state crosses).

The parity test runs the models in fp64 (dt and the norms still compute in fp32 inside), so that
what is left is rounding (about 1e-7 relative) and any leak across a boundary would stand out;
fp32 rounding alone differs by up to ~1e-4 relative on summed gradients.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_teacher
from mmmamba_cli.data import IGNORE_INDEX, collate, pack
from mmmamba_cli.io.load import build_model
from mmmamba_cli.model.layout import layer_types_for
from mmmamba_cli.ops import ssd_chunked, ssd_naive
from mmmamba_cli.seed import seed_state

torch.set_num_threads(1)


def student_of(teacher, attn_layers=()):
    config, sd, _ = seed_state(teacher.config, teacher.state_dict(),
                               layer_types_for(list(attn_layers), teacher.config.num_layers))
    model = build_model(config, sd, "test")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the new parameters off their init (an identity conv hides conv leaks)
        for name, p in model.named_parameters():
            if any(k in name for k in ("conv1d", "dt_proj", "dt_bias", "A_log")):
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    for layer in model.layers:  # short chunks: packed boundaries fall inside and between chunks
        if hasattr(layer.mixer, "settings"):
            layer.mixer.settings = dataclasses.replace(layer.mixer.settings, chunk_size=16)
    return model


MODELS = {"teacher": lambda t: t, "linear": student_of, "hybrid": lambda t: student_of(t, (0, 2))}


def records(config, seed=0):
    """Text-only and image records of uneven lengths, with prompt tokens unsupervised."""
    g = torch.Generator().manual_seed(seed)
    s, n_img = config.vision.image_size, config.vision.tokens_per_tile
    items = []
    for k, length in enumerate([23, 9, 40, 17, 5, 31]):
        ids = torch.randint(10, config.vocab_size, (length,), generator=g)
        pix = None
        if k % 3 == 0:
            ids = torch.cat([ids[:2], torch.full((n_img,), config.img_context_token_id), ids[2:]])
            pix = torch.randn(1, 3, s, s, generator=g)
        labels = ids.clone()
        labels[: len(ids) // 2] = IGNORE_INDEX
        items.append({"input_ids": ids, "labels": labels, "pixel_values": pix})
    return items


def token_losses(model, batch):
    """Per-position next-token CE (0 where unsupervised) and the logits."""
    logits = model(batch["input_ids"], batch["pixel_values"], batch["attention_mask"], seq_idx=batch.get("seq_idx"))
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), reduction="none",
                         ignore_index=IGNORE_INDEX).view(logits.shape[0], -1)
    return ce, logits


def close(got, want, tol=1e-5) -> bool:
    """Equal up to rounding: within ``tol`` relative to the tensor's scale (at least 1)."""
    return bool((got - want).abs().max() <= tol * max(1.0, float(want.detach().abs().max())))


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", list(MODELS))
def test_packed_rows_give_each_record_its_own_losses_and_gradients(kind):
    model = MODELS[kind](tiny_teacher()).double()
    items = [{**it, "pixel_values": None if it["pixel_values"] is None else it["pixel_values"].double()}
             for it in records(model.config)]
    packed = pack(items, pad_token_id=0, max_length=64)
    assert packed["input_ids"].shape[0] < len(items)  # several records share a row
    ce, logits = token_losses(model, packed)
    ce.sum().backward()
    g_packed = grads(model)
    model.zero_grad()
    total = 0.0
    for r in range(packed["input_ids"].shape[0]):
        for j in packed["seq_idx"][r].unique().tolist():
            where = (packed["seq_idx"][r] == j).nonzero()[:, 0]
            if not packed["attention_mask"][r, where[0]]:
                continue  # the row's padding
            start, end = int(where[0]), int(where[-1]) + 1
            item = next(it for it in items if torch.equal(it["input_ids"], packed["input_ids"][r, start:end]))
            alone = collate([item], 0)
            ce_1, logits_1 = token_losses(model, alone)
            assert close(logits[r, start:end], logits_1[0])
            assert close(ce[r, start:end - 1], ce_1[0])
            total = total + ce_1.sum()
    total.backward()
    g_alone = grads(model)
    assert set(g_alone) == set(g_packed)
    for name in g_alone:
        assert close(g_packed[name], g_alone[name]), name


@pytest.mark.parametrize("kind", ["linear", "hybrid"])
def test_no_state_crosses_a_boundary(kind):
    model = MODELS[kind](tiny_teacher()).double()
    items = [it for it in records(model.config) if it["pixel_values"] is None][:2]
    before = pack(items, 0, 64)
    items[0] = {**items[0], "input_ids": torch.randint(10, model.config.vocab_size, items[0]["input_ids"].shape)}
    after = pack(items, 0, 64)
    assert before["input_ids"].shape[0] == 1
    n0 = len(items[0]["input_ids"])
    with torch.no_grad():
        a = model(before["input_ids"], attention_mask=before["attention_mask"], seq_idx=before["seq_idx"])
        b = model(after["input_ids"], attention_mask=after["attention_mask"], seq_idx=after["seq_idx"])
    assert (a[0, :n0] - b[0, :n0]).abs().max() > 1e-3  # the first record did change
    assert (a[0, n0:] - b[0, n0:]).abs().max() < 1e-6  # the second one sees none of it (rounding aside)


def test_pack_layout_positions_and_labels():
    items = [{"input_ids": torch.arange(1, n + 1), "labels": torch.arange(1, n + 1), "pixel_values": None}
             for n in (5, 3, 6, 2)]
    out = pack(items, pad_token_id=0, max_length=8)
    assert out["input_ids"].tolist() == [[1, 2, 3, 4, 5, 1, 2, 3], [1, 2, 3, 4, 5, 6, 1, 2]]
    assert out["seq_idx"].tolist() == [[0] * 5 + [1] * 3, [0] * 6 + [1] * 2]
    assert out["labels"][0].tolist() == [IGNORE_INDEX, 2, 3, 4, 5, IGNORE_INDEX, 2, 3]
    with pytest.raises(ValueError, match="does not fit"):
        pack(items, 0, max_length=4)


def test_ssd_scan_resets_at_seq_idx_changes_with_gradients():
    g = torch.Generator().manual_seed(0)
    b, l, h, p, n = 2, 45, 3, 4, 5
    x, B, C = (torch.randn(b, l, h, d, generator=g, dtype=torch.float64, requires_grad=True) for d in (p, n, n))
    dt = (torch.rand(b, l, h, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    A = (-torch.rand(h, generator=g, dtype=torch.float64) - 0.5).requires_grad_()
    seq = torch.zeros(b, l, dtype=torch.long)
    seq[0, 10:], seq[0, 16:], seq[0, 33:], seq[1, 8:] = 1, 2, 3, 1
    inputs = (x, dt, A, B, C)
    y_ref, S_ref = ssd_naive(*inputs, seq_idx=seq)
    g_ref = torch.autograd.grad(y_ref.square().sum() + S_ref.sum(), inputs)
    for chunk in (4, 16, 64):
        y, S = ssd_chunked(*inputs, chunk_size=chunk, seq_idx=seq)
        assert torch.allclose(y, y_ref, atol=1e-12) and torch.allclose(S, S_ref, atol=1e-12)
        for got, want in zip(torch.autograd.grad(y.square().sum() + S.sum(), inputs), g_ref):
            assert torch.allclose(got, want, atol=1e-10)
    for r in range(b):  # each sequence alone gives the same outputs
        for s in seq[r].unique():
            m = seq[r] == s
            y1, _ = ssd_naive(x[r:r + 1, m], dt[r:r + 1, m], A, B[r:r + 1, m], C[r:r + 1, m])
            assert torch.allclose(y1, y_ref[r:r + 1, m], atol=1e-12)


@pytest.mark.parametrize("objective", ["layerwise", "kl"])
def test_distillation_terms_and_token_counts_are_the_same_packed(objective):
    from mmmamba_cli.distill.objectives import OBJECTIVES
    from mmmamba_cli.distill.schema import LossSection

    teacher = tiny_teacher().double()
    student = student_of(teacher, (2,)).double()
    loss = LossSection(ce_weight=0.5, kl_tokens="labels")
    obj = OBJECTIVES[objective]
    items = [{**it, "pixel_values": None if it["pixel_values"] is None else it["pixel_values"].double()}
             for it in records(teacher.config)]
    module = obj.student(student, loss)
    results = []
    for batch in (collate(items, 0), pack(items, 0, 64)):
        terms = module(batch, obj.targets(teacher, batch, student))
        counts = {k: int(m.sum()) for k, m in obj.masks(batch, loss).items()}
        results.append(({k: float(v.detach()) for k, v in terms.items()}, counts))
    (plain, n_plain), (packed, n_packed) = results
    assert n_plain == n_packed
    assert plain.keys() == packed.keys()
    for k in plain:
        assert abs(plain[k] - packed[k]) <= 1e-5 * max(1.0, abs(plain[k])), k


def test_training_with_data_pack_logs_the_same_losses(tmp_path):
    import json

    from mmmamba_cli.distill import run_stage
    from test_distill_setup import make_run

    run, data = make_run(tmp_path)
    logs = {}
    for pack_on in (False, True):
        out = run_stage(run, 1, "tiny", ["train.steps=2", f"data.pack={str(pack_on).lower()}"], data=data,
                        force=True)
        logs[pack_on] = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for plain, packed in zip(logs[False], logs[True]):
        assert packed["tokens"] == plain["tokens"]
        assert packed["loss"] == pytest.approx(plain["loss"], rel=1e-5)
        assert packed["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-4)


def test_dry_run_prints_memory_per_process(tmp_path):
    from typer.testing import CliRunner

    from mmmamba_cli.cli.main import app
    from mmmamba_cli.errors import UserError
    from test_distill_setup import make_run

    run, data = make_run(tmp_path)
    result = CliRunner().invoke(app, ["distill", "--stage", "all", "-r", str(run), "--recipe", "tiny", "--dry-run",
                                      "--processes", "2", f"data.path={data}"])
    assert result.exit_code == 0, result.output
    for stage in ("stage1", "stage2", "stage3"):
        assert f"{stage}: 2 process(es)" in result.output
    assert result.output.count("activations") == 3 and "total per process" in result.output
    assert not (run / "stage1").exists()  # nothing trained
    bad = CliRunner().invoke(app, ["distill", "--stage", "1", "-r", str(run), "--recipe", "tiny", "--dry-run",
                                   "--processes", "3"])
    assert isinstance(bad.exception, UserError) and "not a multiple" in str(bad.exception)  # run_app: exit 2


def test_dry_run_divides_the_student_under_fsdp(tmp_path):
    from mmmamba_cli.distill.estimate import estimate_run
    from test_distill_setup import make_run

    run, _ = make_run(tmp_path)
    ddp, fsdp = (estimate_run(run, 3, "tiny", [f"train.sharding={s}"], processes=2).bytes for s in ("none", "fsdp"))
    for key in ("student parameters", "gradients", "optimizer (AdamW)"):
        assert fsdp[key] == ddp[key] // 2, key
    assert fsdp["teacher parameters"] == ddp["teacher parameters"] and "FSDP gathered units" not in ddp
    assert 0 < fsdp["FSDP gathered units"] < ddp["student parameters"]
