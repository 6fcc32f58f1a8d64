"""MIRAS' Yaad and Memora and TTT's LayerNorm'd memory in the deep primitives: the chunked forms
equal the per-token reference (outputs, states, gradients) and the rules written out by hand.

Notation: B batch, H heads, T tokens, C chunk, L depth, c Omega window; float64.
Yaad: a Huber threshold delta_t per token (MIRAS Eq. 14, coordinate-wise); Memora: W_t =
c softmax(alpha_t log W_{t-1} - eta_t grad) per row (MIRAS Eq. 21); TTT: M(x) = x + LN(MLP(x)).
"""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nlc.primitives.deep import (
    deep_memory_chunked, deep_memory_per_token_chunked, deep_memory_reference, init_deep_state,
)
from tests.primitives.test_deep import _close, _close_state, _examples, make_case, run

DT = torch.float64


def _delta(seed: int, B: int, H: int, T: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return (0.1 + torch.rand(B, H, T, generator=g, dtype=DT)).requires_grad_()


def _norm(seed: int, H: int, D: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 2)
    return ((1 + 0.3 * torch.randn(H, D, generator=g, dtype=DT)).requires_grad_(),
            (0.3 * torch.randn(H, D, generator=g, dtype=DT)).requires_grad_())


@settings(max_examples=_examples(1.0))
@given(seed=st.integers(0, 2**16), B=st.integers(1, 2), H=st.integers(1, 2), T=st.integers(1, 11),
       Dk=st.integers(2, 4), Dh=st.integers(2, 5), L=st.integers(1, 3), chunk=st.integers(1, 5),
       momentum=st.booleans(), retention=st.booleans(), residual=st.booleans(), raw=st.booleans(),
       per_token_delta=st.booleans(), norm=st.booleans(), per_token=st.booleans())
def test_yaad_delta_and_ttt_norm_chunked_equal_reference(seed, B, H, T, Dk, Dh, L, chunk, momentum, retention,
                                                          residual, raw, per_token_delta, norm, per_token):
    """Outputs, states and the outer gradients w.r.t. delta_t, the LayerNorm's gain and bias and
    the keys, in both chunked primitives (``per_token``: the per-token-weights one)."""
    params, q, k, v, gates = make_case(seed, B, H, T, Dk, Dh, L, residual, momentum, retention,
                                       requires_grad=True)
    delta = _delta(seed, B, H, T) if per_token_delta else 0.4
    nrm = _norm(seed, H, v.shape[-1]) if norm else None
    kw = dict(chunk=chunk, objective="huber", delta=delta, residual=residual, read_after_write=raw, norm=nrm)
    fn = deep_memory_per_token_chunked if per_token else deep_memory_chunked
    o1, s1 = run(deep_memory_reference, params, q, k, v, gates, **kw)
    o2, s2 = run(fn, params, q, k, v, gates, **kw)
    _close(o1, o2)
    _close_state(s1, s2)
    wrt = [k, *params.values()] + ([delta] if per_token_delta else []) + (list(nrm) if norm else [])
    probe = torch.randn(o1.shape, generator=torch.Generator().manual_seed(seed), dtype=DT)
    for a, b in zip(torch.autograd.grad((o1 * probe).sum(), wrt, allow_unused=True),
                    torch.autograd.grad((o2 * probe).sum(), wrt, allow_unused=True)):
        _close(a, b)


def test_a_per_token_delta_switches_each_token_between_the_squares_and_the_line():
    """One matrix memory, chunk 1: token t's write is lr_t * 2 clip(e_t, -delta_t, delta_t) k_t^T,
    so the same error is clipped for a small delta_t and kept whole for a large one."""
    W0 = torch.zeros(1, 2, 2, dtype=DT)
    k = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]], dtype=DT)
    v = torch.tensor([[[[3.0, -0.5], [3.0, -0.5]]]], dtype=DT)
    lr = torch.full((1, 1, 2), 0.1, dtype=DT)
    delta = torch.tensor([[[1.0, 10.0]]], dtype=DT)
    _, state = deep_memory_chunked(init_deep_state({"W1": W0}, 1), k, k, v, lr, chunk=1, activation="identity",
                                   objective="huber", delta=delta)
    # token 1: e = -v = (-3, 0.5), clipped at delta 1 to (-1, 0.5): W[:, 0] = -0.2 (-1, 0.5) = (0.2, -0.1)
    # token 2: e = (0.2 - 3, -0.1 + 0.5) = (-2.8, 0.4), kept whole at delta 10: W[:, 0] -= 0.2 e
    expected = torch.zeros(2, 2, dtype=DT)
    expected[:, 0] = torch.tensor([0.2 + 0.56, -0.1 - 0.08], dtype=DT)
    torch.testing.assert_close(state["W1"][0, 0], expected)



