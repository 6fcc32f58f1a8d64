"""Matrix memories, reference form: the per-token loop of recurrence (R) and of each rule.

Notation (the family legend is in :mod:`nlc.primitives.matrix`)::

    B batch   H heads   T tokens   C chunk size (``chunk``)   Dk key dim   Dv value dim
    S      memory (Dv x Dk) per (batch, head), state key ``"S"`` (B, H, Dv, Dk); read o = S q
    S_xi   state at the start of token t's chunk (t % chunk == 0 starts one)
    q, k   (B, H, T, Dk)      v (B, H, T, Dv)      gates lr, retention, gamma (B, H, T)

One token at a time, as the equations read::

    S_t = S_{t-1} (alpha_t I - b_t k_t k_t^T) + u_t k_t^T,   u_t = a_t + S_xi c_t      (R)
    o_t = S_t q_t (read_after_write)   or   S_{t-1} q_t

linear attention (NL-arXiv Eq. 64), gated linear attention (NL-arXiv Eq. 64 with decay),
DeltaNet (NL-arXiv Eq. 65), Gated DeltaNet, DGD (NL-arXiv Eqs. 88, 92-93) are (R) with the
terms of :mod:`~nlc.primitives.matrix.terms`; the ATLAS Omega rule (NL-arXiv Eq. 68) sums a
window of writes in its own loop. Same signatures and results as
:mod:`~nlc.primitives.matrix.chunk`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .terms import Out, State, dgd_terms, gated_delta_terms, lr_per_token, omega_window

__all__ = [
    "generalized_delta_reference", "linear_attention_reference",
    "gated_linear_attention_reference", "delta_rule_reference", "gated_delta_rule_reference",
    "dgd_reference", "omega_rule_reference",
]


def generalized_delta_reference(state: dict[str, Tensor], q: Tensor, k: Tensor, a: Tensor, *,
                                retention: Optional[Tensor] = None, b: Optional[Tensor] = None,
                                c: Optional[Tensor] = None, chunk: int = 64,
                                read_after_write: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token loop of (R): ``S_t = S_{t-1}(alpha_t I - b_t k_t k_t^T) + (a_t + S_xi c_t) k_t^T``.

    S_xi is the state at the start of the token's chunk (``t % chunk == 0``); ``chunk`` only
    matters when ``c`` is given. Reads ``o_t = S_t q_t`` (read_after_write) or ``S_{t-1} q_t``.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    S = state["S"]
    B, H, T, Dk = q.shape
    eye = torch.eye(Dk, dtype=q.dtype, device=q.device)
    ones = q.new_ones(B, H, T)
    alpha = ones if retention is None else retention.expand(B, H, T)
    bb = torch.zeros_like(ones) if b is None else b.expand(B, H, T)
    outs = []
    S_xi = S
    for t in range(T):
        if t % chunk == 0:
            S_xi = S
        kt, qt = k[:, :, t], q[:, :, t]
        u = a[:, :, t]
        if c is not None:
            u = u + (S_xi @ c[:, :, t, :, None]).squeeze(-1)
        kkT = kt[..., :, None] * kt[..., None, :]
        S_new = S @ (alpha[:, :, t, None, None] * eye - bb[:, :, t, None, None] * kkT) \
            + u[..., :, None] * kt[..., None, :]
        outs.append(((S_new if read_after_write else S) @ qt[..., None]).squeeze(-1))
        S = S_new
    o = torch.stack(outs, dim=2) if outs else S.new_zeros(B, H, 0, S.shape[-2])
    return o, {"S": S}


def linear_attention_reference(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor, *,
                               chunk: int = 64, read_after_write: bool = False) -> Out:
    """Linear attention / Hebbian memory: ``S_t = S_{t-1} + lr_t v_t k_t^T``.

    NL-arXiv Eq. 64 with alpha = 1; NL-NeurIPS Eqs. 12-16 (one GD step on -<S k, v>).
    (R) with alpha = 1, b = 0, u = lr v. Exact: ``chunk`` only sets the parallel block size.
    """
    return generalized_delta_reference(state, q, k, lr_per_token(lr, v) * v, chunk=chunk,
                                       read_after_write=read_after_write)


def gated_linear_attention_reference(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor,
                                     retention: Tensor, *, chunk: int = 64,
                                     read_after_write: bool = False) -> Out:
    """Gated linear attention / Mamba2-like decay: ``S_t = alpha_t S_{t-1} + lr_t v_t k_t^T``.

    NL-arXiv Eq. 64 (Hebbian RNN with data-dependent decay alpha_t = ``retention``).
    (R) with b = 0, u = lr v. Exact at any ``chunk``.
    """
    return generalized_delta_reference(state, q, k, lr_per_token(lr, v) * v, retention=retention,
                                       chunk=chunk, read_after_write=read_after_write)


def delta_rule_reference(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor, *,
                         chunk: int = 64, read_after_write: bool = False) -> Out:
    """DeltaNet: ``S_t = S_{t-1}(I - lr_t k_t k_t^T) + lr_t v_t k_t^T`` (NL-arXiv Eq. 65).

    One exact GD step on 1/2||S k_t - v_t||^2 taken at S_{t-1}: (R) with alpha = 1,
    b = lr, u = lr v. Exact at any ``chunk`` (UT-transform chunking, no approximation).
    """
    lr_ = lr_per_token(lr, v)
    return generalized_delta_reference(state, q, k, lr_ * v, b=lr_[..., 0], chunk=chunk,
                                       read_after_write=read_after_write)


def gated_delta_rule_reference(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor,
                               retention: Tensor, *, chunk: int = 64,
                               read_after_write: bool = False) -> Out:
    """Gated DeltaNet (fla): ``S_t = alpha_t S_{t-1}(I - lr_t k_t k_t^T) + lr_t v_t k_t^T``.

    NL-arXiv Eq. 65 plus the global decay alpha_t (= ``retention``), which multiplies the old
    state only, not the new write. (R) with b = alpha lr, u = lr v. Exact at any ``chunk``.
    """
    return generalized_delta_reference(state, q, k, **gated_delta_terms(v, lr, retention),
                                       chunk=chunk, read_after_write=read_after_write)


def dgd_reference(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor,
                  retention: Tensor, *, objective: str = "l2", chunk: int = 64,
                  read_after_write: bool = False) -> Out:
    """HOPE DGD with weight decay, matrix memory (NL-arXiv Eqs. 88, 90-93).

    ``objective="l2"`` (NL-arXiv Eq. 93): ``S_t = S_{t-1}(alpha_t I - lr_t k_t k_t^T)
    - lr_t (S_xi k_t - v_t) k_t^T``, the gradient frozen at the chunk-start state S_xi
    (NL-arXiv §8.2, Eqs. 90-91); chunk = 1 is the exact per-token rule (NL-arXiv Eq. 88 with
    the gradient at S_{t-1}). Streams only at multiples of ``chunk``. ``objective="dot"``
    (NL-arXiv Eq. 92): the gradient of -<S k, v> is -v k^T, so u_t = +lr_t v_t (the paper
    prints -lr v k^T; we follow the gradient's sign); it does not read S_xi and is exact at
    any ``chunk``.
    (R) with b = lr, a = lr v, c = -lr k (l2) or c = 0 (dot).
    """
    return generalized_delta_reference(state, q, k, **dgd_terms(k, v, lr, retention, objective),
                                       chunk=chunk, read_after_write=read_after_write)


def omega_rule_reference(state: State, q: Tensor, k: Tensor, v: Tensor, gamma: Tensor,
                         retention: Optional[Tensor] = None, *, window: int, chunk: int = 64,
                         read_after_write: bool = False) -> Out:
    """ATLAS Omega rule, matrix memory, L2 objective (NL-arXiv Eq. 68 / ATLAS):

    ``S_t = alpha_t S_{t-1} - sum_{i=t-window+1}^{t} gamma_i (S_xi k_i - v_i) k_i^T``

    gamma_{t,i} = gamma_i (B, H, T): each token's own weight (step size included), the same
    for every step t whose window contains i. The gradient is taken at the chunk-start state
    S_xi (frozen per chunk like Titans, so a chunk stays linear); window = 1 with chunk = 1
    is Titans' linear memory with decay (Titans Eqs. 8, 13, no momentum). The window crosses
    chunk and call boundaries: the state carries the last window-1 (k, v, gamma) as
    ``omega_k`` (B, H, window-1, Dk), ``omega_v`` (B, H, window-1, Dv), ``omega_gamma``
    (B, H, window-1); missing keys mean zeros (no history). ``retention=None``: alpha = 1.
    Streams only at multiples of ``chunk``.
    """
    kx, vx, gx, carry = omega_window(state, k, v, gamma, window, chunk)
    S = state["S"]
    B, H, T, _ = q.shape
    alpha = q.new_ones(B, H, T) if retention is None else retention.expand(B, H, T)
    outs, S_xi = [], S
    for t in range(T):
        if t % chunk == 0:
            S_xi = S
        grad = torch.zeros_like(S)
        for i in range(t, t + window):  # prefixed index of tokens t-window+1 .. t
            err = (S_xi @ kx[:, :, i, :, None]).squeeze(-1) - vx[:, :, i]
            grad = grad + gx[:, :, i, None, None] * err[..., :, None] * kx[:, :, i, None, :]
        S_new = alpha[:, :, t, None, None] * S - grad
        outs.append(((S_new if read_after_write else S) @ q[:, :, t, :, None]).squeeze(-1))
        S = S_new
    o = torch.stack(outs, dim=2) if outs else S.new_zeros(B, H, 0, S.shape[-2])
    return o, {"S": S, **carry}
