"""cl_metrics on hand-computed matrices, and the invariants relating its three numbers."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, strategies as st

from nlc.continual import ContinualError, cl_metrics

# R[k, j]: accuracy on task j after stage k. Task 0 peaks after stage 1 (0.95 > 0.8), so
# Chaudhry forgetting (best earlier score) differs from -BWT (score right after learning).
R3 = [[0.80, 0.10, 0.00],
      [0.95, 0.70, 0.10],
      [0.60, 0.75, 0.90]]


def test_three_stage_example_by_hand():
    m = cl_metrics(R3)
    assert m["acc"] == pytest.approx((0.60 + 0.75 + 0.90) / 3)          # 0.75
    assert m["bwt"] == pytest.approx(((0.60 - 0.80) + (0.75 - 0.70)) / 2)  # -0.075
    assert m["forgetting"] == pytest.approx(((0.95 - 0.60) + (0.70 - 0.75)) / 2)  # 0.15


def test_lower_is_better_keeps_the_meaning_of_the_signs():
    bpb = [[2.0, 4.0],
           [2.5, 1.5]]  # learning task 1 made task 0 worse by 0.5 bpb
    m = cl_metrics(bpb, lower_is_better=True)
    assert m == pytest.approx({"acc": 2.0, "bwt": -0.5, "forgetting": 0.5})


def test_single_stage_and_tensor_input():
    assert cl_metrics(torch.tensor([[0.4]])) == {"acc": pytest.approx(0.4), "bwt": 0.0,
                                                 "forgetting": 0.0}


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]], [[1.0, 2.0], [3.0]], [[float("nan")]]])
def test_malformed_matrices_are_refused(bad):
    with pytest.raises(ContinualError):
        cl_metrics(bad)


square = st.integers(2, 5).flatmap(lambda t: st.lists(
    st.lists(st.floats(0, 1, allow_nan=False), min_size=t, max_size=t), min_size=t, max_size=t))


@given(square)
def test_forgetting_bounds_backward_transfer(R):
    """max over earlier stages >= the score right after learning, so F >= -BWT."""
    m = cl_metrics(R)
    assert m["forgetting"] >= -m["bwt"] - 1e-12


@given(square)
def test_lower_is_better_equals_negated_higher_is_better(R):
    low = cl_metrics(R, lower_is_better=True)
    high = cl_metrics([[-v for v in row] for row in R])
    assert low["bwt"] == pytest.approx(high["bwt"])
    assert low["forgetting"] == pytest.approx(high["forgetting"])
    assert low["acc"] == pytest.approx(-high["acc"])


@given(st.integers(1, 5), st.floats(0, 1))
def test_a_model_that_never_changes_forgets_nothing(t, value):
    m = cl_metrics([[value] * t for _ in range(t)])
    assert m == pytest.approx({"acc": value, "bwt": 0.0, "forgetting": 0.0})
