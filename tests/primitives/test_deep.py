"""Deep MLP memory (Titans LMM / MIRAS / ATLAS Omega): chunked == reference == exact rule.

Notation: B batch, H heads, T tokens, C chunk, L depth, c Omega window; float64 unless said.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nlc.primitives.deep import (
    deep_memory_chunked,
    deep_memory_reference,
    init_deep_params,
    init_deep_state,
)

DT = torch.float64
RTOL = 1e-9
_N = settings.default.max_examples  # the loaded profile (ci: 20, dev: 200)


def _examples(fraction: float) -> int:
    return max(1, int(_N * fraction))



def _close(a, b, rtol: float = RTOL) -> None:
    if a is None or b is None:  # an unused gradient: None on one side means zeros
        assert (a is None or a.abs().max() == 0) and (b is None or b.abs().max() == 0)
        return
    scale = max(a.abs().max().item() if a.numel() else 0.0, 1.0)
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert err <= rtol * scale, f"max abs err {err:.3e} (scale {scale:.3e})"


def _close_state(s1: dict, s2: dict, rtol: float = RTOL) -> None:
    assert set(s1) == set(s2)
    for key in s1:
        assert s1[key].shape == s2[key].shape, key
        _close(s1[key], s2[key], rtol)


def make_case(seed, B=2, H=2, T=9, Dk=3, Dh=4, L=2, residual=False, momentum=True,
              retention=True, window=1, gamma=False, lr_scale=0.3, requires_grad=False,
              dtype=DT):
    """Random but well-conditioned inputs: unit-norm keys, small step sizes."""
    g = torch.Generator().manual_seed(seed)
    Dv = Dk if residual else Dk + 1
    dims = [Dk] + [Dh] * (L - 1) + [Dv]
    params = init_deep_params(H, dims, generator=g, dtype=dtype)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    def uni(lo, hi):
        return lo + (hi - lo) * torch.rand(B, H, T, generator=g, dtype=dtype)

    q = rnd(B, H, T, Dk)
    k = F.normalize(rnd(B, H, T, Dk), dim=-1)
    v = rnd(B, H, T, Dv)
    gates = {
        "lr": uni(0.0, lr_scale),
        "momentum": uni(0.0, 0.9) if momentum else None,
        "retention": uni(0.5, 1.0) if retention else None,
        "gamma": uni(0.2, 1.0) if gamma else None,
    }
    if requires_grad:
        for x in [*params.values(), q, k, v, *[t for t in gates.values() if t is not None]]:
            x.requires_grad_(True)
    return params, q, k, v, gates


def run(fn, params, q, k, v, gates, B=None, state=None, **kw):
    window = kw.get("window", 1)
    if state is None:
        state = init_deep_state(params, q.shape[0], window=window,
                                global_retention=kw.get("global_retention", "decay"))
    return fn(state, q, k, v, gates["lr"], gates["momentum"], gates["retention"],
              gates["gamma"], **kw)


# ------------------------------------------------------------------ chunked == reference
OBJ_KW = {"l2": {}, "lp": {"p": 3.0}, "huber": {"delta": 0.4}, "dot": {}}


@settings(max_examples=_examples(1.5))
@given(
    seed=st.integers(0, 2**16), B=st.integers(1, 2), H=st.integers(1, 2),
    T=st.integers(1, 11), Dk=st.integers(2, 4), Dh=st.integers(2, 5), L=st.integers(1, 3),
    chunk=st.integers(1, 5), objective=st.sampled_from(list(OBJ_KW)),
    momentum=st.booleans(), retention=st.booleans(), residual=st.booleans(),
    raw=st.booleans(), window=st.integers(1, 3), gamma=st.booleans(),
    ret_kind=st.sampled_from(["decay", "lq", "elastic"]),
    activation=st.sampled_from(["gelu", "silu", "relu", "identity"]),
    guard=st.sampled_from([None, "clip", "normalize", "both"]),
)
def test_chunked_equals_reference(seed, B, H, T, Dk, Dh, L, chunk, objective, momentum,
                                  retention, residual, raw, window, gamma, ret_kind,
                                  activation, guard):
    params, q, k, v, gates = make_case(seed, B, H, T, Dk, Dh, L, residual, momentum,
                                       retention, window, gamma)
    kw = dict(chunk=chunk, window=window, objective=objective, residual=residual,
              read_after_write=raw, activation=activation, global_retention=ret_kind,
              grad_clip=0.5 if guard in ("clip", "both") else None,
              grad_normalize=guard in ("normalize", "both"), lq=3.0, elastic_lambda=0.01,
              **OBJ_KW[objective])
    o1, s1 = run(deep_memory_reference, params, q, k, v, gates, **kw)
    o2, s2 = run(deep_memory_chunked, params, q, k, v, gates, **kw)
    assert o2.shape == (B, H, T, v.shape[-1])
    _close(o1, o2)
    _close_state(s1, s2)


@pytest.mark.parametrize("objective", list(OBJ_KW))
@pytest.mark.parametrize("ret_kind", ["decay", "lq", "elastic"])
@pytest.mark.parametrize("raw", [False, True])
def test_chunked_equals_reference_grid(objective, ret_kind, raw):
    """Every objective x retention variant x read order, with momentum, Omega, T % C != 0."""
    params, q, k, v, gates = make_case(3, T=10, window=2, gamma=True)
    kw = dict(chunk=4, window=2, objective=objective, read_after_write=raw,
              global_retention=ret_kind, lq=4.0, elastic_lambda=0.02, **OBJ_KW[objective])
    o1, s1 = run(deep_memory_reference, params, q, k, v, gates, **kw)
    o2, s2 = run(deep_memory_chunked, params, q, k, v, gates, **kw)
    _close(o1, o2)
    _close_state(s1, s2)


@pytest.mark.parametrize("T,chunk", [(3, 8), (8, 8), (13, 4), (1, 1)])
def test_partial_and_short_chunks(T, chunk):
    params, q, k, v, gates = make_case(5, T=T, L=3, Dh=3)
    o1, s1 = run(deep_memory_reference, params, q, k, v, gates, chunk=chunk)
    o2, s2 = run(deep_memory_chunked, params, q, k, v, gates, chunk=chunk)
    _close(o1, o2)
    _close_state(s1, s2)


def test_empty_call_keeps_state():
    params, q, k, v, gates = make_case(0, T=0, window=2)
    for fn in (deep_memory_reference, deep_memory_chunked):
        st0 = init_deep_state(params, 2, window=2)
        o, s = run(fn, params, q, k, v, gates, state=st0, chunk=4, window=2)
        assert o.shape == (2, 2, 0, v.shape[-1])
        _close_state(st0, s, 0.0)


# --------------------------------------------------- chunk = 1 == exact per-token recurrence
def _act(name, x):
    return {"gelu": F.gelu, "silu": F.silu, "relu": torch.relu,
            "identity": lambda z: z}[name](x)


def _mlp(ws, x, activation, residual):
    h = x
    for i, w in enumerate(ws):
        h = w @ h
        if i < len(ws) - 1:
            h = _act(activation, h)
    return h + x if residual else h


def _loss(objective, y, v):
    e = y - v
    if objective == "l2":
        return (e ** 2).sum()
    if objective == "lp":
        return (e.abs() ** 3.0).sum()
    if objective == "huber":
        d = 0.4
        return torch.where(e.abs() <= d, e ** 2, 2 * d * e.abs() - d * d).sum()
    return -(y * v).sum()


def exact_recurrence(params, q, k, v, gates, *, window, activation, residual, objective,
                     raw, clip, normalize, ret_kind, qexp=4.0, lam=0.02):
    """Titans Eqs. 8-14 / MIRAS / Omega, token by token, gradient by autograd at M_{t-1}."""
    B, H, T, _ = q.shape
    L = len(params)
    outs = torch.zeros(B, H, T, v.shape[-1], dtype=q.dtype)

    def phi(A):  # weights from the stored accumulator (every token is a boundary)
        if ret_kind == "lq":
            return [a / (a.abs() ** qexp).sum() ** ((qexp - 2) / qexp) for a in A]
        return A

    for b in range(B):
        for h in range(H):
            A = [params[f"W{l + 1}"][h].clone() for l in range(L)]
            S = [torch.zeros_like(a) for a in A]
            for t in range(T):
                Wprev = phi(A)
                g = [torch.zeros_like(a) for a in A]
                for i in range(max(0, t - window + 1), t + 1):
                    wv = [w.detach().requires_grad_(True) for w in Wprev]
                    loss = _loss(objective, _mlp(wv, k[b, h, i], activation, residual),
                                 v[b, h, i])
                    gi = torch.autograd.grad(loss, wv)
                    n = math.sqrt(sum((x ** 2).sum().item() for x in gi))
                    s = 1.0
                    if normalize:
                        s = 1.0 / max(n, 1e-6)
                        n = n * s
                    if clip is not None:
                        s = s * clip / max(n, clip)
                    w_i = 1.0 if gates["gamma"] is None else gates["gamma"][b, h, i].item()
                    g = [x + w_i * s * y for x, y in zip(g, gi)]
                m = 0.0 if gates["momentum"] is None else gates["momentum"][b, h, t]
                r = 1.0 if gates["retention"] is None else gates["retention"][b, h, t]
                S = [m * s_ - gates["lr"][b, h, t] * g_ for s_, g_ in zip(S, g)]
                A = [r * a + s_ for a, s_ in zip(A, S)]
                if ret_kind == "elastic":
                    A = [torch.sign(a) * torch.relu(a.abs() - lam) for a in A]
                Wread = phi(A) if raw else Wprev
                outs[b, h, t] = _mlp(Wread, q[b, h, t], activation, residual)
    return outs


@settings(max_examples=_examples(0.6))
@given(
    seed=st.integers(0, 2**16), T=st.integers(1, 7), L=st.integers(1, 3),
    objective=st.sampled_from(list(OBJ_KW)), raw=st.booleans(), window=st.integers(1, 3),
    residual=st.booleans(), ret_kind=st.sampled_from(["decay", "lq", "elastic"]),
    activation=st.sampled_from(["gelu", "silu", "relu", "identity"]),
    guard=st.sampled_from([None, "clip", "normalize"]), momentum=st.booleans(),
)
def test_chunk_one_is_exact_per_token_rule(seed, T, L, objective, raw, window, residual,
                                           ret_kind, activation, guard, momentum):
    params, q, k, v, gates = make_case(seed, B=1, H=2, T=T, Dk=3, Dh=3, L=L,
                                       residual=residual, momentum=momentum,
                                       window=window, gamma=window > 1)
    clip = 0.5 if guard == "clip" else None
    expect = exact_recurrence(params, q, k, v, gates, window=window, activation=activation,
                              residual=residual, objective=objective, raw=raw, clip=clip,
                              normalize=guard == "normalize", ret_kind=ret_kind)
    kw = dict(chunk=1, window=window, objective=objective, residual=residual,
              read_after_write=raw, activation=activation, global_retention=ret_kind,
              grad_clip=clip, grad_normalize=guard == "normalize", lq=4.0,
              elastic_lambda=0.02, **OBJ_KW[objective])
    for fn in (deep_memory_chunked, deep_memory_reference):
        o, _ = run(fn, params, q, k, v, gates, **kw)
        _close(expect, o)


def test_chunking_changes_results_when_chunk_above_one():
    """Sanity: frozen chunk-start gradients are a different model from the per-token rule."""
    params, q, k, v, gates = make_case(1, T=8, lr_scale=1.0)
    o1, _ = run(deep_memory_chunked, params, q, k, v, gates, chunk=1)
    o4, _ = run(deep_memory_chunked, params, q, k, v, gates, chunk=4)
    assert (o1 - o4).abs().max() > 1e-6


# -------------------------------------------------------------------------------- streaming
@settings(max_examples=_examples(0.6))
@given(seed=st.integers(0, 2**16), chunk=st.integers(1, 4), cuts=st.lists(
    st.integers(0, 3), min_size=1, max_size=3), window=st.integers(1, 3),
    ret_kind=st.sampled_from(["decay", "lq", "elastic"]), raw=st.booleans(),
    tail=st.integers(0, 3))
def test_streaming_at_chunk_multiples(seed, chunk, cuts, window, ret_kind, raw, tail):
    seg_lens = [c * chunk for c in cuts] + [tail]
    T = sum(seg_lens)
    params, q, k, v, gates = make_case(seed, T=T, window=window, gamma=window > 1)
    kw = dict(chunk=chunk, window=window, read_after_write=raw, global_retention=ret_kind)
    for fn in (deep_memory_chunked, deep_memory_reference):
        o_all, s_all = run(fn, params, q, k, v, gates, **kw)
        state = init_deep_state(params, 2, window=window, global_retention=ret_kind)
        outs, start = [], 0
        for n in seg_lens:
            sl = slice(start, start + n)
            g = {key: None if x is None else x[:, :, sl] for key, x in gates.items()}
            o, state = run(fn, params, q[:, :, sl], k[:, :, sl], v[:, :, sl], g,
                           state=state, **kw)
            outs.append(o)
            start += n
        _close(o_all, torch.cat(outs, 2))
        _close_state(s_all, state)


# ------------------------------------------------------------- causality / batch independence
@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("window", [1, 3])
def test_causality(raw, window):
    T, t0 = 11, 6
    params, q, k, v, gates = make_case(7, T=T, window=window, gamma=True)
    kw = dict(chunk=4, window=window, read_after_write=raw)
    o, _ = run(deep_memory_chunked, params, q, k, v, gates, **kw)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[:, :, t0:] += 1.0
    k2[:, :, t0:] = F.normalize(k2[:, :, t0:] + 1.0, dim=-1)
    v2[:, :, t0:] -= 2.0
    g2 = {key: None if x is None else x.clone() for key, x in gates.items()}
    for key in g2:
        if g2[key] is not None:
            g2[key][:, :, t0:] *= 0.5
    o2, _ = run(deep_memory_chunked, params, q2, k2, v2, g2, **kw)
    _close(o[:, :, :t0], o2[:, :, :t0], 1e-13)
    assert (o[:, :, t0:] - o2[:, :, t0:]).abs().max() > 1e-6


def test_batch_independence():
    params, q, k, v, gates = make_case(8, B=3, T=9, window=2, gamma=True)
    kw = dict(chunk=4, window=2)
    o, s = run(deep_memory_chunked, params, q, k, v, gates, **kw)
    q2, v2 = q.clone(), v.clone()
    q2[1] += 3.0
    v2[1] *= -2.0
    g2 = dict(gates)
    g2["lr"] = gates["lr"].clone()
    g2["lr"][1] = 0.05
    o2, s2 = run(deep_memory_chunked, params, q2, k, v2, g2, **kw)
    for i in (0, 2):
        _close(o[i], o2[i], 0.0)
        for key in s:
            _close(s[key][i], s2[key][i], 0.0)
    assert (o[1] - o2[1]).abs().max() > 1e-6


# -------------------------------------------------------------------------------- gradients
def _grads(fn, params, q, k, v, gates, seed=11, use=("out", "state"), **kw):
    o, s = run(fn, params, q, k, v, gates, **kw)
    g = torch.Generator().manual_seed(seed)
    parts = [o] if "out" in use else []
    parts += [s[key] for key in sorted(s) if key in use or "state" in use]
    loss = sum((x * torch.randn(x.shape, generator=g, dtype=o.dtype)).sum() for x in parts)
    leaves = [*params.values(), q, k, v, *[x for x in gates.values() if x is not None]]
    return torch.autograd.grad(loss, leaves, allow_unused=True)


@settings(max_examples=_examples(0.75))
@given(
    seed=st.integers(0, 2**16), T=st.integers(1, 9), L=st.integers(1, 3),
    chunk=st.integers(1, 4), objective=st.sampled_from(list(OBJ_KW)), raw=st.booleans(),
    window=st.integers(1, 2), residual=st.booleans(), momentum=st.booleans(),
    retention=st.booleans(), ret_kind=st.sampled_from(["decay", "lq", "elastic"]),
    activation=st.sampled_from(["gelu", "silu", "relu", "identity"]),
    guard=st.sampled_from([None, "clip", "both"]),
)
def test_gradients_match_reference(seed, T, L, chunk, objective, raw, window, residual,
                                   momentum, retention, ret_kind, activation, guard):
    """The hand-written backward of the chunked form == autograd through the reference."""
    params, q, k, v, gates = make_case(seed, T=T, L=L, residual=residual, momentum=momentum,
                                       retention=retention, window=window,
                                       gamma=window > 1, requires_grad=True)
    kw = dict(chunk=chunk, window=window, objective=objective, residual=residual,
              read_after_write=raw, activation=activation, global_retention=ret_kind,
              grad_clip=0.5 if guard else None, grad_normalize=guard == "both",
              elastic_lambda=0.01, **OBJ_KW[objective])
    g_ref = _grads(deep_memory_reference, params, q, k, v, gates, **kw)
    g_chk = _grads(deep_memory_chunked, params, q, k, v, gates, **kw)
    for a, b in zip(g_ref, g_chk):
        _close(a, b, 1e-8)


@pytest.mark.parametrize("use", [("out",), ("S2",), ("W1", "S1")])
def test_gradients_when_only_part_is_used(use):
    """Unused outputs / end states (no incoming gradient) are handled like zero gradients."""
    params, q, k, v, gates = make_case(12, T=7, requires_grad=True)
    g_ref = _grads(deep_memory_reference, params, q, k, v, gates, use=use, chunk=3)
    g_chk = _grads(deep_memory_chunked, params, q, k, v, gates, use=use, chunk=3)
    for a, b in zip(g_ref, g_chk):
        _close(a, b, 1e-8)


def test_gradients_reach_params_and_inputs_float32():
    """Benchmark-like float32 config: finite, non-zero gradients everywhere."""
    params, q, k, v, gates = make_case(2, B=2, H=2, T=40, Dk=8, Dh=16, L=2, gamma=True,
                                       window=2, requires_grad=True, dtype=torch.float32)
    grads = _grads(deep_memory_chunked, params, q, k, v, gates, chunk=16, window=2,
                   grad_clip=1.0)
    for g in grads:
        assert torch.isfinite(g).all()
        assert g.abs().max() > 0


def test_float32_close_to_float64():
    params, q, k, v, gates = make_case(4, T=70, Dk=8, Dh=16)
    o64, _ = run(deep_memory_chunked, params, q, k, v, gates, chunk=16)
    p32 = {key: x.float() for key, x in params.items()}
    g32 = {key: None if x is None else x.float() for key, x in gates.items()}
    o32, _ = run(deep_memory_chunked, p32, q.float(), k.float(), v.float(), g32, chunk=16)
    _close(o64, o32.double(), 1e-4)


def test_zero_gates_are_exact_and_finite():
    """momentum = 0 equals momentum=None; retention = 0 wipes the memory; grads finite."""
    params, q, k, v, gates = make_case(6, T=9, requires_grad=True)
    zeros = torch.zeros_like(gates["lr"])
    g0 = dict(gates, momentum=zeros.clone().requires_grad_(True))
    gn = dict(gates, momentum=None)
    o0, s0 = run(deep_memory_chunked, params, q, k, v, g0, chunk=4)
    on, sn = run(deep_memory_chunked, params, q, k, v, gn, chunk=4)
    _close(o0, on)
    _close_state(s0, sn)
    gr = dict(gates, retention=zeros.clone().requires_grad_(True))
    o, s = run(deep_memory_chunked, params, q, k, v, gr, chunk=4)
    o_ref, _ = run(deep_memory_reference, params, q, k, v, gr, chunk=4)
    _close(o, o_ref)
    grads = torch.autograd.grad(o.sum() + s["W1"].sum(), [gr["retention"], g0["momentum"],
                                                          params["W1"]], allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


def test_state_is_expanded_params():
    params, *_ = make_case(0)
    s = init_deep_state(params, 3, window=2)
    assert s["W1"].shape == (3, *params["W1"].shape)
    assert s["W1"].data_ptr() == params["W1"].data_ptr()  # expanded, not copied
    assert s["S1"].abs().sum() == 0
    assert s["omega_k"].shape[:3] == (3, params["W1"].shape[0], 1)
    s_lq = init_deep_state(params, 3, global_retention="lq")
    assert "A1" in s_lq and "W1" not in s_lq


def test_bad_config_raises():
    params, q, k, v, gates = make_case(0, T=3)
    for bad in (dict(objective="kl"), dict(activation="tanh"), dict(chunk=0),
                dict(global_retention="entropy"), dict(window=0)):
        with pytest.raises(ValueError):
            run(deep_memory_chunked, params, q, k, v, gates, **{"chunk": 2, **bad})


# ----------------------------------------------------------------------------- compilation
def test_torch_compile_fullgraph_matches_eager():
    params, q, k, v, gates = make_case(9, T=6, window=2, gamma=True, requires_grad=True)

    def f(params, q, k, v, lr, momentum, retention, gamma):
        state = init_deep_state(params, q.shape[0], window=2)
        return deep_memory_chunked(state, q, k, v, lr, momentum, retention, gamma, chunk=4,
                                   window=2, grad_clip=1.0, read_after_write=True)

    args = (params, q, k, v, gates["lr"], gates["momentum"], gates["retention"],
            gates["gamma"])
    torch._dynamo.reset()
    compiled = torch.compile(f, backend="eager", fullgraph=True)
    o_c, s_c = compiled(*args)
    o_e, s_e = f(*args)
    _close(o_e, o_c, 0.0)
    _close_state(s_e, s_c, 0.0)
    g_c = torch.autograd.grad(o_c.sum() + s_c["W2"].sum(), [params["W1"], q, gates["lr"]])
    g_e = torch.autograd.grad(o_e.sum() + s_e["W2"].sum(), [params["W1"], q, gates["lr"]])
    for a, b in zip(g_c, g_e):
        _close(a, b, 0.0)


@pytest.mark.parametrize("momentum,objective,raw", [(True, "l2", True), (False, "huber", False)])
def test_without_grad_the_kernels_give_the_same_values(momentum, objective, raw):
    """Without grad the chunk kernels run as plain functions (no autograd.Function: torch
    2.11's compile mis-binds its arguments under no_grad); the values are bit-identical,
    eager and compiled."""
    params, q, k, v, gates = make_case(4, T=11, window=2, gamma=True, momentum=momentum)
    kw = dict(chunk=4, window=2, objective=objective, read_after_write=raw, **OBJ_KW[objective])
    o_grad, s_grad = run(deep_memory_chunked, params, q, k, v, gates, **kw)
    with torch.no_grad():
        o_plain, s_plain = run(deep_memory_chunked, params, q, k, v, gates, **kw)
        torch._dynamo.reset()
        o_comp, s_comp = torch.compile(run, backend="eager", fullgraph=True)(
            deep_memory_chunked, params, q, k, v, gates, **kw)
    for got_o, got_s in ((o_plain, s_plain), (o_comp, s_comp)):
        _close(o_grad, got_o, 0.0)
        _close_state(s_grad, got_s, 0.0)


@pytest.mark.parametrize("name", ["gelu", "silu", "relu", "identity"])
def test_activation_derivatives_match_autograd(name):
    """act' (activations.act_derivative, aten's fused gelu_backward for GELU) and act''
    (deep.derivatives.act_dd) equal autograd's first and second derivatives of act."""
    from nlc.primitives.activations import act, act_derivative
    from nlc.primitives.deep.derivatives import act_dd

    z = torch.linspace(-4.0, 4.0, 81, dtype=DT).requires_grad_()
    (d1,) = torch.autograd.grad(act(name, z).sum(), z, create_graph=True)
    d = act_derivative(name, z)
    if name == "identity":
        assert d is None and act_dd(name, z.detach()) is None
        return
    _close(d.detach(), d1.detach(), 1e-12)
    if name == "relu":
        assert act_dd(name, z.detach()) is None
        return
    (d2,) = torch.autograd.grad(d1.sum(), z)
    _close(act_dd(name, z.detach()), d2, 1e-12)
    (dd,) = torch.autograd.grad(d.sum(), z)  # act_derivative is itself differentiable
    _close(dd, d2, 1e-12)


