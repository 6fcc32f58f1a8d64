"""MemoryMixer, Knob, Sources (nlc.runtime.memory / knobs / projections / memory_rules).

Every row of the dispatch table is checked against a direct call of the primitive it should
run, with the same projected inputs and gates (plus streaming, causality, batch
independence, gradients, compile). Notation: B batch, T tokens, D width = 8, H = 2 heads of
Dh = 4, C chunk = 4. float64 throughout; tolerance 1e-9 relative (1e-10 absolute).
"""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nlc.ir.nodes import KnobIR, MemoryIR, ObjectiveIR, RuleIR, SourceIR
from nlc.primitives import deep as D
from nlc.primitives import matrix as M
from nlc.runtime.knobs import Knob
from nlc.runtime.memory import MemoryMixer
from nlc.runtime.projections import Source, Sources

DT = torch.float64
WIDTH, HEADS, CHUNK = 8, 2, 4
TOL = dict(rtol=1e-9, atol=1e-10)



# ------------------------------------------------------------------------------ IR builders
def const(v: float) -> KnobIR:
    return KnobIR("constant", v)


def learned(v: float, **kw) -> KnobIR:
    return KnobIR("learned", v, **kw)


def data(v: float, **kw) -> KnobIR:
    return KnobIR("data", v, source="input", **kw)


def rule(kind="gd", lr=None, momentum=None, retention=None, wd=0.0, rk="l2", q=2.0,
         shrink=0.0, clip=None, normalize=False) -> RuleIR:
    return RuleIR(kind, lr if lr is not None else const(0.5), momentum, retention, wd, rk,
                  q, shrink, clip, normalize)


PLAIN = SourceIR("input")
L2 = SourceIR("input", l2_norm=True)
CONV = SourceIR("input", conv=3, silu=True)
CONV_L2 = SourceIR("input", conv=3, silu=True, l2_norm=True)


def mem_ir(**kw) -> MemoryIR:
    d = dict(name="mem", type="memory", order=0, frequency=Fraction(1), outer="outer",
             origin="spec.yaml:3", heads=HEADS, head_dim=WIDTH // HEADS, memory="matrix",
             depth=1, hidden=WIDTH // HEADS, residual=False, activation="identity",
             objective=ObjectiveIR("l2"), rule=rule(), period=1, chunk=CHUNK,
             read_after_write=False, keys=L2, values=PLAIN, queries=L2, init="zero",
             init_level=None, reset="never", output_gate=False)
    if kw.get("memory") == "mlp":
        d.update(depth=2, hidden=6, activation="gelu")
    d.update(kw)
    return MemoryIR(**d)


def randomize(module: torch.nn.Module, seed: int = 1, scale: float = 0.5,
              keep_gates: bool = True) -> None:
    """Random parameters (zero-initialised knob weights would hide data dependence).

    ``keep_gates``: knob biases / learned raws stay at their init (the gates stay near the
    spec's values, so the inner loop stays stable) and knob weights get a small scale."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            is_knob = isinstance(module, Knob) or bool(
                {"lr", "momentum", "retention"} & set(name.split(".")[:-1]))
            if keep_gates and is_knob and leaf in ("bias", "raw"):
                continue
            s = scale * (0.3 if is_knob else 1.0)
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * s)


def build(ir: MemoryIR, seed: int = 1) -> MemoryMixer:
    m = MemoryMixer(ir, WIDTH).to(DT)
    randomize(m, seed)
    return m


def inputs(B=2, T=11, seed=0) -> torch.Tensor:
    return torch.randn(B, T, WIDTH, generator=torch.Generator().manual_seed(seed), dtype=DT)


# ------------------------------------------------------------------------- dispatch table
def deep_call(**fixed):
    """A direct deep_memory_chunked call with the row's fixed keyword arguments."""
    def call(st_, q, k, v, g, ir):
        return D.deep_memory_chunked(st_, q, k, v, g["lr"], g["momentum"], g["retention"],
                                     chunk=ir.chunk, read_after_write=ir.read_after_write,
                                     **fixed)
    return call


