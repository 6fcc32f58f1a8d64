"""HOPE self-modifying Titans (nlc.primitives.selfmod): chunked == reference, exact rule, etc.

Notation: B batch, H heads, T tokens, D per-head width, Dh memory hidden width, Cm / Co the
chunk sizes of the main memory / of the k, v, eta, alpha memories. Memories M_r(x) =
x + W1_r act(W2_r x) with W1_r (B, H, D, Dh), W2_r (B, H, Dh, D). Equality tests run in
float64 (rtol 1e-9, atol 1e-9 * max(1, max |expected|)); states use the same tolerance.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

from nlc.primitives import selfmod as SM

DT = torch.float64
FORMS = {"chk": SM.selfmod_chunked, "ref": SM.selfmod_reference}


def make_inputs(B, H, T, D, Dh, seed, *, dtype=DT, components=SM.HOPE_COMPONENTS, alpha=True,
                momentum=False):
    """Meta-params, a per-sequence state (perturbed per sample), inputs x and the given roles:
    every role of q, k, v, eta (and alpha with ``alpha``) that ``components`` do not generate;
    with ``momentum`` the state holds (perturbed) buffers and ``given["beta"]`` is a momentum."""
    g = torch.Generator().manual_seed(seed)
    params = SM.init_selfmod_params(H, D, Dh, generator=g, dtype=dtype, components=components)
    for name, shift in (("b_eta", torch.randn(H, generator=g, dtype=dtype)),
                        ("b_alpha", -torch.rand(H, generator=g, dtype=dtype))):
        if name in params:
            params[name] = params[name] + shift
    state = {key: val + 0.1 * torch.randn(val.shape, generator=g, dtype=dtype)
             for key, val in SM.init_selfmod_state(params, B, momentum=momentum).items()}
    # unit-norm per head, as the runtime feeds it (HOPE's components read x l2-normalised): with
    # unbounded x the exact self-referential rule itself diverges (self-targets grow with the
    # weights), and two diverging computations cannot be compared
    unit = lambda: F.normalize(torch.randn(B, H, T, D, generator=g, dtype=dtype), dim=-1)  # noqa: E731
    x, given = unit(), {}
    for r in ("q", "k", "v"):
        value = unit()
        if r not in components:
            given[r] = value
    eta = 0.5 * torch.rand(B, H, T, generator=g, dtype=dtype)
    if "eta" not in components:
        given["eta"] = eta
    retention = 0.5 + 0.5 * torch.rand(B, H, T, generator=g, dtype=dtype)
    if alpha and "alpha" not in components:
        given["alpha"] = retention
    beta = 0.9 * torch.rand(B, H, T, generator=g, dtype=dtype)
    if momentum:
        given["beta"] = beta
    return params, state, x, given


def run(form, state, x, given, params, p):
    given = dict(given)
    beta = given.pop("beta", None)
    return FORMS[form](state, x if SM.components_of(state) else None, given, params=params,
                       momentum=beta, precondition=p.get("precondition", True), chunk_memory=p["Cm"],
                       chunk_other=p["Co"], eta_max=p["eta_max"], normalize_k=p["norm"],
                       normalize_q=p.get("norm_q", True), activation=p["act"])


def assert_close(a, b, tol=1e-9):
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    torch.testing.assert_close(a, b, rtol=tol, atol=tol * scale)


def assert_state_close(s1, s2, tol=1e-9):
    assert s1.keys() == s2.keys()
    for key in s1:
        assert_close(s1[key], s2[key], tol)


@st.composite
def configs(draw, T=(1, 13)):
    """Sizes, chunks and the rule: which roles have a component memory (HOPE's four, its
    Table 6 ablations and any other subset), a momentum, the DGD preconditioner or not."""
    Co = draw(st.integers(1, 5))
    components = tuple(r for r in SM.COMPONENTS
                       if draw(st.booleans() if r != "q" else st.sampled_from([False, False, True])))
    return dict(B=draw(st.integers(1, 2)), H=draw(st.integers(1, 2)), T=draw(st.integers(*T)),
                D=draw(st.integers(1, 5)), Dh=draw(st.integers(1, 5)), Co=Co,
                Cm=Co * draw(st.integers(1, 3)), seed=draw(st.integers(0, 2**16)),
                eta_max=draw(st.floats(0.05, 0.6)), norm=draw(st.booleans()),
                act=draw(st.sampled_from(["gelu", "silu", "relu", "identity"])),
                components=components, alpha=draw(st.booleans()), momentum=draw(st.booleans()),
                precondition=draw(st.booleans()), norm_q=draw(st.booleans()))


def bounded(o, state, limit=1e6):
    """The rule (NL-arXiv Eq. 88) can diverge for some draws (self-targets grow with the weights);
    equality of two forms is only asserted on trajectories that stay finite and bounded."""
    return all(bool(t.isfinite().all()) and float(t.abs().max()) < limit
               for t in (o, *state.values()) if t.numel())


def setup(p, seed=None):
    return make_inputs(p["B"], p["H"], p["T"], p["D"], p["Dh"], p["seed"] if seed is None else seed,
                       components=p.get("components", SM.HOPE_COMPONENTS), alpha=p.get("alpha", True),
                       momentum=p.get("momentum", False))


def cut(given, a, b):
    return {r: t[:, :, a:b] for r, t in given.items()}


# ------------------------------------------------------------------ chunked == reference
@given(p=configs(T=(1, 16)))
def test_chunked_matches_reference(p):
    params, state, x, g = setup(p)
    o_ref, s_ref = run("ref", state, x, g, params, p)
    assume(bounded(o_ref, s_ref))
    o_chk, s_chk = run("chk", state, x, g, params, p)
    assert o_chk.shape == (p["B"], p["H"], p["T"], p["D"])
    assert_close(o_chk, o_ref)
    assert_state_close(s_chk, s_ref)


# ---------------------------------------------- chunk sizes 1 == the exact self-referential rule
_ACT = {"gelu": F.gelu, "silu": F.silu, "relu": torch.relu, "identity": lambda z: z}


def exact_loop(state, x, given, params, p):
    """NL-arXiv Eqs. 83-88 + 94 with Titans' momentum (Eqs. 9-10), token by token, everything
    from M_{t-1}, written independently of the module: inner gradients by torch.autograd at
    M_{r,t-1}; S <- beta S - eta grad, W2 <- W2 (alpha I - p eta k k^T) + S2, W1 <- alpha W1 + S1
    (no momentum: S = -eta grad)."""
    f = _ACT[p["act"]]
    mv = lambda W, z: torch.einsum("bhij,bhj->bhi", W, z)  # noqa: E731

    def mem(W, z):
        return z + mv(W[0], f(mv(W[1], z)))

    def unit(z):
        return z / torch.sqrt((z * z).sum(-1, keepdim=True) + 1e-6)

    roles = [r for r in SM.COMPONENTS if f"W1_{r}" in state] + ["memory"]
    W = {r: (state[f"W1_{r}"], state[f"W2_{r}"]) for r in roles}
    S = {r: (state[f"S1_{r}"], state[f"S2_{r}"]) for r in roles if f"S1_{r}" in state}
    outs = []
    for t in range(x.shape[2]):
        xt = x[:, :, t]
        z = {r: val[:, :, t] for r, val in given.items()}
        if "k" in W:
            z["k"] = unit(mem(W["k"], xt)) if p["norm"] else mem(W["k"], xt)
        if "v" in W:
            z["v"] = mem(W["v"], xt)
        if "q" in W:  # adaptive queries: q_t = M_{q,t-1}(x_t)
            z["q"] = unit(mem(W["q"], xt)) if p.get("norm_q", True) else mem(W["q"], xt)
        if "eta" in W:
            z["eta"] = p["eta_max"] * torch.sigmoid((mem(W["eta"], xt) * params["w_eta"]).sum(-1)
                                                    + params["b_eta"])
        if "alpha" in W:
            z["alpha"] = torch.sigmoid((mem(W["alpha"], xt) * params["w_alpha"]).sum(-1) + params["b_alpha"])
        k, eta = z["k"], z["eta"]
        alpha = z.get("alpha", torch.ones_like(eta))
        outs.append(mem(W["memory"], z["q"]))  # o_t = M_{memory,t-1}(q_t)
        eye = torch.eye(k.shape[-1], dtype=k.dtype)
        kkT = k[..., :, None] * k[..., None, :]
        pre = alpha[..., None, None] * eye - p.get("precondition", True) * eta[..., None, None] * kkT
        new, new_s = {}, {}
        for r in roles:
            vhat = mem(W[r], z["v"]).detach()  # self-generated target v_hat_{r,t} = M_{r,t-1}(v_t)
            with torch.enable_grad():
                w1, w2 = (w.detach().requires_grad_(True) for w in W[r])
                err = mem((w1, w2), k.detach()) - vhat
                g1, g2 = torch.autograd.grad(0.5 * (err * err).sum(), (w1, w2))
            s1, s2 = -eta[..., None, None] * g1, -eta[..., None, None] * g2
            if S:
                b = z["beta"][..., None, None]
                s1, s2 = b * S[r][0] + s1, b * S[r][1] + s2
                new_s[r] = (s1, s2)
            new[r] = (alpha[..., None, None] * W[r][0] + s1, W[r][1] @ pre + s2)  # Eq. 88 on W2
        W, S = new, new_s
    out_state = {f"W{i + 1}_{r}": W[r][i] for r in roles for i in range(2)}
    out_state.update({f"S{i + 1}_{r}": S[r][i] for r in S for i in range(2)})
    return torch.stack(outs, 2), out_state


@given(p=configs(T=(1, 12)))
def test_chunk_one_is_the_exact_self_referential_rule(p):
    p = {**p, "Cm": 1, "Co": 1}
    params, state, x, g = setup(p)
    with torch.no_grad():
        o_exp, s_exp = exact_loop(state, x, g, params, p)
    assume(bounded(o_exp, s_exp))
    for form in FORMS:
        o, s = run(form, state, x, g, params, p)
        assert_close(o, o_exp)
        assert_state_close(s, s_exp)


def test_chunking_is_an_approximation():
    """Chunked (frozen) gradients differ from the exact rule once a chunk holds > 1 token,
    and the first chunk's reads of the main memory still use the per-token state."""
    p = dict(B=1, H=2, T=8, D=4, Dh=3, Co=2, Cm=4, eta_max=0.5, norm=True, act="gelu", seed=11)
    for momentum in (False, True):
        params, state, x, g = setup({**p, "momentum": momentum})
        o_exact, _ = run("chk", state, x, g, params, {**p, "Cm": 1, "Co": 1})
        o_chunk, _ = run("chk", state, x, g, params, p)
        assert_close(o_chunk[:, :, :2], o_exact[:, :, :2])  # same until the first gradient lag
        assert (o_chunk - o_exact).abs().max() > 1e-6
        o_xi = SM.mlp(state["W1_memory"], state["W2_memory"], g["q"], "gelu")  # M_xi read (Eq. 90)
        assert (o_chunk[:, :, 1:4] - o_xi[:, :, 1:4]).abs().max() > 1e-6


