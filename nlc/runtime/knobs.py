"""Knobs: the per-token gates of an update rule (lr, momentum, retention) as modules.

Notation::

    B batch   T tokens in the call   D width   H heads   C the memory's chunk
    pos       tokens the state has consumed before this call (absolute position of token 0)

A :class:`Knob` turns a :class:`~nlc.ir.nodes.KnobIR` into a gate ``(B, H, T)`` for the
primitives (gate convention of ``docs/primitives-contract.md``: ``lr`` step size,
``retention`` factor on the old state, ``momentum`` decay of the surprise):

============  =========================================================================
kind          value
============  =========================================================================
constant      ``ir.init`` (a Python float, not a buffer: exact in every dtype)
learned       ``U * sigmoid(r_h)``, one raw scalar ``r_h`` per head, ``r = logit(init / U)``
data (input)  ``U * sigmoid(W x_t + b)``, ``W: (H, D)`` zero at init and ``b = logit(init / U)``,
              so the value at init is ``ir.init`` for every token (``W`` still gets gradients)
============  =========================================================================

``U`` is ``ir.max``: lr stays in ``(0, max]`` and retention / momentum in ``(0, 1)``
(``max`` above 1 is refused for them). Validation keeps ``init / U`` strictly inside (0, 1)
(rule 10), so every knob starts exactly at its ``init``; the logit clamps ``init / U`` into
``[1e-12, 1 - 1e-12]`` only as a float guard for direct callers. ``complement=True`` (a Titans forget
gate ``alpha``) returns ``1 - knob``: the retention ``1 - alpha`` in ``(0, 1)``.

``per_chunk`` (Titans' LTI variant, ``per: chunk``): the gate is constant inside each chunk
of ``C`` tokens, chunks aligned on absolute positions (multiples of ``C`` from the start
of the sequence). We take the value of the chunk's *first* token, which keeps the gate
causal (a chunk mean, as in some Titans implementations, would let token t see the rest
of its chunk). A call that starts inside a chunk uses the carried value of that chunk's
first token: the knob then has a streaming state ``(B, H)``, so any split streams exactly.

A knob produced by another level (HOPE's ``M_eta``, ``M_alpha``) has the parameters of a data
knob, ``W: (H, width)`` and ``b``, over that level's per-head output (``width`` its head
dim): :meth:`Knob.read_out` gives ``U sigmoid(w_h . y + b_h)``; the self-modifying mixer hands
``W``, ``b`` and ``U`` to its fused primitive, which applies the same
:func:`~nlc.primitives.layers.readout_gate`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ir.nodes import KnobIR
from ..primitives.layers import readout_gate

__all__ = ["Knob", "EDGE"]

EDGE = 1e-12  # init / max is clamped into [EDGE, 1 - EDGE] before the logit (a float guard)
ROLES = ("lr", "momentum", "retention", "delta")  # delta: the Huber threshold (Yaad's delta_t)


def _logit(ratio: float) -> float:
    r = min(max(ratio, EDGE), 1.0 - EDGE)
    return math.log(r / (1.0 - r))


class Knob(nn.Module):
    """A gate ``(B, H, T)`` from a :class:`KnobIR` (see the module docstring).

    ``forward(x (B, T, D), pos: int, carry: Tensor | None = None) -> (gate, carry)``;
    ``carry`` is ``None`` unless ``per_chunk`` (then ``(B, H)``: the value of the current
    chunk's first token; :meth:`init_carry` gives the start-of-sequence one).
    """

    def __init__(self, ir: KnobIR, width: int, heads: int, *, role: str = "lr", chunk: int = 1,
                 owner: str = "?") -> None:
        super().__init__()
        if role not in ROLES:
            raise ValueError(f"level {owner!r}: unknown knob role {role!r} (one of {ROLES})")
        what = f"level {owner!r}: {role} knob"
        self.from_level = ir.kind == "data" and ir.source not in (None, "input")
        if ir.kind not in ("constant", "learned", "data"):
            raise ValueError(f"{what}: unknown kind {ir.kind!r}")
        self.kind, self.role, self.heads, self.width = ir.kind, role, heads, width
        self.complement, self.owner = ir.complement, owner
        self.per_chunk = bool(ir.per_chunk) and ir.kind == "data"
        self.chunk = int(chunk)
        self.upper = float(ir.max)
        if ir.kind != "constant":
            if role not in ("lr", "delta") and self.upper > 1.0:
                raise ValueError(f"{what}: max {self.upper} > 1; a {role} gate stays in (0, 1)")
            if not 0.0 <= ir.init <= self.upper:
                raise ValueError(f"{what}: init {ir.init} is outside (0, max={self.upper}]; "
                                 f"give a larger 'max'")
        self.value = float(ir.init)  # the constant (kind "constant")
        if ir.kind == "learned":
            self.raw = nn.Parameter(torch.full((heads,), _logit(ir.init / self.upper)))
        elif ir.kind == "data":
            self.weight = nn.Parameter(torch.zeros(heads, width))
            self.bias = nn.Parameter(torch.full((heads,), _logit(ir.init / self.upper)))

    # ------------------------------------------------------------------------------ state
    def init_carry(self, batch: int, *, dtype=None, device=None) -> Tensor | None:
        """Start-of-sequence carry of a per-chunk knob (never read: token 0 starts a chunk)."""
        if not self.per_chunk:
            return None
        p = self.bias
        return torch.zeros(batch, self.heads, dtype=dtype or p.dtype, device=device or p.device)

    # ---------------------------------------------------------------------------- forward
    def read_out(self, y: Tensor) -> Tensor:
        """A knob from another level: ``U sigmoid(w_h . y + b_h)`` of that level's per-head
        output ``y (B, H, T, width)`` -> ``(B, H, T)`` (HOPE's eta and alpha; the fused
        self-modifying primitive applies the same :func:`readout_gate` to these parameters
        inside its chunk loop)."""
        g = self.upper * readout_gate(y, self.weight[:, None, :].to(y.dtype), self.bias[:, None].to(y.dtype))
        return 1.0 - g if self.complement else g

    def forward(self, x: Tensor, pos: int = 0, carry: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        if self.from_level:
            raise RuntimeError(f"level {self.owner!r}: its {self.role} knob comes from another level; "
                               "read it with read_out(that level's output): a bug")
        B, T, _ = x.shape
        shape = (B, self.heads, T)
        if self.kind == "constant":
            g = x.new_full((1, 1, 1), self.value).expand(shape)
        elif self.kind == "learned":
            g = (self.upper * torch.sigmoid(self.raw.to(x.dtype)))[None, :, None].expand(shape)
        else:
            logits = F.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype))  # (B, T, H)
            g = self.upper * torch.sigmoid(logits.transpose(1, 2))
        if self.complement:
            g = 1.0 - g
        if not self.per_chunk:
            return g, None
        return self._chunk_constant(g, pos, carry)

    def _chunk_constant(self, g: Tensor, pos: int, carry: Tensor | None
                        ) -> tuple[Tensor, Tensor]:
        """Each token takes the gate of its chunk's first token (absolute chunk grid)."""
        B, H, T = g.shape
        if carry is None:
            if pos % self.chunk:
                raise ValueError(f"level {self.owner!r}: a per-chunk {self.role} knob starting "
                                 f"mid-chunk (pos {pos}) needs its carried state")
            carry = g.new_zeros(B, H)
        t = torch.arange(T, device=g.device)
        first = (pos + t) // self.chunk * self.chunk - pos  # call index of the chunk start
        inside = first >= 0
        out = torch.where(inside, g[:, :, first.clamp_min(0)], carry.to(g.dtype)[:, :, None])
        new_carry = out[:, :, -1] if T else carry
        return out, new_carry

    def extra_repr(self) -> str:
        bits = [self.role, self.kind, f"max={self.upper}"]
        if self.complement:
            bits.append("complement")
        if self.per_chunk:
            bits.append(f"per_chunk={self.chunk}")
        return ", ".join(bits)
