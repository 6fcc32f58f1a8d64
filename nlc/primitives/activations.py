"""Elementwise activations of the memory MLPs, with analytic first derivatives.

Notation::

    z     a pre-activation (any shape)
    act   one of ACTIVATIONS: gelu (exact erf form, z Phi(z)), silu (z sigmoid(z)), relu,
          identity;  act' its derivative;  Phi / phi the standard normal cdf / pdf

Shared by the deep memories (:mod:`nlc.primitives.deep`), HOPE's self-modifying memories
(:mod:`nlc.primitives.selfmod`) and the CMS blocks (:mod:`nlc.primitives.cms`): with act'
analytic, their chunked forms back-propagate the inner objective without autograd. The
second derivative the deep kernels' backward needs is
:func:`nlc.primitives.deep.derivatives.act_dd`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["ACTIVATIONS", "act", "act_derivative", "act_and_grad"]

ACTIVATIONS = ("gelu", "silu", "relu", "identity")


def act(name: str, z: Tensor) -> Tensor:
    if name == "gelu":
        return torch.nn.functional.gelu(z)
    if name == "silu":
        return torch.nn.functional.silu(z)
    if name == "relu":
        return torch.relu(z)
    return z


def act_derivative(name: str, z: Tensor) -> Optional[Tensor]:
    """act'(z) analytically, differentiable; None for the identity.

    GELU (exact erf form, x Phi(x)): Phi(x) + x phi(x) as aten's fused ``gelu_backward`` at
    a unit upstream gradient (one op forward and one backward, twice differentiable).
    """
    if name == "gelu":
        return torch.ops.aten.gelu_backward(z.new_ones(()).expand_as(z), z)
    if name == "silu":
        s = torch.sigmoid(z)
        return s * (1.0 + z * (1.0 - s))
    if name == "relu":
        return (z > 0).to(z.dtype)
    return None


def act_and_grad(name: str, z: Tensor) -> tuple[Tensor, Optional[Tensor]]:
    """(act(z), act'(z)), both differentiable (see :func:`act_derivative`)."""
    return act(name, z), act_derivative(name, z)