def mat(fn, *gates, **fixed):
    def call(st_, q, k, v, g, ir):
        return fn(st_, q, k, v, *[g[n] for n in gates], chunk=ir.chunk,
                  read_after_write=ir.read_after_write, **fixed)
    return call


TITANS_RULE = rule("momentum", data(0.05, max=0.5), data(0.9), data(0.01, complement=True))
ROWS = {
    # name: (ir, primitive, direct call, exact: not chunk-frozen, no chunk phase to carry)
    "linear_attention": (
        mem_ir(objective=ObjectiveIR("dot"), rule=rule(lr=const(1.0)), keys=PLAIN,
               queries=PLAIN, read_after_write=True),
        "linear_attention", mat(M.linear_attention_chunked, "lr"), True),
    "samba_gla": (
        mem_ir(objective=ObjectiveIR("dot"), rule=rule(lr=data(0.5), retention=data(0.95)),
               keys=CONV, values=CONV, queries=CONV, read_after_write=True, output_gate=True),
        "gated_linear_attention",
        mat(M.gated_linear_attention_chunked, "lr", "retention"), True),
    "deltanet": (
        mem_ir(rule=rule("delta", data(0.5)), read_after_write=True),
        "delta_rule", mat(M.delta_rule_chunked, "lr"), True),
    "gated_deltanet_learned_init": (
        mem_ir(rule=rule("delta", data(0.5), retention=data(0.99)), read_after_write=True,
               init="learned"),
        "gated_delta_rule", mat(M.gated_delta_rule_chunked, "lr", "retention"), True),
    "delta_weight_decay": (
        mem_ir(rule=rule("delta", learned(0.3), wd=0.1)),
        "gated_delta_rule", mat(M.gated_delta_rule_chunked, "lr", "retention"), True),
    "dgd_l2": (
        mem_ir(rule=rule("dgd", data(0.3), retention=learned(0.9)), init="learned"),
        "dgd", mat(M.dgd_chunked, "lr", "retention", objective="l2"), False),
    "dgd_dot_per_chunk": (
        mem_ir(objective=ObjectiveIR("dot"),
               rule=rule("dgd", data(0.3, per_chunk=True), retention=data(0.9, per_chunk=True))),
        "dgd", mat(M.dgd_chunked, "lr", "retention", objective="dot"), True),
    "omega": (
        mem_ir(objective=ObjectiveIR("l2", window=3), rule=rule(lr=data(0.2), retention=data(0.9)),
               init="learned"),
        "omega_rule", lambda st_, q, k, v, g, ir: M.omega_rule_chunked(
            st_, q, k, v, 2 * g["lr"], g["retention"], window=3, chunk=ir.chunk,
            read_after_write=ir.read_after_write), False),
    "titans_lmm": (
        mem_ir(memory="mlp", rule=TITANS_RULE, keys=CONV_L2, queries=CONV_L2, values=CONV,
               init="learned", output_gate=True),
        "deep_memory", deep_call(activation="gelu", objective="l2"), False),
    "titans_linear_matrix": (
        mem_ir(rule=rule(lr=data(0.1), retention=data(0.99)), read_after_write=True),
        "deep_memory", deep_call(activation="identity", objective="l2"), False),
    "deep_residual_lp_wd": (
        mem_ir(memory="mlp", activation="silu", residual=True, objective=ObjectiveIR("lp", p=3.0),
               rule=rule(lr=learned(0.1), wd=0.05), init="learned"),
        "deep_memory", deep_call(activation="silu", residual=True, objective="lp", p=3.0), False),
    "deep_huber_guards": (
        mem_ir(memory="mlp", depth=3, activation="relu", objective=ObjectiveIR("huber", delta=KnobIR("constant", 0.5)),
               rule=rule("momentum", data(0.1), learned(0.8), clip=0.7, normalize=True),
               init="learned"),
        "deep_memory", deep_call(activation="relu", objective="huber", delta=0.5,
                                 grad_clip=0.7, grad_normalize=True), False),
    "moneta_lq": (
        mem_ir(memory="mlp", rule=rule(lr=data(0.1), retention=data(0.95), rk="lq", q=4.0),
               init="learned"),
        "deep_memory", deep_call(activation="gelu", global_retention="lq", lq=4.0), False),
    "elastic_dot": (
        mem_ir(objective=ObjectiveIR("dot"), rule=rule(lr=data(0.1), rk="elastic", shrink=0.01),
               init="learned", read_after_write=True),
        "deep_memory", deep_call(activation="identity", objective="dot",
                                 global_retention="elastic", elastic_lambda=0.01), False),
    "deep_omega_momentum": (
        mem_ir(memory="mlp", objective=ObjectiveIR("l2", window=2),
               rule=rule("momentum", data(0.1), data(0.5, per_chunk=True)), init="learned"),
        "deep_memory", deep_call(activation="gelu", window=2), False),
    "dot_guards_to_deep": (
        mem_ir(objective=ObjectiveIR("dot"), rule=rule(lr=data(0.3), clip=1.0)),
        "deep_memory", deep_call(activation="identity", objective="dot", grad_clip=1.0), False),
}
NAMES = sorted(ROWS)
COMPILED = ["gated_deltanet_learned_init", "titans_lmm", "omega"]


