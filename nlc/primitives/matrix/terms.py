"""What each matrix rule writes: its terms of recurrence (R), shared by its two forms.

Notation (the family legend is in :mod:`nlc.primitives.matrix`)::

    B batch   H heads   T tokens   Dk key dim   Dv value dim
    lr         step size eta_t: (B, H, T) or any tensor broadcastable to it (e.g. 0-d)
    retention  alpha_t multiplying the old state, (B, H, T) or broadcastable
    (R)        S_t = S_{t-1} (alpha_t I - b_t k_t k_t^T) + u_t k_t^T,   u_t = a_t + S_xi c_t

Every rule of the family is (R) with its own (alpha, b, a, c) (Omega: its own window of
writes). They are built here once, so that :mod:`~nlc.primitives.matrix.reference` and
:mod:`~nlc.primitives.matrix.chunk` cannot disagree about them.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["State", "Out", "lr_per_token", "gated_delta_terms", "dgd_terms", "omega_window"]

State = dict[str, Tensor]
Out = tuple[Tensor, State]


def lr_per_token(lr: Tensor, v: Tensor) -> Tensor:
    """(B, H, T, 1) step size."""
    return lr.expand(v.shape[:3]).unsqueeze(-1)


def gated_delta_terms(v: Tensor, lr: Tensor, retention: Tensor) -> dict:
    """Gated DeltaNet: b = alpha lr, a = lr v (NL-arXiv Eq. 65 with a global decay)."""
    lr_ = lr_per_token(lr, v)
    return dict(a=lr_ * v, b=retention.expand(v.shape[:3]) * lr_[..., 0], retention=retention)


def dgd_terms(k: Tensor, v: Tensor, lr: Tensor, retention: Tensor, objective: str) -> dict:
    """DGD (NL-arXiv Eqs. 92-93): b = lr, a = lr v, c = -lr k (l2) or none (dot)."""
    lr_ = lr_per_token(lr, v)
    if objective == "l2":  # u = -lr (S_xi k - v)
        return dict(a=lr_ * v, b=lr_[..., 0], retention=retention, c=-lr_ * k)
    if objective == "dot":  # u = -lr grad(-<S k, v>) = +lr v
        return dict(a=lr_ * v, b=lr_[..., 0], retention=retention)
    raise ValueError(f"objective must be 'l2' or 'dot', got {objective!r}")


def omega_window(state: State, k: Tensor, v: Tensor, gamma: Tensor, window: int, chunk: int):
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
