"""Runtime mixer of an ``mlp`` level with ``period: never``: the Transformer MLP.

Notation::

    B batch   T tokens in the call   D model width   Dh hidden width (``ir.hidden``)

Frozen in context (NL-arXiv §5: its frequency in context is 0; only the outer optimizer
changes it), so it has no state. No biases (the convention ``nlc graph`` counts):

* ``swiglu``: ``W_down (silu(W_gate x) * W_up x)`` (:class:`nlc.primitives.layers.SwiGLU`);
* ``gelu`` / ``silu`` / ``relu``: ``W_2 act(W_1 x)``.

An ``mlp`` level with ``period: C`` is a CMS level: :class:`nlc.runtime.cms.CMSMixer`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir.nodes import MLPIR
from ..primitives.layers import SwiGLU

__all__ = ["MLPMixer", "ACTIVATIONS"]

ACTIVATIONS = ("swiglu", "gelu", "silu", "relu")
_ACT = {"gelu": F.gelu, "silu": F.silu, "relu": torch.relu}


class _ActMLP(nn.Module):
    """``W_2 act(W_1 x)`` without biases."""

    def __init__(self, dim: int, hidden: int, activation: str) -> None:
        super().__init__()
        self.activation = activation
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(_ACT[self.activation](self.fc1(x)))


class MLPMixer(nn.Module):
    """The frozen-in-context MLP of an ``mlp`` level with ``period: never`` (no state)."""

    teach = False

    def __init__(self, ir: MLPIR, width: int) -> None:
        super().__init__()
        if ir.period:
            raise ValueError(f"mlp level {ir.name!r} has period {ir.period}: it is a CMS level "
                             "(use CMSMixer)")
        if ir.activation not in ACTIVATIONS:
            raise ValueError(f"mlp level {ir.name!r}: unknown activation {ir.activation!r}; "
                             f"expected one of {ACTIVATIONS}")
        self.level = ir.name
        self.activation = ir.activation
        if ir.activation == "swiglu":
            self.mlp = SwiGLU(width, ir.hidden, bias=False)
        else:
            self.mlp = _ActMLP(width, ir.hidden, ir.activation)

    def init_state(self, batch: int) -> dict[str, Tensor]:
        return {}

    def forward(self, x: Tensor, state: dict[str, Tensor], pos: int
                ) -> tuple[Tensor, dict[str, Tensor]]:
        return self.mlp(x), {}

    def extra_repr(self) -> str:
        return f"level={self.level!r}, activation={self.activation!r}"
