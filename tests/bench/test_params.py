"""Parameter matching (nlc.bench.params) and lr choice: fast, no training (seed statistics: test_aggregate.py)."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from nlc.bench import MODELS, ParamMatchError, match_params, spec_params
from nlc.bench.lr_grid import rank_key
from nlc.bench.params import _nearest_hidden

TARGET = spec_params(MODELS[0].path, ["model.heads=2", "model.width=32"])


@pytest.mark.parametrize("model", MODELS, ids=[m.spec for m in MODELS])
def test_every_bench_model_is_matched_within_five_percent(model):
    match = match_params(model.path, TARGET, overrides=["model.heads=2"])
    assert abs(match.params / TARGET - 1) <= 0.05
    assert match.width % 4 == 0  # a multiple of 2 x heads
    assert spec_params(model.path, match.overrides) == match.params  # the overrides give that count


def test_matched_overrides_compile_to_the_reported_count():
    import nlc

    match = match_params(MODELS[4].path, TARGET, overrides=["model.heads=2"])  # HOPE: width + CMS hidden
    assert match.hidden is not None
    model = nlc.compile(MODELS[4].path, overrides=list(match.overrides), seed=0)
    assert sum(p.numel() for p in model.parameters()) == match.params


def test_the_reference_transformer_matches_itself_exactly():
    match = match_params(MODELS[0].path, TARGET, overrides=["model.heads=2"])
    assert (match.width, match.hidden, match.params, match.deviation) == (32, None, TARGET, 0.0)


def test_a_tolerance_no_width_or_hidden_can_meet_is_an_error_naming_the_gap():
    with pytest.raises(ParamMatchError, match=r"outside \+-0%"):
        match_params(MODELS[1].path, TARGET + 1, tolerance=1e-9, overrides=["model.heads=2"])


@settings(max_examples=15)
@given(slope=st.integers(1, 50), offset=st.integers(0, 1000), target=st.integers(1, 20_000),
       high=st.integers(2, 400))
def test_nearest_hidden_is_the_brute_force_argmin(slope, offset, target, high):
    def count(h):
        return offset + slope * h

    best = _nearest_hidden(count, target, high)
    gaps = [abs(math.log(count(h) / target)) for h in range(1, high + 1)]
    assert abs(math.log(count(best) / target)) == pytest.approx(min(gaps))


def test_the_best_grid_point_has_the_lowest_bpb_and_a_diverged_run_never_wins():
    def best(points: dict[float, float]) -> float:
        return min(points, key=lambda lr: rank_key(lr, points[lr]))

    assert best({1e-3: 2.5, 3e-3: 2.1, 1e-2: math.nan}) == 3e-3
    assert best({1e-3: 2.0, 3e-3: 2.0}) == 1e-3