def direct(name: str, m: MemoryMixer, x: torch.Tensor, state: dict, pos: int = 0):
    """The row's primitive called by hand on the mixer's projections (each role read
    alone, not fused) and knobs."""
    ir, _, call, _ = ROWS[name]
    qkv = {s: m.sources.read(s, x, state.get(f"conv_{s}"))[0] for s in "qkv"}
    g = {n: (None if getattr(m, n) is None else getattr(m, n)(x, pos, state.get(f"carry_{n}"))[0])
         for n in ("lr", "momentum", "retention")}
    if ir.rule.weight_decay:
        keep = 1.0 - ir.rule.weight_decay
        g["retention"] = (torch.full_like(g["lr"], keep) if g["retention"] is None
                          else g["retention"] * keep)
    memory = {k: state[k] for k in m.memory_keys}
    o, new = call(memory, qkv["q"], qkv["k"], qkv["v"], g, ir)
    return m.output(o, x), new


@pytest.mark.parametrize("name", NAMES)
def test_row_matches_direct_primitive_call(name):
    ir, primitive, _, _ = ROWS[name]
    m = build(ir)
    assert m.plan.primitive == primitive
    x = inputs(T=11)  # a partial last chunk
    state = m.init_state(2)
    y, new = m(x, state, 0)
    y_ref, mem_ref = direct(name, m, x, state)
    if m.pad_end:  # token 10 ends no chunk: read without the primitive's end-of-call map
        y_ref = direct(name, m, torch.cat([x, x[:, -1:]], 1), state)[0][:, :11]
    torch.testing.assert_close(y, y_ref, **TOL)
    now = m.memory_at(new, 11)  # a chunk-frozen row keeps the anchor at 8 and 3 tail tokens
    for key, val in mem_ref.items():
        torch.testing.assert_close(now[key], val, **TOL)
    assert set(new) == set(state)
    assert ("tail" in new) == (not ROWS[name][3]) and m.phase == (1 if ROWS[name][3] else CHUNK)
    assert y.abs().max() > 0


def _stream(m, x, cuts):
    state, pos, ys = m.init_state(x.shape[0]), 0, []
    for a, b in zip(cuts[:-1], cuts[1:]):
        y, state = m(x[:, a:b], state, pos)
        ys.append(y)
        pos = b
    return torch.cat(ys, 1), state


