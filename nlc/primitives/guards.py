"""Numerical guards for inner (fast-weight) updates.

Notation::

    B batch (every state tensor leads with it)   g an inner gradient / update, (B, ...)
    ||g|| the per-sequence l2 norm over all non-batch dims (of one tensor, or of a whole
          dict of tensors for the "global" variants)

Two kinds of helper:

* :func:`check_finite` -- a host-side check, called *outside* compiled regions (it reads
  tensor values into Python): raises ``FloatingPointError`` naming the level and the first
  offending state key, with NaN/Inf counts.
* pure tensor transforms usable *inside* compiled code (no ``.item()``, no branching on
  values; thresholds may be Python floats or tensors, scalar or ``(B,)``):
  :func:`clip_by_norm`, :func:`clip_dict_by_global_norm`, :func:`normalize_by_norm`,
  :func:`normalize_dict_by_global_norm`, :func:`clip_by_value`, :func:`zero_nonfinite`.
  Clipping scales each sequence's update by ``min(1, max_norm / (||g|| + eps))`` so that
  sequence ``i``'s clip never depends on sequence ``j``.
"""
from __future__ import annotations

from typing import Mapping, Union

import torch
from torch import Tensor

__all__ = [
    "check_finite",
    "per_sample_norm",
    "global_norm",
    "clip_by_norm",
    "clip_dict_by_global_norm",
    "normalize_by_norm",
    "normalize_dict_by_global_norm",
    "clip_by_value",
    "zero_nonfinite",
]

Threshold = Union[float, Tensor]


def check_finite(state: Mapping[str, Tensor], level: str) -> None:
    """Raise ``FloatingPointError`` if any tensor of ``state`` holds NaN or Inf.

    The message names ``level``, the offending key, its shape, the NaN/Inf counts and the
    batch rows affected. Host-side (synchronises); do not call inside ``torch.compile``.
    Non-floating tensors are skipped.
    """
    for key, t in state.items():
        if not isinstance(t, Tensor) or not (t.is_floating_point() or t.is_complex()):
            continue
        finite = torch.isfinite(t)
        if bool(finite.all()):
            continue
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        rows = ""
        if t.dim() >= 1:
            bad = (~finite).reshape(t.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
            rows = f", batch rows {bad[:8]}{'...' if len(bad) > 8 else ''}"
        raise FloatingPointError(
            f"non-finite values in level {level!r}, state tensor {key!r} "
            f"(shape {tuple(t.shape)}, {n_nan} NaN, {n_inf} Inf{rows}); "
            "lower the inner learning rate or enable inner-gradient clipping")


def _as(th: Threshold, like: Tensor) -> Tensor:
    """Threshold as a tensor broadcastable against ``like (B, ...)``."""
    t = torch.as_tensor(th, dtype=like.dtype, device=like.device)
    if t.dim() == 1:  # per-sequence (B,)
        t = t.view(-1, *([1] * (like.dim() - 1)))
    return t


def per_sample_norm(g: Tensor) -> Tensor:
    """``||g_i||_2`` over all non-batch dims, shape ``(B,)``."""
    return torch.sqrt((g * g).reshape(g.shape[0], -1).sum(dim=1))


def global_norm(grads: Mapping[str, Tensor]) -> Tensor:
    """Per-sequence l2 norm over every tensor of ``grads`` together, shape ``(B,)``."""
    sq = None
    for g in grads.values():
        s = (g * g).reshape(g.shape[0], -1).sum(dim=1)
        sq = s if sq is None else sq + s
    if sq is None:
        raise ValueError("global_norm of an empty dict")
    return torch.sqrt(sq)


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _clip_scale(norm: Tensor, max_norm: Threshold, eps: float) -> Tensor:
    mx = torch.as_tensor(max_norm, dtype=norm.dtype, device=norm.device)
    return torch.clamp(mx / (norm + eps), max=1.0)


def clip_by_norm(g: Tensor, max_norm: Threshold, eps: float = 1e-6) -> Tensor:
    """Scale each sequence's ``g_i`` by ``min(1, max_norm / (||g_i|| + eps))``.

    ``max_norm``: float, 0-d or ``(B,)`` tensor."""
    return g * _bcast(_clip_scale(per_sample_norm(g), max_norm, eps), g)


def clip_dict_by_global_norm(grads: Mapping[str, Tensor], max_norm: Threshold,
                             eps: float = 1e-6) -> dict[str, Tensor]:
    """Clip a dict of per-sequence updates by their joint per-sequence norm."""
    scale = _clip_scale(global_norm(grads), max_norm, eps)
    return {k: g * _bcast(scale, g) for k, g in grads.items()}


def normalize_by_norm(g: Tensor, eps: float = 1e-6) -> Tensor:
    """``g_i / (||g_i|| + eps)`` per sequence (direction only; zero stays zero)."""
    return g / _bcast(per_sample_norm(g) + eps, g)


def normalize_dict_by_global_norm(grads: Mapping[str, Tensor], eps: float = 1e-6
                                  ) -> dict[str, Tensor]:
    """Divide every tensor of ``grads`` by the joint per-sequence norm ``+ eps``."""
    n = global_norm(grads) + eps
    return {k: g / _bcast(n, g) for k, g in grads.items()}


def clip_by_value(g: Tensor, limit: Threshold) -> Tensor:
    """Element-wise clamp to ``[-limit, limit]`` (``limit``: float, 0-d or ``(B,)``)."""
    lim = _as(limit, g)
    return torch.maximum(torch.minimum(g, lim), -lim)


def zero_nonfinite(g: Tensor) -> Tensor:
    """Replace NaN/Inf entries by 0 (a last-resort guard on an inner update)."""
    return torch.where(torch.isfinite(g), g, torch.zeros_like(g))
