"""Tests for nlc.primitives.cms (Continuum Memory System, NL-arXiv Eqs. 70-74)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from nlc.primitives.cms import (
    KINDS,
    CMSBlock,
    ContinuumMemorySystem,
    cms_apply_update,
    cms_block_chunked,
    cms_block_reference,
    cms_chunk_grad,
    cms_forward,
    cms_chunked,
    cms_init_levels,
    cms_init_params,
    cms_init_state,
    cms_local_delta,
    cms_merge_levels,
    cms_read,
    cms_reinit_from,
    cms_reference,
    cms_split_levels,
    cms_task_surrogate,
)

DT = torch.float64
PARAMS = ("w_in", "b_in", "w_out", "b_out", "w_gate", "w_up")


def close(a, b, rtol=1e-9, atol=1e-12):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def close_state(s1, s2):
    assert set(s1) == set(s2)
    for k in s1:
        close(s1[k], s2[k])


def randn(*shape, seed=0, scale=1.0):
    return scale * torch.randn(*shape, dtype=DT, generator=torch.Generator().manual_seed(seed))


def params(d_in, d_h, d_out=None, *, kind="gelu", bias=True, seed=0):
    return cms_init_params(d_in, d_h, d_out, kind=kind, bias=bias, dtype=DT,
                           generator=torch.Generator().manual_seed(seed))


def make_lr(shape, B, T, seed):
    if shape == "scalar":
        return torch.tensor(0.05, dtype=DT)
    if shape == "batch":
        return 0.05 * torch.rand(B, dtype=DT, generator=torch.Generator().manual_seed(seed))
    return 0.05 * torch.rand(B, T, dtype=DT, generator=torch.Generator().manual_seed(seed))


def lr_at(lr, b, t):
    if lr.dim() == 0:
        return lr
    if lr.dim() == 1:
        return lr[b]
    return lr[b, t]


# ----------------------------------------------------------------- independent formulas
def mlp_plain(p, x, kind, residual):
    """Independent block forward for unbatched params, x (n, Din), via F.linear."""
    if kind == "swiglu":
        h = F.silu(F.linear(x, p["w_gate"])) * F.linear(x, p["w_up"])
    else:
        act = {"gelu": F.gelu, "silu": F.silu, "relu": F.relu}[kind]
        h = act(F.linear(x, p["w_in"], p.get("b_in")))
    y = F.linear(h, p["w_out"], p.get("b_out"))
    return y + x if residual else y


def summed_grad_update(p_b, x_b, lr, b, ts, kind, residual, signal, target_b=None, delta_b=None):
    """theta - sum_{t in ts} eta_t grad l_t(theta) for one sequence, by torch.autograd."""
    leaf = {k: v.detach().clone().requires_grad_(True) for k, v in p_b.items()}
    loss = 0.0
    for t in ts:
        y = mlp_plain(leaf, x_b[t:t + 1], kind, residual)[0]
        if signal == "local":
            tgt = x_b[t] if target_b is None else target_b[t]
            l_t = ((y - tgt) ** 2).sum()
        else:
            l_t = (y * delta_b[t]).sum()
        loss = loss + lr_at(lr, b, t) * l_t
    grads = torch.autograd.grad(loss, list(leaf.values()), allow_unused=True)
    return {k: p_b[k] - (g if g is not None else 0) for k, g in zip(leaf, grads)}


def batch_params(state, b):
    return {k: v[b] for k, v in state.items() if k in PARAMS}


# ----------------------------------------------------------------- analytic chunk gradient
@given(st.sampled_from(KINDS), st.booleans(), st.booleans(), st.integers(1, 3),
       st.integers(1, 7), st.integers(1, 5), st.integers(1, 6), st.integers(0, 10_000))
def test_chunk_grad_matches_autograd(kind, bias, residual, B, n, d, dh, seed):
    p = params(d, dh, kind=kind, bias=bias, seed=seed)
    state = cms_init_state(p, B)
    x = randn(B, n, d, seed=seed + 1)
    delta = randn(B, n, d, seed=seed + 2)
    lr = make_lr("token", B, n, seed)
    g, dx = cms_chunk_grad(state, x, delta, lr, kind=kind, residual=residual,
                           return_input_grad=True)
    assert set(g) == set(p)
    y_fwd, cache = cms_forward(state, x, kind=kind, residual=residual)  # the read's activations, reused
    assert torch.equal(y_fwd, cms_read(state, x, kind=kind, residual=residual))
    g_cached = cms_chunk_grad(state, x, delta, lr, kind=kind, residual=residual, cache=cache)
    assert all(torch.equal(g_cached[k], g[k]) for k in g)
    for b in range(B):
        upd = summed_grad_update(p, x[b], lr, b, range(n), kind, residual, "task", delta_b=delta[b])
        for k in p:
            close(p[k] - g[k][b], upd[k])
    xr = x.clone().requires_grad_(True)
    y = cms_read(state, xr, kind=kind, residual=residual)
    (dx_ref,) = torch.autograd.grad(cms_task_surrogate(y, delta), xr)
    close(dx, dx_ref)
    # local signal through the same function, and apply_update
    y0 = cms_read(state, x, kind=kind, residual=residual)
    g_loc = cms_chunk_grad(state, x, cms_local_delta(y0, x), lr, kind=kind, residual=residual)
    new = cms_apply_update(state, g_loc)
    for b in range(B):
        upd = summed_grad_update(p, x[b], lr, b, range(n), kind, residual, "local")
        for k in p:
            close(new[k][b], upd[k])


# ----------------------------------------------------------------- reference == chunked
@st.composite
def cms_case(draw):
    variant = draw(st.sampled_from(["sequential", "independent", "nested"]))
    n = draw(st.integers(1, 3))
    if variant == "nested":
        chunks = [draw(st.integers(1, 3))]
        for _ in range(n - 1):
            chunks.append(chunks[-1] * draw(st.integers(2, 3)))
        chunks = draw(st.permutations(chunks))  # any listed order of the chain
    else:
        chunks = [draw(st.integers(1, 5)) for _ in range(n)]
    return dict(
        variant=variant, chunks=chunks,
        kind=draw(st.sampled_from(KINDS)), bias=draw(st.booleans()),
        residual=draw(st.booleans()), signal=draw(st.sampled_from(["local", "task"])),
        policy=draw(st.sampled_from(["carry", "drop", "flush"])),
        lr_shape=draw(st.sampled_from(["scalar", "batch", "token"])),
        B=draw(st.integers(1, 2)), T=draw(st.integers(0, 10)), d=draw(st.integers(1, 4)),
        dh=draw(st.integers(1, 5)), pos=draw(st.integers(0, 7)),
        use_target=draw(st.booleans()), seed=draw(st.integers(0, 10_000)),
    )


def build(c):
    n = len(c["chunks"])
    lv = [params(c["d"], c["dh"], kind=c["kind"], bias=c["bias"], seed=c["seed"] + l) for l in range(n)]
    if c["variant"] == "nested":
        lv = [lv[0]] * n
    state = cms_init_levels(lv, c["B"])
    # a non-trivial pending sum, as a previous carry call would leave
    for k in list(state):
        if ".acc." in k:
            state[k] = randn(*state[k].shape, seed=c["seed"] + 99, scale=0.01)
    B, T, d = c["B"], c["T"], c["d"]
    x = randn(B, T, d, seed=c["seed"] + 10)
    kw = dict(chunks=c["chunks"], lrs=[make_lr(c["lr_shape"], B, T, c["seed"] + l) for l in range(n)],
              variant=c["variant"], weights=randn(n, seed=c["seed"] + 11), signal=c["signal"],
              target=randn(B, T, d, seed=c["seed"] + 12) if c["use_target"] else None,
              delta=randn(B, T, d, seed=c["seed"] + 13), pos=c["pos"], policy=c["policy"],
              kind=c["kind"], residual=c["residual"])
    return state, x, kw


@given(cms_case())
def test_reference_equals_chunked(c):
    state, x, kw = build(c)
    y_ref, s_ref = cms_reference(state, x, **kw)
    y, s = cms_chunked(state, x, **kw)
    close(y, y_ref)
    close_state(s, s_ref)
    assert y.shape == x.shape


@given(cms_case())
def test_streaming_random_segments_equals_whole(c):
    c = dict(c, policy="carry", T=max(c["T"], 1))
    state, x, kw = build(c)
    y, s = cms_chunked(state, x, **kw)
    T = x.shape[1]
    g = torch.Generator().manual_seed(c["seed"])
    cuts = sorted(set(torch.randint(0, T + 1, (3,), generator=g).tolist()))
    pts = [0] + cuts + [T]
    st_, outs = state, []
    for a, b in zip(pts[:-1], pts[1:]):
        seg = dict(kw, pos=kw["pos"] + a, delta=kw["delta"][:, a:b],
                   target=None if kw["target"] is None else kw["target"][:, a:b],
                   lrs=[lr[:, a:b] if lr.dim() == 2 else lr for lr in kw["lrs"]])
        o, st_ = cms_chunked(st_, x[:, a:b], **seg)
        outs.append(o)
    close(torch.cat(outs, 1), y)
    close_state(st_, s)


# ----------------------------------------------------------------- the update rule itself
@given(st.integers(1, 5), st.integers(1, 13), st.sampled_from(KINDS), st.booleans(),
       st.sampled_from(["local", "task"]), st.sampled_from(["scalar", "batch", "token"]),
       st.integers(0, 10_000))
def test_params_change_exactly_at_multiples_of_C(C, T, kind, residual, signal, lr_shape, seed):
    B, d, dh = 2, 3, 4
    p = params(d, dh, kind=kind, seed=seed)
    state0 = cms_init_state(p, B)
    x = randn(B, T, d, seed=seed + 1)
    delta = randn(B, T, d, seed=seed + 2)
    lr = make_lr(lr_shape, B, T, seed)
    kw = dict(chunk=C, signal=signal, kind=kind, residual=residual)

    # token-by-token streaming (carry): record the parameters after every token
    state, traj, outs = state0, [], []
    for t in range(T):
        lr_t = lr[:, t:t + 1] if lr.dim() == 2 else lr
        o, new = cms_block_chunked(state, x[:, t:t + 1], lr=lr_t, delta=delta[:, t:t + 1], pos=t, **kw)
        changed = any(not torch.equal(new[k], state[k]) for k in p)
        assert changed == ((t + 1) % C == 0), (t, C)
        outs.append(o)
        traj.append(new)
        state = new

    # independently: theta_{(j+1)C} = theta_{jC} - sum_{t in chunk j} eta_t grad l_t(theta_{jC})
    for b in range(B):
        theta = dict(p)
        for j in range(T // C):
            ts = range(j * C, (j + 1) * C)
            for t in ts:  # outputs of chunk j use the chunk-start parameters
                close(outs[t][b, 0], mlp_plain(theta, x[b, t:t + 1], kind, residual)[0])
            theta = summed_grad_update(theta, x[b], lr, b, ts, kind, residual, signal, delta_b=delta[b])
            for k in p:
                close(traj[(j + 1) * C - 1][k][b], theta[k])
    # one whole call gives the same outputs and state (reference and chunked)
    for fn in (cms_block_chunked, cms_block_reference):
        y, s = fn(state0, x, lr=lr, delta=delta, **kw)
        close(y, torch.cat(outs, 1))
        close_state(s, state)


def test_carry_keeps_partial_chunk_gradients():
    """C = 4; call 1 sees tokens 0..5, call 2 tokens 6..7: the chunk 4..7 update must include
    the gradients of tokens 4 and 5 seen in call 1 (nothing dropped between updates)."""
    B, d, dh, C = 2, 3, 5, 4
    p = params(d, dh, seed=1)
    x = randn(B, 8, d, seed=2)
    lr = torch.tensor(0.1, dtype=DT)
    kw = dict(chunk=C, lr=lr, policy="carry")
    _, s1 = cms_block_chunked(cms_init_state(p, B), x[:, :6], **kw)
    _, s2 = cms_block_chunked(s1, x[:, 6:], pos=6, **kw)
    for b in range(B):
        th1 = summed_grad_update(p, x[b], lr, b, range(0, 4), "gelu", False, "local")
        th2 = summed_grad_update(th1, x[b], lr, b, range(4, 8), "gelu", False, "local")
        part = summed_grad_update(th1, x[b], lr, b, range(4, 6), "gelu", False, "local")
        for k in p:
            close(s1[k][b], th1[k])  # partial chunk not applied yet
            close(s1["acc." + k][b], th1[k] - part[k])  # ... but held in the state
            close(s2[k][b], th2[k])
            assert torch.count_nonzero(s2["acc." + k]) == 0


def test_drop_and_flush_policies():
    B, d, dh, C = 2, 3, 4, 4
    p = params(d, dh, seed=3)
    x = randn(B, 6, d, seed=4)
    lr = torch.tensor(0.1, dtype=DT)
    st0 = cms_init_state(p, B)
    _, s_drop = cms_block_chunked(st0, x, chunk=C, lr=lr, policy="drop")
    _, s_flush = cms_block_chunked(st0, x, chunk=C, lr=lr, policy="flush")
    for b in range(B):
        th1 = summed_grad_update(p, x[b], lr, b, range(0, 4), "gelu", False, "local")
        th_f = summed_grad_update(th1, x[b], lr, b, range(4, 6), "gelu", False, "local")
        for k in p:
            close(s_drop[k][b], th1[k])
            close(s_flush[k][b], th_f[k])
    for s in (s_drop, s_flush):
        assert all(torch.count_nonzero(s["acc." + k]) == 0 for k in p)
    # flush/drop restart chunks at each call: pos is ignored
    y_a, s_a = cms_block_chunked(s_flush, x, chunk=C, lr=lr, policy="flush", pos=3)
    y_b, s_b = cms_block_chunked(s_flush, x, chunk=C, lr=lr, policy="flush", pos=0)
    close(y_a, y_b)
    close_state(s_a, s_b)


@given(st.sampled_from(["sequential", "independent", "nested"]), st.sampled_from(["local", "task"]),
       st.integers(3, 10), st.integers(0, 10_000))
def test_causality_and_batch_independence(variant, signal, T, seed):
    c = dict(variant=variant, chunks=[4, 2] if variant == "nested" else [2, 3], kind="gelu",
             bias=True, residual=False, signal=signal, policy="carry", lr_shape="batch", B=2, T=T,
             d=3, dh=4, pos=1, use_target=False, seed=seed)
    state, x, kw = build(c)
    y, s = cms_chunked(state, x, **kw)
    t = T // 2
    x2, d2 = x.clone(), kw["delta"].clone()
    x2[:, t + 1:] += 1.0
    d2[:, t + 1:] += 1.0
    y2, _ = cms_chunked(state, x2, **dict(kw, delta=d2))
    close(y2[:, : t + 1], y[:, : t + 1])  # outputs <= t ignore later tokens and signals
    # sample 0's outputs and state never see sample 1's data
    x3, d3 = x.clone(), kw["delta"].clone()
    x3[1] += 2.0
    d3[1] -= 1.0
    y3, s3 = cms_chunked(state, x3, **dict(kw, delta=d3))
    close(y3[0], y[0])
    for k in s:
        close(s3[k][0], s[k][0])


# ----------------------------------------------------------------- variants
def test_sequential_local_is_a_chain_of_blocks():
    B, T, d, dh = 2, 11, 3, 4
    p0, p1 = params(d, dh, seed=1), params(d, dh, seed=2)
    x = randn(B, T, d, seed=3)
    lrs = [torch.tensor(0.05, dtype=DT), torch.tensor(0.02, dtype=DT)]
    y, s = cms_chunked(cms_init_levels([p0, p1], B), x, chunks=[2, 3], lrs=lrs)
    y0, s0 = cms_block_chunked(cms_init_state(p0, B), x, chunk=2, lr=lrs[0])
    y1, s1 = cms_block_chunked(cms_init_state(p1, B), y0, chunk=3, lr=lrs[1])
    close(y, y1)
    close_state(cms_split_levels(s)[0], s0)
    close_state(cms_split_levels(s)[1], s1)


def test_independent_is_weighted_sum_of_separate_blocks():
    B, T, d, dh = 2, 10, 3, 4
    ps = [params(d, dh, seed=i) for i in range(3)]
    x = randn(B, T, d, seed=5)
    w = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    delta = randn(B, T, d, seed=6)
    lrs = [torch.tensor(v, dtype=DT) for v in (0.1, 0.05, 0.02)]
    chunks = [1, 3, 4]
    for signal in ("local", "task"):
        y, s = cms_chunked(cms_init_levels(ps, B), x, chunks=chunks, lrs=lrs, variant="independent",
                           weights=w, signal=signal, delta=delta)
        expect = 0
        for l in range(3):
            d_l = w[l] * delta  # task signal of level l = w_l * dL/dy
            y_l, s_l = cms_block_chunked(cms_init_state(ps[l], B), x, chunk=chunks[l], lr=lrs[l],
                                         signal=signal, delta=d_l)
            expect = expect + w[l] * y_l
            close_state(cms_split_levels(s)[l], s_l)
        close(y, expect)


def test_nested_chain_resets_fast_level_to_slow_level():
    """Spec layout: layers [fast (C=2), slow (C=4)] chained; when the slow level completes a
    chunk the fast level is re-initialised to the slow level's new state (Eq. 72)."""
    B, T, d, dh = 2, 8, 3, 4
    p = params(d, dh, seed=7)
    x = randn(B, T, d, seed=8)
    lrs = [torch.tensor(0.2, dtype=DT), torch.tensor(0.1, dtype=DT)]
    kw = dict(chunks=[2, 4], lrs=lrs, variant="nested")
    state, outs, trajs = cms_init_levels([p, p], B), [], []
    for t in range(T):
        y, state = cms_chunked(state, x[:, t:t + 1], pos=t, **kw)
        outs.append(y)
        trajs.append(cms_split_levels(state))
    y_whole, s_whole = cms_chunked(cms_init_levels([p, p], B), x, **kw)
    close(y_whole, torch.cat(outs, 1))
    close_state(s_whole, state)
    for b in range(B):
        th_fast, th_slow, mid = dict(p), dict(p), []
        for t in range(T):
            mid.append(mlp_plain(th_fast, x[b, t:t + 1], "gelu", False)[0])  # fast read, chunk start
            close(outs[t][b, 0], mlp_plain(th_slow, mid[t][None], "gelu", False)[0])
            if (t + 1) % 2 == 0:
                th_fast = summed_grad_update(th_fast, x[b], lrs[0], b, range(t - 1, t + 1), "gelu", False, "local")
            if (t + 1) % 4 == 0:
                th_slow = summed_grad_update(th_slow, torch.stack(mid), lrs[1], b, range(t - 3, t + 1),
                                             "gelu", False, "local")
                th_fast = dict(th_slow)  # Eq. 72: re-initialised to the slower level's state
            fast, slow = trajs[t]
            for k in p:
                close(fast[k][b], th_fast[k])
                close(slow[k][b], th_slow[k])
    fast, slow = trajs[3]
    for k in p:
        close(slow[k], fast[k])  # after a slow boundary the two levels coincide
        assert torch.count_nonzero(fast["acc." + k]) == 0
    assert not torch.equal(trajs[5][0]["w_in"], trajs[5][1]["w_in"])
    # the same reset as a standalone helper
    re = cms_reinit_from(fast, slow)
    close_state({k: v for k, v in re.items()}, {k: (torch.zeros_like(v) if "acc." in k else slow[k])
                                                for k, v in fast.items()})
    with pytest.raises(ValueError):
        cms_chunked(cms_init_levels([p, p], B), x, chunks=[3, 2], lrs=lrs, variant="nested")
    with pytest.raises(ValueError):
        cms_chunked(cms_init_levels([p, p], B), x, chunks=[2, 2], lrs=lrs, variant="nested")


