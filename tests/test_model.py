"""Decode equivalences: prefill + step-by-step decode == one full forward."""
from __future__ import annotations

import pytest
import torch

from conftest import image_inputs, randomize, tiny_teacher
from mmmamba_cli.io.load import build_model
from mmmamba_cli.model.layout import layer_types_for
from mmmamba_cli.seed import seed_state


def student_of(teacher, attn_layers=(), seed=0):
    config, sd, _ = seed_state(teacher.config, teacher.state_dict(),
                               layer_types_for(list(attn_layers), teacher.config.num_layers))
    model = build_model(config, sd, "test")
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # move the new parameters off their init so the test can fail
        for name, p in model.named_parameters():
            if any(k in name for k in ("conv1d", "dt_proj", "dt_bias", "A_log")):
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


MODELS = {
    "teacher": lambda t: t,
    "linear": lambda t: student_of(t),
    "hybrid": lambda t: student_of(t, attn_layers=(0, 2)),
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_prefill_then_decode_matches_full_forward(kind):
    model = MODELS[kind](tiny_teacher())
    assert model.config.kind == kind
    ids, pix = image_inputs(model.config, batch=2, text_len=12)
    n_prefill = ids.shape[1] - 8
    with torch.no_grad():
        full = model(ids, pix)
        cache = model.new_cache(2, capacity=4)  # small capacity: exercises growth
        steps = [model(ids[:, :n_prefill], pix, cache=cache)]
        for t in range(n_prefill, ids.shape[1]):
            steps.append(model(ids[:, t:t + 1], cache=cache))
    inc = torch.cat(steps, 1)
    assert (inc - full).abs().max().item() < 1e-4


@pytest.mark.parametrize("kind", ["linear", "hybrid"])
def test_left_padding_never_reaches_state(kind):
    """A left-padded row gives the same logits on its real tokens as the row alone."""
    model = MODELS[kind](tiny_teacher())
    ids, pix = image_inputs(model.config, batch=1, text_len=10)
    pad = 5
    padded = torch.cat([torch.full((1, pad), 77), ids], 1)  # garbage pad ids, masked out
    mask = torch.cat([torch.zeros(1, pad), torch.ones_like(ids)], 1).long()
    with torch.no_grad():
        alone = model(ids, pix)
        both = model(padded, pix, attention_mask=mask)[:, pad:]
    assert (alone - both).abs().max().item() < 1e-4


def test_student_differs_from_teacher():
    t = tiny_teacher()
    s = student_of(t)
    ids, pix = image_inputs(t.config)
    with torch.no_grad():
        assert (t(ids, pix) - s(ids, pix)).abs().max() > 1e-3


def test_generate_greedy_matches_argmax_rollout():
    from mmmamba_cli.runtime import SamplingSettings, generate

    model = student_of(tiny_teacher(), attn_layers=(1,))
    ids, pix = image_inputs(model.config)
    out = generate(model, ids, pix, settings=SamplingSettings(max_new_tokens=5, eos_token_id=-1))[0]
    seq = ids
    with torch.no_grad():
        for _ in range(5):
            nxt = model(seq, pix)[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert out == seq[0, ids.shape[1]:].tolist()
