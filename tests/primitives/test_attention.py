"""Tests for nlc.primitives.attention (softmax attention as the non-parametric level)."""
from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from nlc.primitives.attention import (
    SoftmaxAttention,
    attention_mask,
    init_kv_state,
    softmax_attention,
    softmax_attention_reference,
)

DT = torch.float64


def close(a, b, rtol=1e-9, atol=1e-12):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def randn(*shape, seed=0):
    return torch.randn(*shape, dtype=DT, generator=torch.Generator().manual_seed(seed))


@st.composite
def attn_case(draw):
    B = draw(st.integers(1, 2))
    H = draw(st.integers(1, 3))
    T = draw(st.integers(1, 10))
    Dk = draw(st.integers(1, 6))
    Dv = draw(st.integers(1, 6))
    window = draw(st.one_of(st.none(), st.integers(1, 12)))
    P = draw(st.integers(0, 3))
    pq = draw(st.booleans())
    L = draw(st.integers(0, 5))
    seed = draw(st.integers(0, 10_000))
    cuts = sorted(set(draw(st.lists(st.integers(0, T), max_size=4))))
    pts = [0] + cuts + [T]
    return B, H, T, Dk, Dv, window, P, pq, L, seed, list(zip(pts[:-1], pts[1:]))


def make(case):
    B, H, T, Dk, Dv, window, P, pq, L, seed, segs = case
    q, k, v = randn(B, H, T, Dk, seed=seed), randn(B, H, T, Dk, seed=seed + 1), randn(B, H, T, Dv, seed=seed + 2)
    kw = dict(window=window)
    if P:
        kw["prefix_k"] = randn(B, H, P, Dk, seed=seed + 3)
        kw["prefix_v"] = randn(B, H, P, Dv, seed=seed + 4)
        if pq:
            kw["prefix_q"] = randn(B, H, T, Dk, seed=seed + 5)
    state = None
    if L:
        state = {"k": randn(B, H, L, Dk, seed=seed + 6), "v": randn(B, H, L, Dv, seed=seed + 7)}
    return q, k, v, kw, state


def dense_attention(q, k, v, window, prefix_k=None, prefix_v=None, prefix_q=None, state=None):
    """Independent dense form: full score matrix, additive -inf mask."""
    B, H, T, Dk = q.shape
    if state is not None:
        k, v = torch.cat((state["k"], k), 2), torch.cat((state["v"], v), 2)
    L = k.shape[2] - T
    s = q @ k.transpose(-1, -2) / math.sqrt(Dk)
    i = torch.arange(T).view(-1, 1) + L
    j = torch.arange(L + T).view(1, -1)
    ok = (j <= i) & ((j > i - window) if window is not None else True)
    s = s.masked_fill(~ok, -math.inf)
    if prefix_k is not None:
        pq = q if prefix_q is None else prefix_q
        s = torch.cat((pq @ prefix_k.transpose(-1, -2) / math.sqrt(Dk), s), -1)
        v = torch.cat((prefix_v, v), 2)
    return torch.softmax(s, -1) @ v


@given(attn_case())
def test_reference_equals_fast_and_dense(case):
    q, k, v, kw, state = make(case)
    o_ref, s_ref = softmax_attention_reference(q, k, v, state=state, **kw)
    o, s = softmax_attention(q, k, v, state=state, **kw)
    close(o, o_ref)
    close(o, dense_attention(q, k, v, state=state, **kw))
    close(s["k"], s_ref["k"])
    close(s["v"], s_ref["v"])


@given(attn_case())
def test_streaming_equals_whole(case):
    q, k, v, kw, state0 = make(case)
    window = kw["window"]
    whole, s_whole = softmax_attention(q, k, v, state=state0, **kw)
    for fn in (softmax_attention, softmax_attention_reference):
        state, outs = state0, []
        for a, b in case[-1]:
            seg_kw = dict(kw)
            if "prefix_q" in kw:
                seg_kw["prefix_q"] = kw["prefix_q"][:, :, a:b]
            o, state = fn(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], state=state, **seg_kw)
            outs.append(o)
            if window is not None:  # bounded memory: only the last w-1 tokens are kept
                assert state["k"].shape[2] <= window - 1
        close(torch.cat(outs, 2), whole)
        close(state["k"], s_whole["k"])
        close(state["v"], s_whole["v"])


