"""Continual-learning metrics of a result matrix R (GEM; Chaudhry et al. 2018).

Notation: T stages (= tasks/domains, trained in order 0 .. T-1); ``R[k, j]`` is the score
on task j after finishing stage k; the last row ``R[T-1]`` is the final model.

For a score where **higher is better** (accuracy)::

    ACC        = (1/T)     sum_j        R[T-1, j]                     (Lopez-Paz & Ranzato, GEM)
    BWT        = (1/(T-1)) sum_{j<T-1} (R[T-1, j] - R[j, j])          (< 0: forgetting)
    forgetting = (1/(T-1)) sum_{j<T-1} (max_{l<T-1} R[l, j] - R[T-1, j])   (Chaudhry; > 0: forgot)

For a score where **lower is better** (loss, bits per byte; ``lower_is_better=True``) the
metrics keep the *same direction of meaning* -- BWT < 0 and forgetting > 0 mean the model
got worse on old tasks -- by computing BWT and forgetting on ``-R``:
``BWT = mean_j (R[j, j] - R[T-1, j])`` and ``forgetting = mean_j (R[T-1, j] - min_{l<T-1}
R[l, j])``, both in R's units (bits per byte). ACC stays the plain mean of the last row in
R's units (the final average bpb; lower is better there).

With a single stage there is no earlier task: BWT = forgetting = 0.
"""
from __future__ import annotations

import math
from typing import Sequence

from ..errors import NLCError

__all__ = ["ContinualError", "cl_metrics"]


class ContinualError(NLCError):
    """A continual-learning run or metric that cannot go ahead as asked."""


def _matrix(R: Sequence[Sequence[float]]) -> list[list[float]]:
    rows = [[float(v) for v in row] for row in R]
    size = len(rows)
    if size == 0 or any(len(row) != size for row in rows):
        raise ContinualError(f"R must be a non-empty square T x T matrix (stage x task); got "
                             f"row lengths {[len(row) for row in rows]}")
    if not all(math.isfinite(v) for row in rows for v in row):
        raise ContinualError("R has a non-finite entry (a diverged stage?): metrics need finite "
                             "scores")
    return rows


def cl_metrics(R: Sequence[Sequence[float]], lower_is_better: bool = False) -> dict[str, float]:
    """``{"acc", "bwt", "forgetting"}`` of the T x T matrix ``R`` (see the module doc).

    ``R`` is any nested sequence of numbers (a list of lists, a tensor, an array).
    """
    rows = _matrix(R)
    last = len(rows) - 1
    acc = sum(rows[last]) / len(rows)
    if last == 0:
        return {"acc": acc, "bwt": 0.0, "forgetting": 0.0}
    sign = -1.0 if lower_is_better else 1.0
    score = [[sign * v for v in row] for row in rows]
    bwt = sum(score[last][j] - score[j][j] for j in range(last)) / last
    forgetting = sum(max(score[l][j] for l in range(last)) - score[last][j]
                     for j in range(last)) / last
    return {"acc": acc, "bwt": bwt, "forgetting": forgetting}