# --------------------------------------------------------------------------------- momentum
@given(p=configs(T=(1, 16)))
def test_zero_momentum_is_the_rule_without_momentum(p):
    """beta = 0 (a state with zero buffers) gives the outputs and weights of no momentum: Eq. 88
    (the log of beta = 0 is floored at the smallest normal float, so equal to ~1e-300)."""
    p = {**p, "momentum": True}
    params, state, x, g = setup(p)
    g["beta"] = torch.zeros_like(g["beta"])
    state = {key: torch.zeros_like(val) if key[0] == "S" else val for key, val in state.items()}
    plain = {key: val for key, val in state.items() if key[0] != "S"}
    g_plain = {r: val for r, val in g.items() if r != "beta"}
    for form in FORMS:
        o0, s0 = run(form, plain, x, g_plain, params, p)
        assume(bounded(o0, s0))
        o, s = run(form, state, x, g, params, p)
        assert_close(o, o0, tol=1e-12)
        assert_state_close({key: val for key, val in s.items() if key[0] != "S"}, s0, tol=1e-12)


def test_momentum_carries_past_writes():
    """With beta > 0 the buffers hold past writes: a token's write keeps acting afterwards
    (the state after two tokens differs from no momentum), and with frozen buffers and no
    write (eta = 0) the memory moves by beta^t S each token."""
    p = dict(B=1, H=1, T=3, D=3, Dh=2, Co=1, Cm=1, eta_max=0.5, norm=True, act="gelu", seed=3,
             components=(), momentum=True)
    params, state, x, g = setup(p)
    g["eta"] = torch.zeros_like(g["eta"])
    g["alpha"] = torch.ones_like(g["alpha"])
    g["beta"] = torch.full_like(g["beta"], 0.5)
    _, s = run("chk", state, x, g, params, p)
    for n in ("1", "2"):  # W_3 = W_0 + (0.5 + 0.25 + 0.125) S_0,  S_3 = 0.125 S_0
        assert_close(s[f"W{n}_memory"], state[f"W{n}_memory"] + 0.875 * state[f"S{n}_memory"], tol=1e-12)
        assert_close(s[f"S{n}_memory"], 0.125 * state[f"S{n}_memory"], tol=1e-12)


