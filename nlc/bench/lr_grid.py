"""Choosing a model's learning rate from a geometric grid that brackets the optimum.

Protocol (:func:`search_lr`): score every lr of the starting grid (lr_1 < ... < lr_k, each
``ratio`` times the last; lower scores are better). A diverged point (score NaN or inf)
counts as the worst of all. Then, while the best point is at an edge of the points scored
so far, add one lr beyond that edge and score it:

* best at the low edge  -> add ``min / ratio``;
* best at the high edge -> add ``max * ratio``;
* every point diverged  -> add ``min / ratio`` (downward: divergence means "too large").

At most ``max_extensions`` points are added; each is recorded with the reason. Ties go to
the smaller lr (with every point diverged the smallest lr is chosen, and the search says
so). The result is *bracketed* when the chosen lr has a scored point on both sides: a
larger lr scored worse and a smaller lr scored worse, so the optimum of this budget lies
between them. A one-point grid extends downward first, then upward.

The scores come from whatever the caller trains (:mod:`.run`: the tune split at a fraction
of the reported budget, :mod:`.tune_split`); this module only decides which lr to try next.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from ..errors import NLCError


class LRGridError(NLCError):
    """A learning-rate grid that is not geometric with the stated ratio, or a bad bound."""


@dataclass
class GridSearch:
    """What the search scored and chose. ``points``: ``[lr, score]`` in the order scored;
    ``extensions``: ``{"lr", "reason"}`` of every point added beyond the starting grid."""

    ratio: float
    max_extensions: int
    points: list[list[float]] = field(default_factory=list)
    extensions: list[dict] = field(default_factory=list)
    best_lr: float = math.nan
    bracketed: bool = False
    all_diverged: bool = False

    def to_json(self) -> dict:
        return asdict(self)


def rank_key(lr: float, score: float) -> tuple[float, float]:
    """The order of grid points: finite scores first, lowest first; ties to the smaller lr."""
    return (score if math.isfinite(score) else math.inf, lr)


def check_grid(lrs: Sequence[float], ratio: float, max_extensions: int) -> None:
    """Raise :class:`LRGridError` unless ``lrs`` is increasing, positive and geometric with ``ratio``."""
    if not lrs or any(lr <= 0 for lr in lrs):
        raise LRGridError(f"the lr grid needs positive values, got {list(lrs)}")
    if ratio <= 1:
        raise LRGridError(f"the lr grid's ratio must exceed 1, got {ratio}")
    if max_extensions < 0:
        raise LRGridError(f"max_extensions must be >= 0, got {max_extensions}")
    for low, high in zip(lrs, lrs[1:]):
        if not math.isclose(high / low, ratio, rel_tol=1e-6):
            raise LRGridError(f"the lr grid {list(lrs)} is not geometric with ratio {ratio:g} "
                              f"({high:g} / {low:g} = {high / low:g})")


def _next_lr(scored: dict[float, float], ratio: float) -> tuple[float, str] | None:
    """The lr to add beyond an edge, with the reason, or None when the best is interior."""
    low, high = min(scored), max(scored)
    if not any(math.isfinite(score) for score in scored.values()):
        return low / ratio, f"every point diverged: extended down from {low:g}"
    best = min(scored, key=lambda lr: rank_key(lr, scored[lr]))
    if best == low:
        return low / ratio, f"best at the low edge {low:g}"
    if best == high:
        return high * ratio, f"best at the high edge {high:g}"
    return None


def search_lr(score: Callable[[float], float], lrs: Sequence[float], ratio: float,
              max_extensions: int) -> GridSearch:
    """Score ``lrs`` with ``score(lr)`` and extend the grid past its edges (module doc)."""
    check_grid(lrs, ratio, max_extensions)
    search = GridSearch(ratio=ratio, max_extensions=max_extensions)
    scored: dict[float, float] = {}

    def add(lr: float) -> None:
        scored[lr] = float(score(lr))
        search.points.append([lr, scored[lr]])

    for lr in lrs:
        add(lr)
    while len(search.extensions) < max_extensions and (step := _next_lr(scored, ratio)) is not None:
        lr, reason = step
        search.extensions.append({"lr": lr, "reason": reason})
        add(lr)
    best = min(scored, key=lambda lr: rank_key(lr, scored[lr]))
    search.best_lr = best
    search.all_diverged = not any(math.isfinite(s) for s in scored.values())
    search.bracketed = not search.all_diverged and min(scored) < best < max(scored)
    return search
