"""Continuum Memory System (CMS) levels: the chunk schedule and the sequential / independent /
nested chains that both forms (:mod:`~nlc.primitives.cms.chunk`,
:mod:`~nlc.primitives.cms.reference`) run on.

Notation (full legend in :mod:`nlc.primitives.cms`)::

    B batch   T tokens in the call   L number of levels   C_l chunk size of level l
    pos       tokens already streamed (absolute position of the call's first token)
    phase_l   pos mod C_l under the "carry" policy, else 0 (chunks restart at the call)
    w_l       aggregation weight of level l (independent variant)
    theta_l   level l's parameters;  acc_l  its pending gradient sum

Schedule (NL-NeurIPS Eqs. 30-31 = NL-arXiv Eqs. 70-71): the tokens of a chunk read with
the chunk-start parameters ``theta_xi``; the chunk of level l closes after the token with
absolute (1-based) position ``pos + t + 1 = 0 (mod C_l)``, where its pending sum is applied.
Both forms walk the call in segments (a :class:`Form`: chunked, the stretches between
consecutive boundaries of any level; reference, single tokens), add each segment's
gradients to the pending sums with their own ``step``, and apply the due levels' sums at
the end of each segment; the partial final chunk follows ``policy`` (carry / flush / drop).

Variants (NL-arXiv §7.1, Eqs. 72-74), levels in the listed order:

* ``"sequential"`` (NL-arXiv Eqs. 70-71/73): ``y = MLP_L(...MLP_1(x))``; an inner level's
  task signal is back-propagated through the later levels at their current (frozen)
  parameters.
* ``"independent"`` (NL-arXiv Eq. 74): ``y = sum_l w_l MLP_l(x)``; level l's task signal is
  ``w_l delta``.
* ``"nested"`` (NL-arXiv Eq. 72): the sequential chain plus re-initialisation. Levels sorted
  by chunk size (distinct, each a multiple of the next smaller, identical parameter shapes);
  when a level completes a chunk (after its own update), the next faster level is reset to
  its new parameters and its pending sum discarded -- cascading slow -> fast.
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from .mlp import LrLike, block_forward, check_kind, cms_mlp
from .state import (
    cms_merge_levels, cms_split_levels, fast_params, pack_levels, unpack_levels, zeros_like_all,
)

__all__ = [
    "POLICIES", "VARIANTS", "SIGNALS", "Form", "read_levels", "run_levels", "run_block",
    "run_stacked", "cms_read",
]

POLICIES = ("carry", "drop", "flush")
VARIANTS = ("sequential", "independent", "nested")
SIGNALS = ("local", "task")


class Form(NamedTuple):
    """How a form walks a call: ``step(params, accs, x, a, b, *, lrs, variant, weights,
    signal, target, delta, kind, residual)`` reads tokens ``a..b-1`` (inside one chunk of
    every level), returns their outputs and adds their gradients to ``accs``; ``per_token``:
    the segments are single tokens, else the stretches between consecutive boundaries."""

    step: Callable[..., Tensor]
    per_token: bool


# =========================================================================== validation
def _validate(levels: list[dict[str, Tensor]], x: Tensor, chunks: Sequence[int],
              lrs: Sequence[LrLike], variant: str, weights: Optional[Tensor], signal: str,
              target: Optional[Tensor], delta: Optional[Tensor], pos: int, policy: str,
              kind: str) -> None:
    check_kind(kind)
    if variant not in VARIANTS:
        raise ValueError(f"unknown CMS variant {variant!r}; expected one of {VARIANTS}")
    if signal not in SIGNALS:
        raise ValueError(f"unknown CMS error signal {signal!r}; expected one of {SIGNALS}")
    if policy not in POLICIES:
        raise ValueError(f"unknown flush policy {policy!r}; expected one of {POLICIES}")
    n = len(levels)
    if len(chunks) != n or len(lrs) != n:
        raise ValueError(f"{n} levels but {len(chunks)} chunk sizes and {len(lrs)} lrs")
    if any(int(c) != c or c < 1 for c in chunks):
        raise ValueError(f"chunk sizes must be positive ints, got {list(chunks)}")
    if int(pos) != pos or pos < 0:
        raise ValueError(f"pos must be a non-negative int, got {pos!r}")
    if x.dim() != 3:
        raise ValueError(f"x must be (B, T, D), got shape {tuple(x.shape)}")
    if variant == "independent" and (weights is None or weights.shape != (n,)):
        raise ValueError(f"independent CMS needs weights of shape ({n},)")
    if variant == "nested":
        order = _slow_to_fast(chunks)
        for s, f in zip(order[:-1], order[1:]):
            if chunks[s] == chunks[f] or chunks[s] % chunks[f]:
                raise ValueError("nested CMS needs distinct chunk sizes, each a multiple of the "
                                 f"next smaller one, got {list(chunks)}")
            if {k: v.shape for k, v in levels[s].items()} != \
                    {k: v.shape for k, v in levels[f].items()}:
                raise ValueError("nested CMS levels must have identical parameter shapes")
    if signal == "task" and delta is None:
        raise ValueError("signal='task' needs delta = dL/d(output), shape (B, T, Dout)")
    if signal == "task" and delta.shape[:2] != x.shape[:2]:
        raise ValueError(f"delta shape {tuple(delta.shape)} does not match x {tuple(x.shape)}")
    if target is not None and target.shape[:2] != x.shape[:2]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match x {tuple(x.shape)}")


# =========================================================================== schedule
def _due(phases: Sequence[int], chunks: Sequence[int], n_done: int) -> list[int]:
    """Levels whose chunk ends after ``n_done`` tokens of this call."""
    return [l for l, (ph, c) in enumerate(zip(phases, chunks)) if (ph + n_done) % c == 0]


def _cuts(phases: Sequence[int], chunks: Sequence[int], T: int) -> list[int]:
    """Ends of the chunked form's segments: every level's boundaries in the call, and T."""
    cuts = {T}
    for ph, c in zip(phases, chunks):
        cuts.update(range(c - ph, T, c))
    cuts.discard(0)
    return sorted(cuts)


def _slow_to_fast(chunks: Sequence[int]) -> list[int]:
    """Level indices sorted by chunk size, largest (slowest) first."""
    return sorted(range(len(chunks)), key=lambda l: (-chunks[l], l))


def _boundary(params: list[dict], accs: list[dict], due: Sequence[int], variant: str,
              chunks: Sequence[int]) -> None:
    """Apply the due levels' summed updates (NL-arXiv Eq. 71) and the nested resets
    (NL-arXiv Eq. 72).

    Mutates the Python lists only (never a tensor)."""
    for l in due:
        params[l] = {k: params[l][k] - accs[l][k] for k in params[l]}
        accs[l] = zeros_like_all(accs[l])
    if variant == "nested" and due:
        order = _slow_to_fast(chunks)
        for s, f in zip(order[:-1], order[1:]):  # cascade slow -> fast
            if s in due:
                params[f] = dict(params[s])
                accs[f] = zeros_like_all(accs[f])


# =========================================================================== forward of all levels
def read_levels(params: Sequence[dict], u: Tensor, *, variant: str, weights: Optional[Tensor],
                kind: str, residual: bool) -> tuple[Tensor, list, list, list]:
    """Every level read on ``u (B, n, Din)`` with its current parameters. Returns the output
    (chain for sequential/nested, ``sum_l w_l y_l`` for independent) and per level its
    input, output and :func:`block_forward` cache."""
    chained = variant != "independent"
    ins, ys, caches = [], [], []
    inp = u
    for p in params:
        y_l, cache = block_forward(p, inp, kind, residual)
        ins.append(inp)
        ys.append(y_l)
        caches.append(cache)
        if chained:
            inp = y_l
    if chained:
        return ys[-1], ins, ys, caches
    out = ys[0] * weights[0].to(u.dtype)
    for l in range(1, len(ys)):
        out = out + ys[l] * weights[l].to(u.dtype)
    return out, ins, ys, caches


# =========================================================================== driver
def run_levels(levels: list[dict[str, Tensor]], x: Tensor, *, form: Form, chunks: Sequence[int],
               lrs: Sequence[LrLike], variant: str, weights: Optional[Tensor], signal: str,
               target: Optional[Tensor], delta: Optional[Tensor], pos: int, policy: str,
               kind: str, residual: bool) -> tuple[Tensor, list[dict[str, Tensor]]]:
    """Stream ``x (B, T, Din)`` through the levels (``form``: chunked or reference; same
    results). Returns ``(y (B, T, Dout), new level states)``."""
    _validate(levels, x, chunks, lrs, variant, weights, signal, target, delta, pos, policy, kind)
    B, T, _ = x.shape
    phases = [pos % c if policy == "carry" else 0 for c in chunks]
    cuts = range(1, T + 1) if form.per_token else _cuts(phases, chunks, T)
    params, accs = unpack_levels(levels)
    outs, a = [], 0
    for b in cuts:
        outs.append(form.step(params, accs, x, a, b, lrs=lrs, variant=variant, weights=weights,
                         signal=signal, target=target, delta=delta, kind=kind,
                         residual=residual))
        _boundary(params, accs, _due(phases, chunks, b), variant, chunks)
        a = b
    if outs:
        y = torch.cat(outs, dim=1)
    else:
        y = x.new_zeros(B, 0, params[0 if variant == "independent" else -1]["w_out"].shape[1])
    if T > 0 and policy == "flush":
        _boundary(params, accs, list(range(len(params))), variant, chunks)
    elif T > 0 and policy == "drop":
        accs = [zeros_like_all(acc) for acc in accs]
    return y, pack_levels(params, accs)


def run_block(form: Form, state: Mapping[str, Tensor], x: Tensor, *, chunk: int, lr: LrLike,
              **kw) -> tuple[Tensor, dict[str, Tensor]]:
    """One block (an unprefixed state) as a single sequential level: ``(y, new_state)``."""
    y, levels = run_levels([dict(state)], x, form=form, chunks=[chunk], lrs=[lr],
                           variant="sequential", weights=None, **kw)
    return y, levels[0]


def run_stacked(form: Form, state: Mapping[str, Tensor], x: Tensor, **kw
                ) -> tuple[Tensor, dict[str, Tensor]]:
    """Several levels (a ``level{i}.*`` state): ``(y, new_state)``."""
    y, levels = run_levels(cms_split_levels(state), x, form=form, **kw)
    return y, cms_merge_levels(levels)


def cms_read(state: Mapping[str, Tensor], x: Tensor, *, variant: str = "sequential",
             weights: Optional[Tensor] = None, kind: str = "gelu", residual: bool = False
             ) -> Tensor:
    """Outputs with the current parameters, no update: the read a compiler runs before the
    task loss of a chunk (valid for tokens inside the current chunk of every level). Takes a
    single-block state (unprefixed) or a multi-level one (``level{i}.*``)."""
    check_kind(kind)
    if not any(k.startswith("level0.") for k in state):
        return cms_mlp(state, x, kind=kind, residual=residual)
    levels = [fast_params(lv) for lv in cms_split_levels(state)]
    if variant not in VARIANTS:
        raise ValueError(f"unknown CMS variant {variant!r}")
    if variant == "independent" and weights is None:
        raise ValueError("independent CMS needs weights")
    return read_levels(levels, x, variant=variant, weights=weights, kind=kind,
                       residual=residual)[0]
