"""Tests for nlc.primitives.layers (norms, MLPs, RoPE, causal short convolution)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from nlc.primitives.layers import (
    GeluMLP,
    RMSNorm,
    ShortConv,
    SwiGLU,
    apply_rope,
    causal_conv1d,
    causal_conv1d_reference,
    init_conv_state,
    l2_normalize,
    rms_norm,
    rope_angles,
)

DT = torch.float64


def close(a, b, rtol=1e-9, atol=1e-12):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0):
    return torch.randn(*shape, dtype=DT, generator=gen(seed))


def splits(draw, T, max_parts=4):
    cuts = sorted(set(draw(st.lists(st.integers(0, T), max_size=max_parts))))
    pts = [0] + cuts + [T]
    return [(a, b) for a, b in zip(pts[:-1], pts[1:])]


# --------------------------------------------------------------------------- norms / MLPs
@given(st.integers(1, 3), st.integers(1, 9), st.integers(0, 10_000))
def test_l2_normalize_unit_norm(B, D, seed):
    x = randn(B, 5, D, seed=seed) + 0.1
    y = l2_normalize(x, eps=0.0)
    close(y.norm(dim=-1), torch.ones(B, 5, dtype=DT))
    close(y, F.normalize(x, dim=-1))
    assert torch.isfinite(l2_normalize(torch.zeros(2, 3, dtype=DT))).all()


@given(st.integers(1, 3), st.integers(1, 12), st.integers(0, 10_000))
def test_rms_norm_formula(B, D, seed):
    x = randn(B, 4, D, seed=seed)
    w = randn(D, seed=seed + 1)
    expect = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-6) * w
    close(rms_norm(x, w), expect)
    m = RMSNorm(D).double()
    close(m(x), expect / w)


def test_mlps_formulas():
    torch.manual_seed(1)
    x = randn(2, 5, 6, seed=3)
    sw = SwiGLU(6, 10).double()
    w_gate, w_up = sw.gate_up.weight[:10], sw.gate_up.weight[10:]
    expect = (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ sw.down.weight.T
    close(sw(x), expect)
    assert SwiGLU(6).hidden == 16 and SwiGLU(6).gate_up.out_features == 32
    g = GeluMLP(6, 7, out_dim=3).double()
    expect = F.gelu(x @ g.fc1.weight.T + g.fc1.bias) @ g.fc2.weight.T + g.fc2.bias
    close(g(x), expect)


@pytest.mark.parametrize("bias", [False, True])
def test_fused_swiglu_draws_as_two_separate_linears(bias):
    """gate_up holds what nn.Linear gate, then up, would have drawn (weights and biases)."""
    torch.manual_seed(3)
    sw = SwiGLU(6, 10, bias=bias)
    torch.manual_seed(3)
    gate, up = torch.nn.Linear(6, 10, bias=bias), torch.nn.Linear(6, 10, bias=bias)
    down = torch.nn.Linear(10, 6, bias=bias)
    assert torch.equal(sw.gate_up.weight, torch.cat([gate.weight, up.weight]))
    assert torch.equal(sw.down.weight, down.weight)
    if bias:
        assert torch.equal(sw.gate_up.bias, torch.cat([gate.bias, up.bias]))


# --------------------------------------------------------------------------- RoPE
def rope_complex(x, positions, base=10000.0):
    """Independent RoPE: pair (i, i + D/2) as a complex number times exp(i pos theta_i)."""
    D = x.shape[-1]
    theta = base ** (-torch.arange(0, D // 2, dtype=DT) * 2 / D)
    ang = positions.to(DT).unsqueeze(-1) * theta
    z = torch.complex(x[..., : D // 2], x[..., D // 2:]) * torch.polar(torch.ones_like(ang), ang)
    return torch.cat((z.real, z.imag), dim=-1)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 12), st.integers(1, 5),
       st.integers(0, 50), st.integers(0, 10_000))
def test_rope_matches_complex_and_streams(B, H, T, half, offset, seed):
    D = 2 * half
    x = randn(B, H, T, D, seed=seed)
    pos = torch.arange(T) + offset
    close(apply_rope(x, offset), rope_complex(x, pos))
    whole = apply_rope(x)
    for a in range(0, T, 3):
        close(apply_rope(x[:, :, a:a + 3], a), whole[:, :, a:a + 3])
    close(apply_rope(x, torch.tensor(offset)), apply_rope(x, offset))
    # per-sequence offsets
    offs = torch.arange(B) * 7 + offset
    y = apply_rope(x, offs)
    for b in range(B):
        close(y[b], apply_rope(x[b:b + 1], int(offs[b]))[0])
    # norm preserving
    close(y.norm(dim=-1), x.norm(dim=-1))


@given(st.integers(0, 40), st.integers(0, 40), st.integers(1, 30), st.integers(0, 10_000))
def test_rope_relative(m, n, shift, seed):
    q, k = randn(1, 1, 1, 8, seed=seed), randn(1, 1, 1, 8, seed=seed + 1)
    s1 = (apply_rope(q, m) * apply_rope(k, n)).sum()
    s2 = (apply_rope(q, m + shift) * apply_rope(k, n + shift)).sum()
    close(s1, s2)


def test_rope_angles_and_odd_dim():
    ang = rope_angles(torch.arange(3, dtype=DT), 4, base=100.0)
    close(ang, torch.tensor([[0, 0], [1, 0.1], [2, 0.2]], dtype=DT))
    with pytest.raises(ValueError):
        apply_rope(torch.zeros(1, 1, 2, 3), 0)


# --------------------------------------------------------------------------- short conv
@st.composite
def conv_case(draw):
    B = draw(st.integers(1, 3))
    T = draw(st.integers(0, 12))
    D = draw(st.integers(1, 5))
    w = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 10_000))
    bias = draw(st.booleans())
    init = draw(st.booleans())
    return B, T, D, w, seed, bias, init, splits(draw, T)


@given(conv_case())
def test_conv_reference_equals_fast_and_streams(case):
    B, T, D, w, seed, bias, init, segs = case
    x = randn(B, T, D, seed=seed)
    W = randn(D, w, seed=seed + 1)
    b = randn(D, seed=seed + 2) if bias else None
    s0 = {"conv": randn(B, w - 1, D, seed=seed + 3)} if init else None
    y_ref, s_ref = causal_conv1d_reference(x, W, b, s0)
    y, s = causal_conv1d(x, W, b, s0)
    close(y, y_ref)
    close(s["conv"], s_ref["conv"])
    assert s["conv"].shape == (B, w - 1, D)
    # independent formula: y_t = b + sum_j W[:, j] x_{t-w+1+j}, zeros (or state) before 0
    hist = s0["conv"] if init else torch.zeros(B, w - 1, D, dtype=DT)
    xp = torch.cat((hist, x), 1)
    for t in range(T):
        e = sum(W[:, j] * xp[:, t + j] for j in range(w)) + (b if bias else 0)
        close(y[:, t], e + torch.zeros_like(y[:, t]))
    # streaming in segments == whole
    state, outs = s0, []
    for a, c in segs:
        o, state = causal_conv1d(x[:, a:c], W, b, state)
        outs.append(o)
    close(torch.cat(outs, 1), y)
    close(state["conv"], s["conv"])


@given(st.integers(2, 10), st.integers(1, 5), st.integers(0, 10_000))
def test_conv_causal_and_batch_independent(T, w, seed):
    x = randn(2, T, 3, seed=seed)
    W = randn(3, w, seed=seed + 1)
    y, _ = causal_conv1d(x, W)
    t = T // 2
    x2 = x.clone()
    x2[:, t:] += 1.0
    x2[1] += 5.0
    y2, _ = causal_conv1d(x2, W)
    close(y2[0, :t], y[0, :t])  # future of sample 0 does not leak backwards
    x3 = x.clone()
    x3[1] = randn(T, 3, seed=seed + 9)
    close(causal_conv1d(x3, W)[0][0], y[0])  # sample 1 never affects sample 0


def test_short_conv_module_and_compile():
    torch.manual_seed(0)
    m = ShortConv(6, window=4, bias=True, activation="silu").double()
    x = randn(2, 9, 6, seed=4)
    st0 = m.init_state(2)
    assert st0["conv"].shape == (2, 3, 6)
    y, s = m(x, st0)
    y_ref, s_ref = causal_conv1d_reference(x, m.weight, m.bias, init_conv_state(2, 6, 4, dtype=DT))
    close(y, F.silu(y_ref))
    close(s["conv"], s_ref["conv"])
    y.sum().backward()
    assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0

    conv_c = torch.compile(causal_conv1d, backend="eager", fullgraph=True)
    y_c, s_c = conv_c(x, m.weight.detach(), None, st0)
    y_e, s_e = causal_conv1d(x, m.weight.detach(), None, st0)
    close(y_c, y_e)
    close(s_c["conv"], s_e["conv"])


def test_layers_compile_fullgraph():
    x = randn(2, 3, 5, 8, seed=1)

    def f(x, off):
        return l2_normalize(apply_rope(x, off)), rms_norm(x, torch.ones(8, dtype=DT))

    fc = torch.compile(f, backend="eager", fullgraph=True)
    off = torch.tensor([3, 11])
    for a, b in zip(fc(x, off), f(x, off)):
        close(a, b)
    assert math.isclose(float(apply_rope(x, 0).norm()), float(x.norm()), rel_tol=1e-12)