# ----------------------------------------------------------------- meta-gradients
def test_gradients_reach_meta_learned_init():
    B, T, d, dh = 2, 7, 3, 4
    ps = [{k: v.clone().requires_grad_(True) for k, v in params(d, dh, seed=i).items()} for i in range(2)]
    x = randn(B, T, d, seed=3)
    delta = randn(B, T, d, seed=4)
    kw = dict(chunks=[2, 3], lrs=[torch.tensor(0.3, dtype=DT)] * 2, signal="task", delta=delta)
    leaves = [v for p in ps for v in p.values()]
    grads = []
    for fn in (cms_chunked, cms_reference):
        y, s = fn(cms_init_levels(ps, B), x, **kw)
        loss = (y ** 2).sum() + sum((v ** 2).sum() for k, v in s.items() if "acc." not in k)
        grads.append(torch.autograd.grad(loss, leaves))
    for g1, g2 in zip(*grads):
        close(g1, g2)
        assert g1.abs().sum() > 0
    # the update path itself carries gradient: the last output depends on init via updates
    p0 = {k: v.detach().clone().requires_grad_(True) for k, v in params(d, dh, seed=9).items()}

    def f(w_in):
        q = dict(p0, w_in=w_in)
        return cms_block_chunked(cms_init_state(q, 1), x[:1, :5], chunk=2, lr=0.3)[1]["w_out"]

    assert torch.autograd.gradcheck(f, (p0["w_in"],))


