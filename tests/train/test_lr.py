"""Learning-rate schedules: hand-computed values at known updates, and invariants."""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nlc.training.lr import lr_factor


def test_warmup_then_cosine_hand_values():
    # warm-up 4 of 12 updates: 1/4, 2/4, 3/4, 1; then p = (n - 5) / 8
    assert [lr_factor("cosine", 4, n, 12) for n in (1, 2, 3, 4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor("cosine", 4, 5, 12) == 1.0                       # p = 0
    assert lr_factor("cosine", 4, 9, 12) == pytest.approx(0.5)        # p = 1/2
    assert lr_factor("cosine", 4, 12, 12) == pytest.approx((1 + math.cos(math.pi * 7 / 8)) / 2)


def test_linear_and_constant_hand_values():
    assert lr_factor("linear", 0, 1, 10) == 1.0
    assert lr_factor("linear", 0, 6, 10) == pytest.approx(0.5)
    assert lr_factor("linear", 0, 10, 10) == pytest.approx(0.1)
    assert [lr_factor("constant", 2, n, 5) for n in range(1, 6)] == [0.5, 1.0, 1.0, 1.0, 1.0]


def test_updates_count_from_one():
    with pytest.raises(ValueError, match="count from 1"):
        lr_factor("cosine", 0, 0, 10)


@given(schedule=st.sampled_from(["cosine", "linear", "constant"]), warmup=st.integers(0, 20),
       total=st.integers(1, 200), data=st.data())
def test_factor_positive_at_most_one_and_not_increasing_after_warmup(schedule, warmup, total, data):
    n = data.draw(st.integers(1, total))
    factor = lr_factor(schedule, warmup, n, total)
    assert 0 < factor <= 1
    if n > warmup and n < total:
        assert lr_factor(schedule, warmup, n + 1, total) <= factor
    if n < warmup:
        assert lr_factor(schedule, warmup, n + 1, total) > factor
