"""Sources: how a memory's keys, values and queries are made from the layer input.

Notation::

    B batch   T tokens in the call   D width   H heads   Dh = D / H head dim   w conv window

A :class:`Source` (from a :class:`~nlc.ir.nodes.SourceIR` with ``source == "input"``) is,
in this order (Titans §4.4: projection, depthwise conv, SiLU, l2-normalised q and k):

1. a static linear projection ``x W^T`` (``D -> H Dh``, no bias), or the input itself when
   ``project: false``;
2. optionally a causal depthwise short convolution of window ``w`` over the ``H Dh``
   channels (:class:`nlc.primitives.layers.ShortConv`, streaming state ``(B, w-1, H Dh)``);
3. optionally SiLU;
4. split into heads ``(B, H, T, Dh)`` and optionally l2-normalised per head
   (:func:`nlc.primitives.layers.l2_normalize`).

Sources naming another level (HOPE: ``keys: mem_k``) are handled by the self-modifying
mixer; building one here raises ``NotImplementedError`` naming that level.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..ir.nodes import SourceIR
from ..primitives.layers import ShortConv, l2_normalize

__all__ = ["Source", "split_heads", "merge_heads"]


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, T, H Dh) -> (B, H, T, Dh)."""
    B, T, D = x.shape
    return x.view(B, T, heads, D // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, T, Dh) -> (B, T, H Dh)."""
    B, H, T, Dh = x.shape
    return x.transpose(1, 2).reshape(B, T, H * Dh)


class Source(nn.Module):
    """``forward(x (B, T, D), conv_state=None) -> (out (B, H, T, Dh), new_conv_state)``.

    ``new_conv_state`` is ``None`` without a convolution; with one it is the
    :class:`ShortConv` state tensor ``(B, w-1, H Dh)`` (``conv_state=None`` = zeros).
    """

    def __init__(self, ir: SourceIR, width: int, heads: int, *, owner: str = "?",
                 role: str = "keys") -> None:
        super().__init__()
        if ir.source != "input":
            raise NotImplementedError(
                f"level {owner!r}: {role} come from level {ir.source!r}; sources produced by "
                f"another level are handled by the self-modifying (HOPE) mixer")
        if width % heads:
            raise ValueError(f"level {owner!r}: {heads} heads do not divide width {width}")
        self.heads, self.width, self.role = heads, width, role
        self.l2, self.silu = ir.l2_norm, ir.silu
        self.proj = nn.Linear(width, width, bias=False) if ir.project else None
        self.conv = ShortConv(width, ir.conv) if ir.conv > 0 else None

    def init_conv_state(self, batch: int, *, dtype=None, device=None) -> Tensor | None:
        if self.conv is None:
            return None
        return self.conv.init_state(batch, dtype=dtype, device=device)["conv"]

    def forward(self, x: Tensor, conv_state: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        h = x if self.proj is None else self.proj(x)
        new_conv = None
        if self.conv is not None:
            h, st = self.conv(h, None if conv_state is None else {"conv": conv_state})
            new_conv = st["conv"]
        if self.silu:
            h = F.silu(h)
        h = split_heads(h, self.heads)
        if self.l2:
            h = l2_normalize(h)
        return h, new_conv

    def extra_repr(self) -> str:
        bits = [self.role] + (["l2"] if self.l2 else []) + (["silu"] if self.silu else [])
        return ", ".join(bits)