# ----------------------------------------------------------------- compile
def test_compile_fullgraph_equals_eager():
    B, T, d, dh = 2, 9, 3, 4
    ps = [params(d, dh, seed=i) for i in range(2)]
    state = cms_init_levels(ps, B)
    x = randn(B, T, d, seed=1)
    delta = randn(B, T, d, seed=2)
    lrs = [torch.tensor(0.1, dtype=DT), torch.tensor(0.05, dtype=DT)]

    def run(state, x, delta, lr0, lr1):
        return cms_chunked(state, x, chunks=[2, 4], lrs=[lr0, lr1], signal="task", delta=delta,
                           pos=1, variant="sequential")

    rc = torch.compile(run, backend="eager", fullgraph=True)
    (y_c, s_c), (y_e, s_e) = rc(state, x, delta, *lrs), run(state, x, delta, *lrs)
    close(y_c, y_e)
    close_state(s_c, s_e)

    blk = cms_init_state(params(d, dh, kind="swiglu", seed=3), B)

    def run_block(s, x):
        y, s2 = cms_block_chunked(s, x, chunk=3, lr=0.1, kind="swiglu", residual=True)
        g = cms_chunk_grad(s, x, x, 0.1, kind="swiglu")
        return y, s2, g, cms_read(state, x, variant="independent", weights=lrs[0].expand(2))

    rb = torch.compile(run_block, backend="eager", fullgraph=True)
    for a, b in zip(rb(blk, x), run_block(blk, x)):
        if isinstance(a, dict):
            close_state(a, b)
        else:
            close(a, b)


