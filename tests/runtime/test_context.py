"""Context (Titans MAC, nlc.runtime.context): reference, streaming, causality, gradients, compile.

The reference below is a per-query loop that reads as Titans §4.1: for each segment, retrieve
h with the segment-start memory, attend over [persistent || h_{<=i} || s_{<=i}] with plain
softmax, write the memory with y, output y * sigmoid(M(y)). Notation: B batch, T tokens,
D = 8 width, H = 2 heads, C = 4 memory chunk, S segment. float64, tolerance 1e-9 relative.
"""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nlc.ir.nodes import AttentionIR, PersistentIR
from nlc.primitives.layers import apply_rope, rms_norm
from nlc.runtime.context import Context
from nlc.runtime.memory import MemoryMixer
from nlc.runtime.projections import merge_heads, split_heads

from .test_memory_mixer import (CONV, CONV_L2, DT, HEADS, TITANS_RULE, TOL, WIDTH, data, inputs,
                                mem_ir, randomize, rule)



def attn_ir(window=None, rope=True, qk_norm=False) -> AttentionIR:
    return AttentionIR(name="core", type="attention", order=0, frequency=Fraction(1),
                       outer="outer", origin="spec.yaml:9", heads=HEADS, head_dim=WIDTH // HEADS,
                       window=window, rope=rope, persistent=None, qk_norm=qk_norm)


PERSIST = PersistentIR(name="persist", type="persistent", order=1, frequency=Fraction(0),
                       outer="outer", origin="spec.yaml:10", tokens=3)
TITANS = mem_ir(name="lmm", memory="mlp", rule=TITANS_RULE, keys=CONV_L2, queries=CONV_L2,
                values=CONV, init="learned", output_gate=True)
GDN = mem_ir(name="lmm", rule=rule("delta", data(0.5), retention=data(0.9)), keys=CONV_L2,
             queries=CONV_L2, values=CONV, read_after_write=True, init="learned")


def build(memory=TITANS, attention=None, persistent=PERSIST, segment=None, seed=1, **kw):
    c = Context(attention or attn_ir(), MemoryMixer(memory, WIDTH), persistent, segment,
                width=WIDTH, **kw).to(DT)
    randomize(c, seed)
    return c


def mac_reference(c: Context, x: torch.Tensor) -> torch.Tensor:
    """Titans MAC, whole sequence from a fresh state, one query at a time."""
    B, T, _ = x.shape
    att, memory, S = c.attention, c.memory, c.segment
    u = c.norm(x)
    mem = memory.init_state(B, retrieve=True)
    ptok = None if c.persistent is None else c.persistent.tokens
    scale = 1.0 / math.sqrt(att.head_dim)

    w_q, w_k, w_v = att.qkv.weight.chunk(3)

    def keys(t):
        k = split_heads(t @ w_k.T, att.heads)
        return k if att.k_gain is None else rms_norm(k, att.k_gain)

    outs = []
    for j0 in range(0, T, S):
        xs = u[:, j0:j0 + S]
        n = xs.shape[1]
        # reads the segment-start memory (the anchor advanced over a tail), no write
        h, read = memory.retrieve(xs, {**mem, **memory.memory_at(mem, j0)})
        q = split_heads(xs @ w_q.T, att.heads)
        if att.q_gain is not None:
            q = rms_norm(q, att.q_gain)
        ks, kh = keys(xs), keys(h)
        vs, vh = split_heads(xs @ w_v.T, att.heads), split_heads(h @ w_v.T, att.heads)
        qr, ksr, khr = q, ks, kh
        if att.rope:
            qr, ksr, khr = (apply_rope(t, j0) for t in (q, ks, kh))
        ys = []
        for i in range(n):
            lo = 0 if att.window is None else max(0, i - att.window + 1)
            sc = [qr[:, :, i, None] @ khr[:, :, lo:i + 1].mT,
                  qr[:, :, i, None] @ ksr[:, :, lo:i + 1].mT]
            vals = [vh[:, :, lo:i + 1], vs[:, :, lo:i + 1]]
            if ptok is not None:
                pk, pv = keys(ptok[None]), split_heads(ptok[None] @ w_v.T, att.heads)
                sc.insert(0, q[:, :, i, None] @ pk.mT)  # position-free: the unrotated query
                vals.insert(0, pv.expand(B, -1, -1, -1))
            w = torch.softmax(torch.cat(sc, -1) * scale, -1)
            ys.append(w @ torch.cat(vals, 2))
        y = att.o_proj(merge_heads(torch.cat(ys, 2)))
        mem = dict(mem, retrieve_conv_q=read["retrieve_conv_q"]) if "retrieve_conv_q" in read \
            else mem
        z, mem = memory(y, mem, j0)
        outs.append(y * torch.sigmoid(z))
    o = torch.cat(outs, 1)
    return x + o if c.residual else o


