"""KL and CE from hidden states + head weight in token chunks == the same losses on full logits."""
import pytest
import torch
import torch.nn.functional as F

from mmmamba_cli.ops.divergence import head_ce_sum, head_kl_sum

torch.set_num_threads(1)


def inputs(seed=0, b=2, l=13, c=8, v=50):
    g = torch.Generator().manual_seed(seed)
    h_s = torch.randn(b, l, c, generator=g, dtype=torch.float64, requires_grad=True)
    w_s = torch.randn(v, c, generator=g, dtype=torch.float64, requires_grad=True)
    h_t = torch.randn(b, l, c, generator=g, dtype=torch.float64)
    w_t = torch.randn(v, c, generator=g, dtype=torch.float64)
    mask = torch.rand(b, l, generator=g) > 0.3
    targets = torch.randint(0, v, (b, l), generator=g)
    return h_s, w_s, h_t, w_t, mask, targets


@pytest.mark.parametrize("chunk", [1, 4, 1000])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_head_kl_equals_kl_of_full_logits(chunk, temperature):
    h_s, w_s, h_t, w_t, mask, _ = inputs()
    s, t = (h_s @ w_s.T)[mask] / temperature, (h_t @ w_t.T)[mask] / temperature
    ref = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="sum") * temperature ** 2
    g_ref = torch.autograd.grad(ref, (h_s, w_s))
    got = head_kl_sum(h_s, w_s, h_t, w_t, mask, temperature, chunk=chunk)
    assert torch.allclose(got.double(), ref, rtol=1e-6)
    for a, b in zip(torch.autograd.grad(got, (h_s, w_s)), g_ref):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_head_ce_equals_cross_entropy_of_full_logits(chunk):
    h_s, w_s, _, _, mask, targets = inputs(1)
    ref = F.cross_entropy((h_s @ w_s.T)[mask], targets[mask], reduction="sum")
    g_ref = torch.autograd.grad(ref, (h_s, w_s))
    got = head_ce_sum(h_s, w_s, targets, mask, chunk=chunk)
    assert torch.allclose(got.double(), ref, rtol=1e-6)
    for a, b in zip(torch.autograd.grad(got, (h_s, w_s)), g_ref):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)


def test_frozen_head_gets_no_gradient_and_empty_masks_give_zero():
    h_s, w_s, h_t, w_t, mask, targets = inputs(2)
    w_s = w_s.detach()
    head_kl_sum(h_s, w_s, h_t, w_t, mask).backward()
    assert h_s.grad is not None and w_s.grad is None
    none = torch.zeros_like(mask)
    assert head_kl_sum(h_s, w_s, h_t, w_t, none).item() == 0.0
    assert head_ce_sum(h_s, w_s, targets, none).item() == 0.0