@pytest.mark.parametrize("q", [1.5, 2.0, 3.0, 4.0])
@pytest.mark.parametrize("dtype", [torch.float32, DT])
def test_lq_norm_scale_is_finite_at_zero_and_the_formula_elsewhere(q, dtype):
    """nu(A) = ||A||_q^{q-2}: at A = 0 (a zero memory) nu, A / nu (= 0) and the gradient of
    A / nu are finite for every q (regression: q > 2 gave 0/0 = NaN); elsewhere nu is the
    formula and its gradient is autograd's of the formula."""
    from nlc.primitives.deep import lq_norm_scale

    qt = torch.tensor(q, dtype=dtype)
    zero = torch.zeros(2, 3, 4, dtype=dtype, requires_grad=True)
    nu = lq_norm_scale(zero, qt)
    assert nu.shape == (2, 1, 1) and nu.isfinite().all() and (nu > 0).all()
    w = zero / nu
    assert torch.equal(w.detach(), torch.zeros_like(w))
    (grad,) = torch.autograd.grad(w.square().sum() + nu.sum(), zero)
    assert grad.isfinite().all()

    a = torch.randn(2, 3, 4, dtype=dtype, generator=torch.Generator().manual_seed(0)).requires_grad_()
    formula = a.abs().pow(q).sum(dim=(-2, -1), keepdim=True).pow((q - 2) / q)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(lq_norm_scale(a, qt), formula, rtol=tol, atol=tol)
    (got,) = torch.autograd.grad(lq_norm_scale(a, qt).sum(), a)
    (want,) = torch.autograd.grad(formula.sum(), a)
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