# ----------------------------------------------------------------- modules / misc
def test_modules():
    torch.manual_seed(0)
    m = CMSBlock(4, 8, chunk=3, lr=0.1).double()
    x = randn(2, 7, 4, seed=1)
    y, s = m(x)
    y2, s2 = m(x[:, 4:], s, pos=7)
    (y.sum() + y2.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.init.values())
    assert s["w_in"].shape == (2, 8, 4)

    for variant, chunks in (("sequential", [2, 3]), ("independent", [1, 4]), ("nested", [4, 2])):
        cms = ContinuumMemorySystem(4, 6, chunks=chunks, lrs=[0.1, 0.05], variant=variant,
                                    signal="task").double()
        delta = randn(2, 7, 4, seed=2)
        y, s = cms(x, delta=delta)
        assert y.shape == x.shape
        close(y[:, :1], cms_read(cms.init_state(2), x[:, :1], variant=variant, weights=cms.agg))
        (y ** 2).sum().backward()
        assert all(p.grad is not None for p in cms.parameters())
    assert len(list(ContinuumMemorySystem(4, 6, chunks=[4, 2], variant="nested").inits)) == 1


def test_state_helpers_and_validation():
    p = params(3, 4, seed=0)
    s = cms_init_levels([p, p], 2)
    assert set(cms_merge_levels(cms_split_levels(s))) == set(s)
    x = randn(2, 5, 3)
    lrs = [0.1, 0.1]
    with pytest.raises(ValueError):
        cms_chunked(s, x, chunks=[2, 2], lrs=lrs, variant="nope")
    with pytest.raises(ValueError):
        cms_chunked(s, x, chunks=[2, 2], lrs=lrs, signal="task")  # no delta
    with pytest.raises(ValueError):
        cms_chunked(s, x, chunks=[2, 2], lrs=lrs, policy="keep")
    with pytest.raises(ValueError):
        cms_chunked(s, x, chunks=[2, 2], lrs=lrs, variant="independent")  # no weights
    with pytest.raises(ValueError):
        cms_chunked(s, x, chunks=[0, 2], lrs=lrs)
    with pytest.raises(KeyError):
        cms_split_levels(cms_init_state(p, 2))


