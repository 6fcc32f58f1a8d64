"""Smoke test of benchmarks/scaling.py: ``--quick`` in process (toy shapes, seconds), the
JSON's rows, per-kind ratios and plot; the budget logic on its own (no measuring)."""
from __future__ import annotations

import json
import math

import pytest

from benchmarks import scaling
from benchmarks._rules import RuleSpec, rule_specs

KINDS = ["linear_attn", "titans", "cms_chain", "sdpa_block"]


def _finite_positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_quick_run_measures_every_kind_at_every_length(tmp_path):
    out = tmp_path / "scaling.json"
    code = scaling.main(["--quick", "--rules", ",".join(KINDS), "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["meta"]["quick"] and data["meta"]["seqs"] == scaling.QUICK_SEQS
    assert {(r["rule"], r["seq"]) for r in data["rows"]} == {
        (k, T) for k in KINDS for T in scaling.QUICK_SEQS}
    for r in data["rows"]:
        assert r["status"] == "ok", r
        for key in ("fwdbwd_tok_s", "fwdbwd_s", "peak_bytes", "peak_bytes_per_token"):
            assert _finite_positive(r[key]), (r["rule"], r["seq"], key, r[key])
        assert r["peak_bytes_per_token"] == pytest.approx(
            r["peak_bytes"] / (data["meta"]["shape"]["batch"] * r["seq"]))
    assert data["cut"] == []
    assert [e["rule"] for e in data["summary"]] == [n for n in scaling.DEFAULT_RULES
                                                    if n in KINDS]
    for e in data["summary"]:
        assert _finite_positive(e["tok_s_ratio"]) and _finite_positive(e["peak_slope"]), e
        assert (e["t_lo"], e["t_hi"]) == (64, 128)
        assert e["flat_pass"] == (e["tok_s_ratio"] >= scaling.FLAT_MIN)
        assert e["linear_pass"] == (0.8 <= e["peak_slope"] <= 1.25)
    assert {"torch", "threads", "loadavg_1m_start_end", "date", "command"} <= set(data["meta"])
    assert "tok/s ratio" in data["table"] and "peak slope" in data["table"]
    png = tmp_path / "scaling.png"
    assert data["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_kind_is_refused():
    with pytest.raises(SystemExit):
        scaling.main(["--quick", "--rules", "titans,no_such_rule", "--json", ""])


def test_rows_cut_by_the_budget_are_listed_not_dropped():
    spec = next(sp for sp in rule_specs() if sp.name == "titans")
    rows = [{"rule": "titans", "seq": T, "status": "ok", "fwdbwd_s": s, "fwdbwd_tok_s": T / s,
             "peak_bytes": 1000 * T} for T, s in ((512, 2.0), (1024, 4.0))]
    # the estimate scales the last row by the growth seen so far (here linear in T)
    assert scaling.estimate_s(rows, "titans", 2048, scaling.TIMING) == pytest.approx(
        (scaling.TIMING["min_reps"] + 2) * 8.0)
    skipped = scaling.run_row(spec, scaling.QUICK, 2048, 16, scaling.TIMING, rows,
                              row_budget=10.0, left=100.0)
    assert skipped["status"] == "skipped" and "estimated" in skipped["note"]
    after = scaling.run_row(spec, scaling.QUICK, 4096, 16, scaling.TIMING, rows + [skipped],
                            row_budget=1e9, left=1e9)
    assert after["status"] == "skipped" and after["note"] == "T=2048 was cut"
    summary = scaling.summarize(rows + [skipped, after], [spec], [512, 1024, 2048, 4096])
    assert summary[0]["t_hi"] == 1024 and summary[0]["flat_pass"] is None  # partial range
    assert summary[0]["tok_s_ratio"] == pytest.approx(1.0) and summary[0]["peak_slope"] == 1.0


def test_a_row_past_its_deadline_stops_and_a_row_that_raises_keeps_its_error():
    spec = next(sp for sp in rule_specs() if sp.name == "hope_selfmod")
    late = scaling.run_row(spec, scaling.QUICK, 128, 16, scaling.QUICK_TIMING, [],
                           row_budget=1e-3, left=100.0)
    assert late["status"] == "timeout" and "row budget" in late["note"]

    def broken(s, chunk, fast):
        raise ValueError("no such block\nsecond line")

    bad = scaling.run_row(RuleSpec("broken", "raises", broken, lambda s, T, C: 0.0),
                          scaling.QUICK, 64, 16, scaling.QUICK_TIMING, [], 10.0, 10.0)
    assert bad["status"] == "error" and bad["note"] == "ValueError: no such block"


def test_the_memory_guard_scales_the_largest_peak_per_token():
    from benchmarks._harness import available_bytes, estimate_peak

    assert estimate_peak([], 2048) == 0.0  # nothing measured yet: the first row always runs
    # the larger per-token peak (C=16 at 512: 2 MiB a token) doubled at 2048 tokens
    assert estimate_peak([(512, 512 * 2**21), (2048, 2048 * 2**20)], 2048) == 2 * 2048 * 2**21
    assert available_bytes() > 0
