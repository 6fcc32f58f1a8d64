"""Matrix memories (nlc.primitives.matrix): chunked == reference, exactness, streaming, etc.

Notation: B batch, H heads, T tokens, Dk/Dv key/value dims, C chunk; S is (B, H, Dv, Dk).
Equality tests run in float64 (rtol 1e-9); the state is compared with the same tolerance.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nlc.primitives import matrix as M

DT = torch.float64



# ------------------------------------------------------------------------------ rule table
class Rule:
    """A rule as (reference, chunked), its gate names, extra kwargs, and chunk-frozen flag."""

    def __init__(self, name, gates, frozen, **kw):
        self.name, self.gates, self.frozen, self.kw = name, gates, frozen, kw
        base = name.split(":")[0]
        self.ref, self.chk = getattr(M, base + "_reference"), getattr(M, base + "_chunked")

    def call(self, form, state, x, chunk, raw):
        fn = self.ref if form == "ref" else self.chk
        gates = [x[g] for g in self.gates]
        return fn(state, x["q"], x["k"], x["v"], *gates, chunk=chunk, read_after_write=raw,
                  **self.kw)


RULES = {r.name: r for r in [
    Rule("linear_attention", ("lr",), False),
    Rule("gated_linear_attention", ("lr", "retention"), False),
    Rule("delta_rule", ("lr",), False),
    Rule("gated_delta_rule", ("lr", "retention"), False),
    Rule("dgd:l2", ("lr", "retention"), True, objective="l2"),
    Rule("dgd:dot", ("lr", "retention"), False, objective="dot"),
    Rule("omega_rule:w1", ("gamma", "retention"), True, window=1),
    Rule("omega_rule:w3", ("gamma", "retention"), True, window=3),
    Rule("omega_rule:w6", ("gamma",), True, window=6),
]}
NAMES = sorted(RULES)


def make_inputs(B, H, T, Dk, Dv, seed, *, window=1, dtype=DT, ret_lo=0.5, lr_hi=1.0):
    """Random state and inputs; unit-norm keys, lr in [0.05, lr_hi], retention in [ret_lo, 1]."""
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=dtype)

    def u(lo, hi, *s):
        return lo + (hi - lo) * torch.rand(*s, generator=g, dtype=dtype)

    k = torch.nn.functional.normalize(r(B, H, T, Dk), dim=-1)
    state = {"S": 0.5 * r(B, H, Dv, Dk)}
    if window > 1:  # non-empty Omega history
        state.update(omega_k=torch.nn.functional.normalize(r(B, H, window - 1, Dk), dim=-1),
                     omega_v=r(B, H, window - 1, Dv), omega_gamma=u(0, 0.3, B, H, window - 1))
    x = dict(q=r(B, H, T, Dk), k=k, v=r(B, H, T, Dv), lr=u(0.05, lr_hi, B, H, T),
             retention=u(ret_lo, 1.0, B, H, T), gamma=u(0.0, 0.3 * lr_hi, B, H, T))
    return state, x


def window_of(rule):
    return rule.kw.get("window", 1)


def assert_close(a, b, tol=1e-9):
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    torch.testing.assert_close(a, b, rtol=tol, atol=tol * scale)


def assert_state_close(s1, s2, tol=1e-9):
    assert s1.keys() == s2.keys()
    for key in s1:
        assert_close(s1[key], s2[key], tol)


shapes = st.fixed_dictionaries(dict(
    B=st.integers(1, 2), H=st.integers(1, 2), T=st.integers(1, 19), Dk=st.integers(1, 6),
    Dv=st.integers(1, 5), chunk=st.integers(1, 24), seed=st.integers(0, 2**16),
    raw=st.booleans(), ret_lo=st.sampled_from([0.05, 0.5, 1.0]),
    lr_hi=st.sampled_from([0.3, 1.0, 1.5])))


def setup(rule, p, seed_offset=0):
    return make_inputs(p["B"], p["H"], p["T"], p["Dk"], p["Dv"], p["seed"] + seed_offset,
                       window=window_of(rule), ret_lo=p["ret_lo"], lr_hi=p["lr_hi"])


# ------------------------------------------------------------------ chunked == reference
@pytest.mark.parametrize("name", NAMES)
@given(p=shapes)
def test_chunked_matches_reference(name, p):
    rule = RULES[name]
    state, x = setup(rule, p)
    o_ref, s_ref = rule.call("ref", state, x, p["chunk"], p["raw"])
    o_chk, s_chk = rule.call("chk", state, x, p["chunk"], p["raw"])
    assert o_chk.shape == (p["B"], p["H"], p["T"], p["Dv"])
    assert_close(o_chk, o_ref)
    assert_state_close(s_chk, s_ref)


@given(p=shapes)
def test_generalized_all_terms_chunked_matches_reference(p):
    """(R) with retention, b and a chunk-frozen c all active at once."""
    state, x = setup(RULES["dgd:l2"], p)
    g = torch.Generator().manual_seed(p["seed"] + 1)
    c = 0.3 * torch.randn(x["k"].shape, generator=g, dtype=DT)
    kw = dict(retention=x["retention"], b=x["lr"], c=c, chunk=p["chunk"],
              read_after_write=p["raw"])
    o_ref, s_ref = M.generalized_delta_reference(state, x["q"], x["k"], x["v"], **kw)
    o_chk, s_chk = M.generalized_delta_chunked(state, x["q"], x["k"], x["v"], **kw)
    assert_close(o_chk, o_ref)
    assert_state_close(s_chk, s_ref)


# ------------------------------------------------- exactness against independent recurrences
def _loop(state, x, raw, step):
    """Independent per-token loop: S <- step(S, t); o_t = S_t q_t or S_{t-1} q_t."""
    S, outs = state["S"], []
    for t in range(x["q"].shape[2]):
        S_new = step(S, t)
        outs.append(torch.einsum("bhvk,bhk->bhv", S_new if raw else S, x["q"][:, :, t]))
        S = S_new
    return torch.stack(outs, 2), S


def _outer(a, b):
    return a[..., :, None] * b[..., None, :]


def _exact_step(name, x):
    k, v, lr, al, gm = x["k"], x["v"], x["lr"], x["retention"], x["gamma"]
    sc = lambda z, t: z[:, :, t, None, None]  # noqa: E731  (B, H, T) -> (B, H, 1, 1)
    Sk = lambda S, t: torch.einsum("bhvk,bhk->bhv", S, k[:, :, t])  # noqa: E731
    steps = {  # written from the papers' equations, independently of the module
        "linear_attention": lambda S, t: S + sc(lr, t) * _outer(v[:, :, t], k[:, :, t]),
        "gated_linear_attention":
            lambda S, t: sc(al, t) * S + sc(lr, t) * _outer(v[:, :, t], k[:, :, t]),
        "delta_rule": lambda S, t: S - sc(lr, t) * _outer(Sk(S, t) - v[:, :, t], k[:, :, t]),
        "gated_delta_rule": lambda S, t: sc(al, t) * (S - sc(lr, t) * _outer(Sk(S, t), k[:, :, t]))
        + sc(lr, t) * _outer(v[:, :, t], k[:, :, t]),
        # NL-arXiv Eq. 88 at chunk = 1: S (alpha I - eta k k^T) - eta (S k - v) k^T
        "dgd:l2": lambda S, t: sc(al, t) * S - sc(lr, t) * _outer(Sk(S, t), k[:, :, t])
        - sc(lr, t) * _outer(Sk(S, t) - v[:, :, t], k[:, :, t]),
        "dgd:dot": lambda S, t: sc(al, t) * S - sc(lr, t) * _outer(Sk(S, t), k[:, :, t])
        + sc(lr, t) * _outer(v[:, :, t], k[:, :, t]),
        # Omega, window 1, chunk 1 = Titans-linear with decay: alpha S - gamma (S k - v) k^T
        "omega_rule:w1":
            lambda S, t: sc(al, t) * S - sc(gm, t) * _outer(Sk(S, t) - v[:, :, t], k[:, :, t]),
    }
    return steps[name]


@pytest.mark.parametrize("name", ["linear_attention", "gated_linear_attention", "delta_rule",
                                  "gated_delta_rule", "dgd:dot"])
@given(p=shapes)
def test_exact_rules_match_recurrence_at_any_chunk(name, p):
    rule = RULES[name]
    state, x = setup(rule, p)
    o_exp, S_exp = _loop(state, x, p["raw"], _exact_step(name, x))
    o, s = rule.call("chk", state, x, p["chunk"], p["raw"])
    assert_close(o, o_exp)
    assert_close(s["S"], S_exp)


@pytest.mark.parametrize("name", ["dgd:l2", "omega_rule:w1"])
@given(p=shapes)
def test_frozen_rules_at_chunk1_are_the_exact_per_token_rule(name, p):
    rule = RULES[name]
    state, x = setup(rule, p)
    o_exp, S_exp = _loop(state, x, p["raw"], _exact_step(name, x))
    o, s = rule.call("chk", state, x, 1, p["raw"])
    assert_close(o, o_exp)
    assert_close(s["S"], S_exp)


@given(p=shapes)
def test_dgd_l2_freezes_gradient_at_chunk_start(p):
    """Eq. 93: u_t = -eta (S_xi k_t - v_t), S_xi the state at the start of t's chunk."""
    state, x = setup(RULES["dgd:l2"], p)
    k, v, lr, al, C = x["k"], x["v"], x["lr"], x["retention"], p["chunk"]
    S, outs = state["S"], []
    S_xi = S
    for t in range(p["T"]):
        if t % C == 0:
            S_xi = S
        err = torch.einsum("bhvk,bhk->bhv", S_xi, k[:, :, t]) - v[:, :, t]
        Sk = torch.einsum("bhvk,bhk->bhv", S, k[:, :, t])
        S_new = (al[:, :, t, None, None] * S - lr[:, :, t, None, None] * _outer(Sk, k[:, :, t])
                 - lr[:, :, t, None, None] * _outer(err, k[:, :, t]))
        outs.append(torch.einsum("bhvk,bhk->bhv", S_new if p["raw"] else S, x["q"][:, :, t]))
        S = S_new
    o, s = M.dgd_chunked(state, x["q"], k, v, lr, al, chunk=C, read_after_write=p["raw"])
    assert_close(o, torch.stack(outs, 2))
    assert_close(s["S"], S)


