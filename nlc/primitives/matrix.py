"""Matrix-valued associative memories: linear attention, gated/delta rules, DGD, Omega.

Notation::

    B batch   H heads   T tokens   C chunk size (``chunk``)   Dk key dim   Dv value dim
    S      memory (Dv x Dk) per (batch, head), state key ``"S"`` (B, H, Dv, Dk); read o = S q
    S_xi   state at the start of the current chunk (xi = last state of the previous chunk,
           paper notes §3.4: xi = C floor((t-1)/C) in 1-based time)
    q, k   (B, H, T, Dk)      v (B, H, T, Dv)
    lr     step size eta_t    (B, H, T), or any tensor broadcastable to it
    retention  alpha_t in (0, 1] multiplying the old state (B, H, T); must be > 0 (log-space)

Every rule is the generalized recurrence of :mod:`nlc.primitives.delta_kernel`::

    S_t = S_{t-1} (alpha_t I - b_t k_t k_t^T) + u_t k_t^T,   u_t = a_t + S_xi c_t      (R)

and each wrapper below only builds (alpha, b, a, c). Both forms of a rule share one signature
``(state, q, k, v, <gates>, *, chunk=64, read_after_write=False)`` and return
``(outputs (B, H, T, Dv), new_state)``. ``read_after_write=True``: o_t = S_t q_t; False:
o_t = S_{t-1} q_t. Exact rules (no S_xi) give identical results for every ``chunk`` and stream
at any split; chunk-frozen rules (DGD with L2 objective, Omega) depend on ``chunk`` and stream
only when segments start at multiples of ``chunk`` (positions count from the call start).
Equation numbers: paper notes (/work/shared/notes/paper.md), NL-arXiv unless said otherwise.
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

Out = tuple[Tensor, dict[str, Tensor]]


def _lr(lr: Tensor, v: Tensor) -> Tensor:
    return lr.expand(v.shape[:3]).unsqueeze(-1)


# ----------------------------------------------------------------------------- Hebbian family
def linear_attention_reference(state, q, k, v, lr, *, chunk=64, read_after_write=False) -> Out:
    """Linear attention / Hebbian memory: ``S_t = S_{t-1} + lr_t v_t k_t^T``.

    NL-arXiv Eq. 64 with alpha = 1; NL-NeurIPS Eqs. 12-16 (one GD step on -<S k, v>).
    (R) with alpha = 1, b = 0, u = lr v. Exact: ``chunk`` only sets the parallel block size.
    """
    return generalized_delta_reference(state, q, k, _lr(lr, v) * v, chunk=chunk,
                                       read_after_write=read_after_write)


def linear_attention_chunked(state, q, k, v, lr, *, chunk=64, read_after_write=False) -> Out:
    """Chunkwise-parallel :func:`linear_attention_reference`."""
    return generalized_delta_chunked(state, q, k, _lr(lr, v) * v, chunk=chunk,
                                     read_after_write=read_after_write)


def gated_linear_attention_reference(state, q, k, v, lr, retention, *, chunk=64,
                                     read_after_write=False) -> Out:
    """Gated linear attention / Mamba2-like decay: ``S_t = alpha_t S_{t-1} + lr_t v_t k_t^T``.

    NL-arXiv Eq. 64 (Hebbian RNN with data-dependent decay alpha_t = ``retention``).
    (R) with b = 0, u = lr v. Exact at any ``chunk``.
    """
    return generalized_delta_reference(state, q, k, _lr(lr, v) * v, retention=retention,
                                       chunk=chunk, read_after_write=read_after_write)


def gated_linear_attention_chunked(state, q, k, v, lr, retention, *, chunk=64,
                                   read_after_write=False) -> Out:
    """Chunkwise-parallel :func:`gated_linear_attention_reference`."""
    return generalized_delta_chunked(state, q, k, _lr(lr, v) * v, retention=retention,
                                     chunk=chunk, read_after_write=read_after_write)


# ------------------------------------------------------------------------------ delta family
def delta_rule_reference(state, q, k, v, lr, *, chunk=64, read_after_write=False) -> Out:
    """DeltaNet: ``S_t = S_{t-1}(I - lr_t k_t k_t^T) + lr_t v_t k_t^T`` (NL-arXiv Eq. 65).

    One exact GD step on 1/2||S k_t - v_t||^2 taken at S_{t-1}: (R) with alpha = 1,
    b = lr, u = lr v. Exact at any ``chunk`` (UT-transform chunking, no approximation).
    """
    lr_ = _lr(lr, v)
    return generalized_delta_reference(state, q, k, lr_ * v, b=lr_[..., 0], chunk=chunk,
                                       read_after_write=read_after_write)


def delta_rule_chunked(state, q, k, v, lr, *, chunk=64, read_after_write=False) -> Out:
    """Chunkwise-parallel :func:`delta_rule_reference`."""
    lr_ = _lr(lr, v)
    return generalized_delta_chunked(state, q, k, lr_ * v, b=lr_[..., 0], chunk=chunk,
                                     read_after_write=read_after_write)


def _gated_delta_terms(v, lr, retention):
    lr_ = _lr(lr, v)
    return dict(a=lr_ * v, b=retention * lr_[..., 0], retention=retention)


def gated_delta_rule_reference(state, q, k, v, lr, retention, *, chunk=64,
                               read_after_write=False) -> Out:
    """Gated DeltaNet, fla convention: ``S_t = alpha_t S_{t-1}(I - lr_t k_t k_t^T) + lr_t v_t k_t^T``.

    NL-arXiv Eq. 65 plus global decay alpha_t (= ``retention``; the decay does *not* touch the
    new write). (R) with b = alpha lr, u = lr v. Exact at any ``chunk``.
    """
    return generalized_delta_reference(state, q, k, **_gated_delta_terms(v, lr, retention),
                                       chunk=chunk, read_after_write=read_after_write)


def gated_delta_rule_chunked(state, q, k, v, lr, retention, *, chunk=64,
                             read_after_write=False) -> Out:
    """Chunkwise-parallel :func:`gated_delta_rule_reference`."""
    return generalized_delta_chunked(state, q, k, **_gated_delta_terms(v, lr, retention),
                                     chunk=chunk, read_after_write=read_after_write)


def _dgd_terms(v, lr, retention, k, objective):
    lr_ = _lr(lr, v)
    if objective == "l2":  # u = -lr (S_xi k - v)
        return dict(a=lr_ * v, b=lr_[..., 0], retention=retention, c=-lr_ * k)
    if objective == "dot":  # u = -lr grad(-<S k, v>) = +lr v
        return dict(a=lr_ * v, b=lr_[..., 0], retention=retention)
    raise ValueError(f"objective must be 'l2' or 'dot', got {objective!r}")


def dgd_reference(state, q, k, v, lr, retention, *, objective="l2", chunk=64,
                  read_after_write=False) -> Out:
    """HOPE DGD with weight decay, matrix memory (NL-arXiv Eq. 88; Eqs. 90-93).

    ``objective="l2"`` (Eq. 93): ``S_t = S_{t-1}(alpha_t I - lr_t k_t k_t^T)
    - lr_t (S_xi k_t - v_t) k_t^T`` with the gradient frozen at the chunk-start state S_xi
    (§3.4, Eqs. 90-91); chunk = 1 is the exact per-token rule (Eq. 88). Streams only at
    multiples of ``chunk``. ``objective="dot"`` (Eq. 92): the gradient of -<S k, v> is
    -v k^T, so u_t = +lr_t v_t (the notes print -lr v k^T; we follow the gradient sign);
    this variant does not read S_xi and is exact at any ``chunk``.
    (R) with b = lr, a = lr v, c = -lr k (l2) or c = 0 (dot).
    """
    return generalized_delta_reference(state, q, k, **_dgd_terms(v, lr, retention, k, objective),
                                       chunk=chunk, read_after_write=read_after_write)


def dgd_chunked(state, q, k, v, lr, retention, *, objective="l2", chunk=64,
                read_after_write=False) -> Out:
    """Chunkwise-parallel :func:`dgd_reference` (same chunk-frozen semantics)."""
    return generalized_delta_chunked(state, q, k, **_dgd_terms(v, lr, retention, k, objective),
                                     chunk=chunk, read_after_write=read_after_write)


# -------------------------------------------------------------------------------- Omega rule
def _omega_window(state, k, v, gamma, window):
    """Prefix the carried last (window - 1) tokens: returns kx, vx, gx and the new carry."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    B, H, _, Dk = k.shape
    w = window - 1
    ck = state.get("omega_k", k.new_zeros(B, H, w, Dk))
    cv = state.get("omega_v", v.new_zeros(B, H, w, v.shape[-1]))
    cg = state.get("omega_gamma", k.new_zeros(B, H, w))
    kx = torch.cat([ck, k], dim=2)
    vx = torch.cat([cv, v], dim=2)
    gx = torch.cat([cg, gamma.expand(k.shape[:3])], dim=2)
    L = kx.shape[2]
    carry = {"omega_k": kx[:, :, L - w:], "omega_v": vx[:, :, L - w:],
             "omega_gamma": gx[:, :, L - w:]}
    return kx, vx, gx, carry


