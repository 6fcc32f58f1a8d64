"""Per-token weights of the deep memory, with Muon (ATLAS' inner optimizer): chunked == per-token reference ==
rule written out by hand; streaming equals one call; causal; gradients equal.

Notation: B batch, H heads, T tokens, C chunk, L depth, c Omega window; float64 unless said.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nlc.primitives.deep import deep_memory_per_token_chunked, deep_memory_reference, init_deep_state
from tests.primitives.test_deep import OBJ_KW, _close, _close_state, _examples, _grads, make_case, run
from tests.train.test_optimizer_levels import reference_newton_schulz


@settings(max_examples=_examples(1.0))
@given(
    seed=st.integers(0, 2**16), B=st.integers(1, 2), H=st.integers(1, 2), T=st.integers(1, 11),
    Dk=st.integers(2, 4), Dh=st.integers(2, 5), L=st.integers(1, 3), chunk=st.integers(1, 5),
    objective=st.sampled_from(list(OBJ_KW)), momentum=st.booleans(), retention=st.booleans(),
    residual=st.booleans(), raw=st.booleans(), window=st.integers(1, 3), gamma=st.booleans(),
    activation=st.sampled_from(["gelu", "silu", "relu", "identity"]),
    guard=st.sampled_from([None, "clip", "normalize", "both"]), ns_steps=st.integers(1, 6),
)
def test_chunked_equals_reference(seed, B, H, T, Dk, Dh, L, chunk, objective, momentum, retention,
                                  residual, raw, window, gamma, activation, guard, ns_steps):
    params, q, k, v, gates = make_case(seed, B, H, T, Dk, Dh, L, residual, momentum, retention,
                                       window, gamma)
    kw = dict(chunk=chunk, window=window, objective=objective, residual=residual,
              read_after_write=raw, activation=activation, ns_steps=ns_steps,
              grad_clip=0.5 if guard in ("clip", "both") else None,
              grad_normalize=guard in ("normalize", "both"), **OBJ_KW[objective])
    o1, s1 = run(deep_memory_reference, params, q, k, v, gates, **kw)
    o2, s2 = run(deep_memory_per_token_chunked, params, q, k, v, gates, **kw)
    assert o2.shape == (B, H, T, v.shape[-1])
    _close(o1, o2)
    _close_state(s1, s2)


@pytest.mark.parametrize("raw", [False, True])
def test_the_rule_written_out(raw):
    """Two tokens, one chunk, a matrix memory on the l2 objective, against the equations
    with an independent Newton-Schulz: S_t = m_t S_{t-1} - g_t, A_t = r_t A_{t-1} + lr_t NS(S_t),
    both gradients at the chunk-start weights A_0."""
    g = torch.Generator().manual_seed(4)
    A0 = torch.randn(1, 3, 4, generator=g, dtype=torch.float64)
    q, k, v = (torch.randn(1, 1, 2, d, generator=g, dtype=torch.float64) for d in (4, 4, 3))
    lr, m, r = torch.tensor([[[0.3, 0.2]]]), torch.tensor([[[0.5, 0.8]]]), torch.tensor([[[0.9, 0.7]]])
    lr, m, r = (x.double() for x in (lr, m, r))
    o, state = deep_memory_per_token_chunked(init_deep_state({"W1": A0}, 1), q, k, v, lr, m, r,
                                        chunk=2, activation="identity", read_after_write=raw, ns_steps=5)
    W = A0[0]
    grads = [2 * torch.outer(W @ k[0, 0, t] - v[0, 0, t], k[0, 0, t]) for t in range(2)]
    S1 = -grads[0]
    A1 = r[0, 0, 0] * W + lr[0, 0, 0] * reference_newton_schulz(S1, 5)
    S2 = m[0, 0, 1] * S1 - grads[1]
    A2 = r[0, 0, 1] * A1 + lr[0, 0, 1] * reference_newton_schulz(S2, 5)
    reads = (A1, A2) if raw else (W, A1)
    want = torch.stack([reads[t] @ q[0, 0, t] for t in range(2)])
    _close(o[0, 0], want, 1e-6)  # the test's iteration clamps the norm, ours adds 1e-7
    _close(state["W1"][0, 0], A2, 1e-6)
    _close(state["S1"][0, 0], S2, 1e-12)


@settings(max_examples=_examples(0.5))
@given(seed=st.integers(0, 2**16), chunk=st.integers(1, 4), cuts=st.lists(st.integers(0, 3), min_size=1,
       max_size=3), window=st.integers(1, 3), raw=st.booleans(), tail=st.integers(0, 3))
def test_streaming_at_chunk_multiples(seed, chunk, cuts, window, raw, tail):
    seg_lens = [c * chunk for c in cuts] + [tail]
    params, q, k, v, gates = make_case(seed, T=sum(seg_lens), window=window, gamma=window > 1)
    kw = dict(chunk=chunk, window=window, read_after_write=raw, ns_steps=3)
    o_all, s_all = run(deep_memory_per_token_chunked, params, q, k, v, gates, **kw)
    state, outs, start = init_deep_state(params, 2, window=window), [], 0
    for n in seg_lens:
        sl = slice(start, start + n)
        part = {key: None if x is None else x[:, :, sl] for key, x in gates.items()}
        o, state = run(deep_memory_per_token_chunked, params, q[:, :, sl], k[:, :, sl], v[:, :, sl], part,
                       state=state, **kw)
        outs.append(o)
        start += n
    _close(o_all, torch.cat(outs, 2))
    _close_state(s_all, state)


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("window", [1, 3])
def test_causality(raw, window):
    T, t0 = 11, 6
    params, q, k, v, gates = make_case(7, T=T, window=window, gamma=True)
    kw = dict(chunk=4, window=window, read_after_write=raw, ns_steps=5)
    o, _ = run(deep_memory_per_token_chunked, params, q, k, v, gates, **kw)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[:, :, t0:] += 1.0
    k2[:, :, t0:] = F.normalize(k2[:, :, t0:] + 1.0, dim=-1)
    v2[:, :, t0:] -= 2.0
    o2, _ = run(deep_memory_per_token_chunked, params, q2, k2, v2, gates, **kw)
    _close(o[:, :, :t0], o2[:, :, :t0], 1e-13)
    assert (o[:, :, t0:] - o2[:, :, t0:]).abs().max() > 1e-6


@settings(max_examples=_examples(0.5))
@given(seed=st.integers(0, 2**16), T=st.integers(1, 8), L=st.integers(1, 2), chunk=st.integers(1, 4),
       objective=st.sampled_from(list(OBJ_KW)), raw=st.booleans(), window=st.integers(1, 2),
       momentum=st.booleans(), guard=st.sampled_from([None, "clip"]))
def test_gradients_match_reference(seed, T, L, chunk, objective, raw, window, momentum, guard):
    params, q, k, v, gates = make_case(seed, T=T, L=L, momentum=momentum, window=window,
                                       gamma=window > 1, requires_grad=True)
    kw = dict(chunk=chunk, window=window, objective=objective, read_after_write=raw, ns_steps=4,
              grad_clip=0.5 if guard else None, **OBJ_KW[objective])
    g_ref = _grads(deep_memory_reference, params, q, k, v, gates, **kw)
    g_chk = _grads(deep_memory_per_token_chunked, params, q, k, v, gates, **kw)
    for a, b in zip(g_ref, g_chk):
        _close(a, b, 1e-8)


def test_the_write_is_orthogonal_whatever_the_gradient_scale():
    """Muon's point: one write moves every singular direction by about lr, however large
    or small the gradient (gd, no momentum, zero retention: A_1 = lr NS(-g_1))."""
    for scale in (1e-3, 1.0, 1e3):
        params, q, k, v, gates = make_case(2, B=1, H=1, T=1, Dk=4, L=1, momentum=False, retention=False)
        gates["lr"] = torch.full_like(gates["lr"], 0.1)
        _, state = run(deep_memory_per_token_chunked, params, q, k, v * scale, gates, chunk=1, ns_steps=5)
        written = state["W1"][0, 0] - params["W1"][0]
        sv = torch.linalg.svdvals(written)  # one token: a rank-one gradient
        assert 0.06 < sv[0].item() < 0.12 and sv[1:].max().item() < 1e-9


def test_bad_steps_raise():
    params, q, k, v, gates = make_case(1, T=3)
    with pytest.raises(ValueError, match="ns_steps"):
        run(deep_memory_per_token_chunked, params, q, k, v, gates, ns_steps=-1)
