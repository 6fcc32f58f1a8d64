"""The comparison's plans: probes keep the token budget, name known models, follow a
``--models`` subset; unknown names and impossible lengths are clear errors."""
from __future__ import annotations

import pytest

from nlc.bench.plan import COST_ORDER, MODELS, MODES, Probe, bench_model, plan_for
from nlc.errors import NLCError


@pytest.mark.parametrize("mode", list(MODES))
def test_every_probe_names_a_model_of_its_plan_and_keeps_the_tokens_per_step(mode):
    plan = MODES[mode]
    labels = {m.label for m in plan.bench_models()}
    for probe in plan.probes:
        assert probe.model in labels
        changed = plan.probe_plan(probe)
        assert changed.batch * changed.seq_len == plan.batch * plan.seq_len
        assert changed.tokens_per_run == plan.tokens_per_run * probe.steps_factor
        assert changed.probes == () and changed.models == ()


def test_cost_order_covers_every_model():
    assert sorted(COST_ORDER) == sorted(m.label for m in MODELS)


def test_a_model_subset_keeps_only_its_probes():
    plan = plan_for("full", ("transformer", "hope_no_cms"))
    assert {p.model for p in plan.probes} == {"Transformer++", "HOPE w/o CMS"}
    assert len(plan.probes) == 3
    assert [m.label for m in plan.bench_models()] == ["Transformer++", "HOPE w/o CMS"]


def test_bad_names_and_lengths_are_clear_errors():
    with pytest.raises(NLCError, match=r"unknown model\(s\) \['gpt5'\].*hope_cms_single"):
        bench_model("gpt5")
    with pytest.raises(NLCError, match="seq_len 96 does not divide the 1024 tokens"):
        MODES["full"].probe_plan(Probe("odd", "HOPE", "context", "sequences of 96 tokens", seq_len=96))
    with pytest.raises(NLCError, match="unknown benchmark mode"):
        plan_for("huge")