# -------------------------------------------------------------------------------- streaming
@given(p=configs(T=(1, 16)), cuts=st.lists(st.integers(1, 8), max_size=3))
def test_streaming_equals_whole(p, cuts):
    params, state, x, g = setup(p)
    T = p["T"]
    bounds = sorted({0, T, *[c * p["Cm"] for c in cuts if c * p["Cm"] < T]})
    o_whole, s_whole = run("chk", state, x, g, params, p)
    assume(bounded(o_whole, s_whole))
    s, outs = state, []
    for a, b in zip(bounds[:-1], bounds[1:]):
        o, s = run("chk", s, x[:, :, a:b], cut(g, a, b), params, p)
        outs.append(o)
    assert_close(torch.cat(outs, 2), o_whole)
    assert_state_close(s, s_whole)


def test_empty_sequence_keeps_state():
    for momentum in (False, True):
        p = dict(B=2, H=1, T=0, D=3, Dh=2, Co=2, Cm=4, eta_max=1.0, norm=True, act="gelu", seed=0,
                 momentum=momentum)
        params, state, x, g = setup(p)
        for form in FORMS:
            o, s = run(form, state, x, g, params, p)
            assert o.shape == (2, 1, 0, 3)
            assert_state_close(s, state)


# ------------------------------------------------------------------ causality / batch indep.
@given(p=configs(), t0=st.integers(0, 12))
def test_causality(p, t0):
    params, state, x, g = setup(p)
    t0 = min(t0, p["T"] - 1)
    _, _, nx, ng = setup(p, seed=p["seed"] + 7)
    x2 = torch.cat([x[:, :, :t0 + 1], nx[:, :, t0 + 1:]], 2)
    g2 = {r: torch.cat([g[r][:, :, :t0 + 1], ng[r][:, :, t0 + 1:]], 2) for r in g}
    o1, s1 = run("chk", state, x, g, params, p)
    assume(bounded(o1, s1))
    o2, _ = run("chk", state, x2, g2, params, p)
    assert_close(o2[:, :, :t0 + 1], o1[:, :, :t0 + 1], tol=1e-12)