def omega_rule_reference(state, q, k, v, gamma, retention=None, *, window, chunk=64,
                         read_after_write=False) -> Out:
    """ATLAS Omega rule, matrix memory, L2 objective (NL-arXiv Eq. 68):

    ``S_t = alpha_t S_{t-1} - sum_{i=t-window+1}^{t} gamma_i (S_xi k_i - v_i) k_i^T``

    gamma_{t,i} = gamma_i (B, H, T): each token's own weight (step size included), the same
    for every step t whose window contains i. The gradient is taken at the chunk-start state
    S_xi (frozen per chunk like Titans, so the chunk stays linear); window = 1 with chunk = 1
    is Titans-linear / Eq. 8 with decay. The window crosses chunk and call boundaries: the
    state carries the last window-1 (k, v, gamma) as ``omega_k`` (B, H, window-1, Dk),
    ``omega_v`` (B, H, window-1, Dv), ``omega_gamma`` (B, H, window-1); missing keys mean
    zeros (no history). Streams only at multiples of ``chunk``.
    """
    kx, vx, gx, carry = _omega_window(state, k, v, gamma, window)
    S = state["S"]
    B, H, T, _ = q.shape
    alpha = q.new_ones(B, H, T) if retention is None else retention.expand(B, H, T)
    outs, S_xi = [], S
    for t in range(T):
        if t % chunk == 0:
            S_xi = S
        grad = torch.zeros_like(S)
        for i in range(t, t + window):  # extended index of tokens t-window+1 .. t
            err = (S_xi @ kx[:, :, i, :, None]).squeeze(-1) - vx[:, :, i]
            grad = grad + gx[:, :, i, None, None] * err[..., :, None] * kx[:, :, i, None, :]
        S_new = alpha[:, :, t, None, None] * S - grad
        outs.append(((S_new if read_after_write else S) @ q[:, :, t, :, None]).squeeze(-1))
        S = S_new
    o = torch.stack(outs, dim=2) if outs else S.new_zeros(B, H, 0, S.shape[-2])
    return o, {"S": S, **carry}


