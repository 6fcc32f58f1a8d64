"""Chunk-phase carry: a chunk-frozen memory streams exactly at any split.

A chunk-frozen rule (Titans / MIRAS / ATLAS deep memories, DGD on the l2 objective, the Omega
rule, HOPE's self-modifying memories, all with chunk C > 1) takes every token's inner
gradient at the state of its chunk's start, and its primitive counts chunks from the start
of each call. A call that began off the absolute chunk grid would open a chunk where the
whole sequence has none. This module keeps the grid absolute: the mixer's state holds the
*anchor* (its state at the last chunk boundary) and the *tail* (the inputs since), and a
call recomputes from the anchor.

Notation::

    B batch   T tokens in the call   D width   C the chunk (grid of frozen gradients)
    pos   tokens consumed before the call;   r = pos mod C   tokens since the last boundary
    A     the anchor: the mixer's whole state at position pos - r (a multiple of C), its
          per-token carries (short-convolution histories, per-chunk knob values) included
    tail  (B, r, D) the mixer inputs since that boundary (state key ``"tail"``)
    step(x, state, p) -> (y, state)   the mixer's plain forward from a chunk boundary p

One call with new inputs x (B, T, D), :func:`aligned_forward`::

    u      = cat(tail, x)                         (B, r + T, D), starts on the grid at pos - r
    m      = C floor((r + T) / C)                 the aligned prefix: whole chunks
    y1, A' = step(u[:, :m], A, pos - r)           advances the anchor
    y2, _  = step(u[:, m:], A', pos - r + m)      the partial chunk; its state is dropped
    y      = cat(y1, y2)[:, r:]                   the outputs of the new tokens only
    state  = A' with tail = u[:, m:]

A chunk-frozen primitive is causal and computes a partial chunk exactly as the first tokens
of a whole one, so every split gives the outputs and the anchor of one call on the whole
sequence (up to float rounding). Gradients reach the meta-learned initial state through the
anchor, and the earlier calls' inputs through the stored tail. Cost: a call recomputes its r
tail tokens, so decoding token by token does O(C) work per token for such a memory (the
chunk-frozen rule itself needs the whole chunk's inputs); training on a whole sequence has
r = 0 and, with T a multiple of C, is exactly one ``step`` call (static shapes: the path
``torch.compile(fullgraph=True)`` captures). Branches are on shapes and ``pos`` only.

:func:`materialise` gives the state *at* ``pos`` (the anchor advanced over the tail), for a
reader that needs the memory mid-chunk (Titans MAC's segment-start retrieval).

``pad_end`` is for the deep primitive with an lq or elastic global retention read after
write: it applies its boundary map at the end of every call, so the last token of a call
ending mid-chunk would read the mapped weights. The partial-chunk step then runs on one more
token (a copy of the last; causal, so it changes no kept output) and drops its output.
:func:`materialise` keeps the primitive's end-of-call map (the state it returns).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["TAIL", "Step", "init_tail", "aligned_forward", "materialise"]

TAIL = "tail"
State = dict[str, Tensor]
Step = Callable[[Tensor, State, int], tuple[Tensor, State]]


def init_tail(batch: int, width: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The empty tail ``(B, 0, D)`` of a sequence that starts on a chunk boundary."""
    return torch.zeros(batch, 0, width, dtype=dtype, device=device)


def _anchor(state: State, pos: int, chunk: int, owner: str, key: str = TAIL) -> tuple[State, Tensor, int]:
    """The anchor, the tail (state key ``key``) and the anchor's position; checks that it
    sits on the grid."""
    tail = state[key]
    start = pos - tail.shape[1]
    if start < 0 or start % chunk:
        raise ValueError(f"level {owner!r}: a state holding {tail.shape[1]} tail tokens cannot "
                         f"continue at pos {pos} (chunk {chunk}); pass pos = the tokens this "
                         f"state has consumed")
    return {k: v for k, v in state.items() if k != key}, tail, start


def aligned_forward(step: Step, x: Tensor, state: State, pos: int, chunk: int, *,
                    pad_end: bool = False, owner: str = "?", key: str = TAIL) -> tuple[Tensor, State]:
    """``step`` on the absolute chunk grid (module docstring): ``(y (B, T, D'), state)``,
    the tail kept under ``key`` (a mixer with two grids keeps two tails)."""
    anchor, tail, start = _anchor(state, pos, chunk, owner, key)
    r = tail.shape[1]
    if x.shape[1] == 0:
        return x, dict(state)
    u = x if r == 0 else torch.cat([tail, x], 1)
    n = u.shape[1]
    m = n - n % chunk
    ys = []  # a step over all of u takes u, not a full slice: a plain call's backward graph
    if m:
        y, anchor = step(u if m == n else u[:, :m], anchor, start)
        ys.append(y)
    if m < n:
        rest = u if m == 0 else u[:, m:]
        if pad_end:
            rest = torch.cat([rest, rest[:, -1:]], 1)
        y, _ = step(rest, anchor, start + m)
        ys.append(y[:, :n - m] if pad_end else y)
    y = ys[0] if len(ys) == 1 else torch.cat(ys, 1)
    new = dict(anchor)
    new[key] = u[:, m:]
    return (y if r == 0 else y[:, r:]), new


def materialise(step: Step, state: State, pos: int, chunk: int, *, owner: str = "?") -> State:
    """The state at ``pos`` without a tail: the anchor advanced over the tail tokens."""
    anchor, tail, start = _anchor(state, pos, chunk, owner)
    if tail.shape[1] == 0:
        return anchor
    return step(tail, anchor, start)[1]