CASES = {
    "titans_mac": dict(),
    "segment6_mid_chunk": dict(segment=6),
    "segment8_window_qknorm": dict(attention=attn_ir(window=3, qk_norm=True), segment=8),
    "no_persistent_norope_gdn": dict(memory=GDN, attention=attn_ir(rope=False), persistent=None,
                                     norm="layer", residual=False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_reference(case):
    c = build(**CASES[case])
    x = inputs(T=14)
    y, _ = c(x, c.init_state(2), 0)
    torch.testing.assert_close(y, mac_reference(c, x), **TOL)


def _stream(c, x, cuts):
    state, ys = c.init_state(x.shape[0]), []
    for a, b in zip(cuts[:-1], cuts[1:]):
        y, state = c(x[:, a:b], state, a)
        ys.append(y)
    return torch.cat(ys, 1), state


def _same_state(s1, s2):
    assert set(s1) == set(s2)
    for key in s1:
        torch.testing.assert_close(s1[key], s2[key], **TOL)


@pytest.mark.parametrize("case", sorted(CASES))
def test_streaming_equals_whole(case):
    c = build(**CASES[case])
    x = inputs(T=14)
    y, st_ = _stream(c, x, [0, 14])
    for cuts in ([0, 4, 12, 14], [0, 8, 14], [0, 3, 7, 13, 14], [0, 1, 2, 14]):
        y2, st2 = _stream(c, x, cuts)
        torch.testing.assert_close(y2, y, **TOL)
        _same_state(st2, st_)


@given(cuts=st.lists(st.integers(1, 12), max_size=3, unique=True).map(sorted),
       window=st.sampled_from([None, 2]), segment=st.sampled_from([3, 5]),
       memory=st.sampled_from([GDN, TITANS]))
def test_streams_at_any_split(cuts, window, segment, memory):
    """The whole MAC layer streams at any split, with an exact rule (gated delta) or a
    chunk-frozen one (Titans, chunk 4: segments of 3 or 5 start mid-chunk)."""
    c = build(memory=memory, attention=attn_ir(window=window), segment=segment)
    x = inputs(T=13)
    y, st_ = _stream(c, x, [0, 13])
    y2, st2 = _stream(c, x, [0, *cuts, 13])
    torch.testing.assert_close(y2, y, **TOL)
    _same_state(st2, st_)


@pytest.mark.parametrize("case", sorted(CASES))
def test_causal(case):
    c = build(**CASES[case])
    x = inputs(T=12)
    y, _ = c(x, c.init_state(2), 0)
    for t0 in (2, 4, 9):
        x2 = x.clone()
        x2[:, t0:] += torch.randn_like(x2[:, t0:])
        y2, _ = c(x2, c.init_state(2), 0)
        torch.testing.assert_close(y2[:, :t0], y[:, :t0], **TOL)
        assert (y2[:, t0] - y[:, t0]).abs().max() > 1e-8


def test_batch_independent():
    c = build()
    x = inputs(B=3, T=10)
    y, st_ = c(x, c.init_state(3), 0)
    for i in range(3):
        yi, sti = c(x[i:i + 1], c.init_state(1), 0)
        torch.testing.assert_close(yi, y[i:i + 1], **TOL)
        for key in st_:
            torch.testing.assert_close(sti[key], st_[key][i:i + 1], **TOL)


def test_gradients_reach_every_parameter_and_levels_own_them():
    c = build(attention=attn_ir(qk_norm=True))
    x = inputs(T=10)
    y, _ = c(x, c.init_state(2), 0)
    y.square().sum().backward()
    for name, p in c.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert c.memory.state0["W1"].grad.abs().sum() > 0  # the meta-learned initial memory
    assert c.persistent.tokens.grad.abs().sum() > 0
    assert (c.attention.level, c.memory.level, c.persistent.level) == ("core", "lmm", "persist")
    assert not hasattr(c, "level")  # the layer norm is a model parameter, like other layers


def test_compiles_fullgraph_and_matches_eager():
    """One call that continues a segment (carried frozen memory and KV) and opens the next."""
    torch._dynamo.reset()
    c = build()
    x = inputs(T=6)
    _, state = c(x[:, :2], c.init_state(2), 0)
    y, st_ = c(x[:, 2:], state, 2)
    fn = torch.compile(c.forward, backend="eager", fullgraph=True)
    y2, st2 = fn(x[:, 2:], state, 2)
    torch.testing.assert_close(y2, y, **TOL)
    _same_state(st2, st_)


def test_refuses_mismatched_width_and_persistent():
    with pytest.raises(ValueError, match="width"):
        Context(attn_ir(), MemoryMixer(TITANS, WIDTH), PERSIST, width=2 * WIDTH)
    other = PersistentIR(name="other", type="persistent", order=1, frequency=Fraction(0),
                         outer="outer", origin="x", tokens=2)
    named = AttentionIR(**{**attn_ir().__dict__, "persistent": "persist"})
    with pytest.raises(ValueError, match="'persist'"):
        Context(named, MemoryMixer(TITANS, WIDTH), other)
    assert Context(attn_ir(), TITANS, None, width=WIDTH).memory.level == "lmm"


def test_bundled_titans_mac_builds_and_streams():
    from pathlib import Path

    from nlc.ir.resolve import resolve
    from nlc.graph.validate import load_spec

    ir = resolve(load_spec(Path(__file__).resolve().parents[2] / "specs" / "titans_mac.yaml"))
    layer = next(lay for lay in ir.layers if lay.kind == "context")
    att, mem, per = (ir.levels[n] for n in layer.levels)
    c = Context(att, MemoryMixer(mem, ir.width), per, None, layer.norm, layer.residual,
                ir.width).to(DT)
    assert c.segment == mem.chunk == 64 and c.persistent.tokens.shape == (16, ir.width)
    x = torch.randn(1, 70, ir.width, dtype=DT)
    y, _ = c(x, c.init_state(1), 0)
    y2, _ = _stream(c, x, [0, 64, 70])
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y2, y, **TOL)


def test_takes_the_attention_mixer_generated_code_passes():
    """rt.Context(rt.AttentionMixer(...), rt.MemoryMixer(...), persistent=...): the mixer's
    projections are used and give the same layer as the AttentionIR path."""
    from nlc.runtime.attention import AttentionMixer

    ir = attn_ir(qk_norm=True)
    ref = build(attention=ir)
    c = Context(AttentionMixer(ir, WIDTH), MemoryMixer(TITANS, WIDTH), persistent=PERSIST,
                segment=None, norm="rms", residual=True, width=WIDTH).to(DT)
    c.load_state_dict(ref.state_dict())
    assert c.attention.level == "core" and c.persistent.level == "persist"
    x = inputs(T=10)
    torch.testing.assert_close(c(x, c.init_state(2), 0)[0], ref(x, ref.init_state(2), 0)[0],
                               **TOL)
    with pytest.raises(TypeError, match="MemoryMixer"):
        Context(AttentionMixer(ir, WIDTH), torch.nn.Linear(WIDTH, WIDTH), width=WIDTH)