def omega_rule_chunked(state, q, k, v, gamma, retention=None, *, window, chunk=64,
                       read_after_write=False) -> Out:
    """Chunkwise-parallel :func:`omega_rule_reference`.

    Per chunk the write keys are the C + window - 1 tokens ending at the chunk end; token j
    is written by steps s with j - window + 1 <= s <= j, so the state mixing matrix is the
    log-space decay matrix times that band (no per-token work), fed to the shared affine scan.
    """
    kx, vx, gx, carry = _omega_window(state, k, v, gamma, window)
    w = window - 1
    la = (q.new_zeros(q.shape[:3]) if retention is None
          else torch.log(retention.expand(q.shape[:3])))
    groups = []
    for start, stop, C in chunk_layout(q.shape[2], chunk):
        s = torch.arange(C, device=q.device)[:, None]
        j = torch.arange(C + w, device=q.device)[None, :]
        band = ((j - w <= s) & (s <= j)).to(q.dtype)  # (C, C + w)
        P, D = log_decay(to_chunks(la, start, stop, C))
        mix = D @ band  # (B, H, N, C + 1, C + w)

        def ext(x):  # (B, H, N, C + w, ...) windows of the prefixed sequence
            return x[:, :, start:stop + w].unfold(2, C + w, C).movedim(-1, 3)

        kc, vc, gc = ext(kx), ext(vx), ext(gx.unsqueeze(-1))
        rows = slice(1, C + 1) if read_after_write else slice(0, C)
        groups.append(affine_terms(to_chunks(q, start, stop, C), kc, P[..., rows],
                                   mix[..., rows, :], P[..., C], mix[..., C, :],
                                   gc * vc, -gc * kc))
    o, S = scan_chunks(state["S"], groups)
    return o, {"S": S, **carry}
