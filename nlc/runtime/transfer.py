"""Knowledge-transfer edges into a layer (``transfer:``, NL-arXiv §3.3; validation rule 13,
:mod:`nlc.graph.transfers`; docs/design.md, "Level semantics: transfer").

Notation::

    B batch   T tokens in the call   D width
    u  (B, T, D)  the target layer's normalised input      y (B, T, D) its mixer's output
    o  (B, T, D)  what the source level's layer added to the residual stream at the same tokens
    W  (D, D)     one map per edge, zero at the start (an edge changes nothing until trained)

Per edge of the target level Y, source X::

    conditioning    u <- u + W stopgrad(o)       X conditions Y; no gradient crosses (NL-arXiv Eq. 25)
    backprop        u <- u + W o                 one gradient flow across two frequencies
    generation      y <- y * (1 + W o)           X generates a per-token diagonal weight on Y's
                                                 output (a hypernetwork of Y's output scale)

The maps belong to Y (``level``), so Y's outer optimizer level trains them. Initialization
edges compile to the target's own ``init`` (rule 13) and never reach this module.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Transfers", "KINDS"]

KINDS = ("conditioning", "backprop", "generation")


class Transfers(nn.Module):
    """The edges into one layer: ``condition(u, sources)`` before the mixer, ``generate(y,
    sources)`` after it, ``sources`` in the order of ``kinds``."""

    def __init__(self, kinds: Sequence[str], width: int, level: str) -> None:
        super().__init__()
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"level {level!r}: transfer kinds {unknown} do not reach a layer (one of {KINDS})")
        self.level, self.kinds = level, tuple(kinds)
        # zeros drawn from no generator: the other weights of a seeded model are those of the
        # model without the edges
        self.maps = nn.ParameterList(nn.Parameter(torch.zeros(width, width)) for _ in self.kinds)

    def _check(self, sources: Sequence[Tensor]) -> None:
        if len(sources) != len(self.kinds):
            raise ValueError(f"level {self.level!r}: {len(self.kinds)} transfer edges, {len(sources)} sources given")

    def condition(self, u: Tensor, sources: Sequence[Tensor]) -> Tensor:
        self._check(sources)
        for kind, w, o in zip(self.kinds, self.maps, sources):
            if kind == "conditioning":
                u = u + F.linear(o.detach(), w)
            elif kind == "backprop":
                u = u + F.linear(o, w)
        return u

    def generate(self, y: Tensor, sources: Sequence[Tensor]) -> Tensor:
        for kind, w, o in zip(self.kinds, self.maps, sources):
            if kind == "generation":
                y = y * (1.0 + F.linear(o, w))
        return y

    def extra_repr(self) -> str:
        return f"level={self.level!r}, kinds={self.kinds}"
