"""MLPMixer (frozen MLP) and CMSMixer (a CMS level): nlc/runtime/mlp.py, nlc/runtime/cms.py."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from nlc.graph.sizes import level_params_and_state
from nlc.ir.nodes import MLPIR, KnobIR, ObjectiveIR, RuleIR
from nlc.ir.resolve import resolve
from nlc.runtime.cms import CMSMixer
from nlc.runtime.layers import Residual
from nlc.runtime.mlp import MLPMixer
from nlc.graph.validate import load_spec

D, DH = 6, 5
F64 = torch.float64
KINDS = ["swiglu", "gelu", "silu", "relu"]



def rule(lr: KnobIR, kind="gd", **kw) -> RuleIR:
    base = dict(kind=kind, lr=lr, momentum=None, retention=None, weight_decay=0.0,
                retention_kind="l2", q=2.0, shrink=0.0, grad_clip=None, grad_normalize=False)
    base.update(kw)
    return RuleIR(**base)


def mlp_ir(period=0, activation="swiglu", hidden=DH, objective="task", lr=None, init="learned",
           init_level=None, flush="carry", name="cms", rule_kw=None, obj_kw=None) -> MLPIR:
    lr = KnobIR("constant", 0.1) if lr is None else lr
    return MLPIR(name=name, type="mlp", order=1,
                 frequency=Fraction(1, period) if period else Fraction(1, 2048),
                 outer="outer", origin="test.yaml:1", hidden=hidden, activation=activation,
                 period=period,
                 objective=ObjectiveIR(objective, **(obj_kw or {})) if period else None,
                 rule=rule(lr, **(rule_kw or {})) if period else None,
                 init=init, init_level=init_level, reset="never", flush=flush)


def cms(period=4, activation="swiglu", objective="task", lr=None, **kw) -> CMSMixer:
    return CMSMixer(mlp_ir(period, activation, objective=objective, lr=lr, **kw), D).to(F64)


# ----------------------------------------------------------------------------- independent
def _act(a, kind):
    return {"gelu": F.gelu, "silu": F.silu, "relu": torch.relu}[kind](a)


def mlp_token(p, x, kind):
    """``MLP(theta; x)`` for one token, written out (no primitives)."""
    if kind == "swiglu":
        h = F.silu(p["w_gate"] @ x) * (p["w_up"] @ x)
    else:
        h = _act(p["w_in"] @ x, kind)
    return p["w_out"] @ h


def simulate(theta0, x, C, lr, kind, delta=None, pos=0):
    """Per-token, per-sample loop with autograd: NL-arXiv Eqs. 70-71 (carry policy).

    ``theta0``: batched weights (B, ...), ``lr`` float or (B, T). ``delta`` None = local l2
    loss with target x. Returns outputs, final weights, final pending sums, and the weights
    after every token."""
    B, T, _ = x.shape
    theta = {k: v.detach().clone() for k, v in theta0.items()}
    acc = {k: torch.zeros_like(v) for k, v in theta.items()}
    ys = torch.zeros(B, T, x.shape[-1], dtype=x.dtype)
    history = []
    for t in range(T):
        for b in range(B):
            p = {k: v[b].clone().requires_grad_() for k, v in theta.items()}
            y = mlp_token(p, x[b, t], kind)
            loss = ((y - x[b, t]) ** 2).sum() if delta is None else (delta[b, t] * y).sum()
            grads = torch.autograd.grad(loss, list(p.values()))
            eta = lr if isinstance(lr, float) else float(lr[b, t])
            for k, g in zip(p, grads):
                acc[k][b] += eta * g
            ys[b, t] = y.detach()
        if (pos + t + 1) % C == 0:
            theta = {k: theta[k] - acc[k] for k in theta}
            acc = {k: torch.zeros_like(v) for k, v in acc.items()}
        history.append({k: v.clone() for k, v in theta.items()})
    return ys, theta, acc, history


def weights(state):
    return {k: v for k, v in state.items() if not k.startswith("acc.") and k not in ("in", "out")}


def assert_state_close(got, theta, acc, tol=1e-9):
    for k in theta:
        torch.testing.assert_close(got[k], theta[k], rtol=tol, atol=tol)
        torch.testing.assert_close(got["acc." + k], acc[k], rtol=tol, atol=tol)


def chunk_cuts(T, C, extra):
    """Segment cuts that never cross a chunk boundary: every multiple of C plus ``extra``."""
    return sorted(set(range(C, T, C)) | {c for c in extra if 0 < c < T})


def teach_run(m, x, cuts, delta):
    """forward / learn segment by segment with a given teach signal."""
    state, ys, after = m.init_state(x.shape[0]), [], []
    for a, b in zip([0] + cuts, cuts + [x.shape[1]]):
        y, state = m(x[:, a:b], state, a)
        assert torch.equal(state["in"], x[:, a:b]) and state["out"] is y
        ys.append(y)
        state = m.learn(state, delta[:, a:b], a, b % m.period == 0)
        assert "in" not in state and "out" not in state
        after.append((b, weights(state)))
    return torch.cat(ys, dim=1), state, after


# ============================================================================ MLPMixer
@pytest.mark.parametrize("activation", KINDS)
def test_mlp_mixer_formula_and_no_state(activation):
    m = MLPMixer(mlp_ir(0, activation), D).to(F64)
    assert m.level == "cms" and m.init_state(3) == {}
    x = torch.randn(3, 4, D, dtype=F64)
    state = {}
    y, new = m(x, state, 7)
    assert new == {} and new is not state and y.shape == x.shape
    if activation == "swiglu":
        mm = m.mlp
        w_gate, w_up = mm.gate_up.weight.chunk(2)
        ref = mm.down(F.silu(x @ w_gate.T) * (x @ w_up.T))
    else:
        ref = m.mlp.fc2(_act(m.mlp.fc1(x), activation))
    torch.testing.assert_close(y, ref)
    # token-wise, hence causal, batch-independent, and streams trivially
    torch.testing.assert_close(m(x[:, 2:], {}, 2)[0], y[:, 2:])
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    assert all(p.dim() == 2 for p in m.parameters())  # no biases


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mlp_mixer_dtypes(dtype):
    m = MLPMixer(mlp_ir(0, "gelu"), D).to(dtype)
    y, _ = m(torch.randn(2, 3, D, dtype=dtype), {}, 0)
    assert y.dtype == dtype and y.shape == (2, 3, D)


def test_mlp_mixer_rejects_cms_level():
    with pytest.raises(ValueError, match="CMSMixer"):
        MLPMixer(mlp_ir(4), D)
    with pytest.raises(ValueError, match="MLPMixer"):
        CMSMixer(mlp_ir(0), D)


# ============================================================================ CMSMixer: state
@pytest.mark.parametrize("activation", KINDS)
def test_cms_init_state_layout(activation):
    m = cms(activation=activation)
    state = m.init_state(3)
    names = ["w_gate", "w_up", "w_out"] if activation == "swiglu" else ["w_in", "w_out"]
    assert set(state) == set(names) | {"acc." + n for n in names}
    for n in names:
        assert state[n].shape == (3, *m.init[n].shape) and state[n].dtype == F64
        assert torch.equal(state[n][1], m.init[n]) and not state["acc." + n].any()
    assert m.init["w_out"].shape == (D, DH)
    sum(v.sum() for v in state.values()).backward()  # expanded from the meta-learned params
    assert all(p.grad is not None for p in m.init.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("objective", ["task", "l2"])
def test_cms_dtypes(dtype, objective):
    m = CMSMixer(mlp_ir(2, "gelu", objective=objective, lr=KnobIR("learned", 0.1)), D).to(dtype)
    state = m.init_state(3)
    assert all(v.dtype == dtype and v.shape[0] == 3 for v in state.values())
    x = torch.randn(3, 2, D, dtype=dtype)
    y, new = m(x, state, 0)
    if objective == "task":
        new = m.learn(new, torch.randn_like(y), 0, True)
    assert y.shape == x.shape and y.dtype == dtype
    assert new.keys() == state.keys() and all(v.dtype == dtype for v in new.values())
    assert not torch.equal(new["w_out"], state["w_out"])  # a chunk of 2 completed


def test_cms_init_zero_and_from_and_copy():
    z = CMSMixer(mlp_ir(4, init="zero"), D)
    assert z.init is None and list(z.parameters()) == []
    st_z = z.to(F64).init_state(2)
    assert all(v.dtype == F64 and not v.any() for v in st_z.values())
    f = CMSMixer(mlp_ir(4, init="from", init_level="cms_mid", name="cms_fast"), D)
    with pytest.raises(RuntimeError, match="cms_fast.*cms_mid"):
        f.init_state(2)
    src = cms().init_state(2)
    new = f.to(F64).state_from(src)
    assert new.keys() == src.keys()
    assert all(new[k] is src[k] for k in src if not k.startswith("acc."))
    with pytest.raises(RuntimeError, match="capabilities"):  # refused at validation
        CMSMixer(mlp_ir(4, init="copy", init_level="other"), D)


@pytest.mark.parametrize("ir_kw,match", [
    (dict(rule_kw=dict(kind="momentum", momentum=KnobIR("constant", 0.9))), "momentum"),
    (dict(rule_kw=dict(retention=KnobIR("constant", 0.9))), "retention"),
    (dict(rule_kw=dict(weight_decay=0.1)), "weight_decay"),
    (dict(rule_kw=dict(grad_clip=1.0)), "grad_clip"),
    (dict(objective="dot"), "not 'dot'"),
    (dict(objective="l2", obj_kw=dict(window=2)), "window"),
    (dict(lr=KnobIR("data", 0.1, source="mem_lr")), "mem_lr"),
    (dict(lr=KnobIR("data", 0.1, source="input", per_chunk=True)), "changes every token"),
])
def test_cms_unsupported_raise_naming_the_level(ir_kw, match):
    """Validation refuses these (nlc.capabilities); reaching the runtime is a bug it names."""
    with pytest.raises(RuntimeError, match=match) as err:
        CMSMixer(mlp_ir(4, name="cms_mid", **ir_kw), D)
    assert "cms_mid" in str(err.value) and "capabilities" in str(err.value)


def test_cms_lr_kinds():
    x = torch.randn(2, 3, D, dtype=F64)
    assert cms(lr=KnobIR("constant", 0.25)).lr(x) == 0.25
    learned = cms(lr=KnobIR("learned", 1e-3))
    assert [n for n, _ in learned.named_parameters() if not n.startswith("init.")] == ["lr_knob.raw"]
    torch.testing.assert_close(learned.lr(x), torch.full((2, 3), 1e-3, dtype=F64))
    tiny = cms(lr=KnobIR("learned", 1e-4))  # far below max: still starts exactly at its init
    torch.testing.assert_close(tiny.lr(x), torch.full((2, 3), 1e-4, dtype=F64))
    data = cms(lr=KnobIR("data", 0.05, max=0.5, source="input"))
    lr = data.lr(x)
    assert lr.shape == (2, 3)
    torch.testing.assert_close(lr, torch.full((2, 3), 0.05, dtype=F64))
    assert sum(p.numel() for n, p in data.named_parameters() if n.startswith("lr_knob")) == D + 1


# ============================================================================ CMSMixer: l2
@pytest.mark.parametrize("activation,C,lr", [
    ("swiglu", 3, KnobIR("constant", 0.3)), ("gelu", 2, KnobIR("learned", 0.2)),
    ("silu", 4, KnobIR("data", 0.2, max=0.5, source="input")), ("relu", 1, KnobIR("constant", 0.1)),
])
def test_l2_matches_independent_loop(activation, C, lr):
    m = cms(C, activation, objective="l2", lr=lr)
    x = torch.randn(2, 9, D, dtype=F64)
    state = m.init_state(2)
    y, new = m(x, state, 0)
    eta = m.lr(x)
    eta = eta if isinstance(eta, float) else eta.detach().expand(2, 9) if eta.dim() == 0 else eta.detach()
    ys, theta, acc, _ = simulate(weights(state), x, C, eta, activation)
    torch.testing.assert_close(y, ys, rtol=1e-9, atol=1e-10)
    assert_state_close(new, theta, acc)


@given(C=st.integers(1, 5), T=st.integers(1, 14), activation=st.sampled_from(KINDS),
       data=st.data())
def test_l2_streaming_any_split_equals_whole(C, T, activation, data):
    torch.manual_seed(C * 100 + T)
    m = cms(C, activation, objective="l2", lr=KnobIR("constant", 0.2))
    x = torch.randn(2, T, D, dtype=F64)
    cuts = sorted(data.draw(st.sets(st.integers(1, T - 1), max_size=4)) if T > 1 else set())
    y_whole, s_whole = m(x, m.init_state(2), 0)
    state, ys = m.init_state(2), []
    for a, b in zip([0] + cuts, cuts + [T]):
        y, state = m(x[:, a:b], state, a)
        ys.append(y)
    torch.testing.assert_close(torch.cat(ys, 1), y_whole, rtol=1e-9, atol=1e-10)
    for k in s_whole:
        torch.testing.assert_close(state[k], s_whole[k], rtol=1e-9, atol=1e-10)


def test_l2_weights_change_exactly_every_C_tokens():
    C = 3
    m = cms(C, "gelu", objective="l2", lr=KnobIR("constant", 0.2))
    x = torch.randn(2, 10, D, dtype=F64)
    state = m.init_state(2)
    for t in range(10):
        before = weights(state)
        _, state = m(x[:, t:t + 1], state, t)
        changed = [not torch.equal(before[k], state[k]) for k in before]
        assert all(changed) if (t + 1) % C == 0 else not any(changed), t


def test_l2_causal_and_batch_independent():
    m = cms(2, "swiglu", objective="l2", lr=KnobIR("constant", 0.5))
    x = torch.randn(3, 8, D, dtype=F64)
    y, _ = m(x, m.init_state(3), 0)
    x2 = x.clone()
    x2[:, 4] += 1.0
    x2[1] = torch.randn_like(x2[1])
    y2, _ = m(x2, m.init_state(3), 0)
    assert torch.equal(y[0, :4], y2[0, :4]) and torch.equal(y[2, :4], y2[2, :4])
    assert not torch.allclose(y[0, 6:], y2[0, 6:])  # token 4 taught the chunk ending after 5
    for i in range(3):
        yi, _ = m(x[i:i + 1], m.init_state(1), 0)
        torch.testing.assert_close(yi, y[i:i + 1], rtol=1e-10, atol=1e-12)


def test_l2_gradients_reach_init_and_lr_through_the_updates():
    m = cms(2, "swiglu", objective="l2", lr=KnobIR("learned", 0.1))
    x = torch.randn(2, 6, D, dtype=F64)
    y, _ = m(x, m.init_state(2), 0)
    (y[:, 2:] ** 2).sum().backward()  # tokens after the first update
    for n, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


# ============================================================================ CMSMixer: task
@pytest.mark.parametrize("activation,C,lr,extra", [
    ("swiglu", 4, KnobIR("constant", 0.3), [1, 2, 6, 9]),
    ("gelu", 3, KnobIR("learned", 0.2), [1, 7]),
    ("relu", 2, KnobIR("data", 0.1, max=0.4, source="input"), []),
    ("silu", 1, KnobIR("constant", 0.1), []),
])
def test_task_learn_matches_independent_summed_gradients(activation, C, lr, extra):
    m = cms(C, activation, objective="task", lr=lr)
    assert m.teach
    T = 11
    x = torch.randn(2, T, D, dtype=F64)
    delta = torch.randn(2, T, D, dtype=F64)
    cuts = chunk_cuts(T, C, extra)
    theta0 = weights(m.init_state(2))
    y, state, after = teach_run(m, x, cuts, delta)
    eta = m.lr(x)
    eta = eta if isinstance(eta, float) else eta.detach().expand(2, T) if eta.dim() == 0 else eta.detach()
    ys, theta, acc, history = simulate(theta0, x, C, eta, activation, delta=delta)
    torch.testing.assert_close(y, ys, rtol=1e-9, atol=1e-10)
    assert_state_close(state, theta, acc)
    prev = theta0
    for end, w in after:  # weights after each learn call: change iff the call ends a chunk
        for k in w:
            torch.testing.assert_close(w[k], history[end - 1][k], rtol=1e-9, atol=1e-10)
        assert all(not torch.equal(prev[k], w[k]) for k in w) == (end % C == 0)
        assert any(not torch.equal(prev[k], w[k]) for k in w) == (end % C == 0)
        prev = w


def test_task_teach_matches_primitive_with_known_delta():
    """The teach protocol equals the CMS primitive run on the whole sequence with delta."""
    from nlc.primitives.cms import cms_block_chunked

    m = cms(4, "swiglu", objective="task", lr=KnobIR("constant", 0.2))
    x, delta = torch.randn(2, 12, D, dtype=F64), torch.randn(2, 12, D, dtype=F64)
    y, state, _ = teach_run(m, x, [2, 4, 5, 8, 11], delta)
    y_p, s_p = cms_block_chunked(m.init_state(2), x, chunk=4, lr=0.2, signal="task",
                                 delta=delta, kind="swiglu")
    torch.testing.assert_close(y, y_p, rtol=1e-9, atol=1e-10)
    for k in s_p:
        torch.testing.assert_close(state[k], s_p[k], rtol=1e-9, atol=1e-10)


def test_task_forward_reads_only_and_learn_guards():
    m = cms(4, "gelu", objective="task")
    x = torch.randn(2, 6, D, dtype=F64)
    state = m.init_state(2)
    y, new = m(x, state, 0)  # any length: a read with the current weights, no update
    assert all(torch.equal(new[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="crosses a chunk boundary"):
        m.learn(new, torch.zeros_like(y), 0, False)
    _, new = m(x[:, :3], state, 2)
    with pytest.raises(ValueError, match="crosses"):
        m.learn(new, torch.zeros(2, 3, D, dtype=F64), 2, False)
    with pytest.raises(ValueError, match="delta has shape"):
        m.learn(new, torch.zeros(2, 2, D, dtype=F64), 4, False)
    l2 = cms(4, objective="l2")
    with pytest.raises(RuntimeError, match="teach"):
        l2.learn(l2.init_state(2), x, 0, False)


@pytest.mark.parametrize("policy", ["carry", "flush", "drop"])
def test_finish_applies_the_flush_policy(policy):
    m = cms(4, "swiglu", objective="task", flush=policy)
    x, delta = torch.randn(2, 6, D, dtype=F64), torch.randn(2, 6, D, dtype=F64)
    _, state, _ = teach_run(m, x, [4], delta)  # 2 tokens pending
    done = m.finish(dict(state, out=x, **{"in": x}))
    assert "in" not in done and "out" not in done
    for k in weights(state):
        pending = state["acc." + k]
        assert pending.abs().sum() > 0
        if policy == "carry":
            assert torch.equal(done[k], state[k]) and torch.equal(done["acc." + k], pending)
        else:
            assert not done["acc." + k].any()
            want = state[k] - pending if policy == "flush" else state[k]
            torch.testing.assert_close(done[k], want)


def test_teach_end_to_end_tiny_model():
    """A tiny LM: embed -> Residual(CMS task level) -> head, driven like NLCModel does it:
    segments of the period's divisor, autograd.grad of the segment loss w.r.t. state["out"],
    learn; weights change exactly at multiples of C and the outer gradients reach the
    meta-learned initial weights and the lr through the updates."""
    torch.manual_seed(0)
    V, B, T, C, seg = 11, 2, 12, 4, 2
    mixer = CMSMixer(mlp_ir(C, "swiglu", lr=KnobIR("learned", 0.5)), D)
    layer = Residual(mixer, "rms", True, D).to(F64)
    embed, head = torch.nn.Embedding(V, D).to(F64), torch.nn.Linear(D, V).to(F64)
    tokens = torch.randint(0, V, (B, T + 1))
    state, total = layer.init_state(B), 0.0
    assert layer.teach
    prev = weights(state)
    for pos in range(0, T, seg):
        y, state = layer(embed(tokens[:, pos:pos + seg]), state, pos)
        loss = F.cross_entropy(head(y).flatten(0, 1), tokens[:, pos + 1:pos + seg + 1].flatten(),
                               reduction="sum")
        (delta,) = torch.autograd.grad(loss, state["out"], retain_graph=True)
        state = layer.learn(state, delta, pos, frozenset({mixer.level}) if (pos + seg) % C == 0 else frozenset())
        total = total + loss
        w = weights(state)
        changed = [not torch.equal(prev[k], w[k]) for k in w]
        assert (all(changed) if (pos + seg) % C == 0 else not any(changed)), pos
        prev = w
    total.backward()
    for mod in (layer, embed, head):
        for n, p in mod.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert mixer.lr_knob.raw.grad.abs() > 0  # the lr only acts through the updates


# ============================================================================ compile / counts
@pytest.mark.parametrize("objective", ["task", "l2"])
def test_compile_fullgraph_equals_eager(objective):
    m = cms(4, "swiglu", objective=objective, lr=KnobIR("learned", 0.3))
    x = torch.randn(2, 6, D, dtype=F64)
    state = m.init_state(2)
    fwd = torch.compile(m.forward, backend="eager", fullgraph=True)
    T = 2 if objective == "task" else 6
    y_c, s_c = fwd(x[:, :T], state, 2)
    y_e, s_e = m(x[:, :T], state, 2)
    torch.testing.assert_close(y_c, y_e, rtol=1e-12, atol=1e-12)
    assert s_c.keys() == s_e.keys()
    for k in s_e:
        torch.testing.assert_close(s_c[k], s_e[k], rtol=1e-12, atol=1e-12)
    if objective == "task":
        delta = torch.randn_like(y_e)
        learn = torch.compile(m.learn, backend="eager", fullgraph=True)
        l_c, l_e = learn(s_e, delta, 2, True), m.learn(s_e, delta, 2, True)
        for k in l_e:
            torch.testing.assert_close(l_c[k], l_e[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("overrides", [
    [], ["levels.cms_fast.update.lr={learned: 0.01}", "levels.cms_mid.activation=gelu",
         "levels.cms_slow.update.lr={from: input, init: 0.01}", "levels.cms_slow.init=zero"],
])
def test_parameter_counts_match_nlc_graph(overrides):
    sp = load_spec("specs/cms.yaml", ["model.width=16"] + overrides)
    ir = resolve(sp)
    for name in ("cms_fast", "cms_mid", "cms_slow"):
        m = CMSMixer(ir.levels[name], ir.width)
        assert sum(p.numel() for p in m.parameters()) == level_params_and_state(sp, name)[0], name
        state = m.init_state(1)
        n_weights = sum(v.numel() for k, v in state.items() if not k.startswith("acc."))
        assert n_weights == level_params_and_state(sp, name)[1]
    sp = load_spec("specs/transformer.yaml", ["model.width=16"])
    mlp = MLPMixer(resolve(sp).levels["mlp"], 16)
    assert sum(p.numel() for p in mlp.parameters()) == level_params_and_state(sp, "mlp")[0]
