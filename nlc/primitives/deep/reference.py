"""Deep (MLP) memory, reference form: the per-token loop (the family legend is in
:mod:`nlc.primitives.deep`).

Notation::

    B batch  H heads  T tokens  C chunk  L depth  c Omega window  W_l / S_l weights / momentum
    A_l   the accumulator (= W_l with decay retention; Moneta's / Memora's A otherwise)
    xi   chunk start: the gradients of every token in a chunk are taken at M_xi
         (Titans §3.2, t' = t - mod(t, b); NL-arXiv §8.2: xi = C floor((t-1)/C))

It reads as the equations (Titans Eqs. 8-14 with normalised gates, MIRAS attentional bias
and global retention, ATLAS Omega rule); the per-token gradients come from ``torch.func``
(``grad`` of the inner loss through a functional MLP, ``vmap`` over batch*heads and over the
Omega window) at the frozen chunk-start weights.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.func import grad, vmap

from ..newton_schulz import newton_schulz
from .common import (
    HParam, check_config, deep_layers, guard_scale, hparam, lq_norm_scale, mlp_forward,
    objective_loss, simplex, soft_threshold, token_hparam,
)

__all__ = ["deep_memory_reference"]


def deep_memory_reference(
    state: dict[str, Tensor], q: Tensor, k: Tensor, v: Tensor, lr: Tensor,
    momentum: Optional[Tensor] = None, retention: Optional[Tensor] = None,
    gamma: Optional[Tensor] = None, *, chunk: int = 64, window: int = 1,
    activation: str = "gelu", residual: bool = False, objective: str = "l2",
    p: HParam = 2.0, delta: HParam = 1.0, read_after_write: bool = False,
    grad_clip: Optional[HParam] = None, grad_normalize: bool = False,
    normalize_eps: HParam = 1e-6, global_retention: str = "decay", lq: HParam = 4.0,
    elastic_lambda: HParam = 0.0, ns_steps: int = 0, mass: float = 1.0,
    norm: Optional[tuple[Tensor, Tensor]] = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loop of the deep memory rule; same signature/results as ``deep_memory_chunked``
    (and, with ``ns_steps`` > 0 or ``global_retention="kl"``, as
    :func:`~nlc.primitives.deep.chunk_per_token.deep_memory_per_token_chunked`). ``delta``
    may be per token (B, H, T); ``norm`` (gamma, beta), each (H, Dv), is the output LayerNorm.

    For t = 1..T (chunk start xi = the last chunk boundary before t)::

        g_t = sum_{i=t-c+1}^{t} gamma_i s_i grad_W l(M_xi; k_i, v_i)   (ATLAS Omega; c=1: Titans)
        S_t = momentum_t S_{t-1} - lr_t g_t                              (Titans Eqs. 9-10)
        A_t = retention_t A_{t-1} + S_t                                  (Titans Eqs. 13-14)
        W_t = phi(A_t) at a chunk boundary, A_t / nu_xi inside a chunk   (MIRAS; see the family legend)
              kl: W_t = mass softmax(A_t) at every token (Memora, MIRAS Eq. 21)
        o_t = M_{W_t}(q_t)   (read_after_write)   or   M_{W_{t-1}}(q_t)

    s_i: the per-token guard factor (normalise / clip of token i's own gradient).
    ``ns_steps`` > 0 is ATLAS' Muon inner optimizer: the step size moves outside the momentum,
    which is orthogonalised per weight matrix (NS_k: :func:`~nlc.primitives.newton_schulz.newton_schulz`)::

        S_t = momentum_t S_{t-1} - g_t,    A_t = retention_t A_{t-1} + lr_t NS_k(S_t)
    """
    check_config(activation, objective, global_retention, chunk, window)
    prefix, L = deep_layers(state)
    B, H, T, _ = q.shape
    BH, c = B * H, window
    dt, dev = q.dtype, q.device

    def flat(x: Tensor) -> Tensor:
        return x.reshape(BH, *x.shape[2:])

    def per_bh(x: HParam, trailing: int = 0) -> Tensor:  # scalar or (B, H) -> (BH, ...)
        return hparam(torch.as_tensor(x, dtype=dt, device=dev).expand(B, H), q, B, H,
                      trailing)

    A = [flat(state[f"{prefix}{l}"]) for l in range(1, L + 1)]
    S = [flat(state[f"S{l}"]) for l in range(1, L + 1)]
    lr_f = flat(lr.expand(B, H, T))
    mom = None if momentum is None else flat(momentum.expand(B, H, T))
    ret = None if retention is None else flat(retention.expand(B, H, T))
    gam = q.new_ones(B, H, T) if gamma is None else gamma.expand(B, H, T)
    if c > 1:
        kx = torch.cat([state.get("omega_k", k.new_zeros(B, H, c - 1, k.shape[-1])), k], 2)
        vx = torch.cat([state.get("omega_v", v.new_zeros(B, H, c - 1, v.shape[-1])), v], 2)
        gx = torch.cat([state.get("omega_gamma", q.new_zeros(B, H, c - 1)), gam], 2)
    else:
        kx, vx, gx = k, v, gam
    kx, vx, gx = flat(kx), flat(vx), flat(gx)
    d_tok = token_hparam(delta, B, H, T)
    p_f, d_f = per_bh(p), (per_bh(delta) if d_tok is None else None)
    qexp, lam = per_bh(lq, 2), per_bh(elastic_lambda, 2)
    clip = None if grad_clip is None else per_bh(grad_clip, 1)
    eps = per_bh(normalize_eps, 1)

    Dv = v.shape[-1]
    gb = (torch.ones(H, Dv, dtype=dt, device=dev), torch.zeros(H, Dv, dtype=dt, device=dev)) \
        if norm is None else norm
    gamma_f, beta_f = (x.expand(B, H, Dv).reshape(BH, Dv) for x in gb)
    nrm = None if norm is None else (gamma_f.unsqueeze(1), beta_f.unsqueeze(1))

    def loss(ws, kk, vv, pp, dd, ga, be):
        y = mlp_forward(ws, kk, activation, residual, None if norm is None else (ga, be))
        return objective_loss(objective, y, vv, pp, dd)

    # grad at one weight set for one (k, v); vmap over the window, then over batch*heads
    grads = vmap(vmap(grad(loss), in_dims=(None, 0, 0, None, None, None, None)))

    outs = []
    W_xi: list[Tensor] = []
    nu: list[Tensor] = []
    W_prev: list[Tensor] = []
    for t in range(T):
        if t % chunk == 0:  # chunk start: freeze the weights the gradients are taken at
            if global_retention == "lq":
                nu = [lq_norm_scale(a, qexp) for a in A]
                W_xi = [a / n for a, n in zip(A, nu)]
            elif global_retention == "kl":
                W_xi = [simplex(a, mass) for a in A]
            else:
                W_xi = list(A)
            if t == 0:
                W_prev = W_xi
        d_now = d_f if d_tok is None else d_tok[:, t]
        g = grads(tuple(W_xi), kx[:, t:t + c], vx[:, t:t + c], p_f, d_now, gamma_f, beta_f)  # L x (BH, c, o, i)
        w = gx[:, t:t + c]  # (BH, c)
        sq = sum(gl.pow(2).sum((-2, -1)) for gl in g)
        s = guard_scale(sq, clip, grad_normalize, eps)
        if s is not None:
            w = w * s
        g_t = [(w[:, :, None, None] * gl).sum(1) for gl in g]
        m_t = 0.0 if mom is None else mom[:, t, None, None]
        r_t = 1.0 if ret is None else ret[:, t, None, None]
        lr_t = lr_f[:, t, None, None]
        if ns_steps:
            S = [m_t * s_l - g_l for s_l, g_l in zip(S, g_t)]
            A = [r_t * a + lr_t * newton_schulz(s_l, ns_steps) for a, s_l in zip(A, S)]
        else:
            S = [m_t * s_l - lr_t * g_l for s_l, g_l in zip(S, g_t)]
            A = [r_t * a + s_l for a, s_l in zip(A, S)]
        if global_retention == "kl":
            W_t = [simplex(a, mass) for a in A]
        elif (t + 1) % chunk == 0 or t == T - 1:  # chunk boundary: global retention map phi
            if global_retention == "elastic":
                A = [soft_threshold(a, lam) for a in A]
                W_t = A
            elif global_retention == "lq":
                W_t = [a / lq_norm_scale(a, qexp) for a in A]
            else:
                W_t = A
        else:
            W_t = [a / n for a, n in zip(A, nu)] if global_retention == "lq" else A
        W_read = W_t if read_after_write else W_prev
        outs.append(mlp_forward(W_read, q[:, :, t].reshape(BH, 1, -1), activation, residual, nrm))
        W_prev = W_t
    o = torch.cat(outs, 1).reshape(B, H, T, Dv) if outs else q.new_zeros(B, H, 0, Dv)
    new = {f"{prefix}{l + 1}": A[l].reshape(B, H, *A[l].shape[1:]) for l in range(L)}
    new.update({f"S{l + 1}": S[l].reshape(B, H, *S[l].shape[1:]) for l in range(L)})
    if c > 1:
        n = kx.shape[1]
        new["omega_k"] = kx[:, n - c + 1:].reshape(B, H, c - 1, -1)
        new["omega_v"] = vx[:, n - c + 1:].reshape(B, H, c - 1, -1)
        new["omega_gamma"] = gx[:, n - c + 1:].reshape(B, H, c - 1)
    return o, new
