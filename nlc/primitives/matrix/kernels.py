"""The chunk algebra of recurrence (R): the UT transform, chunk affine maps, the chunk scan.

Notation (the family legend is in :mod:`nlc.primitives.matrix`)::

    B batch   H heads   T tokens   C chunk size   N chunks   Dk key dim   Dv value dim
    S      memory matrix (Dv x Dk) per (batch, head); reading is o = S q
    S_xi   the state at the start of the current chunk (frozen-gradient rules)
    alpha  per-token retention (multiplies the old state), in (0, 1]
    b      per-token scalar of the rank-1 preconditioner  -b_t k_t k_t^T
    u      per-token write vector, u_t = a_t + S_xi c_t  (c = None: u_t = a_t)
    g_t    log-cumulative retention inside a chunk; P[t] = exp(g_t), D[t, i] = exp(g_t - g_{i+1})

The one recurrence every matrix rule is a special case of::

    S_t = S_{t-1} (alpha_t I - b_t k_t k_t^T) + u_t k_t^T,   u_t = a_t + S_xi c_t      (R)

Chunked algorithm (WY / UT transform, Yang et al. 2024, DeltaNet / Gated DeltaNet).
Rewrite (R) as ``S_t = alpha_t S_{t-1} + w_t k_t^T`` with ``w_t = u_t - b_t S_{t-1} k_t``.
Inside a chunk starting from S_0 (= S_xi), with log-cumulative retention
``g_t = sum_{s<t} log alpha_s`` (t = 0..C, g_0 = 0) and ``D[t, i] = exp(g_t - g_{i+1})``
for i < t (token i writes state i+1; the exponent is a *difference* of log sums, never a
quotient of products that may underflow)::

    S_t = exp(g_t) S_0 + sum_{i<t} D[t, i] w_i k_i^T
    w_i = a_i + S_0 c_i - b_i exp(g_i) S_0 k_i - sum_{j<i} b_i D[i, j] (k_i . k_j) w_j

i.e. the unit lower-triangular system ``(I + L) W = A + (Cm - diag(b e^g) K) S_0^T``, solved
once for all chunks with ``torch.linalg.solve_triangular``: ``W = Wa + Wk S_0^T``. Every chunk
is then an affine map of its start state, built for all chunks in parallel::

    O      = Oa + Qs S_0^T                    (outputs, C x Dv)
    S_end  = S_0 Tr + Ad                      (Tr: Dk x Dk, or a scalar when Wk = 0)

and only ``S <- S Tr + Ad`` runs sequentially over chunks (:func:`scan_chunks`).
:func:`rank1_terms` builds the maps of (R) (used by
:func:`nlc.primitives.matrix.chunk.generalized_delta_chunked`); the ATLAS Omega rule
(window of write keys per step, :func:`nlc.primitives.matrix.chunk.omega_rule_chunked`)
passes a different mixing matrix to :func:`affine_terms`. :func:`chunk_end_state` gives
only ``S_end`` of one chunk from given decays (no reads: the HOPE pass that needs no
per-token outputs, :mod:`nlc.primitives.selfmod`). A final partial chunk is processed as a
shorter chunk.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

__all__ = [
    "ChunkAffine",
    "chunk_layout",
    "to_chunks",
    "log_decay",
    "log_retention",
    "affine_terms",
    "rank1_terms",
    "log_gate",
    "chunk_end_state",
    "scan_chunks",
    "solve_unit_lower",
]


class ChunkAffine(NamedTuple):
    """Per-chunk affine map of the chunk-start state S (leading dims (B, H, N))."""

    qs: Tensor  # (B, H, N, C, Dk):  O = oa + qs S^T
    oa: Tensor  # (B, H, N, C, Dv)
    tr: Tensor  # (B, H, N, Dk, Dk) or (B, H, N) scalar:  S_end = S tr + ad
    ad: Tensor  # (B, H, N, Dv, Dk)


def chunk_layout(T: int, chunk: int) -> list[tuple[int, int, int]]:
    """Groups of equal-size chunks as (start, stop, chunk_size): full chunks, then the tail."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n_full = (T // chunk) * chunk
    groups = [(0, n_full, chunk)] if n_full else []
    if n_full < T:
        groups.append((n_full, T, T - n_full))
    return groups


