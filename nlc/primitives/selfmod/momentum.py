"""Momentum inside HOPE's DGD memories: one chunk of the rule, chunkwise-parallel.

Notation::

    ..        leading dims (batch, head[, stacked memory])   C tokens in the chunk
    i, j      token positions in the chunk, 0..C-1;  t = 0..C a state: W_t after t tokens
    W         (.., Dv, Dk) one weight matrix of a memory; W_0 its state at the chunk start
    S         (.., Dv, Dk) its momentum buffer; S_0 at the chunk start
    k_i       (Dk) the input of W for token i (the key), q_i (Dk) a query read through W
    u_i       (Dv) the frozen-gradient write: u_i k_i^T = -eta_i grad_W L(W_xi; token i)
    alpha_i   retention, beta_i momentum, b_i the DGD preconditioner's scalar (eta_i; 0 for
              HOPE's W1 and for rule gd)

The rule of one matrix (NL-arXiv Eq. 88 with Titans' momentum, Titans Eqs. 9-10), per token::

    S_{i+1} = beta_i S_i + u_i k_i^T                                      (momentum of the write)
    W_{i+1} = W_i (alpha_i I - b_i k_i k_i^T) + S_{i+1}                   (preconditioner, exact)

beta = 0 is NL-arXiv Eq. 88 itself (:mod:`nlc.primitives.matrix`'s recurrence (R) with a = u);
b = 0 is Titans' momentum step on an MLP layer (:mod:`nlc.primitives.deep`).

Chunked form. With the decays of :func:`~nlc.primitives.matrix.kernels.log_decay`,
R[t] = prod_{j<t} alpha_j, D[t, i] = prod_{i<j<t} alpha_j (i < t), and Mp, DM the same
products of beta, unrolling S and then W gives, with y_i = -b_i W_i k_i::

    S_t = Mp[t] S_0 + sum_{i<t} DM[t, i] u_i k_i^T
    W_t = R[t] W_0 + E[t] S_0 + sum_{i<t} (Cm[t, i] u_i + D[t, i] y_i) k_i^T
    E[t] = sum_{j<t} D[t, j] Mp[j+1]              E  = D Mp[1:]
    Cm[t, i] = sum_{i<=j<t} D[t, j] DM[j+1, i]    Cm = D DM[1:]   (Titans' c, deep/chunk.py)

Every term after the first two is a key of the chunk, so the momentum keeps the chunk
parallel although S is not a rank-one write of token t's key: W_t - R[t] W_0 - E[t] S_0 lies
in the span of k_0..k_{t-1}, and y is one unit lower-triangular solve (the UT transform)::

    y_i + b_i sum_{j<i} D[i, j] (k_j . k_i) y_j
        = -b_i (R[i] W_0 k_i + E[i] S_0 k_i + sum_{j<i} Cm[i, j] (k_j . k_i) u_j)

Reads before the write, o_i = W_i q_i (NL-arXiv Eq. 94, rows 0..C-1)::

    o = R (Q W_0^T) + E (Q S_0^T) + (Cm o Q K^T) U + (D o Q K^T) Y

and the chunk ends at row C of W_t and S_t. No (C, Dv, Dk) tensor is formed.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..matrix.kernels import solve_unit_lower

__all__ = ["momentum_chunk"]

Decay = tuple[Tensor, Tensor]  # (P (.., C+1), D (.., C+1, C)) of matrix.kernels.log_decay


def momentum_chunk(W: Tensor, S: Tensor, k: Tensor, u: Tensor, decay: Decay, momentum: Decay,
                   b: Optional[Tensor] = None, q: Optional[Tensor] = None
                   ) -> tuple[Optional[Tensor], Tensor, Tensor]:
    """One chunk of the rule of the module docstring: ``(o, W_C, S_C)``.

    W, S (.., Dv, Dk); k (.., C, Dk); u (.., C, Dv); ``decay`` the (R, D) of the retention and
    ``momentum`` the (Mp, DM) of beta, from :func:`~nlc.primitives.matrix.kernels.log_decay`
    (leading dims broadcastable to those of k); b (.., C) or None (no preconditioner);
    q (.., C, Dk) or None: ``o`` (.., C, Dv) the reads W_i q_i before each write, else None.
    """
    (R, D), (Mp, DM) = decay, momentum
    C = k.shape[-2]
    Cm = D @ DM[..., 1:, :]  # (.., C+1, C)
    E = (D @ Mp[..., 1:, None]).squeeze(-1)  # (.., C+1)
    y = None
    if b is not None:
        kk = k @ k.mT
        rhs = R[..., :C, None] * (k @ W.mT) + E[..., :C, None] * (k @ S.mT) + (Cm[..., :C, :] * kk) @ u
        y = solve_unit_lower(b[..., None] * D[..., :C, :] * kk, -b[..., None] * rhs)
    writes = Cm[..., C, :, None] * u + (0 if y is None else D[..., C, :, None] * y)
    W_end = R[..., C, None, None] * W + E[..., C, None, None] * S + writes.mT @ k
    S_end = Mp[..., C, None, None] * S + (DM[..., C, :, None] * u).mT @ k
    if q is None:
        return None, W_end, S_end
    qk = q @ k.mT
    o = R[..., :C, None] * (q @ W.mT) + E[..., :C, None] * (q @ S.mT) + (Cm[..., :C, :] * qk) @ u
    if y is not None:
        o = o + (D[..., :C, :] * qk) @ y
    return o, W_end, S_end
