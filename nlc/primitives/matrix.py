"""Matrix-valued associative memories: linear attention, gated/delta rules, DGD, Omega.

Notation::

    B batch   H heads   T tokens   C chunk size (``chunk``)   Dk key dim   Dv value dim
    S      memory (Dv x Dk) per (batch, head), state key ``"S"`` (B, H, Dv, Dk); read o = S q
    S_xi   state at the start of the current chunk (xi = last state of the previous chunk,
           paper notes §3.4: xi = C floor((t-1)/C) in 1-based time)
    q, k   (B, H, T, Dk)      v (B, H, T, Dv)
    lr     step size eta_t: (B, H, T) or any tensor broadcastable to it (e.g. 0-d)
    retention  alpha_t multiplying the old state, (B, H, T) or broadcastable, in [0, 1];
           decays are handled in log space, so the chunked forms treat alpha below the
           smallest normal float (e.g. 0) as that float (its gradient there is zero)

Every rule is the generalized recurrence of :mod:`nlc.primitives.delta_kernel`::

    S_t = S_{t-1} (alpha_t I - b_t k_t k_t^T) + u_t k_t^T,   u_t = a_t + S_xi c_t      (R)

and each wrapper below only builds (alpha, b, a, c) (Omega, whose update sums a window of
rank-1 terms, has its own loop and mixing matrix on the same chunk scan). Both forms of a
rule share one signature ``(state, q, k, v, <gates>, *, chunk=64, read_after_write=False)``
and return ``(outputs (B, H, T, Dv), new_state)``; ``read_after_write=True``: o_t = S_t q_t,
False: o_t = S_{t-1} q_t. Exact rules (no S_xi) give the same results for every ``chunk``
and stream at any split; chunk-frozen rules (DGD with the L2 objective, Omega) depend on
``chunk`` and stream only when segments start at multiples of ``chunk`` (the chunk grid
counts from the start of each call). L2 objectives are 1/2 ||S k - v||^2 (gradient
(S k - v) k^T). Equation numbers: paper notes (/work/shared/notes/paper.md), NL-arXiv
unless said otherwise.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from nlc.primitives.delta_kernel import (
    affine_terms,
    chunk_layout,
    generalized_delta_chunked,
    generalized_delta_reference,
    log_decay,
    log_retention,
    scan_chunks,
    to_chunks,
)

__all__ = [
    "generalized_delta_reference", "generalized_delta_chunked",
    "linear_attention_reference", "linear_attention_chunked",
    "gated_linear_attention_reference", "gated_linear_attention_chunked",
    "delta_rule_reference", "delta_rule_chunked",
    "gated_delta_rule_reference", "gated_delta_rule_chunked",
    "dgd_reference", "dgd_chunked",
    "omega_rule_reference", "omega_rule_chunked",
]

State = dict[str, Tensor]
Out = tuple[Tensor, State]


def _lr(lr: Tensor, v: Tensor) -> Tensor:
    """(B, H, T, 1) step size."""
    return lr.expand(v.shape[:3]).unsqueeze(-1)


# ----------------------------------------------------------------------------- Hebbian family
def linear_attention_reference(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor, *,
                               chunk: int = 64, read_after_write: bool = False) -> Out:
    """Linear attention / Hebbian memory: ``S_t = S_{t-1} + lr_t v_t k_t^T``.

    NL-arXiv Eq. 64 with alpha = 1; NL-NeurIPS Eqs. 12-16 (one GD step on -<S k, v>).
    (R) with alpha = 1, b = 0, u = lr v. Exact: ``chunk`` only sets the parallel block size.
    """
    return generalized_delta_reference(state, q, k, _lr(lr, v) * v, chunk=chunk,
                                       read_after_write=read_after_write)


def linear_attention_chunked(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor, *,
                             chunk: int = 64, read_after_write: bool = False) -> Out:
    """Chunkwise-parallel :func:`linear_attention_reference`."""
    return generalized_delta_chunked(state, q, k, _lr(lr, v) * v, chunk=chunk,
                                     read_after_write=read_after_write)


def gated_linear_attention_reference(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor,
                                     retention: Tensor, *, chunk: int = 64,
                                     read_after_write: bool = False) -> Out:
    """Gated linear attention / Mamba2-like decay: ``S_t = alpha_t S_{t-1} + lr_t v_t k_t^T``.

    NL-arXiv Eq. 64 (Hebbian RNN with data-dependent decay alpha_t = ``retention``).
    (R) with b = 0, u = lr v. Exact at any ``chunk``.
    """
    return generalized_delta_reference(state, q, k, _lr(lr, v) * v, retention=retention,
                                       chunk=chunk, read_after_write=read_after_write)


def gated_linear_attention_chunked(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor,
                                   retention: Tensor, *, chunk: int = 64,
                                   read_after_write: bool = False) -> Out:
    """Chunkwise-parallel :func:`gated_linear_attention_reference`."""
    return generalized_delta_chunked(state, q, k, _lr(lr, v) * v, retention=retention,
                                     chunk=chunk, read_after_write=read_after_write)


# ------------------------------------------------------------------------------ delta family
def delta_rule_reference(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor, *,
                         chunk: int = 64, read_after_write: bool = False) -> Out:
    """DeltaNet: ``S_t = S_{t-1}(I - lr_t k_t k_t^T) + lr_t v_t k_t^T`` (NL-arXiv Eq. 65).

    One exact GD step on 1/2||S k_t - v_t||^2 taken at S_{t-1}: (R) with alpha = 1,
    b = lr, u = lr v. Exact at any ``chunk`` (UT-transform chunking, no approximation).
    """
    lr_ = _lr(lr, v)
    return generalized_delta_reference(state, q, k, lr_ * v, b=lr_[..., 0], chunk=chunk,
                                       read_after_write=read_after_write)


def delta_rule_chunked(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor, *,
                       chunk: int = 64, read_after_write: bool = False) -> Out:
    """Chunkwise-parallel :func:`delta_rule_reference`."""
    lr_ = _lr(lr, v)
    return generalized_delta_chunked(state, q, k, lr_ * v, b=lr_[..., 0], chunk=chunk,
                                     read_after_write=read_after_write)


def _gated_delta_terms(v: Tensor, lr: Tensor, retention: Tensor) -> dict:
    lr_ = _lr(lr, v)
    return dict(a=lr_ * v, b=retention.expand(v.shape[:3]) * lr_[..., 0], retention=retention)


def gated_delta_rule_reference(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor,
                               retention: Tensor, *, chunk: int = 64,
                               read_after_write: bool = False) -> Out:
    """Gated DeltaNet (fla): ``S_t = alpha_t S_{t-1}(I - lr_t k_t k_t^T) + lr_t v_t k_t^T``.

    NL-arXiv Eq. 65 plus the global decay alpha_t (= ``retention``), which multiplies the old
    state only, not the new write. (R) with b = alpha lr, u = lr v. Exact at any ``chunk``.
    """
    return generalized_delta_reference(state, q, k, **_gated_delta_terms(v, lr, retention),
                                       chunk=chunk, read_after_write=read_after_write)


def gated_delta_rule_chunked(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor,
                             retention: Tensor, *, chunk: int = 64,
                             read_after_write: bool = False) -> Out:
    """Chunkwise-parallel :func:`gated_delta_rule_reference`."""
    return generalized_delta_chunked(state, q, k, **_gated_delta_terms(v, lr, retention),
                                     chunk=chunk, read_after_write=read_after_write)


def _dgd_terms(k: Tensor, v: Tensor, lr: Tensor, retention: Tensor, objective: str) -> dict:
    lr_ = _lr(lr, v)
    if objective == "l2":  # u = -lr (S_xi k - v)
        return dict(a=lr_ * v, b=lr_[..., 0], retention=retention, c=-lr_ * k)
    if objective == "dot":  # u = -lr grad(-<S k, v>) = +lr v
        return dict(a=lr_ * v, b=lr_[..., 0], retention=retention)
    raise ValueError(f"objective must be 'l2' or 'dot', got {objective!r}")


def dgd_reference(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor,
                  retention: Tensor, *, objective: str = "l2", chunk: int = 64,
                  read_after_write: bool = False) -> Out:
    """HOPE DGD with weight decay, matrix memory (NL-arXiv Eq. 88; Eqs. 90-93).

    ``objective="l2"`` (Eq. 93): ``S_t = S_{t-1}(alpha_t I - lr_t k_t k_t^T)
    - lr_t (S_xi k_t - v_t) k_t^T``, the gradient frozen at the chunk-start state S_xi
    (§3.4, Eqs. 90-91); chunk = 1 is the exact per-token rule (Eq. 88 with the gradient at
    S_{t-1}). Streams only at multiples of ``chunk``. ``objective="dot"`` (Eq. 92): the
    gradient of -<S k, v> is -v k^T, so u_t = +lr_t v_t (the notes print -lr v k^T; we follow
    the gradient's sign); it does not read S_xi and is exact at any ``chunk``.
    (R) with b = lr, a = lr v, c = -lr k (l2) or c = 0 (dot).
    """
    return generalized_delta_reference(state, q, k, **_dgd_terms(k, v, lr, retention, objective),
                                       chunk=chunk, read_after_write=read_after_write)


def dgd_chunked(state: State, q: Tensor, k: Tensor, v: Tensor, lr: Tensor, retention: Tensor,
                *, objective: str = "l2", chunk: int = 64, read_after_write: bool = False) -> Out:
    """Chunkwise-parallel :func:`dgd_reference` (same chunk-frozen semantics)."""
    return generalized_delta_chunked(state, q, k, **_dgd_terms(k, v, lr, retention, objective),
                                     chunk=chunk, read_after_write=read_after_write)


# -------------------------------------------------------------------------------- Omega rule
def _omega_window(state: State, k: Tensor, v: Tensor, gamma: Tensor, window: int, chunk: int):
    """Prefix the carried last (window - 1) tokens: returns kx, vx, gx and the new carry."""
    if window < 1 or chunk < 1:
        raise ValueError(f"window and chunk must be >= 1, got {window}, {chunk}")
    B, H, _, Dk = k.shape
    w = window - 1
    kx = torch.cat([state.get("omega_k", k.new_zeros(B, H, w, Dk)), k], dim=2)
    vx = torch.cat([state.get("omega_v", v.new_zeros(B, H, w, v.shape[-1])), v], dim=2)
    gx = torch.cat([state.get("omega_gamma", k.new_zeros(B, H, w)),
                    gamma.expand(k.shape[:3])], dim=2)
    L = kx.shape[2]
    carry = {"omega_k": kx[:, :, L - w:], "omega_v": vx[:, :, L - w:],
             "omega_gamma": gx[:, :, L - w:]}
    return kx, vx, gx, carry


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
    kx, vx, gx, carry = _omega_window(state, k, v, gamma, window, chunk)
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


def omega_rule_chunked(state: State, q: Tensor, k: Tensor, v: Tensor, gamma: Tensor,
                       retention: Optional[Tensor] = None, *, window: int, chunk: int = 64,
                       read_after_write: bool = False) -> Out:
    """Chunkwise-parallel :func:`omega_rule_reference`.

    A chunk's write keys are the C + window - 1 tokens ending at the chunk end, written as
    w_j = gamma_j (v_j - S_xi k_j). Token j enters the steps s with j - window + 1 <= s <= j
    (chunk-local, j indexing the prefixed window), so the state mixing matrix is the log-space
    decay matrix times that band; the shared affine chunk scan does the rest.
    """
    kx, vx, gx, carry = _omega_window(state, k, v, gamma, window, chunk)
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
