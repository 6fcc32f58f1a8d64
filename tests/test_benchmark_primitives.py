"""Smoke test of benchmarks/primitives.py: quick mode on toy shapes, JSON completeness."""
from __future__ import annotations

import json
import math

import pytest

from benchmarks import _flops, primitives as bench
from benchmarks._harness import mm
from benchmarks._rules import rule_specs
from benchmarks._shapes import FULL

NUMBERS = ("fwd_s", "fwdbwd_s", "fwd_tok_s", "fwdbwd_tok_s", "fwd_us_per_tok",
           "fwdbwd_us_per_tok")
FAST_NUMBERS = NUMBERS + ("flops_per_token_fwd", "fwd_flops_s", "fwdbwd_flops_s", "peak_mib",
                          "saved_mib")


def _positive(row: dict, keys) -> None:
    for k in keys:
        v = row.get(k)
        assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, (row["rule"], k, v)


def test_quick_tiny_run_writes_every_row(tmp_path):
    out = tmp_path / "primitives.json"
    # no time budget (every row runs); compile rows (dynamo capture, "eager" backend in
    # tiny mode) for the yardstick and linear attention only, to stay well under 30 s
    res = bench.run(quick=True, tiny=True, out=str(out), verbose=False,
                    budget_s=float("inf"), compile_rules=["linear_attn"])
    data = json.loads(out.read_text())
    assert data["meta"]["quick"] and data["meta"]["tiny"]
    rows = data["rows"]
    specs = {sp.name: sp for sp in rule_specs()}
    assert set(data["meta"]["rules"]) == set(specs)
    for name, spec in specs.items():
        fast = [r for r in rows if r["rule"] == name and r["impl"] == "fast"
                and r["mode"] == "eager"]
        assert fast and all(r["status"] == "ok" for r in fast), (name, fast)
        for r in fast:
            _positive(r, FAST_NUMBERS)
            assert r["finite"], name
        if spec.fast_rule:
            ref = [r for r in rows if r["rule"] == name and r["impl"] == "reference"]
            assert len(ref) == 1 and ref[0]["status"] == "ok", (name, ref)
            _positive(ref[0], NUMBERS)
    compiled = [r for r in rows if r["mode"] != "eager"]
    assert {r["rule"] for r in compiled} == {"sdpa_block", "linear_attn"}
    for r in compiled:
        assert r["mode"] == "compile" and r["status"] == "ok", r
        _positive(r, NUMBERS + ("compile_s", "peak_mib"))
    for t in data["targets"]:
        assert t["value"] is None or math.isfinite(t["value"])
        assert t["pass"] in (None, True, False)
    assert "Targets" in res["table"]


def test_flop_formulas():
    s = FULL
    D, H, d = s.dh, s.heads, s.d
    # linear attention (no UT transform, W = D): 4 C D + 4 D^2 per head and token
    for C in (16, 64):
        assert _flops.flops_matrix_rule(s, C, b=False, wk=False) == pytest.approx(
            H * (4 * C * D + 4 * D * D))
    # yardstick: QKV + out 8 d^2, causal attention 2 d (T + 1), MLP 4 d h
    T = 512
    assert _flops.flops_sdpa_block(s, T) == pytest.approx(
        8 * d * d + 2 * d * (T + 1) + 4 * d * s.mlp_hidden)
    assert _flops.attn_keys_per_query(8, 2) == pytest.approx((1 + 2 * 7) / 8)
    assert mm(2, 3, 4) == 48
    # deep memory: the per-chunk formula quoted in flops_deep's docstring
    C, dims = 64, [64, 256, 64]
    sig = 2 * 64 * 256
    per_chunk = 2 * C ** 3 + 2 * C ** 2 + C * (12 * sig - 2 * 64 * 256) + 2 * C * C * 640
    assert _flops.flops_deep(s, C, dims) == pytest.approx(H * per_chunk / C)
