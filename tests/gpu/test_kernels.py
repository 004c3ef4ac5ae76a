"""mamba-ssm Triton kernels vs the torch reference on CUDA: outputs, final states, gradients, step.

Run with ``pytest -m gpu tests/gpu``; skipped without CUDA or mamba-ssm (see conftest.py).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmmamba_cli.ops import kernels, ssd_scan, ssd_step, ssd_update

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(not kernels.kernels_available(),
                       reason=f"mamba-ssm kernels unavailable: {kernels._load_kernels()[1]}"),
]

CHUNK = 128
NAMES = ["x", "dt", "A", "B", "C", "initial_state"]
# relative Frobenius error bounds: Triton dots run in tf32 for fp32 and round to bf16 for bf16
TOL = {torch.float32: {"out": 5e-3, "grad": 1e-2}, torch.bfloat16: {"out": 3e-2, "grad": 5e-2}}


def make_inputs(l: int, dtype: torch.dtype, b: int = 2, h: int = 4, p: int = 64, n: int = 64,
                seed: int = 0) -> dict[str, torch.Tensor]:
    """As in the model: x, B, C in the activation dtype; dt, A and the state in fp32."""
    g = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device="cuda")

    return {
        "x": randn(b, l, h, p).to(dtype),
        "dt": F.softplus(randn(b, l, h) - 3.0),  # about 0.01 .. 0.5
        "A": -(0.5 + 2 * torch.rand(h, generator=g, device="cuda")),
        "B": (randn(b, l, h, n) / n**0.5).to(dtype),
        "C": (randn(b, l, h, n) / n**0.5).to(dtype),
        "initial_state": randn(b, h, p, n),
    }


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    assert torch.isfinite(a).all(), "non-finite values"
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def run(t: dict, impl: str, init: bool, seed: int = 1):
    """Scan with ``impl``; returns y, final state and the gradients of a random functional."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in t.items()}
    y, S = ssd_scan(leaves["x"], leaves["dt"], leaves["A"], leaves["B"], leaves["C"], CHUNK,
                    initial_state=leaves["initial_state"] if init else None, impl=impl)
    g = torch.Generator(device="cuda").manual_seed(seed)
    loss = (y.float() * torch.randn(y.shape, generator=g, device="cuda")).sum() \
        + (S * torch.randn(S.shape, generator=g, device="cuda")).sum()
    loss.backward()
    grads = {k: v.grad for k, v in leaves.items() if v.grad is not None}
    return y.detach(), S.detach(), grads


@pytest.mark.parametrize("init", [False, True])
@pytest.mark.parametrize("l", [1, 255, 1000, 4097])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scan_kernel_matches_torch(dtype, l, init):
    t = make_inputs(l, dtype)
    y_k, S_k, g_k = run(t, "kernel", init)
    y_t, S_t, g_t = run(t, "torch", init)
    assert y_k.dtype == y_t.dtype == dtype and S_k.dtype == S_t.dtype == torch.float32
    assert y_k.shape == y_t.shape and S_k.shape == S_t.shape
    tol = TOL[dtype]
    assert rel_err(y_k, y_t) < tol["out"], "y"
    assert rel_err(S_k, S_t) < tol["out"], "final state"
    expected = NAMES if init else NAMES[:-1]
    assert sorted(g_k) == sorted(g_t) == sorted(expected)
    for name in expected:
        assert rel_err(g_k[name], g_t[name]) < tol["grad"], f"d{name}"


def test_auto_picks_kernel_on_cuda():
    t = make_inputs(300, torch.bfloat16)
    args = (t["x"], t["dt"], t["A"], t["B"], t["C"], CHUNK)
    y_auto, S_auto = ssd_scan(*args, initial_state=t["initial_state"], impl="auto")
    y_kern, S_kern = ssd_scan(*args, initial_state=t["initial_state"], impl="kernel")
    assert torch.equal(y_auto, y_kern) and torch.equal(S_auto, S_kern)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_update_kernel_matches_step(dtype):
    t = make_inputs(16, dtype)
    state_k = t["initial_state"].clone()
    state_t = t["initial_state"].clone()
    for i in range(16):
        step = (t["x"][:, i], t["dt"][:, i], t["A"], t["B"][:, i], t["C"][:, i])
        y_k = ssd_update(state_k, *step, impl="kernel")  # updates state_k in place
        y_t, state_t = ssd_step(state_t, *step)
        assert y_k.dtype == dtype and state_k.dtype == torch.float32
        assert rel_err(y_k, y_t) < (1e-5 if dtype == torch.float32 else 1e-2), f"y at step {i}"
    assert rel_err(state_k, state_t) < 1e-5, "state"
