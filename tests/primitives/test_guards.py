"""Tests for nlc.primitives.guards (finite checks, inner-gradient clip / normalise)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nlc.primitives.guards import (
    check_finite,
    clip_by_norm,
    clip_by_value,
    clip_dict_by_global_norm,
    global_norm,
    normalize_by_norm,
    normalize_dict_by_global_norm,
    per_sample_norm,
    zero_nonfinite,
)

DT = torch.float64


def close(a, b, rtol=1e-9, atol=1e-12):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def randn(*shape, seed=0):
    return torch.randn(*shape, dtype=DT, generator=torch.Generator().manual_seed(seed))


def test_check_finite_passes_and_names_level_and_key():
    state = {"w": randn(2, 3), "count": torch.tensor([1, 2])}
    check_finite(state, "cms.level0")
    bad = dict(state, **{"acc.w_in": torch.tensor([[0.0, math.nan], [1.0, 2.0]])})
    with pytest.raises(FloatingPointError) as e:
        check_finite(bad, "cms.level0")
    msg = str(e.value)
    assert "cms.level0" in msg and "acc.w_in" in msg and "1 NaN" in msg and "batch rows [0]" in msg
    with pytest.raises(FloatingPointError, match=r"'titan'.*'S'.*1 Inf"):
        check_finite({"S": torch.tensor([[1.0], [math.inf]])}, "titan")
    check_finite({}, "empty")


@given(st.integers(1, 4), st.integers(1, 6), st.floats(0.01, 10.0), st.integers(0, 10_000))
def test_clip_by_norm(B, D, max_norm, seed):
    g = randn(B, D, 3, seed=seed) * torch.logspace(-2, 2, B, dtype=DT).view(B, 1, 1)
    c = clip_by_norm(g, max_norm, eps=0.0)
    n, nc = per_sample_norm(g), per_sample_norm(c)
    assert (nc <= max_norm * (1 + 1e-9)).all()
    small = n <= max_norm
    close(c[small], g[small])  # below the threshold: untouched
    close(nc[~small], torch.full_like(nc[~small], max_norm))
    # per-sample thresholds and independence across the batch
    th = torch.linspace(0.5, 2.0, B, dtype=DT)
    c2 = clip_by_norm(g, th)
    for b in range(B):
        close(c2[b], clip_by_norm(g[b:b + 1], th[b])[0])


@given(st.integers(1, 3), st.floats(0.1, 5.0), st.integers(0, 10_000))
def test_dict_global_norm_and_normalise(B, max_norm, seed):
    grads = {"a": randn(B, 4, seed=seed) * 3, "b": randn(B, 2, 5, seed=seed + 1)}
    expect = torch.sqrt(sum((v ** 2).reshape(B, -1).sum(1) for v in grads.values()))
    close(global_norm(grads), expect)
    c = clip_dict_by_global_norm(grads, max_norm, eps=0.0)
    close(global_norm(c), torch.clamp(expect, max=max_norm))
    nrm = normalize_dict_by_global_norm(grads, eps=0.0)
    close(global_norm(nrm), torch.ones(B, dtype=DT))
    close(per_sample_norm(normalize_by_norm(grads["a"], eps=0.0)), torch.ones(B, dtype=DT))
    assert torch.equal(normalize_by_norm(torch.zeros(B, 3, dtype=DT)), torch.zeros(B, 3, dtype=DT))


def test_value_clip_and_nonfinite():
    g = torch.tensor([[-3.0, 0.5, 2.0], [1.0, -0.1, 9.0]], dtype=DT)
    close(clip_by_value(g, 1.0), torch.tensor([[-1.0, 0.5, 1.0], [1.0, -0.1, 1.0]], dtype=DT))
    close(clip_by_value(g, torch.tensor([1.0, 5.0], dtype=DT)),
          torch.tensor([[-1.0, 0.5, 1.0], [1.0, -0.1, 5.0]], dtype=DT))
    z = zero_nonfinite(torch.tensor([1.0, math.nan, -math.inf, 2.0]))
    assert torch.equal(z, torch.tensor([1.0, 0.0, 0.0, 2.0]))


def test_in_graph_helpers_compile_fullgraph():
    grads = {"a": randn(2, 4, seed=1) * 5, "b": randn(2, 3, seed=2)}

    def f(grads, th):
        c = clip_dict_by_global_norm(grads, th)
        return (c, clip_by_norm(grads["a"], th), normalize_by_norm(grads["b"]),
                normalize_dict_by_global_norm(grads), clip_by_value(grads["a"], th),
                zero_nonfinite(grads["b"] / 0.0))

    fc = torch.compile(f, backend="eager", fullgraph=True)
    th = torch.tensor(1.5, dtype=DT)
    for a, b in zip(fc(grads, th), f(grads, th)):
        if isinstance(a, dict):
            for k in a:
                close(a[k], b[k])
        else:
            close(a, b, atol=0, rtol=0) if not torch.isfinite(b).all() else close(a, b)
