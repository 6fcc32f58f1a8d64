"""Deep (MLP or matrix) memories whose per-token weights are formed inside a chunk, chunkwise:
ATLAS' Muon inner optimizer and Memora's KL retention.

Notation (as :mod:`nlc.primitives.deep`)::

    B batch   H heads   T tokens in the call   C chunk size   G = B H
    L depth; layer l maps D_{l-1} -> D_l (D_0 = Dk, D_L = Dv); a_{l-1} its input, delta_l
          the back-propagated error of the inner objective at its output
    A_l (G, D_l, D_{l-1}) the state (weights, or Memora's logits), S_l its momentum
    W_l = phi(A_l) the weights: phi = id, or mass * softmax over each row (Memora)
    xi    the chunk start: every token of a chunk takes its gradient at W_xi = phi(A_xi)
    c     Omega window; gamma_i token i's weight in every window that holds it
    NS_k  k quintic Newton-Schulz steps (:func:`~nlc.primitives.newton_schulz.newton_schulz`)
    N     the output LayerNorm with ``norm`` (TTT), else the identity

The rule, per weight matrix and head::

    g_t = sum_{i=t-c+1}^{t} gamma_i s_i grad_W l(W_xi; k_i, v_i)
    Muon (ns_steps = k >= 1; ATLAS' inner optimizer, NL-NeurIPS Eq. 24 read in context):
        S_t = momentum_t S_{t-1} - g_t,        A_t = retention_t A_{t-1} + lr_t NS_k(S_t)
    plain (ns_steps = 0; Titans Eqs. 9-14):
        S_t = momentum_t S_{t-1} - lr_t g_t,   A_t = retention_t A_{t-1} + S_t
    W_t = phi(A_t);   o_t = M_{W_t}(q_t) (read_after_write) or M_{W_{t-1}}(q_t)

Memora (MIRAS Eq. 21, KL retention, ``mass`` = its c): the weights stay on a simplex,
``W_t = c softmax(alpha_t log W_{t-1} - eta_t grad)`` row by row. Because log W_{t-1} =
A_{t-1} + (a constant per row) and softmax ignores such constants, that is exactly
``W_t = c softmax(A_t)`` with the plain rule's ``A_t = alpha_t A_{t-1} - eta_t g_t`` on the
logits: a linear recurrence, so a chunk unrolls it in parallel and only the softmax is per
token. The gradient is taken w.r.t. W (MIRAS), at W_xi; with chunk 1 this is the exact rule.

Muon's step size stands outside the orthogonalisation (NS_k is scale-free, so inside it
would only weigh tokens against each other in the momentum); ``s_i`` is the gradient guard of
:func:`~nlc.primitives.deep.common.guard_scale`.

Chunked form. At the frozen W_xi each token's layer gradient is rank one, delta_j a_j^T, so
a chunk's momenta follow without a per-token loop (DM[t, s] = prod_{s<i<=t} momentum_i,
DR the same for retention, Band[s, j] = 1 when key j is in step s's window)::

    U_s = sum_j Band[s, j] gamma_j s_j delta_j a_j^T               (G, C, D_l, D_{l-1})
    S_t = Mp_t S_xi - sum_{s<=t} DM[t, s] U_s   (times lr_s without Muon)
    A_t = R_t A_xi + sum_{tau<=t} DR[t, tau] (lr_tau NS_k(S_tau) with Muon, else S_tau)

NS_k runs once on the C momenta of a chunk as one batch; each token reads with its own
weights phi(A_t) (or phi(A_{t-1})). The per-token weights are formed: O(C D_l D_{l-1})
memory per head and layer, so the chunk size bounds it. Everything is ordinary autograd
(first and second order). Streaming equals one call when segments start on multiples of
``chunk``; the reference is :func:`~nlc.primitives.deep.reference.deep_memory_reference`
with ``ns_steps`` / ``global_retention="kl"``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..activations import act, act_and_grad
from ..newton_schulz import newton_schulz
from .common import (
    HParam, check_config, deep_layers, guard_scale, hparam, layer_norm_out, layer_norm_vjp,
    log_gate_cumsum, segment_products, simplex, token_hparam,
)
from .derivatives import obj_d

__all__ = ["deep_memory_per_token_chunked"]


def _unroll(gate: Optional[Tensor], start: Tensor, steps: Tensor) -> Tensor:
    """x_t = gate_t x_{t-1} + steps_t for every t of a chunk, x_0 = ``start`` (G, o, i);
    ``steps`` (G, C, o, i); gate (G, C) or None (= 1: a retention that keeps everything)."""
    if gate is None:
        return start.unsqueeze(1) + steps.cumsum(1)
    cs = log_gate_cumsum(gate)
    inner = torch.einsum("gts,gsoi->gtoi", segment_products(cs), steps)
    return torch.exp(cs)[..., None, None] * start.unsqueeze(1) + inner


def _key_errors(W: list[Tensor], keys: Tensor, values: Tensor, activation: str, residual: bool,
                objective: str, p: Tensor, delta: Tensor, norm: Optional[tuple[Tensor, Tensor]]
                ) -> tuple[list[Tensor], list[Tensor]]:
    """Layer inputs a_{l-1} and output errors delta_l of every key at the weights ``W``
    (the rank-one factors of each key's inner gradient)."""
    ins, derivs, h = [keys], [], keys
    for l, w in enumerate(W):
        h = h @ w.mT
        if l < len(W) - 1:
            h, d = act_and_grad(activation, h)
            ins.append(h)
            derivs.append(d)
    y = layer_norm_out(h, norm)
    y = y + keys if residual else y
    top = obj_d(objective, y, values, p, delta)
    errors = [top if norm is None else layer_norm_vjp(h, top, norm[0])]
    for l in range(len(W) - 1, 0, -1):
        e = errors[0] @ W[l]
        errors.insert(0, e if derivs[l - 1] is None else e * derivs[l - 1])
    return ins, errors


def deep_memory_per_token_chunked(
    state: dict[str, Tensor], q: Tensor, k: Tensor, v: Tensor, lr: Tensor,
    momentum: Optional[Tensor] = None, retention: Optional[Tensor] = None,
    gamma: Optional[Tensor] = None, *, chunk: int = 64, window: int = 1,
    activation: str = "gelu", residual: bool = False, objective: str = "l2",
    p: HParam = 2.0, delta: HParam = 1.0, read_after_write: bool = False,
    grad_clip: Optional[HParam] = None, grad_normalize: bool = False,
    normalize_eps: HParam = 1e-6, ns_steps: int = 0, global_retention: str = "decay",
    mass: float = 1.0, norm: Optional[tuple[Tensor, Tensor]] = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The memory of the module docstring, chunkwise-parallel. Arguments and state as
    :func:`~nlc.primitives.deep.chunk.deep_memory_chunked`; ``ns_steps`` Newton-Schulz steps (0: no
    Muon); ``global_retention`` ``decay`` or ``kl`` (Memora: state ``A{l}`` holds logits,
    weights ``mass * softmax``). Returns ``(o (B, H, T, Dv), new_state)``."""
    check_config(activation, objective, global_retention, chunk, window)
    if global_retention not in ("decay", "kl"):
        raise ValueError(f"per-token weights take decay or kl retention, not {global_retention!r}")
    if ns_steps < 0:
        raise ValueError(f"ns_steps must be 0 or more, got {ns_steps}")
    prefix, L = deep_layers(state)
    B, H, T, Dk = q.shape
    Dv, G, w = v.shape[-1], B * H, window - 1
    d_tok = token_hparam(delta, B, H, T)
    if d_tok is not None and w > 0:
        raise ValueError("a per-token delta takes window 1 (each Omega step sums several tokens)")
    p_t, d_t = hparam(p, q, B, H, 2), hparam(delta if d_tok is None else 1.0, q, B, H, 2)
    clip = None if grad_clip is None else hparam(grad_clip, q, B, H, 1)
    eps = hparam(normalize_eps, q, B, H, 1)
    phi = (lambda a: simplex(a, mass)) if global_retention == "kl" else (lambda a: a)  # noqa: E731
    nrm = None if norm is None else tuple(x.expand(B, H, Dv).reshape(G, 1, Dv) for x in norm)
    guards = grad_clip is not None or grad_normalize

    def gate(x: Optional[Tensor]) -> Optional[Tensor]:
        return None if x is None else x.expand(B, H, T).reshape(G, T)

    lr_f, mom, ret = gate(lr), gate(momentum), gate(retention)
    gam = q.new_ones(G, T) if gamma is None else gate(gamma)
    kx, vx, gx = k.reshape(G, T, Dk), v.reshape(G, T, Dv), gam
    if w > 0:  # the carried Omega window leads the keys (ext index = token index + w)
        kx = torch.cat([state.get("omega_k", k.new_zeros(B, H, w, Dk)).reshape(G, w, Dk), kx], 1)
        vx = torch.cat([state.get("omega_v", v.new_zeros(B, H, w, Dv)).reshape(G, w, Dv), vx], 1)
        gx = torch.cat([state.get("omega_gamma", q.new_zeros(B, H, w)).reshape(G, w), gam], 1)
    qf = q.reshape(G, T, Dk)
    shapes = [state[f"{prefix}{l}"].shape[2:] for l in range(1, L + 1)]
    A = [state[f"{prefix}{l}"].reshape(G, *s) for l, s in zip(range(1, L + 1), shapes)]
    S = [state[f"S{l}"].reshape(G, *s) for l, s in zip(range(1, L + 1), shapes)]

    outs = []
    for start in range(0, T, chunk):
        C = min(chunk, T - start)
        keys, values, weight = kx[:, start:start + C + w], vx[:, start:start + C + w], gx[:, start:start + C + w]
        dc = d_t if d_tok is None else d_tok[:, start:start + C, None]
        W_xi = [phi(a) for a in A]
        ins, errors = _key_errors(W_xi, keys, values, activation, residual, objective, p_t, dc, nrm)
        if guards:  # ||delta a^T||_F^2 = ||delta||^2 ||a||^2, summed over layers
            sq = sum(e.pow(2).sum(-1) * a.pow(2).sum(-1) for e, a in zip(errors, ins))
            weight = weight * guard_scale(sq, clip, grad_normalize, eps)
        i, j = torch.arange(C, device=q.device), torch.arange(C + w, device=q.device)
        band = ((j[None, :] >= i[:, None]) & (j[None, :] <= i[:, None] + w)).to(q.dtype)
        mix = band * weight.unsqueeze(-2)  # (G, C, C + w): step s's weight of key j
        chunk_gates = [None if x is None else x[:, start:start + C] for x in (mom, ret)]
        lr_c = lr_f[:, start:start + C, None, None]
        reads = []
        for l in range(L):
            U = torch.einsum("gsj,gjo,gji->gsoi", mix, errors[l], ins[l])
            if not ns_steps:
                U = lr_c * U
            momenta = -U if mom is None else _unroll(chunk_gates[0], S[l], -U)  # None: momentum 0
            steps = lr_c * newton_schulz(momenta, ns_steps) if ns_steps else momenta
            states = _unroll(chunk_gates[1], A[l], steps)
            before = torch.cat([A[l].unsqueeze(1), states[:, :-1]], 1)
            reads.append(phi(states if read_after_write else before))
            A[l], S[l] = states[:, -1], momenta[:, -1]
        h = qf[:, start:start + C]
        for l, wt in enumerate(reads):  # each token reads with its own weights
            h = torch.einsum("gtoi,gti->gto", wt, h)
            if l < L - 1:
                h = act(activation, h)
        h = layer_norm_out(h, nrm)
        outs.append(h + qf[:, start:start + C] if residual else h)

    o = torch.cat(outs, 1).reshape(B, H, T, Dv) if outs else q.new_zeros(B, H, 0, Dv)
    new = {f"{prefix}{l + 1}": A[l].reshape(B, H, *shapes[l]) for l in range(L)}
    new.update({f"S{l + 1}": S[l].reshape(B, H, *shapes[l]) for l in range(L)})
    if w > 0:
        n = kx.shape[1]
        new.update(omega_k=kx[:, n - w:].reshape(B, H, w, Dk), omega_v=vx[:, n - w:].reshape(B, H, w, Dv),
                   omega_gamma=gx[:, n - w:].reshape(B, H, w))
    return o, new
