"""Level lifetimes at run time (docs/design.md, "Level semantics"; validation rule 12).

Notation::

    S   tokens a stream consumed before the current sequence
    pos tokens of the current sequence consumed before a call (``state["pos"]``)
    P   a layer's phase period: the lcm of its mixers' periods and chunks

A layer whose levels have ``lifetime: stream`` keeps its state from one sequence to the
next of the same stream (one batch row is one stream); one of ``lifetime: document`` does
too, and is reset to its initial state, row by row, where a document begins
(:func:`reset_rows`; the data is laid out so that documents begin at multiples of P,
:mod:`nlc.data.documents`). Its state carries ``CLOCK = S mod
P``, and the layer runs its mixers at position ``pos + CLOCK``: every mixer reads a position
only modulo its own period or chunk, so this equals running the whole stream in one call,
while a ``sequence`` layer (no ``CLOCK``) keeps today's positions exactly. ``S`` is kept
modulo ``P`` so that positions stay small and a compiled graph sees few distinct values.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor, nn

from ..errors import NLCError

CLOCK = "clock"  # key of a stream layer's state: S mod P (a Python int)
# Per-call teach keys of a layer state, consumed by ``learn`` and never carried: the last
# forward's input and output, and a CMS read's hidden activations (its summed gradient
# reuses them; nlc.runtime.cms). A Parallel layer prefixes them with its mixer's index.
TEACH_KEYS = ("in", "out", "hidden_pre", "hidden_up", "hidden")


def lifetime_of(layer: nn.Module) -> str:
    """The lifetime of a layer's levels (validation makes a layer's levels agree)."""
    found = {getattr(m, "lifetime", "sequence") for m in layer.modules()} - {"sequence"}
    return found.pop() if found else "sequence"


def phase_period(layer: nn.Module) -> int:
    """``P``: the lcm of the periods and chunks of the mixers inside ``layer``."""
    found = [int(v) for m in layer.modules() for a in ("period", "phase", "chunk", "chunk_memory", "chunk_other")
             if isinstance(v := getattr(m, a, None), int) and v > 0]
    return math.lcm(1, *found)


def split_clock(state: Mapping) -> tuple[dict, int | None]:
    """``state`` without ``CLOCK``, and the clock (None: a sequence layer)."""
    if CLOCK not in state:
        return dict(state), None
    return {k: v for k, v in state.items() if k != CLOCK}, state[CLOCK]


def with_clock(state: dict, clock: int | None) -> dict:
    """``state`` with the clock put back (unchanged for a sequence layer)."""
    if clock is not None:
        state[CLOCK] = clock
    return state


def detach_state(state):
    """A model state (nested dicts of tensors and ints) with every tensor cut from the
    autograd graph: what a caller hands across a boundary gradients must not cross
    (generation's steps, a deployment's segments)."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, Mapping):
        return {k: detach_state(v) for k, v in state.items()}
    return state


def carried(state: Mapping, consumed: int, period: int) -> dict:
    """A stream layer's state for the next sequence after ``consumed`` more tokens: the
    tensors detached (gradients stop at the sequence boundary), the teach keys dropped."""
    out = {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in state.items()
           if k != CLOCK and k.rsplit(".", 1)[-1] not in TEACH_KEYS}
    out[CLOCK] = (state[CLOCK] + consumed) % period
    return out


def reset_rows(state: dict, fresh: Mapping, rows: Tensor, pos: int, period: int, name: str) -> dict:
    """A document layer's ``state`` with the batch rows ``rows`` (B,) bool replaced by the
    ``fresh`` state, at stream position ``pos + CLOCK``, which must be a multiple of the
    layer's phase period ``period``: there no mixer holds a partial chunk or period, so the
    fresh rows are exactly the state a new stream starts from."""
    phase = (pos + state[CLOCK]) % period
    if phase:
        raise NLCError(f"a document begins at token {pos} of the sequence, where layer {name!r} (lifetime: document) "
                       f"is {phase} tokens into its period of {period}: documents must begin on its grid (lay "
                       "the data out with nlc.data.lay_out(tokens, offsets, model.document_period))")
    out = dict(state)
    for key, value in fresh.items():
        if isinstance(value, Tensor) and key in state:
            keep = rows.view(-1, *[1] * (value.dim() - 1)).to(value.device)
            out[key] = torch.where(keep, value.to(state[key].dtype), state[key])
    return out


def until_boundary(teaching: list[tuple[int, int]], pos: int) -> int:
    """Tokens from ``pos`` to the next teach boundary, given each teaching layer's (clock,
    period): segments of the gcd ``g`` of the periods on the grid of each clock (0 for a
    sequence layer, so a model without stream layers cuts every ``g`` tokens from the start)."""
    grids: dict[int, int] = {}
    for clock, period in teaching:
        grids[clock] = math.gcd(grids.get(clock, 0), period)
    return min(g - (pos + clock) % g for clock, g in grids.items())