# -------------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("name", NAMES)
@given(p=shapes, cuts=st.lists(st.integers(1, 19), max_size=3))
def test_streaming_equals_whole(name, p, cuts):
    rule = RULES[name]
    state, x = setup(rule, p)
    T, C = p["T"], p["chunk"]
    if rule.frozen:  # chunk-frozen rules stream at multiples of chunk
        cuts = [c * C for c in cuts]
    bounds = sorted({0, T, *[c for c in cuts if c < T]})
    o_whole, s_whole = rule.call("chk", state, x, C, p["raw"])
    s, outs = state, []
    for a, b in zip(bounds[:-1], bounds[1:]):
        seg = {key: val[:, :, a:b] for key, val in x.items()}
        o, s = rule.call("chk", s, seg, C, p["raw"])
        outs.append(o)
    assert_close(torch.cat(outs, 2), o_whole)
    assert_state_close(s, s_whole)


# ------------------------------------------------------------------ causality / batch indep.
@pytest.mark.parametrize("name", NAMES)
@given(p=shapes, t0=st.integers(0, 18))
def test_causality(name, p, t0):
    rule = RULES[name]
    state, x = setup(rule, p)
    t0 = min(t0, p["T"] - 1)
    _, noise = setup(rule, p, seed_offset=7)
    x2 = {key: torch.cat([val[:, :, :t0 + 1], noise[key][:, :, t0 + 1:]], 2)
          for key, val in x.items()}
    o1, _ = rule.call("chk", state, x, p["chunk"], p["raw"])
    o2, _ = rule.call("chk", state, x2, p["chunk"], p["raw"])
    assert_close(o2[:, :, :t0 + 1], o1[:, :, :t0 + 1], tol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@given(p=shapes)
def test_batch_independence(name, p):
    rule = RULES[name]
    p = {**p, "B": 3}
    state, x = setup(rule, p)
    o, s = rule.call("chk", state, x, p["chunk"], p["raw"])
    for i in range(3):
        st_i = {key: val[i:i + 1] for key, val in state.items()}
        x_i = {key: val[i:i + 1] for key, val in x.items()}
        o_i, s_i = rule.call("chk", st_i, x_i, p["chunk"], p["raw"])
        assert_close(o_i, o[i:i + 1], tol=1e-12)
        assert_state_close(s_i, {key: val[i:i + 1] for key, val in s.items()}, tol=1e-12)


# ------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", NAMES)
def test_gradients_flow_and_match_reference(name):
    rule = RULES[name]
    state, x = make_inputs(2, 2, 11, 4, 3, seed=3, window=window_of(rule))
    leaves = {"S": state["S"], **{key: x[key] for key in ("q", "k", "v", *rule.gates)}}
    grads = {}
    for form in ("chk", "ref"):
        lv = {key: val.clone().requires_grad_(True) for key, val in leaves.items()}
        st_ = {**state, "S": lv["S"]}
        xx = {**x, **{key: lv[key] for key in x if key in lv}}
        o, s = rule.call(form, st_, xx, 4, False)
        g = torch.Generator().manual_seed(0)
        loss = (o * torch.randn(o.shape, generator=g, dtype=DT)).sum() + \
            (s["S"] * torch.randn(s["S"].shape, generator=g, dtype=DT)).sum()
        grads[form] = torch.autograd.grad(loss, list(lv.values()))
    for key, gc, gr in zip(leaves, grads["chk"], grads["ref"]):
        assert torch.isfinite(gc).all(), key
        assert gc.abs().max() > 0, key
        assert_close(gc, gr)


# ------------------------------------------------------------------------ numerics / misc
def test_tiny_retention_float32_is_finite_and_accurate():
    """Log-space decays: retention products down to ~1e-250 per chunk give no NaN/inf."""
    for name in ("gated_linear_attention", "gated_delta_rule", "dgd:l2", "omega_rule:w3"):
        rule = RULES[name]
        st32, x = make_inputs(1, 2, 150, 8, 8, seed=5, window=window_of(rule),
                              dtype=torch.float32)
        x["retention"] = x["retention"] * 1e-3 + 1e-4
        o, s = rule.call("chk", st32, x, 64, True)
        to64 = lambda d: {key: val.double() for key, val in d.items()}  # noqa: E731
        o_ref, s_ref = rule.call("ref", to64(st32), to64(x), 64, True)
        assert torch.isfinite(o).all() and torch.isfinite(s["S"]).all(), name
        torch.testing.assert_close(o.double(), o_ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(s["S"].double(), s_ref["S"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["gated_delta_rule", "dgd:l2", "omega_rule:w3"])
def test_zero_retention_is_finite(name):
    """alpha_t = 0 (e.g. an underflowed sigmoid) must not turn log-space decays into NaN."""
    rule = RULES[name]
    state, x = make_inputs(2, 2, 13, 4, 3, seed=4, window=window_of(rule))
    x["retention"] = torch.where(torch.rand(x["retention"].shape) < 0.3, 0.0, x["retention"])
    o_ref, s_ref = rule.call("ref", state, x, 5, False)
    o, s = rule.call("chk", state, x, 5, False)
    assert_close(o, o_ref)
    assert_state_close(s, s_ref)


def test_broadcast_gates_and_bad_arguments():
    state, x = make_inputs(1, 2, 7, 3, 2, seed=1)
    lr = torch.tensor(0.5, dtype=DT)
    o1, _ = M.delta_rule_chunked(state, x["q"], x["k"], x["v"], lr, chunk=3)
    o2, _ = M.delta_rule_chunked(state, x["q"], x["k"], x["v"], lr.expand(1, 2, 7), chunk=3)
    assert_close(o1, o2)
    with pytest.raises(ValueError):
        M.delta_rule_chunked(state, x["q"], x["k"], x["v"], lr, chunk=0)
    with pytest.raises(ValueError):
        M.dgd_chunked(state, x["q"], x["k"], x["v"], lr, lr, objective="l1")
    with pytest.raises(ValueError):
        M.omega_rule_chunked(state, x["q"], x["k"], x["v"], lr, window=0)


# --------------------------------------------------------------------------- torch.compile
@pytest.mark.parametrize("name", ["linear_attention", "gated_linear_attention", "delta_rule",
                                  "gated_delta_rule", "dgd:l2", "omega_rule:w3"])
def test_compile_fullgraph_matches_eager(name):
    """Every public chunked form (all code paths: b, c, retention, Omega band, tail chunk)."""
    rule = RULES[name]
    torch._dynamo.reset()
    state, x = make_inputs(2, 2, 11, 4, 3, seed=2, window=window_of(rule))
    gates = [x[g] for g in rule.gates]

    def fn(state, q, k, v, *gates):
        return rule.chk(state, q, k, v, *gates, chunk=4, read_after_write=True, **rule.kw)

    compiled = torch.compile(fn, backend="eager", fullgraph=True)
    o_c, s_c = compiled(state, x["q"], x["k"], x["v"], *gates)
    o_e, s_e = fn(state, x["q"], x["k"], x["v"], *gates)
    assert_close(o_c, o_e, tol=1e-12)
    assert_state_close(s_c, s_e, tol=1e-12)
