"""Elementwise first and second derivatives of the deep memory's activations and objectives.

Notation (see :mod:`nlc.primitives.deep`)::

    z pre-activation   act in {gelu (exact erf), silu, relu, identity}   phi / Phi the
    standard normal pdf / cdf   y = M(k) memory output   v target   e = y - v
    l(y; v) objective: l2 ||e||^2, lp ||e||_p^p, huber (2 delta |e| - delta^2 beyond delta),
    dot -<y, v>   l' = dl/dy, l'' its derivatives w.r.t. y and v (elementwise)

Used by the hand-written forward and backward passes of :mod:`~nlc.primitives.deep.kernels`:
``obj_d`` in the forward (the error back-propagation of the inner objective; act' comes from
:func:`nlc.primitives.activations.act_and_grad`), ``act_dd`` / ``obj_dd`` in their backward
(the outer gradient through that propagation).
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

__all__ = ["act_dd", "obj_d", "obj_dd"]

_LOG_INV_SQRT2PI = -0.5 * math.log(2.0 * math.pi)


def act_dd(name: str, z: Tensor) -> Optional[Tensor]:
    """act''(z) (None when zero: relu, identity); act and act' themselves come from
    :func:`nlc.primitives.activations.act_and_grad` (fused aten kernels for GELU)."""
    if name == "gelu":  # phi(z) (2 - z^2)
        c0 = torch.full((), _LOG_INV_SQRT2PI, dtype=z.dtype, device=z.device)
        pdf = torch.addcmul(c0, z, z, value=-0.5).exp_()
        return (z * z).neg_().add_(2.0).mul_(pdf)
    if name == "silu":  # s (1 - s) (2 + z (1 - 2 s))
        s = torch.sigmoid(z)
        return (1.0 - 2.0 * s).mul_(z).add_(2.0).mul_(s * (1.0 - s))
    return None


def obj_d(name: str, y: Tensor, v: Tensor, p: Tensor, delta: Tensor) -> Tensor:
    """l'(y; v) elementwise: l2 2e; lp p sign(e) |e|^{p-1}; huber 2 clip(e, -delta, delta);
    dot -v (e = y - v; the lp power is clamped so it stays finite at e = 0)."""
    if name == "dot":
        return -v
    e = y - v
    if name == "l2":
        return e.mul_(2.0)
    if name == "lp":
        return torch.sign(e) * e.abs().clamp_min(torch.finfo(e.dtype).tiny).pow(p - 1.0) * p
    return torch.maximum(torch.minimum(e, delta), -delta).mul_(2.0)


def obj_dd(name: str, y: Tensor, v: Tensor, p: Tensor, delta: Tensor
           ) -> tuple[Union[None, float, Tensor], Union[float, Tensor]]:
    """(d l'/d y, d l'/d v) elementwise factors (d/dy None when zero: dot objective)."""
    if name == "dot":
        return None, -1.0
    if name == "l2":
        return 2.0, -2.0
    e = y - v
    if name == "lp":
        c = e.abs().clamp_min(torch.finfo(e.dtype).tiny).pow(p - 2.0) * (p * (p - 1.0))
        c = c * (e != 0)
        return c, -c
    m = (e.abs() < delta).to(e.dtype) * 2.0
    return m, -m