@given(p=configs())
def test_batch_independence(p):
    p = {**p, "B": 3}
    params, state, x, g = setup(p)
    o, s = run("chk", state, x, g, params, p)
    assume(bounded(o, s))
    for i in range(3):
        st_i = {key: val[i:i + 1] for key, val in state.items()}
        o_i, s_i = run("chk", st_i, x[i:i + 1], {r: val[i:i + 1] for r, val in g.items()}, params, p)
        assert_close(o_i, o[i:i + 1], tol=1e-12)
        assert_state_close(s_i, {key: val[i:i + 1] for key, val in s.items()}, tol=1e-12)


# ------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("rule", [dict(), dict(momentum=True), dict(components=("k", "eta"), alpha=False),
                                  dict(components=(), precondition=False, momentum=True)],
                         ids=["hope", "momentum", "two-components", "static-gd-momentum"])
def test_gradients_reach_everything_and_match_reference(rule):
    """Outer gradients reach every meta-learned weight, the read-outs, x and the given roles
    (finite, non-zero), through the unrolled inner updates; chunked and reference backward agree."""
    p = dict(B=2, H=2, T=9, D=4, Dh=3, Cm=4, Co=2, eta_max=0.5, norm=True, act="gelu", seed=5, **rule)
    params, _, x, g = setup(p)
    grads = {}
    for form in FORMS:
        torch.manual_seed(1)
        leaves = {key: val.clone().requires_grad_(True) for key, val in params.items()}
        xl = x.clone().requires_grad_(True)
        gl = {r: val.clone().requires_grad_(True) for r, val in g.items()}
        state = SM.init_selfmod_state(leaves, p["B"], momentum=p.get("momentum", False))
        o, s = run(form, state, xl, gl, leaves, p)
        loss = (o * torch.randn(o.shape, dtype=DT)).sum() + sum(
            (s[key] * torch.randn(s[key].shape, dtype=DT)).sum() for key in sorted(s))
        inputs = {**leaves, **({"x": xl} if SM.components_of(state) else {}), **gl}
        grads[form] = dict(zip(inputs, torch.autograd.grad(loss, list(inputs.values()))))
    for key, gc in grads["chk"].items():
        assert torch.isfinite(gc).all(), key
        assert gc.abs().max() > 0, key
        assert_close(gc, grads["ref"][key])