@given(st.integers(2, 10), st.one_of(st.none(), st.integers(1, 6)), st.integers(0, 10_000))
def test_causality_window_and_batch_independence(T, window, seed):
    B, H, D = 2, 2, 4
    q, k, v = randn(B, H, T, D, seed=seed), randn(B, H, T, D, seed=seed + 1), randn(B, H, T, D, seed=seed + 2)
    o, _ = softmax_attention(q, k, v, window=window)
    t = T // 2
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[:, :, t + 1:] += 1
    k2[:, :, t + 1:] += 1
    v2[:, :, t + 1:] += 1
    v2[1] += 3  # another sample's change must not leak into sample 0
    o2, _ = softmax_attention(q2, k2, v2, window=window)
    close(o2[0, :, : t + 1], o[0, :, : t + 1])
    if window is not None and t - window >= 0:
        # key t-w is outside token t's window; key t-w+1 is inside
        v3 = v.clone()
        v3[:, :, t - window] += 1
        close(softmax_attention(q, k, v3, window=window)[0][:, :, t], o[:, :, t])
        v4 = v.clone()
        v4[:, :, t - window + 1] += 1
        assert not torch.allclose(softmax_attention(q, k, v4, window=window)[0][:, :, t], o[:, :, t])


def test_prefix_visible_everywhere_and_mask():
    q, k, v = randn(1, 1, 6, 3, seed=1), randn(1, 1, 6, 3, seed=2), randn(1, 1, 6, 3, seed=3)
    pk, pv = randn(1, 1, 2, 3, seed=4), randn(1, 1, 2, 3, seed=5)
    o, _ = softmax_attention(q, k, v, window=2, prefix_k=pk, prefix_v=pv)
    o2, _ = softmax_attention(q, k, v, window=2, prefix_k=pk, prefix_v=pv + 1)
    assert ((o2 - o).abs().amax(-1) > 1e-6).all()  # every position sees the prefix
    m = attention_mask(3, L=1, P=2, window=2)
    expect = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 1, 1, 0], [1, 1, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(m, expect)
    st0 = init_kv_state(2, 3, 4, 5)
    assert st0["k"].shape == (2, 3, 0, 4) and st0["v"].shape == (2, 3, 0, 5)


def test_functional_compile_fullgraph():
    q, k, v = randn(2, 2, 7, 4, seed=1), randn(2, 2, 7, 4, seed=2), randn(2, 2, 7, 4, seed=3)
    pk, pv, pq = randn(2, 2, 3, 4, seed=4), randn(2, 2, 3, 4, seed=5), randn(2, 2, 7, 4, seed=6)
    state = {"k": randn(2, 2, 2, 4, seed=7), "v": randn(2, 2, 2, 4, seed=8)}

    def f(q, k, v, pk, pv, pq, state):
        return softmax_attention(q, k, v, state=state, window=3, prefix_k=pk, prefix_v=pv, prefix_q=pq)

    fc = torch.compile(f, backend="eager", fullgraph=True)
    (o_c, s_c), (o_e, s_e) = fc(q, k, v, pk, pv, pq, state), f(q, k, v, pk, pv, pq, state)
    close(o_c, o_e)
    close(s_c["k"], s_e["k"])
    g = torch.compile(lambda q, k, v: softmax_attention(q, k, v)[0], backend="eager", fullgraph=True)
    close(g(q, k, v), softmax_attention(q, k, v)[0])


@given(st.one_of(st.none(), st.integers(1, 5)), st.integers(0, 3), st.booleans(),
       st.integers(0, 10_000))
def test_module_streaming_equals_whole(window, n_p, qk_norm, seed):
    torch.manual_seed(seed)
    m = SoftmaxAttention(8, 2, window=window, num_persistent=n_p, qk_norm=qk_norm).double()
    T = 9
    x = randn(2, T, 8, seed=seed)
    prefix = randn(2, 2, 8, seed=seed + 1)
    y, s = m(x)
    state, outs = m.init_state(2), []
    for a, b in [(0, 4), (4, 5), (5, 9)]:
        o, state = m(x[:, a:b], state)
        outs.append(o)
    close(torch.cat(outs, 1), y)
    assert torch.equal(state["pos"], torch.full((2,), T))
    # a prefix (MAC-style memory tokens) is visible to all tokens: y changes everywhere
    yp, _ = m(x, prefix=prefix)
    assert ((yp - y).abs().amax(-1) > 1e-9).all()


def test_module_prefix_position_free_and_grads():
    torch.manual_seed(0)
    m = SoftmaxAttention(8, 2, window=1, num_persistent=2).double()
    x = randn(1, 1, 8, seed=1)
    st0 = m.init_state(1)
    st100 = dict(st0)
    st100["pos"] = torch.tensor([100])
    # window 1: a token sees itself and the (position-free) prefix only -> same output anywhere
    close(m(x, st0)[0], m(x, st100)[0])
    y, _ = m(randn(2, 5, 8, seed=2))
    y.square().sum().backward()
    assert m.persistent.grad is not None and m.persistent.grad.abs().sum() > 0


def test_module_compile_fullgraph():
    torch.manual_seed(0)
    m = SoftmaxAttention(8, 2, window=3, num_persistent=2).double()
    x = randn(2, 5, 8, seed=1)
    st0 = m.init_state(2)
    mc = torch.compile(m, backend="eager", fullgraph=True)
    (y_c, s_c), (y_e, s_e) = mc(x, st0), m(x, st0)
    close(y_c, y_e)
    close(s_c["k"], s_e["k"])
