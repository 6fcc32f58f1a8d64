"""Matrix memories, chunked form: chunkwise-parallel (R) and every rule of the family.

Notation (the family legend is in :mod:`nlc.primitives.matrix`)::

    B batch   H heads   T tokens   C chunk size (``chunk``)   N chunks   Dk key dim   Dv value dim
    S      memory (Dv x Dk) per (batch, head), state key ``"S"`` (B, H, Dv, Dk); read o = S q
    S_xi   state at the start of the current chunk
    q, k   (B, H, T, Dk)      v (B, H, T, Dv)      gates lr, retention, gamma (B, H, T)

Vectorised inside a chunk, a Python loop over chunks only: each chunk is an affine map of
its start state S_xi (UT transform for the rank-1 preconditioner; the algebra is
:mod:`~nlc.primitives.matrix.kernels`), and only ``S <- S Tr + Ad`` runs over chunks. The
rules' terms come from :mod:`~nlc.primitives.matrix.terms`, as in the reference form;
same signatures and results as :mod:`~nlc.primitives.matrix.reference`. Decays are handled
in log space, so a retention below the smallest normal float (e.g. 0) acts as that float
(its gradient there is zero).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .kernels import (
    affine_terms, chunk_layout, log_decay, log_retention, rank1_terms, scan_chunks, to_chunks,
)
from .terms import Out, State, dgd_terms, gated_delta_terms, lr_per_token, omega_window

__all__ = [
    "generalized_delta_chunked", "linear_attention_chunked", "gated_linear_attention_chunked",
    "delta_rule_chunked", "gated_delta_rule_chunked", "dgd_chunked", "omega_rule_chunked",
]


def generalized_delta_chunked(state: dict[str, Tensor], q: Tensor, k: Tensor, a: Tensor, *,
                              retention: Optional[Tensor] = None, b: Optional[Tensor] = None,
                              c: Optional[Tensor] = None, chunk: int = 64,
                              read_after_write: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """Chunkwise-parallel form of recurrence (R); same signature/results as the reference.

    q, k (B, H, T, Dk); a (B, H, T, Dv); retention, b (B, H, T) or None (alpha = 1, b = 0);
    c (B, H, T, Dk) or None. With ``c`` given, u_t reads the chunk-start state S_xi, so
    results depend on ``chunk`` and streaming must split at multiples of ``chunk``.
    """
    la = log_retention(retention, q)
    bb = None if b is None else b.expand(q.shape[:3])
    groups = []
    for start, stop, C in chunk_layout(q.shape[2], chunk):
        cut = [to_chunks(x, start, stop, C) for x in (q, k, a, la, bb, c)]
        groups.append(rank1_terms(*cut, read_after_write))
    o, S = scan_chunks(state["S"], groups)
    return o, {"S": S}


def linear_attention_chunked(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor, *,
                             chunk: int = 64, read_after_write: bool = False) -> Out:
    """Chunkwise-parallel ``reference.linear_attention_reference``."""
    return generalized_delta_chunked(state, q, k, lr_per_token(lr, v) * v, chunk=chunk,
                                     read_after_write=read_after_write)


def gated_linear_attention_chunked(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor,
                                   retention: Tensor, *, chunk: int = 64,
                                   read_after_write: bool = False) -> Out:
    """Chunkwise-parallel ``reference.gated_linear_attention_reference``."""
    return generalized_delta_chunked(state, q, k, lr_per_token(lr, v) * v, retention=retention,
                                     chunk=chunk, read_after_write=read_after_write)


def delta_rule_chunked(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor, *,
                       chunk: int = 64, read_after_write: bool = False) -> Out:
    """Chunkwise-parallel ``reference.delta_rule_reference``."""
    lr_ = lr_per_token(lr, v)
    return generalized_delta_chunked(state, q, k, lr_ * v, b=lr_[..., 0], chunk=chunk,
                                     read_after_write=read_after_write)


def gated_delta_rule_chunked(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor,
                             retention: Tensor, *, chunk: int = 64,
                             read_after_write: bool = False) -> Out:
    """Chunkwise-parallel ``reference.gated_delta_rule_reference``."""
    return generalized_delta_chunked(state, q, k, **gated_delta_terms(v, lr, retention),
                                     chunk=chunk, read_after_write=read_after_write)


def dgd_chunked(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor, retention: Tensor,
                *, objective: str = "l2", chunk: int = 64, read_after_write: bool = False) -> Out:
    """Chunkwise-parallel ``reference.dgd_reference`` (same chunk-frozen semantics)."""
    return generalized_delta_chunked(state, q, k, **dgd_terms(k, v, lr, retention, objective),
                                     chunk=chunk, read_after_write=read_after_write)


def omega_rule_chunked(state: State, q: Tensor, k: Tensor, v: Tensor, gamma: Tensor,
                       retention: Optional[Tensor] = None, *, window: int, chunk: int = 64,
                       read_after_write: bool = False) -> Out:
    """Chunkwise-parallel ``reference.omega_rule_reference``.

    A chunk's write keys are the C + window - 1 tokens ending at the chunk end, written as
    w_j = gamma_j (v_j - S_xi k_j). Token j enters the steps s with j - window + 1 <= s <= j
    (chunk-local, j indexing the prefixed window), so the state mixing matrix is the log-space
    decay matrix times that band; the shared affine chunk scan does the rest.
    """
    kx, vx, gx, carry = omega_window(state, k, v, gamma, window, chunk)
    w = window - 1
    la = log_retention(retention, q)
    groups = []
    for start, stop, C in chunk_layout(q.shape[2], chunk):
        s = torch.arange(C, device=q.device)[:, None]
        j = torch.arange(C + w, device=q.device)[None, :]
        band = ((j - w <= s) & (s <= j)).to(q.dtype)  # (C, C + w): step s writes token j
        P, D = log_decay(to_chunks(la, start, stop, C), C, q)

        def windows(x: Tensor) -> Tensor:  # (B, H, N, C + w, ...) of the prefixed sequence
            return x[:, :, start:stop + w].unfold(2, C + w, C).movedim(-1, 3)

        kc, vc, gc = windows(kx), windows(vx), windows(gx.unsqueeze(-1))
        groups.append(affine_terms(to_chunks(q, start, stop, C), kc, P, D @ band,
                                   torch.cat([gc * vc, -gc * kc], dim=-1), v.shape[-1],
                                   read_after_write))
    o, S = scan_chunks(state["S"], groups)
    return o, {"S": S, **carry}