def test_output_gradients_alone_reach_every_memory():
    """Through o only (no state loss): k, v, eta, alpha memories act via the main memory."""
    params, _, x, g = make_inputs(1, 2, 10, 4, 3, seed=9)
    leaves = {key: val.clone().requires_grad_(True) for key, val in params.items()}
    o, _ = SM.selfmod_chunked(SM.init_selfmod_state(leaves, 1), x, g, params=leaves,
                              chunk_memory=4, chunk_other=2, eta_max=0.5)
    gs = torch.autograd.grad(o.pow(2).sum(), list(leaves.values()))
    for key, gk in zip(leaves, gs):
        assert torch.isfinite(gk).all() and gk.abs().max() > 0, key


# ------------------------------------------------------------------------ arguments / misc
def test_eta_max_tensor_per_batch_head():
    params, state, x, g = make_inputs(2, 3, 7, 3, 2, seed=4)
    em = torch.tensor([[0.1, 0.3, 0.5], [0.2, 0.4, 0.6]], dtype=DT)
    p = dict(Cm=4, Co=2, eta_max=em, norm=True, act="silu")
    o1, s1 = run("chk", state, x, g, params, p)
    o2, s2 = run("ref", state, x, g, params, p)
    assert_close(o1, o2)
    assert_state_close(s1, s2)
    o3, _ = run("chk", state, x, g, params, {**p, "eta_max": torch.tensor(0.3, dtype=DT)})
    o4, _ = run("chk", state, x, g, params, {**p, "eta_max": 0.3})
    assert_close(o3, o4, tol=0)


def test_bad_arguments():
    params, state, x, g = make_inputs(1, 1, 5, 3, 2, seed=0)
    beta = torch.full((1, 1, 5), 0.5, dtype=DT)
    for form in FORMS.values():
        with pytest.raises(ValueError, match="multiple"):
            form(state, x, g, params=params, chunk_memory=6, chunk_other=4)
        with pytest.raises(ValueError):
            form(state, x, g, params=params, chunk_memory=0, chunk_other=1)
        with pytest.raises(ValueError):
            form(state, x, g, params=params, chunk_memory=2, chunk_other=1, activation="tanh")
        with pytest.raises(ValueError, match="give q, or a state with a q memory, not neither"):
            form(state, x, {}, params=params, chunk_memory=2, chunk_other=1)
        with pytest.raises(ValueError, match="give k, or a state with a k memory, not both"):
            form(state, x, {**g, "k": g["q"]}, params=params, chunk_memory=2, chunk_other=1)
        with pytest.raises(ValueError, match="not among"):
            form(state, x, {**g, "beta": beta}, params=params, chunk_memory=2, chunk_other=1)
        with pytest.raises(ValueError, match="momentum buffers"):
            form(state, x, g, params=params, momentum=beta, chunk_memory=2, chunk_other=1)
        with pytest.raises(ValueError, match="need their input x"):
            form(state, None, g, params=params, chunk_memory=2, chunk_other=1)


