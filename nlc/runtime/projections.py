"""Sources: how a memory's keys, values and queries are made from the layer input.

Notation::

    B batch   T tokens in the call   D width   H heads   Dh = D / H head dim   w conv window
    n the roles read through a projection   n_w the roles with conv window w

A source (a :class:`~nlc.ir.nodes.SourceIR` with ``source == "input"``) is, in this order
(Titans §4.4: projection, depthwise conv, SiLU, l2-normalised q and k):

1. a static linear projection ``x W^T`` (``D -> H Dh``, no bias), or the input itself when
   ``project: false``;
2. optionally a causal depthwise short convolution of window ``w`` over the ``H Dh``
   channels (:func:`nlc.primitives.layers.causal_conv1d`, streaming state ``(B, w-1, H Dh)``);
3. optionally SiLU;
4. split into heads ``(B, H, T, Dh)`` and optionally l2-normalised per head
   (:func:`nlc.primitives.layers.l2_normalize`).

:class:`Sources` computes several roles at once, fused: ONE GEMM ``x W^T`` with ``W (n D, D)``
the roles' projections stacked, ONE depthwise convolution per window ``w`` over the ``n_w D``
concatenated channels (roles sharing the window), one SiLU where a whole group has it, then
a split per role. The result equals the per-role computation (each output channel only reads
its own weight rows). Each role's convolution history stays its own ``(B, w-1, D)`` state.
Initialisation is per role, slice by slice in role order (projection then convolution, as
separate ``nn.Linear`` / :class:`~nlc.primitives.layers.ShortConv` modules would draw), so a
seed gives the same initial values fused or not. :class:`Source` is the one-role case (the
self-modifying mixer's component input).

Sources naming another level (HOPE: ``keys: mem_k``) are handled by the self-modifying
mixer (:mod:`nlc.capabilities` routes them there); building one here is a bug, a
``RuntimeError`` naming that level.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..capabilities import TABLE
from ..ir.nodes import SourceIR
from ..primitives.layers import causal_conv1d, init_conv_weight_, init_linear_, l2_normalize

__all__ = ["Sources", "Source", "split_heads", "merge_heads"]


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, T, H Dh) -> (B, H, T, Dh)."""
    B, T, D = x.shape
    return x.view(B, T, heads, D // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, T, Dh) -> (B, T, H Dh)."""
    B, H, T, Dh = x.shape
    return x.transpose(1, 2).reshape(B, T, H * Dh)


class Sources(nn.Module):
    """Several roles' sources from one input, fused (see the module docstring).

    ``Sources({role: SourceIR}, width, heads, owner=...)``; ``project(x, conv_states) ->
    ({role: (B, H, T, Dh)}, {role: new conv state})``; ``read(role, x, conv_state) -> (out,
    new conv state)`` computes one role alone through its slices of the fused weights.
    Parameters: ``weight (n D, D)`` (absent when no role projects) and ``conv_w{w}
    (n_w D, w)`` per window.
    """

    def __init__(self, irs: Mapping[str, SourceIR], width: int, heads: int, *,
                 owner: str = "?") -> None:
        super().__init__()
        for role, ir in irs.items():
            if ir.source != "input":
                raise RuntimeError(f"level {owner!r}: {role} come from level {ir.source!r}: a source "
                                   f"produced by another level makes the memory a HOPE one ({TABLE}), "
                                   "whose queries come from the input: a bug")
        if width % heads:
            raise ValueError(f"level {owner!r}: {heads} heads do not divide width {width}")
        self.irs, self.width, self.heads = dict(irs), width, heads
        self.projected = tuple(r for r, ir in irs.items() if ir.project)
        windows = sorted({ir.conv for ir in irs.values() if ir.conv > 0})
        # roles per conv window, in role order: (window, roles)
        self.groups = tuple((w, tuple(r for r, ir in irs.items() if ir.conv == w)) for w in windows)
        self.weight = (nn.Parameter(torch.empty(len(self.projected) * width, width))
                       if self.projected else None)
        for w, roles in self.groups:
            self.register_parameter(f"conv_w{w}", nn.Parameter(torch.empty(len(roles) * width, w)))
        with torch.no_grad():
            for role in irs:  # the draws of per-role Linear then ShortConv modules
                if role in self.projected:
                    init_linear_(self._rows(self.weight, self.projected, role))
                if self.irs[role].conv:
                    init_conv_weight_(self._conv_rows(role))

    # ---------------------------------------------------------------------------- slices
    def _rows(self, t: Tensor, roles: tuple[str, ...], role: str) -> Tensor:
        """``role``'s rows of a fused weight stacking ``roles``."""
        i = roles.index(role) * self.width
        return t[i:i + self.width]

    def _cols(self, t: Tensor, roles: tuple[str, ...], role: str) -> Tensor:
        """``role``'s channels (last dim) of a fused activation stacking ``roles``."""
        i = roles.index(role) * self.width
        return t[..., i:i + self.width]

    def _conv_rows(self, role: str) -> Tensor:
        w = self.irs[role].conv
        roles = dict(self.groups)[w]
        return self._rows(getattr(self, f"conv_w{w}"), roles, role)

    # ----------------------------------------------------------------------------- state
    def init_conv_states(self, batch: int, *, dtype=None, device=None) -> dict[str, Tensor]:
        """Zero histories ``(B, w-1, D)`` of the roles with a convolution."""
        return {role: torch.zeros(batch, ir.conv - 1, self.width, dtype=dtype, device=device)
                for role, ir in self.irs.items() if ir.conv > 0}

    # --------------------------------------------------------------------------- forward
    def _finish(self, role: str, h: Tensor, silu_done: bool) -> Tensor:
        ir = self.irs[role]
        if ir.silu and not silu_done:
            h = F.silu(h)
        h = split_heads(h, self.heads)
        return l2_normalize(h) if ir.l2_norm else h

    def project(self, x: Tensor, conv_states: Mapping[str, Tensor | None]
                ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Every role (one GEMM, one convolution per window); ``conv_states[role]`` ``None``
        or missing = zero history."""
        fused = None if self.weight is None else F.linear(x, self.weight)   # (B, T, n D)
        pre = {r: self._cols(fused, self.projected, r) if r in self.projected else x
               for r in self.irs}
        post: dict[str, Tensor] = {r: pre[r] for r, ir in self.irs.items() if ir.conv == 0}
        silu_done: dict[str, bool] = {r: False for r in post}
        new_convs: dict[str, Tensor] = {}
        for w, roles in self.groups:
            h = (fused if roles == self.projected
                 else torch.cat([pre[r] for r in roles], dim=-1))
            hist = torch.cat([self._history(conv_states.get(r), x, w) for r in roles], dim=-1)
            y, st = causal_conv1d(h, getattr(self, f"conv_w{w}"), None, {"conv": hist})
            all_silu = all(self.irs[r].silu for r in roles)
            if all_silu:
                y = F.silu(y)
            for r in roles:
                post[r], silu_done[r] = self._cols(y, roles, r), all_silu
                new_convs[r] = self._cols(st["conv"], roles, r)
        return {r: self._finish(r, post[r], silu_done[r]) for r in self.irs}, new_convs

    def _history(self, state: Tensor | None, x: Tensor, w: int) -> Tensor:
        return x.new_zeros(x.shape[0], w - 1, self.width) if state is None else state

    def read(self, role: str, x: Tensor, conv_state: Tensor | None = None
             ) -> tuple[Tensor, Tensor | None]:
        """One role alone: ``(out (B, H, T, Dh), new conv state or None)``."""
        ir = self.irs[role]
        h = x if role not in self.projected else F.linear(
            x, self._rows(self.weight, self.projected, role))
        new_conv = None
        if ir.conv > 0:
            hist = self._history(conv_state, x, ir.conv)
            h, st = causal_conv1d(h, self._conv_rows(role), None, {"conv": hist})
            new_conv = st["conv"]
        return self._finish(role, h, False), new_conv

    def extra_repr(self) -> str:
        def bits(ir: SourceIR) -> str:
            return "+".join(["proj"] * ir.project + [f"conv{ir.conv}"] * (ir.conv > 0)
                            + ["silu"] * ir.silu + ["l2"] * ir.l2_norm) or "identity"
        return ", ".join(f"{role}: {bits(ir)}" for role, ir in self.irs.items())


class Source(Sources):
    """One role: ``forward(x (B, T, D), conv_state=None) -> (out (B, H, T, Dh),
    new_conv_state)``; ``new_conv_state`` is ``None`` without a convolution, else
    ``(B, w-1, H Dh)`` (``conv_state=None`` = zeros)."""

    def __init__(self, ir: SourceIR, width: int, heads: int, *, owner: str = "?",
                 role: str = "keys") -> None:
        super().__init__({role: ir}, width, heads, owner=owner)
        self.role = role

    def init_conv_state(self, batch: int, *, dtype=None, device=None) -> Tensor | None:
        return self.init_conv_states(batch, dtype=dtype, device=device).get(self.role)

    def forward(self, x: Tensor, conv_state: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        return self.read(self.role, x, conv_state)
