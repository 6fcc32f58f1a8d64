"""Learning-rate schedules of the optimizer levels, on each level's own clock.

Notation: ``n`` is the level's update number (1 for its first step; a level with
``period: {steps: k}`` makes update n at optimizer step n·k), ``N`` the number of updates
it makes in the run (``steps // k``), ``w`` its warm-up length in updates, ``η`` its
``lr``. The factor multiplying η is

* warm-up, ``n <= w``: ``n / w`` (linear from η/w; the first update never has lr 0);
* after it, with progress ``p = (n - w - 1) / max(1, N - w)`` in ``[0, 1)``:
  ``constant``: 1; ``linear``: ``1 - p``; ``cosine``: ``(1 + cos(π p)) / 2``.

So the first update after warm-up uses the full η and the last one a small positive lr
(the schedule would reach 0 one update after the run ends).
"""
from __future__ import annotations

import math


def lr_factor(schedule: str, warmup: int, n: int, total: int) -> float:
    """The multiplier of the base lr at update ``n`` (1-based) of ``total``."""
    if n < 1:
        raise ValueError(f"updates count from 1, got {n}")
    if n <= warmup:
        return n / warmup
    progress = (n - warmup - 1) / max(1, total - warmup)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"unknown lr schedule {schedule!r} (expected cosine, linear or constant)")
