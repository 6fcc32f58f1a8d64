"""Smoke test of benchmarks/compile.py: its pure helpers on known values, the hand-written
Titans twin's exactness, and one run on toy settings (one spec, dynamo-only backend)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import compile as bench


def test_interleaved_calls_abba():
    calls = []
    times = bench.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert [len(t) for t in times.values()] == [3, 3]
    assert all(t >= 0 for ts in times.values() for t in ts)


def test_paired_ratio_is_the_median_of_per_round_speed_ratios():
    # rounds: hand/gen = 0.5, 2.0, 1.0 -> median 1.0 (a mean would say 1.17)
    assert bench.paired_ratio([2.0, 1.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    assert bench.paired_ratio([1.0, 1.0], [0.9, 0.95]) == pytest.approx(0.925)


def test_hand_written_twin_is_exact_at_a_partial_chunk():
    """Same weights -> the same logits and gradients; 37 tokens end inside the first chunk."""
    m = bench.check_match(seq=37, batch=1)
    assert m["params_gen"] == m["params_hand"] > 0
    assert m["logits_max_abs_diff"] <= 1e-5 * max(1.0, m["logits_max_abs"])
    assert m["grad_max_abs_diff"] <= 1e-5


def test_hand_config_refuses_another_block():
    import nlc
    with pytest.raises(ValueError, match="not the hand-written block"):
        bench.hand_config(nlc.compile(bench.spec_path("transformer")))


def test_toy_run_writes_every_number(tmp_path):
    settings = bench.Settings(specs=("transformer",), build_reps=1, compile_batch=(1, 16),
                              backend="eager", batch=1, seq=64, rounds=2, compile_titans=False,
                              match_seq=20, threads=1)
    out = tmp_path / "compile.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        res = bench.run(settings, out=str(out), log=lambda msg: None)
        assert torch.get_num_threads() == 2  # the run's 1 thread is undone
    finally:
        torch.set_num_threads(threads)
    data = json.loads(out.read_text())
    assert data["table"] == res["table"] and "transformer" in res["table"]
    assert data["meta"]["settings"]["threads"] == 1
    (row,) = data["specs"]
    assert row["spec"] == "transformer" and "error" not in row, row
    assert row["params"] == sum(p.numel() for p in __import__("nlc").compile(
        bench.spec_path("transformer")).parameters())
    for key in ("build_s", "build_min_s", "eager_fwd_s"):
        assert 0 < row[key] < 60, (key, row[key])
    assert row["build_min_s"] <= row["build_s"]
    assert row["graphs"] == 1 and row["graph_breaks"] == 0  # one fullgraph capture
    (eager,) = data["titans"]["rows"]
    assert eager["mode"] == "eager" and len(eager["gen_times_s"]) == len(eager["hand_times_s"]) == 2
    assert eager["ratio"] == pytest.approx(bench.paired_ratio(eager["gen_times_s"], eager["hand_times_s"]))
    assert eager["gen_tok_s"] == pytest.approx(64 / eager["gen_s"])
    assert math.isfinite(eager["ratio"]) and eager["ratio"] > 0