@pytest.mark.parametrize("name", NAMES)
def test_streaming_equals_whole(name):
    """Every row streams at any split: exact rules by themselves, chunk-frozen ones by
    carrying the chunk phase (the anchor and the tail, nlc.runtime.aligned)."""
    ir = ROWS[name][0]
    m = build(ir)
    x = inputs(T=14)
    y, st_ = _stream(m, x, [0, 14])
    for cuts in ([0, 4, 12, 14], [0, 8, 14], [0, 3, 7, 13, 14], [0, 1, 2, 14]):
        y2, st2 = _stream(m, x, cuts)
        torch.testing.assert_close(y2, y, **TOL)
        for key in st_:
            torch.testing.assert_close(st2[key], st_[key], **TOL)


@given(cuts=st.lists(st.integers(1, 12), max_size=4, unique=True).map(sorted),
       seed=st.integers(0, 3))
def test_exact_rule_streams_at_any_split(cuts, seed):
    """Gated DeltaNet with conv sources and per-chunk gates: exact at any split."""
    ir = mem_ir(rule=rule("delta", data(0.5, per_chunk=True), retention=data(0.9)),
                keys=CONV_L2, queries=CONV_L2, values=CONV, read_after_write=True)
    m = build(ir, seed)
    x = inputs(T=13, seed=seed)
    y, st_ = _stream(m, x, [0, 13])
    y2, st2 = _stream(m, x, [0, *cuts, 13])
    torch.testing.assert_close(y2, y, **TOL)
    for key in st_:
        torch.testing.assert_close(st2[key], st_[key], **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_causal(name):
    m = build(ROWS[name][0])
    x = inputs(T=12)
    y, _ = m(x, m.init_state(2), 0)
    for t0 in (1, 5, 8):
        x2 = x.clone()
        x2[:, t0:] += torch.randn_like(x2[:, t0:])
        y2, _ = m(x2, m.init_state(2), 0)
        torch.testing.assert_close(y2[:, :t0], y[:, :t0], **TOL)
        assert (y2[:, t0] - y[:, t0]).abs().max() > 1e-8


@pytest.mark.parametrize("name", NAMES)
def test_batch_independent(name):
    m = build(ROWS[name][0])
    x = inputs(B=3, T=9)
    y, st_ = m(x, m.init_state(3), 0)
    for i in range(3):
        yi, sti = m(x[i:i + 1], m.init_state(1), 0)
        torch.testing.assert_close(yi, y[i:i + 1], **TOL)
        for key in st_:
            torch.testing.assert_close(sti[key], st_[key][i:i + 1], **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    ir = ROWS[name][0]
    m = build(ir)
    x = inputs(T=10).requires_grad_(True)
    y, _ = m(x, m.init_state(2), 0)
    y.square().sum().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    if ir.init == "learned":
        assert len(m.state0) > 0 and all(p.grad.abs().sum() > 0 for p in m.state0.values())


@pytest.mark.parametrize("name", COMPILED)
def test_compiles_fullgraph_and_matches_eager(name):
    torch._dynamo.reset()
    m = build(ROWS[name][0])
    x = inputs(T=8)
    state = m.init_state(2)
    y, st_ = m(x, state, 0)
    fn = torch.compile(m.forward, backend="eager", fullgraph=True)
    y2, st2 = fn(x, state, 0)
    torch.testing.assert_close(y2, y, **TOL)
    for key in st_:
        torch.testing.assert_close(st2[key], st_[key], **TOL)


def test_omega_route_equals_deep_depth_one_for_constant_lr():
    """gd on l2 means the same thing with or without a window: gamma = 2 lr."""
    ir = mem_ir(objective=ObjectiveIR("l2", window=3),
                rule=rule(lr=const(0.2), retention=data(0.9)), init="learned")
    m = build(ir)
    assert m.plan.primitive == "omega_rule"
    x = inputs(T=11)
    state = m.init_state(2)
    y, new = m(x, state, 0)
    q, k, v = (m.sources.read(role, x)[0] for role in "qkv")
    ret = m.retention(x)[0]
    deep_state = D.init_deep_state({"W1": m.state0["S"]}, 2, window=3)
    o, ds = D.deep_memory_chunked(deep_state, q, k, v, torch.full_like(ret, 0.2), None, ret,
                                  chunk=CHUNK, window=3, activation="identity")
    torch.testing.assert_close(y, m.output(o, x), **TOL)
    torch.testing.assert_close(m.memory_at(new, 11)["S"], ds["W1"], **TOL)


@pytest.mark.parametrize("name", ["samba_gla", "titans_lmm", "moneta_lq", "deltanet"])
def test_retrieve_reads_without_writing(name):
    """retrieve == the primitive called with lr 0 (no write), read before write."""
    m = build(ROWS[name][0])
    x = inputs(T=9)
    state = m.init_state(2, retrieve=True)
    y, state = m(inputs(T=5, seed=3), state, 0)  # a non-trivial memory
    h, after = m.retrieve(x, state)
    for key in state:
        if key != "retrieve_conv_q":
            assert after[key] is state[key]
    q = m.sources.read("q", x, state.get("retrieve_conv_q"))[0]
    memory = {k: state[k] for k in m.memory_keys}
    zeros = torch.zeros(q.shape[:3], dtype=DT)
    if m.plan.state == "matrix":
        o, _ = M.linear_attention_chunked(memory, q, q, q, zeros, chunk=CHUNK)
    else:
        ir = m.ir
        o, _ = D.deep_memory_chunked(memory, q, q, q, zeros, chunk=CHUNK, activation=ir.activation,
                                     residual=ir.residual,
                                     global_retention="lq" if "A1" in memory else "decay",
                                     lq=ir.rule.q)
    torch.testing.assert_close(h, m.output(o, x), **TOL)
    if "retrieve_conv_q" in state:  # the retrieval stream has its own conv history
        h1, s1 = m.retrieve(x[:, :4], state)
        h2, _ = m.retrieve(x[:, 4:], s1)
        torch.testing.assert_close(torch.cat([h1, h2], 1), h, **TOL)


# --------------------------------------------------------------------------- refusals
UNSUPPORTED = {
    "delta_on_mlp": mem_ir(memory="mlp", rule=rule("delta")),
    "dgd_on_mlp": mem_ir(memory="mlp", rule=rule("dgd")),
    "delta_window": mem_ir(objective=ObjectiveIR("l2", window=2), rule=rule("delta")),
    "dgd_lq": mem_ir(rule=rule("dgd", rk="lq", q=4.0)),
    "delta_guards": mem_ir(rule=rule("delta", clip=1.0)),
    "task": mem_ir(objective=ObjectiveIR("task")),
    "self_target": mem_ir(objective=ObjectiveIR("l2", self_target=True)),
    "period_off_chunk_grid": mem_ir(period=4, chunk=8),  # a deep rule: chunk-frozen
    "period_never": mem_ir(period=0),
    "key_from_level": mem_ir(keys=SourceIR("mem_k")),
    "lr_from_level": mem_ir(rule=rule(lr=KnobIR("data", 0.1, source="mem_lr"))),
    "init_from": mem_ir(init="from", init_level="slow"),
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_combinations_name_the_level(name):
    """Validation refuses these (nlc.capabilities); reaching the runtime is a bug it names."""
    with pytest.raises(RuntimeError, match="'mem'") as err:
        MemoryMixer(UNSUPPORTED[name], WIDTH)
    assert "capabilit" in str(err.value) or "rule 9" in str(err.value)
    if name.endswith("from_level"):
        assert "mem_k" in str(err.value) or "mem_lr" in str(err.value)
    if name in ("delta_on_mlp", "dgd_lq"):
        assert "memory=" in str(err.value) and "rule=" in str(err.value)


# ------------------------------------------------------------------------------- knobs
@given(kind=st.sampled_from(["constant", "learned", "data"]),
       role=st.sampled_from(["lr", "momentum", "retention"]),
       frac=st.floats(0.01, 0.99), upper=st.floats(0.1, 2.0), complement=st.booleans())
def test_knob_value_at_init_and_range(kind, role, frac, upper, complement):
    upper = upper if role == "lr" else min(upper, 1.0)
    init = frac * upper
    ir = KnobIR(kind, init, max=upper, source="input" if kind == "data" else None,
                complement=complement)
    knob = Knob(ir, WIDTH, HEADS, role=role).to(DT)
    x = inputs(T=5)
    g, carry = knob(x, 0)
    assert g.shape == (2, HEADS, 5) and carry is None
    want = 1.0 - init if complement else init
    tol = 1e-12 if kind == "constant" else 1e-6  # learned logits are float32 parameters
    torch.testing.assert_close(g, torch.full_like(g, want), rtol=tol, atol=tol)
    if kind != "constant":  # any parameters keep the gate in range
        randomize(knob, scale=20.0, keep_gates=False)
        g = knob(x, 0)[0]
        raw = 1.0 - g if complement else g
        assert (raw > 0).all() and (raw <= upper).all()


def test_knob_refusals():
    with pytest.raises(ValueError, match="'lvl'.*retention"):
        Knob(data(0.5, max=2.0), WIDTH, HEADS, role="retention", owner="lvl")
    with pytest.raises(ValueError, match="init 3.0"):
        Knob(learned(3.0), WIDTH, HEADS, owner="lvl")
    from_level = Knob(KnobIR("data", 0.1, source="mem_lr"), WIDTH // HEADS, HEADS, owner="lvl")
    with pytest.raises(RuntimeError, match="'lvl'.*read_out"):  # it reads a level's output, not x
        from_level(torch.zeros(1, 2, WIDTH))
    y = torch.randn(2, HEADS, 3, WIDTH // HEADS)
    torch.testing.assert_close(from_level.read_out(y), torch.full((2, HEADS, 3), 0.1))  # w = 0: init
    with torch.no_grad():
        from_level.weight.normal_()
    want = torch.sigmoid((y * from_level.weight[:, None]).sum(-1) + from_level.bias[:, None])
    torch.testing.assert_close(from_level.read_out(y), want)


@given(pos=st.integers(0, 9), T=st.integers(0, 10), chunk=st.integers(1, 4))
def test_per_chunk_knob_takes_the_chunk_first_token(pos, T, chunk):
    """Constant on the absolute chunk grid, the value of the chunk's first token (causal)."""
    knob = Knob(data(0.3, per_chunk=True), WIDTH, HEADS, chunk=chunk).to(DT)
    randomize(knob)
    x = inputs(T=pos + T)
    full = Knob(data(0.3), WIDTH, HEADS).to(DT)
    full.load_state_dict(knob.state_dict())
    g_tok = full(x, 0)[0]  # the per-token gate
    want = torch.stack([g_tok[:, :, (t // chunk) * chunk] for t in range(pos + T)], -1) \
        if pos + T else g_tok
    g_a, carry = knob(x[:, :pos], 0, knob.init_carry(2, dtype=DT))
    g_b, _ = knob(x[:, pos:], pos, carry)
    torch.testing.assert_close(torch.cat([g_a, g_b], -1), want, **TOL)


def test_source_identity_projection_and_conv_stream():
    s = Source(SourceIR("input", project=False), WIDTH, HEADS).to(DT)
    x = inputs(T=6)
    h, conv = s(x)
    assert conv is None and not list(s.parameters())
    torch.testing.assert_close(h, x.view(2, 6, HEADS, -1).transpose(1, 2))
    s = Source(CONV_L2, WIDTH, HEADS).to(DT)
    h, _ = s(x, s.init_conv_state(2, dtype=DT))
    h1, c1 = s(x[:, :2], s.init_conv_state(2, dtype=DT))
    h2, _ = s(x[:, 2:], c1)
    torch.testing.assert_close(torch.cat([h1, h2], 2), h, **TOL)
    n = h.norm(dim=-1)
    assert (n <= 1).all() and (n > 0.9).all()


SOURCE_KINDS = [PLAIN, L2, CONV, CONV_L2, SourceIR("input", conv=2), SourceIR("input", silu=True),
                SourceIR("input", project=False, conv=3)]


@settings(max_examples=8, deadline=None)
@given(st.lists(st.sampled_from(SOURCE_KINDS), min_size=1, max_size=3), st.integers(0, 3))
def test_fused_sources_equal_separate_sources(kinds, split):
    """One GEMM and one conv per window == each role on its own: the same initial draws as
    separate per-role modules, the same outputs and conv histories, streaming at a split."""
    irs = {f"r{i}": ir for i, ir in enumerate(kinds)}
    torch.manual_seed(5)
    fused = Sources(irs, WIDTH, HEADS).to(DT)
    torch.manual_seed(5)
    alone = {r: Source(ir, WIDTH, HEADS, role=r).to(DT) for r, ir in irs.items()}
    for r, ir in irs.items():
        if ir.project:
            torch.testing.assert_close(fused._rows(fused.weight, fused.projected, r),
                                       alone[r].weight, rtol=0, atol=0)
        if ir.conv:
            torch.testing.assert_close(fused._conv_rows(r), getattr(alone[r], f"conv_w{ir.conv}"),
                                       rtol=0, atol=0)
    x = inputs(T=7)
    hist = fused.init_conv_states(2, dtype=DT)
    out, convs = fused.project(x, hist)
    assert convs.keys() == hist.keys() == {r for r, ir in irs.items() if ir.conv}
    for r in irs:
        h, conv = alone[r](x, hist.get(r))
        torch.testing.assert_close(out[r], h, **TOL)
        if conv is not None:
            torch.testing.assert_close(convs[r], conv, **TOL)
    first, mid = fused.project(x[:, :split], hist)
    second, _ = fused.project(x[:, split:], mid)
    for r in irs:
        torch.testing.assert_close(torch.cat([first[r], second[r]], 2), out[r], **TOL)


# ------------------------------------------------------------------------- bundled specs
SPEC_PRIMITIVES = {
    "linear_attention": {"linattn": "linear_attention"},
    "deltanet": {"delta": "delta_rule"},
    "gated_deltanet": {"gdn": "gated_delta_rule"},
    "samba": {"ssm": "gated_linear_attention"},
    "titans_lmm": {"lmm": "deep_memory"},
    "titans_mal": {"lmm": "deep_memory"},
}


@pytest.mark.parametrize("spec", sorted(SPEC_PRIMITIVES))
def test_bundled_spec_memories_build_and_run(spec):
    from pathlib import Path

    from nlc.ir.resolve import resolve
    from nlc.graph.validate import load_spec

    root = Path(__file__).resolve().parents[2] / "specs"
    ir = resolve(load_spec(root / f"{spec}.yaml"))
    for name, primitive in SPEC_PRIMITIVES[spec].items():
        m = MemoryMixer(ir.levels[name], ir.width).to(DT)
        assert m.plan.primitive == primitive and m.level == name
        x = torch.randn(1, 5, ir.width, dtype=DT)
        y, st_ = m(x, m.init_state(1), 0)
        assert y.shape == x.shape and torch.isfinite(y).all()
    if spec == "titans_lmm":  # Titans' forget gate: retention = 1 - 0.01 at init
        g = m.retention(x)[0]
        torch.testing.assert_close(g, torch.full_like(g, 0.99), rtol=1e-6, atol=1e-6)


def test_hope_memory_is_refused_with_its_source_level():
    from pathlib import Path

    from nlc.ir.resolve import resolve
    from nlc.graph.validate import load_spec

    ir = resolve(load_spec(Path(__file__).resolve().parents[2] / "specs" / "hope.yaml"))
    with pytest.raises(RuntimeError, match="'memory'.*(mem_k|mem_v|mem_lr|mem_alpha|self)"):
        MemoryMixer(ir.levels["memory"], ir.width)