def to_chunks(x: Optional[Tensor], start: int, stop: int, C: int) -> Optional[Tensor]:
    """(B, H, T, ...) -> (B, H, N, C, ...) for tokens [start, stop)."""
    if x is None:
        return None
    return x[:, :, start:stop].unflatten(2, ((stop - start) // C, C))


def log_decay(log_a: Optional[Tensor], C: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Decays of a chunk: P[t] = exp(g_t) (.., C+1) and D[t, i] = exp(g_t - g_{i+1}) for i < t.

    ``log_a`` (.., C) log-retention, or None (alpha = 1: P = 1, D = strict lower mask; both
    broadcastable). D has shape (.., C+1, C) and is zero for i >= t. Only differences of log
    sums are exponentiated (never a quotient of products that may underflow); masked
    exponents are zeroed *before* ``exp`` (no overflow, and no -inf: its exp is a slow path).
    log_a is floored at log(smallest normal float): alpha = 0 acts as alpha = 1e-308 (float64)
    / 1e-38 (float32) instead of making -inf - -inf = NaN; its gradient there is zero.
    """
    mask = torch.ones(C + 1, C, dtype=torch.bool, device=like.device).tril(-1)
    if log_a is None:
        return like.new_ones(C + 1), mask.to(like.dtype)
    log_a = log_a.clamp_min(math.log(torch.finfo(log_a.dtype).tiny))
    g = torch.cat([torch.zeros_like(log_a[..., :1]), log_a.cumsum(-1)], dim=-1)
    diff = g[..., :, None] - g[..., None, 1:]
    return g.exp(), torch.where(mask, diff, 0.0).exp() * mask


def affine_terms(q: Tensor, kw: Tensor, P: Tensor, mix: Tensor, w: Tensor, Dv: int,
                 read_after_write: bool) -> ChunkAffine:
    """Affine chunk maps for ``S_t = P[t] S_0 + sum_i mix[t, i] (wa_i + S_0 wk_i) kw_i^T``.

    q (.., C, Dk) queries; kw (.., C', Dk) write keys; P (.., C+1) and mix (.., C+1, C') the
    state coefficients for t = 0..C; ``w = [wa | wk]`` (.., C', Dv [+ Dk]) (no wk: the writes
    do not read S_0). Reads rows 1..C (read_after_write) or 0..C-1; row C ends the chunk.
    """
    C = q.shape[-2]
    rows = slice(1, C + 1) if read_after_write else slice(0, C)
    aqk = mix[..., rows, :] * (q @ kw.transpose(-1, -2))
    qs = P[..., rows].unsqueeze(-1) * q
    o_w = aqk @ w  # (.., C, Dv [+ Dk]): [oa | aqk wk]
    tr, ad = _end_map(kw, P[..., C].expand(q.shape[:3]), mix[..., C, :], w, Dv)
    if w.shape[-1] == Dv:
        return ChunkAffine(qs, o_w, tr, ad)
    oa, o_k = o_w.split([Dv, w.shape[-1] - Dv], dim=-1)  # split, not slicing: backward is one cat
    return ChunkAffine(qs + o_k, oa, tr, ad)


def _end_map(kw: Tensor, p_end: Tensor, mix_end: Tensor, w: Tensor, Dv: int
             ) -> tuple[Tensor, Tensor]:
    """``(tr, ad)`` of ``S_end = S_0 tr + ad``: ``ad = wa^T kr``, ``tr = p_end I + wk^T kr``
    (the scalar ``p_end`` without ``wk``), ``kr = mix_end kw``; ``p_end`` (..) the leading
    dims of ``kw (.., C', Dk)``."""
    s_w = w.transpose(-1, -2) @ (mix_end.unsqueeze(-1) * kw)  # (.., Dv [+ Dk], Dk): [ad ; wk^T kr]
    if w.shape[-1] == Dv:
        return p_end, s_w
    ad, s_k = s_w.split([Dv, w.shape[-1] - Dv], dim=-2)
    tr = s_k.clone()
    tr.diagonal(dim1=-2, dim2=-1).add_(p_end.unsqueeze(-1))  # p_end I + wk^T kr
    return tr, ad


def _ut_solve(k: Tensor, a: Tensor, P: Tensor, D: Tensor, b: Optional[Tensor],
              c: Optional[Tensor]) -> Tensor:
    """``w = [wa | wk]`` of recurrence (R) over one chunk (UT transform when ``b``):
    ``(I + L) w = [a | c - b P k]``, ``L = b D (k k^T)`` strictly lower; ``wk`` absent when
    neither ``b`` nor ``c`` is given."""
    C = k.shape[-2]
    wk = c
    if b is not None:
        kb = -(b * P[..., :C]).unsqueeze(-1) * k
        wk = kb if c is None else c + kb
    w = a if wk is None else torch.cat([a, wk], dim=-1)
    if b is None:
        return w
    L = b.unsqueeze(-1) * D[..., :C, :] * (k @ k.transpose(-1, -2))  # strictly lower
    return solve_unit_lower(L, w)


def solve_unit_lower(L: Tensor, w: Tensor) -> Tensor:
    """``(I + L)^-1 w`` for a strictly lower ``L`` (.., C, C) (its diagonal is not read)."""
    if w.dtype in (torch.float16, torch.bfloat16):  # CPU has no half-precision triangular solve,
        L, w, low = L.float(), w.float(), w.dtype  # and bfloat16 autocast hands it one
        return torch.linalg.solve_triangular(L, w, upper=False, unitriangular=True).to(low)
    return torch.linalg.solve_triangular(L, w, upper=False, unitriangular=True)


def chunk_end_state(S: Tensor, k: Tensor, a: Tensor, P: Tensor, D: Tensor,
                    b: Optional[Tensor] = None) -> Tensor:
    """End state of (R) over one chunk (``c = None``), without per-token reads.

    S (.., Dv, Dk) the chunk-start state; k (.., C, Dk); a (.., C, Dv); b (.., C) or None;
    ``P, D = log_decay(log alpha, C, k)`` (passed in so that several recurrences over the
    same retention share them). Same algebra as the last state of
    :func:`nlc.primitives.matrix.chunk.generalized_delta_chunked`: ``S_C = S tr + ad``.
    """
    w = _ut_solve(k, a, P, D, b, None)
    tr, ad = _end_map(k, P[..., -1].expand(k.shape[:-2]), D[..., -1, :], w, a.shape[-1])
    if tr.dim() == ad.dim() - 2:  # scalar retention map
        return torch.addcmul(ad, tr[..., None, None], S)
    return torch.baddbmm(ad.flatten(0, -3), S.flatten(0, -3), tr.flatten(0, -3)).view(ad.shape)


def scan_chunks(S0: Tensor, groups: list[ChunkAffine]) -> tuple[Tensor, Tensor]:
    """Run ``S <- S tr + ad`` over all chunks (the only sequential part); read all outputs.

    Returns outputs (B, H, T, Dv) and the final state (B, H, Dv, Dk).
    """
    B, H, Dv, Dk = S0.shape
    if not groups:
        return S0.new_zeros(B, H, 0, Dv), S0

    def cat(xs):
        return xs[0] if len(xs) == 1 else torch.cat(xs, dim=2)

    tr = cat([g.tr for g in groups]).flatten(0, 1)  # (BH, N[, Dk, Dk])
    ad = cat([g.ad for g in groups]).flatten(0, 1)  # (BH, N, Dv, Dk)
    scalar = tr.dim() == 2
    S, starts = S0.flatten(0, 1), []
    for tr_n, ad_n in zip(tr.unbind(1), ad.unbind(1)):  # unbind: one cheap backward node
        starts.append(S)
        S = torch.addcmul(ad_n, tr_n[:, None, None], S) if scalar else torch.baddbmm(ad_n, S, tr_n)
    outs, n0 = [], 0
    for g in groups:
        n = g.qs.shape[2]
        S_start = torch.stack(starts[n0:n0 + n], dim=1).unflatten(0, (B, H))
        outs.append((g.oa + g.qs @ S_start.transpose(-1, -2)).flatten(2, 3))
        n0 += n
    return cat(outs), S.unflatten(0, (B, H))


def rank1_terms(q: Tensor, k: Tensor, a: Tensor, log_a: Optional[Tensor], b: Optional[Tensor],
                c: Optional[Tensor], read_after_write: bool) -> ChunkAffine:
    """Affine chunk maps of recurrence (R) for chunks (B, H, N, C, .) (UT transform if b)."""
    P, D = log_decay(log_a, q.shape[-2], q)
    return affine_terms(q, k, P, D, _ut_solve(k, a, P, D, b, c), a.shape[-1], read_after_write)


def log_gate(alpha: Tensor) -> Tensor:
    """log(alpha) of a retention gate, floored at the log of the smallest normal float before
    the log: a gate that underflows to exactly 0 (a saturated sigmoid) would otherwise give
    log'(0) = 1/0 and a NaN gradient (0 * inf) through the floor of :func:`log_decay`."""
    return torch.log(alpha.clamp_min(torch.finfo(alpha.dtype).tiny))


def log_retention(retention: Optional[Tensor], like: Tensor) -> Optional[Tensor]:
    """log(alpha) expanded to (B, H, T) (:func:`log_gate`); None stays None (alpha = 1)."""
    return None if retention is None else log_gate(retention.expand(like.shape[:3]))
