"""AttentionMixer: the runtime mixer of an attention level (nlc/runtime/attention.py)."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nlc.graph.sizes import level_params_and_state
from nlc.ir.nodes import AttentionIR, PersistentIR
from nlc.ir.resolve import resolve
from nlc.runtime.attention import AttentionMixer, PersistentTokens, QKVProjection
from nlc.graph.validate import load_spec

SPECS = "specs/"



def attn_ir(heads=2, head_dim=4, window=None, rope=True, persistent=None, qk_norm=False,
            name="attn") -> AttentionIR:
    return AttentionIR(name=name, type="attention", order=0, frequency=Fraction(10 ** 18),
                       outer="outer", origin="test.yaml:1", heads=heads, head_dim=head_dim,
                       window=window, rope=rope, persistent=persistent, qk_norm=qk_norm)


def pers_ir(tokens=3, name="persist") -> PersistentIR:
    return PersistentIR(name=name, type="persistent", order=1, frequency=Fraction(1, 2048),
                        outer="outer", origin="test.yaml:2", tokens=tokens)


def make(heads=2, head_dim=4, window=None, rope=True, n_persist=0, qk_norm=False,
         dtype=torch.float64) -> AttentionMixer:
    p = pers_ir(n_persist) if n_persist else None
    ir = attn_ir(heads, head_dim, window, rope, p.name if p else None, qk_norm)
    m = AttentionMixer(ir, heads * head_dim + 2, p).to(dtype)  # width != heads * head_dim
    if qk_norm:  # non-trivial gains
        with torch.no_grad():
            m.q_gain.uniform_(0.5, 1.5)
            m.k_gain.uniform_(0.5, 1.5)
    return m


def run_segments(m, x, cuts):
    state, pos, ys = m.init_state(x.shape[0]), 0, []
    for a, b in zip([0] + cuts, cuts + [x.shape[1]]):
        y, state = m(x[:, a:b], state, pos)
        ys.append(y)
        pos = b
    return torch.cat(ys, dim=1), state


# ----------------------------------------------------------------------------- independent
def _rope(v, p, base=10000.0):
    """Rotate-half RoPE of one vector ``v (d,)`` at position ``p``, written out."""
    d = v.shape[-1]
    out = v.clone()
    for i in range(d // 2):
        ang = p * base ** (-2.0 * i / d)
        c, s = math.cos(ang), math.sin(ang)
        out[i] = v[i] * c - v[i + d // 2] * s
        out[i + d // 2] = v[i + d // 2] * c + v[i] * s
    return out


def naive_attention(m: AttentionMixer, x):
    """Per-(batch, head, query) loop: NL-arXiv Eq. 62/63 with the persistent prefix."""
    B, T, _ = x.shape
    H, d = m.heads, m.head_dim
    w_q, w_k, w_v = m.qkv.weight.chunk(3)
    q = (x @ w_q.T).view(B, T, H, d)
    k = (x @ w_k.T).view(B, T, H, d)
    v = (x @ w_v.T).view(B, T, H, d)

    def qk_norm(t, g):
        return t / torch.sqrt((t * t).mean(-1, keepdim=True) + 1e-6) * g

    if m.q_gain is not None:
        q, k = qk_norm(q, m.q_gain), qk_norm(k, m.k_gain)
    pk = pv = None
    if m.persistent is not None:
        P = m.persistent.tokens
        pk = (P @ w_k.T).view(-1, H, d)
        pv = (P @ w_v.T).view(-1, H, d)
        if m.k_gain is not None:
            pk = qk_norm(pk, m.k_gain)
    out = torch.zeros(B, T, H, d, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            keys = [_rope(k[b, j, h], j) if m.rope else k[b, j, h] for j in range(T)]
            for t in range(T):
                qt = _rope(q[b, t, h], t) if m.rope else q[b, t, h]
                lo = 0 if m.window is None else max(0, t - m.window + 1)
                scores = [qt @ keys[j] / math.sqrt(d) for j in range(lo, t + 1)]
                vals = [v[b, j, h] for j in range(lo, t + 1)]
                if pk is not None:
                    scores = [q[b, t, h] @ pk[i, h] / math.sqrt(d) for i in range(pk.shape[0])] + scores
                    vals = [pv[i, h] for i in range(pk.shape[0])] + vals
                w = torch.softmax(torch.stack(scores), 0)
                out[b, t, h] = (w[:, None] * torch.stack(vals)).sum(0)
    return out.reshape(B, T, H * d) @ m.o_proj.weight.T


@pytest.mark.parametrize("window,n_persist,rope,qk_norm", [
    (None, 0, True, False), (3, 0, True, False), (None, 2, True, True), (2, 3, False, False),
])
def test_matches_independent_loop(window, n_persist, rope, qk_norm):
    m = make(window=window, n_persist=n_persist, rope=rope, qk_norm=qk_norm)
    x = torch.randn(2, 7, m.width, dtype=torch.float64)
    y, _ = m(x, m.init_state(2), 0)
    torch.testing.assert_close(y, naive_attention(m, x), rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------- contract
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shapes_and_dtypes(dtype):
    m = make(window=4, n_persist=2, qk_norm=True, dtype=dtype)
    state = m.init_state(3)
    assert set(state) == {"k", "v"}
    assert state["k"].shape == (3, 2, 0, 4) and state["k"].dtype == dtype
    x = torch.randn(3, 6, m.width, dtype=dtype)
    y, new = m(x, state, 0)
    assert y.shape == x.shape and y.dtype == dtype
    assert new["k"].shape == (3, 2, 3, 4) and new["v"].shape == (3, 2, 3, 4)  # window - 1 kept
    assert new["k"].dtype == dtype
    y2, new2 = m(x[:, :2], new, 6)
    assert y2.shape == (3, 2, m.width) and new2["k"].shape == (3, 2, 3, 4)
    full = make(window=None, dtype=dtype)
    _, st_full = full(x, full.init_state(3), 0)
    assert st_full["k"].shape == (3, 2, 6, 4)  # full causal: the cache grows


def test_pure_state_and_empty_call():
    m = make(window=3, n_persist=1)
    x = torch.randn(2, 5, m.width, dtype=torch.float64)
    _, state = m(x, m.init_state(2), 0)
    snapshot = {k: v.clone() for k, v in state.items()}
    ids = {k: id(v) for k, v in state.items()}
    _, new = m(x, state, 5)
    assert new is not state and {k: id(v) for k, v in state.items()} == ids
    for k in state:
        assert torch.equal(state[k], snapshot[k])
    y0, st0 = m(x[:, :0], state, 10)
    assert y0.shape == (2, 0, m.width) and torch.equal(st0["k"], state["k"])


@given(heads=st.sampled_from([1, 2]), window=st.sampled_from([None, 1, 2, 5]),
       n_persist=st.sampled_from([0, 2]), rope=st.booleans(), qk_norm=st.booleans(),
       T=st.integers(1, 12), data=st.data())
def test_streaming_equals_whole(heads, window, n_persist, rope, qk_norm, T, data):
    torch.manual_seed(T)
    m = make(heads=heads, window=window, n_persist=n_persist, rope=rope, qk_norm=qk_norm)
    x = torch.randn(2, T, m.width, dtype=torch.float64)
    cuts = sorted(data.draw(st.sets(st.integers(1, T - 1), max_size=4)) if T > 1 else set())
    y_whole, s_whole = run_segments(m, x, [])
    y_seg, s_seg = run_segments(m, x, list(cuts))
    torch.testing.assert_close(y_seg, y_whole, rtol=1e-9, atol=1e-10)
    for k in s_whole:
        torch.testing.assert_close(s_seg[k], s_whole[k], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("window,n_persist", [(None, 0), (3, 2)])
def test_causal(window, n_persist):
    m = make(window=window, n_persist=n_persist)
    x = torch.randn(2, 9, m.width, dtype=torch.float64)
    y, _ = m(x, m.init_state(2), 0)
    x2 = x.clone()
    x2[:, 5] += torch.randn_like(x2[:, 5])
    y2, _ = m(x2, m.init_state(2), 0)
    assert torch.equal(y[:, :5], y2[:, :5])
    assert not torch.allclose(y[:, 5:], y2[:, 5:])
    if window is not None:  # token 5 falls out of the window of tokens >= 5 + window
        torch.testing.assert_close(y[:, 5 + window:], y2[:, 5 + window:], rtol=1e-12, atol=1e-12)


def test_batch_independent():
    m = make(window=4, n_persist=2, qk_norm=True)
    x = torch.randn(3, 8, m.width, dtype=torch.float64)
    y, st_b = m(x[:, :5], m.init_state(3), 0)
    y2, _ = m(x[:, 5:], st_b, 5)
    for i in range(3):
        yi, st_i = m(x[i:i + 1, :5], m.init_state(1), 0)
        yi2, _ = m(x[i:i + 1, 5:], st_i, 5)
        torch.testing.assert_close(yi, y[i:i + 1], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(yi2, y2[i:i + 1], rtol=1e-10, atol=1e-12)
    x3 = x.clone()
    x3[1] = torch.randn_like(x3[1])
    y3, _ = m(x3, m.init_state(3), 0)
    yfull, _ = m(x, m.init_state(3), 0)
    assert torch.equal(y3[0], yfull[0]) and torch.equal(y3[2], yfull[2])


def test_gradients_reach_every_parameter():
    m = make(window=3, n_persist=2, qk_norm=True)
    x = torch.randn(2, 6, m.width, dtype=torch.float64, requires_grad=True)
    _, state = m(x[:, :3], m.init_state(2), 0)
    y, _ = m(x[:, 3:], state, 3)
    (y ** 2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad[:, :3].abs().sum() > 0  # through the KV cache


def test_persistent_tokens_belong_to_the_persistent_level():
    m = make(n_persist=3, qk_norm=True)
    assert m.level == "attn"
    assert isinstance(m.persistent, PersistentTokens) and m.persistent.level == "persist"
    own = {n for n, _ in m.named_parameters() if not n.startswith("persistent.")}
    assert own == {"qkv.weight", "o_proj.weight", "q_gain", "k_gain"}
    assert [n for n, _ in m.persistent.named_parameters()] == ["tokens"]
    assert m.persistent.tokens.shape == (3, m.width)


def test_fused_qkv_draws_as_three_separate_linears():
    torch.manual_seed(4)
    fused = QKVProjection(6, 4)
    torch.manual_seed(4)
    alone = [torch.nn.Linear(6, 4, bias=False) for _ in range(3)]
    assert torch.equal(fused.weight, torch.cat([lin.weight for lin in alone]))
    x = torch.randn(2, 3, 6)
    for got, lin in zip(fused(x), alone):
        torch.testing.assert_close(got, lin(x))
    for got, lin in zip(fused.kv(x), alone[1:]):
        torch.testing.assert_close(got, lin(x))


def test_persistent_ir_mismatch():
    with pytest.raises(ValueError, match="persist"):
        AttentionMixer(attn_ir(persistent="persist"), 10, None)
    with pytest.raises(ValueError, match="other"):
        AttentionMixer(attn_ir(persistent="persist"), 10, pers_ir(2, name="other"))
    with pytest.raises(ValueError, match="no persistent"):
        AttentionMixer(attn_ir(), 10, pers_ir(2))


@pytest.mark.parametrize("spec,overrides", [
    ("transformer.yaml", []), ("swa_transformer.yaml", []), ("titans_mag.yaml", []),
    ("transformer.yaml", ["levels.attn.qk_norm=true", "levels.attn.heads=2"]),
])
def test_parameter_counts_match_nlc_graph(spec, overrides):
    sp = load_spec(SPECS + spec, overrides)
    ir = resolve(sp)
    for name, lv in ir.levels.items():
        if lv.type != "attention":
            continue
        p = ir.levels[lv.persistent] if lv.persistent else None
        m = AttentionMixer(lv, ir.width, p)
        own = sum(q.numel() for n, q in m.named_parameters() if not n.startswith("persistent."))
        assert own == level_params_and_state(sp, name)[0]
        if p is not None:
            assert m.persistent.tokens.numel() == level_params_and_state(sp, p.name)[0]


def test_compile_fullgraph_equals_eager():
    m = make(window=3, n_persist=2, qk_norm=True)
    x = torch.randn(2, 5, m.width, dtype=torch.float64)
    _, state = m(x, m.init_state(2), 0)
    compiled = torch.compile(m.forward, backend="eager", fullgraph=True)
    y_c, s_c = compiled(x, state, 5)
    y_e, s_e = m(x, state, 5)
    torch.testing.assert_close(y_c, y_e, rtol=1e-12, atol=1e-12)
    for k in s_e:
        torch.testing.assert_close(s_c[k], s_e[k], rtol=1e-12, atol=1e-12)