def test_float32_long_sequence_is_finite():
    """Unit-norm inputs (large ||v|| makes the self-referential targets diverge, see module)."""
    for momentum in (False, True):
        params, state, x, g = make_inputs(1, 2, 200, 8, 6, seed=3, dtype=torch.float32, momentum=momentum)
        beta = g.pop("beta", None)
        kw = dict(chunk_memory=32, chunk_other=8, eta_max=0.5)
        o, s = SM.selfmod_chunked(state, x, g, params=params, momentum=beta, **kw)
        assert torch.isfinite(o).all() and all(torch.isfinite(v).all() for v in s.values())
        d = {k: v.double() for k, v in state.items()}
        o64, _ = SM.selfmod_chunked(d, x.double(), {r: v.double() for r, v in g.items()},
                                    params={k: v.double() for k, v in params.items()},
                                    momentum=None if beta is None else beta.double(), **kw)
        torch.testing.assert_close(o.double(), o64, rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- torch.compile
@pytest.mark.parametrize("momentum", [False, True])
def test_compile_fullgraph_matches_eager(momentum):
    torch._dynamo.reset()
    params, state, x, g = make_inputs(2, 2, 8, 4, 3, seed=2, momentum=momentum)  # 3 + 2 chunks
    beta = g.pop("beta", None)

    def fn(state, x, g, params, beta):
        return SM.selfmod_chunked(state, x, g, params=params, momentum=beta, chunk_memory=6,
                                  chunk_other=3, eta_max=0.5)

    compiled = torch.compile(fn, backend="eager", fullgraph=True)
    o_c, s_c = compiled(state, x, g, params, beta)
    o_e, s_e = fn(state, x, g, params, beta)
    assert_close(o_c, o_e, tol=1e-12)
    assert_state_close(s_c, s_e, tol=1e-12)


@given(C=st.integers(1, 8), D=st.integers(1, 5), Do=st.integers(1, 6),
       seed=st.integers(0, 2**16))
def test_pass_one_end_map_equals_the_delta_kernel(C, D, Do, seed):
    """Pass 1's read-free end-of-chunk map (chunk_end_state) == the end state of the
    generalized delta kernel S_t = S_{t-1}(alpha_t I - eta_t k_t k_t^T) + u_t k_t^T over one
    chunk, and == the plain decayed sum when there is no preconditioner (b = None)."""
    from nlc.primitives.matrix import generalized_delta_chunked
    from nlc.primitives.matrix.kernels import chunk_end_state, log_decay

    g = torch.Generator().manual_seed(seed)
    S = torch.randn(2, 3, Do, D, generator=g, dtype=DT)
    k = F.normalize(torch.randn(2, 3, C, D, generator=g, dtype=DT), dim=-1)
    u = torch.randn(2, 3, C, Do, generator=g, dtype=DT)
    eta, alpha = (torch.rand(2, 3, C, generator=g, dtype=DT) for _ in range(2))
    _, want = generalized_delta_chunked({"S": S}, k, k, u, retention=alpha, b=eta, chunk=C)
    P, Dm = log_decay(torch.log(alpha), C, k)
    got = chunk_end_state(S, k, u, P, Dm, b=eta)
    scale = max(1.0, want["S"].abs().max().item())
    assert (got - want["S"]).abs().max().item() <= 1e-12 * scale
    _, want = generalized_delta_chunked({"S": S}, k, k, u, retention=alpha, chunk=C)
    got = chunk_end_state(S, k, u, P, Dm)
    assert (got - want["S"]).abs().max().item() <= 1e-12 * max(1.0, want["S"].abs().max().item())