@pytest.mark.parametrize("variant", ["sequential", "independent", "nested"])
@pytest.mark.parametrize("signal", ["local", "task"])
def test_reference_equals_chunked_three_levels(variant, signal):
    """Deterministic coverage of every variant x signal with 3 levels (the task signal of an
    inner sequential level is back-propagated through the later levels)."""
    c = dict(variant=variant, chunks=[4, 2, 1] if variant == "nested" else [2, 3, 1], kind="silu",
             bias=True, residual=True, signal=signal, policy="carry", lr_shape="token", B=2, T=9,
             d=3, dh=4, pos=2, use_target=False, seed=5)
    state, x, kw = build(c)
    y_ref, s_ref = cms_reference(state, x, **kw)
    y, s = cms_chunked(state, x, **kw)
    close(y, y_ref)
    close_state(s, s_ref)


def test_nested_cascade_three_levels():
    p = params(3, 4, seed=11)
    x = randn(2, 4, 3, seed=12)
    lrs = [torch.tensor(v, dtype=DT) for v in (0.3, 0.2, 0.1)]
    _, s = cms_chunked(cms_init_levels([p, p, p], 2), x, chunks=[1, 2, 4], lrs=lrs, variant="nested")
    fast, mid, slow = cms_split_levels(s)
    _, s3 = cms_chunked(cms_init_levels([p, p, p], 2), x[:, :3], chunks=[1, 2, 4], lrs=lrs,
                        variant="nested")
    f3, m3, sl3 = cms_split_levels(s3)
    for k in p:
        close(mid[k], slow[k])  # token 4 ends the slow chunk: mid <- slow, then fast <- mid
        close(fast[k], slow[k])
        assert not torch.equal(slow[k], p[k].expand_as(slow[k]))
    assert not torch.equal(f3["w_in"], m3["w_in"])  # token 3: fast updated alone
    assert torch.equal(sl3["w_in"], p["w_in"].expand_as(sl3["w_in"]))  # slow not yet
