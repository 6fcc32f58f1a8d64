"""The update schedule: pure, periodic, and exactly the levels' periods."""
from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from nlc.ir.resolve import resolve
from nlc.schedule import UpdateSchedule
from nlc.graph.validate import load_spec

HOPE = "specs/hope.yaml"


def test_hope_token_clock_matches_periods():
    schedule = UpdateSchedule.from_ir(resolve(load_spec(HOPE)))
    fired = {lv: [t for t in range(256) if schedule.fires(lv, t)] for lv in ("cms_fast", "cms_slow", "memory")}
    assert fired["cms_fast"] == list(range(15, 256, 16))
    assert fired["cms_slow"] == [127, 255]
    assert fired["memory"] == list(range(256))  # period 1: after every token
    assert not any(schedule.fires("outer", t) for t in range(64))  # an optimizer level has no token clock


def test_optimizer_groups_and_due_sets():
    # 'outer' becomes the outermost level (every 4 steps); cms_fast gets a faster optimizer
    spec = load_spec(HOPE, ["levels.outer.period={steps: 4}", "levels.fast={type: optimizer}",
                            "levels.cms_fast.outer=fast"])
    schedule = UpdateSchedule.from_ir(resolve(spec))
    assert schedule.due(1) == {"fast"}
    assert schedule.due(4) == {"outer", "fast"}
    assert schedule.due_sets() == [frozenset({"fast"}), frozenset({"fast", "outer"})]
    assert "cms_slow" in schedule.stepped_levels(8) and "cms_slow" not in schedule.stepped_levels(3)
    assert "cms_fast" in schedule.stepped_levels(3)


@given(periods=st.lists(st.integers(1, 6), min_size=1, max_size=4), step=st.integers(1, 500))
def test_due_is_periodic_and_exact(periods, step):
    schedule = UpdateSchedule({}, {f"o{i}": k for i, k in enumerate(periods)}, {})
    cycle = math.lcm(*periods)
    assert schedule.due(step) == schedule.due(step + cycle)
    assert schedule.due(step) == {f"o{i}" for i, k in enumerate(periods) if step % k == 0}
    assert len(schedule.due_sets()) <= 2 ** len(periods)