@settings(max_examples=_examples(1.0))
@given(seed=st.integers(0, 2**16), B=st.integers(1, 2), H=st.integers(1, 2), T=st.integers(1, 11),
       Dk=st.integers(2, 4), Dh=st.integers(2, 5), L=st.integers(1, 3), chunk=st.integers(1, 5),
       momentum=st.booleans(), retention=st.booleans(), raw=st.booleans(), window=st.integers(1, 3),
       mass=st.floats(0.5, 8.0), ns_steps=st.sampled_from([0, 0, 3]))
def test_memora_chunked_equals_reference(seed, B, H, T, Dk, Dh, L, chunk, momentum, retention, raw, window,
                                         mass, ns_steps):
    params, q, k, v, gates = make_case(seed, B, H, T, Dk, Dh, L, False, momentum, retention, window)
    kw = dict(chunk=chunk, window=window, read_after_write=raw, global_retention="kl", mass=mass,
              ns_steps=ns_steps)
    o1, s1 = run(deep_memory_reference, params, q, k, v, gates, **kw)
    o2, s2 = run(deep_memory_per_token_chunked, params, q, k, v, gates, **kw)
    _close(o1, o2)
    _close_state(s1, s2)


def test_memora_is_miras_eq_21_written_out():
    """Two tokens, chunk 1, a matrix memory on the l2 objective: W_t = c softmax(alpha_t log W_{t-1}
    - eta_t grad_W ||W_{t-1} k_t - v_t||^2) row by row, read before the write."""
    g = torch.Generator().manual_seed(7)
    A0 = torch.randn(1, 3, 4, generator=g, dtype=DT)
    q, k, v = (torch.randn(1, 1, 2, d, generator=g, dtype=DT) for d in (4, 4, 3))
    lr, r = torch.tensor([[[0.3, 0.2]]], dtype=DT), torch.tensor([[[0.9, 0.7]]], dtype=DT)
    c = 2.5
    o, state = deep_memory_per_token_chunked(init_deep_state({"W1": A0}, 1, global_retention="kl"), q, k, v, lr,
                                             None, r, chunk=1, activation="identity", global_retention="kl",
                                             mass=c)
    W = c * torch.softmax(A0[0], -1)
    reads = []
    for t in range(2):
        reads.append(W @ q[0, 0, t])
        grad = 2 * torch.outer(W @ k[0, 0, t] - v[0, 0, t], k[0, 0, t])
        W = c * torch.softmax(r[0, 0, t] * torch.log(W) - lr[0, 0, t] * grad, -1)
    torch.testing.assert_close(o[0, 0], torch.stack(reads))
    torch.testing.assert_close(c * torch.softmax(state["A1"][0, 0], -1), W)


def test_memora_weights_stay_on_the_simplex():
    """Whatever the writes, every row of the weights is non-negative and sums to the mass c."""
    params, q, k, v, gates = make_case(3, T=16, L=2)
    gates = {**gates, "lr": gates["lr"] * 50}  # large steps: the logits move far
    _, state = run(deep_memory_per_token_chunked, params, q, k, v, gates, chunk=4, global_retention="kl",
                   mass=3.0)
    for key in ("A1", "A2"):
        W = 3.0 * torch.softmax(state[key], -1)
        assert torch.isfinite(W).all() and (W >= 0).all()
        torch.testing.assert_close(W.sum(-1), torch.full(W.shape[:-1], 3.0, dtype=DT))


def test_ttt_layer_norm_writes_through_the_norm():
    """TTT-Linear written out (depth 1, identity, residual, chunk 2 = one mini-batch): both tokens
    take their gradient of ||k + LN(W k) - v||^2 at W_0 (through the LayerNorm, by autograd here),
    token 2 reads W_0 - lr g_1, and the chunk ends at W_0 - lr (g_1 + g_2)."""
    g = torch.Generator().manual_seed(11)
    W0 = torch.randn(1, 4, 4, generator=g, dtype=DT)
    q, k, v = (torch.randn(1, 1, 2, 4, generator=g, dtype=DT) for _ in range(3))
    gamma, beta = torch.rand(1, 4, generator=g, dtype=DT) + 0.5, torch.randn(1, 4, generator=g, dtype=DT)
    lr = torch.full((1, 1, 2), 0.05, dtype=DT)
    o, state = deep_memory_chunked(init_deep_state({"W1": W0}, 1), q, k, v, lr, chunk=2, activation="identity",
                                   residual=True, norm=(gamma, beta))

    def memory(W, x):
        return x + torch.nn.functional.layer_norm(W @ x, (4,), gamma[0], beta[0], eps=1e-5)

    def grad_at(W, t):
        W = W.clone().requires_grad_()
        return torch.autograd.grad((memory(W, k[0, 0, t]) - v[0, 0, t]).pow(2).sum(), W)[0]

    g1, g2 = grad_at(W0[0], 0), grad_at(W0[0], 1)
    torch.testing.assert_close(o[0, 0, 0], memory(W0[0], q[0, 0, 0]))
    torch.testing.assert_close(o[0, 0, 1], memory(W0[0] - 0.05 * g1, q[0, 0, 1]))
    torch.testing.assert_close(state["W1"][0, 0], W0[0] - 0.05 * (g1 + g2))
