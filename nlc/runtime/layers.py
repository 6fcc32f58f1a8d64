"""Layer kinds: how mixers compose into the residual stream (docs/design.md §1.2).

Notation::

    B batch   T tokens in the call   D model width   n mixers of a parallel layer
    pos tokens consumed before the call

* :class:`Residual` -- ``y = x + f(norm(x))`` (or ``f(norm(x))`` with ``residual=False``;
  with ``transfers``, the edges of :mod:`nlc.runtime.transfer` act on ``norm(x)`` and ``f``'s
  output, their sources passed after ``pos``),
  ``norm`` one of ``rms`` (:class:`nlc.primitives.layers.RMSNorm`), ``layer``
  (``nn.LayerNorm``), ``none``. Its state *is* the mixer's state (same dict layout).
* :class:`Parallel` -- every mixer reads the same ``u = norm(x)`` (one shared pre-norm);
  ``y = x + combine(f_1(u), ..., f_n(u))`` with ``combine``:

  - ``sum``: ``sum_i f_i``;   ``mean``: ``(1/n) sum_i f_i``;
  - ``learned``: ``sum_i softmax(a)_i f_i`` with learned logits ``a (n,)`` initialised to 0
    (uniform weights; independent CMS's aggregation, NL-arXiv Eq. 74);
  - ``gate`` (Titans MAG, §4.2): exactly two mixers ``[attention, memory]`` in that order;
    ``o = norm_a(f_1(u)) * sigmoid(norm_m(f_2(u)))`` -- both branches normalised with their
    own learnable per-feature weights, then the memory branch gates the attention branch
    through a sigmoid. The branch norms are of the layer's ``norm`` kind (the ``2 x`` norm
    parameters ``nlc graph`` counts); with ``norm: none`` the branches are not normalised.

  State: one *flat* ``dict[str, Tensor]``: mixer ``i``'s key ``k`` is stored as ``f"{i}.{k}"``
  (e.g. ``"0.k"``, ``"1.w_out"``, ``"1.acc.w_out"``, ``"1.out"``), plus ``"out"`` after a
  forward when a mixer teaches (below).

Layers own no level: their norms and combine weights are model parameters (no ``level``
attribute), the mixers inside carry theirs.

Teach protocol (CMS levels with the ``task`` objective, docs/runtime-contract.md) at the layer
level, as ``NLCModel`` drives it: ``layer.teach`` is True when a mixer inside teaches (the
model runs it in segments of the gcd of those levels' periods,
:meth:`nlc.schedule.UpdateSchedule.segment`); after a forward the layer's state
holds ``"out"`` (the layer's output *before* the residual add, in the autograd graph), and
``layer.learn(state, delta, pos, due)`` takes ``delta = dLoss/d state["out"]`` and ``due``, the
levels the update schedule fires after the segment (:meth:`nlc.schedule.UpdateSchedule.fired`).

* Residual: the state is the mixer's, so ``"out"``/``learn`` are the mixer's own.
* Parallel: ``state["out"]`` is the combined output ``o``; ``learn`` hands mixer ``i`` the
  signal ``d<delta, o>/d f_i``: ``delta`` (sum), ``delta / n`` (mean), ``softmax(a)_i delta``
  (learned, the weights detached: a stop-gradient signal, NL-arXiv Eq. 74's task signal
  ``w_l delta``), and for ``gate`` the vector-Jacobian product through the gate
  (``autograd.grad`` of ``o`` with ``retain_graph``; the forward's graph must still exist).

A layer of ``lifetime: stream`` levels holds its stream clock in its state
(:mod:`nlc.runtime.lifetime`) and runs its mixers at ``pos`` plus that clock.

``layer.finish(state)`` applies every mixer's end-of-sequence flush policy (mixers without a
``finish`` method: unchanged; see :meth:`nlc.runtime.cms.CMSMixer.finish`).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..primitives.layers import RMSNorm
from .lifetime import split_clock, with_clock
from .transfer import Transfers

__all__ = ["Residual", "Parallel", "make_norm", "NORMS", "COMBINES"]

NORMS = ("rms", "layer", "none")
COMBINES = ("sum", "mean", "learned", "gate")


def make_norm(kind: str, width: int) -> nn.Module:
    """``rms`` -> RMSNorm (gain), ``layer`` -> LayerNorm (gain and bias), ``none`` -> identity."""
    if kind == "rms":
        return RMSNorm(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")


def _teaches(mixer: nn.Module) -> bool:
    return bool(getattr(mixer, "teach", False))


def _finish(mixer: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    fin = getattr(mixer, "finish", None)
    return fin(state) if fin is not None else dict(state)


class Residual(nn.Module):
    """``x + mixer(norm(x))`` (``residual=True``) or ``mixer(norm(x))``; see the module doc."""

    def __init__(self, mixer: nn.Module, norm: str, residual: bool, width: int,
                 transfers: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.mixer = mixer
        self.norm = make_norm(norm, width)
        self.norm_kind, self.residual = norm, residual
        self.teach = _teaches(mixer)
        self.transfers = Transfers(transfers, width, mixer.level) if transfers else None

    def init_state(self, batch: int) -> dict[str, Tensor]:
        return self.mixer.init_state(batch)

    def forward(self, x: Tensor, state: dict[str, Tensor], pos: int, *sources: Tensor
                ) -> tuple[Tensor, dict[str, Tensor]]:
        state, clock = split_clock(state)
        u = self.norm(x)
        if self.transfers is not None:
            u = self.transfers.condition(u, sources)
        y, state = self.mixer(u, state, pos + (clock or 0))
        if self.transfers is not None:
            y = self.transfers.generate(y, sources)
        return (x + y if self.residual else y), with_clock(state, clock)

    def learn(self, state: dict[str, Tensor], delta: Tensor, pos: int, due: frozenset[str]
              ) -> dict[str, Tensor]:
        return self.mixer.learn(state, delta, pos, self.mixer.level in due) if self.teach else dict(state)

    def finish(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return _finish(self.mixer, state)

    def extra_repr(self) -> str:
        return f"norm={self.norm_kind!r}, residual={self.residual}"


class Parallel(nn.Module):
    """Mixers side by side on the same normalised input, combined; see the module doc."""

    def __init__(self, mixers: Sequence[nn.Module], combine: str, norm: str, residual: bool,
                 width: int) -> None:
        super().__init__()
        if combine not in COMBINES:
            raise ValueError(f"unknown combine {combine!r}; expected one of {COMBINES}")
        if len(mixers) < 1:
            raise ValueError("a parallel layer needs at least one mixer")
        if combine == "gate" and len(mixers) != 2:
            raise ValueError(f"combine 'gate' (Titans MAG) takes exactly two mixers "
                             f"[attention, memory], got {len(mixers)}")
        self.mixers = nn.ModuleList(mixers)
        self.combine, self.norm_kind, self.residual = combine, norm, residual
        self.norm = make_norm(norm, width)
        n = len(mixers)
        self.logits = nn.Parameter(torch.zeros(n)) if combine == "learned" else None
        if combine == "gate":
            self.norm_a = make_norm(norm, width)
            self.norm_m = make_norm(norm, width)
        else:
            self.norm_a = self.norm_m = None
        self.teach = any(_teaches(m) for m in mixers)

    # ------------------------------------------------------------------ state layout
    @staticmethod
    def _sub(state: Mapping[str, Tensor], i: int) -> dict[str, Tensor]:
        p = f"{i}."
        return {k[len(p):]: v for k, v in state.items() if k.startswith(p)}

    @staticmethod
    def _prefixed(state: Mapping[str, Tensor], i: int) -> dict[str, Tensor]:
        return {f"{i}.{k}": v for k, v in state.items()}

    def init_state(self, batch: int) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for i, m in enumerate(self.mixers):
            out.update(self._prefixed(m.init_state(batch), i))
        return out

    def weights(self) -> Tensor | None:
        """The combine weights of ``learned`` (``softmax(logits)``), else None."""
        return None if self.logits is None else torch.softmax(self.logits, dim=0)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, state: dict[str, Tensor], pos: int
                ) -> tuple[Tensor, dict[str, Tensor]]:
        state, clock = split_clock(state)
        y, state = self._forward(x, state, pos + (clock or 0))
        return y, with_clock(state, clock)

    def _forward(self, x: Tensor, state: dict[str, Tensor], pos: int
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        u = self.norm(x)
        ys = []
        new: dict[str, Tensor] = {}
        for i, m in enumerate(self.mixers):
            y, st = m(u, self._sub(state, i), pos)
            ys.append(y)
            new.update(self._prefixed(st, i))
        if self.combine == "sum":
            o = ys[0]
            for y in ys[1:]:
                o = o + y
        elif self.combine == "mean":
            o = ys[0]
            for y in ys[1:]:
                o = o + y
            o = o * (1.0 / len(ys))
        elif self.combine == "learned":
            w = torch.softmax(self.logits, dim=0).to(x.dtype)
            o = ys[0] * w[0]
            for i in range(1, len(ys)):
                o = o + ys[i] * w[i]
        else:  # gate (Titans MAG): norm_a(attention) * sigmoid(norm_m(memory))
            o = self.norm_a(ys[0]) * torch.sigmoid(self.norm_m(ys[1]))
        if self.teach:
            new["out"] = o
        return (x + o if self.residual else o), new

    # ------------------------------------------------------------------ teach protocol
    def learn(self, state: dict[str, Tensor], delta: Tensor, pos: int, due: frozenset[str]
              ) -> dict[str, Tensor]:
        """``delta = dLoss/d state["out"]``; each teaching mixer learns from its share and
        applies its pending update when the schedule names its level in ``due``."""
        teach = [i for i, m in enumerate(self.mixers) if _teaches(m)]
        subs = [self._sub(state, i) for i in range(len(self.mixers))]
        delta = delta.detach()
        if self.combine == "sum":
            shares = [delta] * len(teach)
        elif self.combine == "mean":
            shares = [delta * (1.0 / len(self.mixers))] * len(teach)
        elif self.combine == "learned":
            w = torch.softmax(self.logits.detach(), dim=0).to(delta.dtype)
            shares = [delta * w[i] for i in teach]
        else:  # gate: the vector-Jacobian product through norm_a(a) * sigmoid(norm_m(m))
            shares = list(torch.autograd.grad(state["out"], [subs[i]["out"] for i in teach],
                                              grad_outputs=delta, retain_graph=True,
                                              allow_unused=True))
            shares = [torch.zeros_like(subs[i]["out"]) if g is None else g.detach()
                      for i, g in zip(teach, shares)]
        for i, share in zip(teach, shares):
            subs[i] = self.mixers[i].learn(subs[i], share, pos, self.mixers[i].level in due)
        new: dict[str, Tensor] = {}
        for i, sub in enumerate(subs):
            new.update(self._prefixed(sub, i))
        return new

    def finish(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        new: dict[str, Tensor] = {}
        for i, m in enumerate(self.mixers):
            new.update(self._prefixed(_finish(m, self._sub(state, i)), i))
        return new

    def extra_repr(self) -> str:
        return f"combine={self.combine!r}, norm={self.norm_kind!r}, residual={self.residual}"
