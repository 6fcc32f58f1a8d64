"""Matching models to a parameter count: pick the width, then fine-tune the MLP hidden sizes.

Notation: P(D, h) is the spec's parameter count (:func:`nlc.graph.sizes.total_params`,
analytic, equal to the compiled model's count) at width D with every ``type: mlp`` level
(Transformer MLPs and CMS levels alike) given hidden size h; P*(D) is the count at width D
with the spec's own hidden sizes; H the spec's heads; P_t the target.

1. D: the multiple of 2H (so every head has an even dimension, as RoPE needs) whose
   P*(D) is nearest P_t on a log scale (ties: the smaller width).
2. h: when ``|P*(D) / P_t - 1| > tolerance`` and the spec has MLP levels, the h in
   [1, 16 D] whose P(D, h) is nearest P_t (P is increasing in h: a bisection).
3. The match fails with :class:`ParamMatchError` when neither brings P within
   ``tolerance`` of P_t (a spec without MLP levels whose width grid is too coarse).

The result is a list of overrides (``model.width=D``, ``levels.<mlp>.hidden=h``) that
``nlc.compile`` / ``nlc.train`` apply on top of the spec.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import NLCError
from ..graph.sizes import total_params
from ..graph.validate import load_spec
from ..spec.levels import MLPLevel

MAX_WIDTH = 4096
HIDDEN_PER_WIDTH = 16


class ParamMatchError(NLCError):
    """A spec cannot be brought within the tolerance of the target parameter count."""


@dataclass(frozen=True)
class ParamMatch:
    """The overrides that match one spec to ``target``, and the count they give."""

    spec: str
    target: int
    width: int
    hidden: int | None                # the MLP hidden size set, None when the spec's own fit
    params: int
    overrides: tuple[str, ...] = field(default_factory=tuple)

    @property
    def deviation(self) -> float:
        """``params / target - 1`` (0.03 = 3% above the target)."""
        return self.params / self.target - 1.0

    def to_json(self) -> dict:
        return {"spec": self.spec, "target": self.target, "width": self.width, "hidden": self.hidden,
                "params": self.params, "deviation": self.deviation, "overrides": list(self.overrides)}

    @classmethod
    def from_json(cls, data: dict) -> "ParamMatch":
        """The inverse of :meth:`to_json`."""
        return cls(data["spec"], data["target"], data["width"], data["hidden"], data["params"],
                   tuple(data["overrides"]))


def spec_params(spec_path: str | Path, overrides: Sequence[str] = ()) -> int:
    """The parameter count of the spec with ``overrides`` (analytic: no model is built)."""
    return total_params(load_spec(spec_path, list(overrides)))


def mlp_levels(spec_path: str | Path, overrides: Sequence[str] = ()) -> list[str]:
    """Names of the spec's ``type: mlp`` levels (Transformer MLPs and CMS levels)."""
    spec = load_spec(spec_path, list(overrides))
    return [name for name, level in spec.levels.items() if isinstance(level, MLPLevel)]


def _log_gap(params: int, target: int) -> float:
    return abs(math.log(params / target))


def match_params(spec_path: str | Path, target: int, *, tolerance: float = 0.05,
                 overrides: Sequence[str] = ()) -> ParamMatch:
    """The width and MLP hidden size that bring the spec within ``tolerance`` of ``target``
    parameters (module doc); ``overrides`` are applied first (e.g. ``model.heads=2``)."""
    if target < 1 or not 0 < tolerance < 1:
        raise ParamMatchError(f"need target >= 1 and 0 < tolerance < 1, got {target} and {tolerance}")
    base = list(overrides)
    heads = load_spec(spec_path, base).model.heads
    step = 2 * heads

    def count(width: int, hidden: int | None = None) -> int:
        extra = [f"model.width={width}"]
        if hidden is not None:
            extra += [f"levels.{name}.hidden={hidden}" for name in mlps]
        return spec_params(spec_path, [*base, *extra])

    mlps = mlp_levels(spec_path, base)
    width, params = _nearest_width(count, target, step)
    hidden = None
    if abs(params / target - 1) > tolerance and mlps:
        hidden = _nearest_hidden(lambda h: count(width, h), target, HIDDEN_PER_WIDTH * width)
        params = count(width, hidden)
    name = Path(spec_path).stem
    if abs(params / target - 1) > tolerance:
        raise ParamMatchError(
            f"{name}: the nearest count is {params:,} parameters (width {width}"
            + (f", MLP hidden {hidden}" if hidden else "") + f"), {params / target - 1:+.1%} from the target "
            f"{target:,}, outside +-{tolerance:.0%}; give the spec an MLP level or loosen the tolerance")
    extra = [f"model.width={width}", *([f"levels.{n}.hidden={hidden}" for n in mlps] if hidden else [])]
    return ParamMatch(name, target, width, hidden, params, tuple([*base, *extra]))


def _nearest_width(count, target: int, step: int) -> tuple[int, int]:
    """The multiple of ``step`` whose count is nearest ``target`` (counts grow with width)."""
    best = (step, count(step))
    width = step
    while width + step <= MAX_WIDTH:
        width += step
        params = count(width)
        if _log_gap(params, target) < _log_gap(best[1], target):
            best = (width, params)
        if params > target:
            break
    return best


def _nearest_hidden(count, target: int, high: int) -> int:
    """The hidden size in [1, high] whose (increasing) count is nearest ``target``."""
    low = 1
    if count(low) >= target:
        return low
    if count(high) <= target:
        return high
    while high - low > 1:  # invariant: count(low) < target <= count(high)
        middle = (low + high) // 2
        if count(middle) < target:
            low = middle
        else:
            high = middle
    return min((low, high), key=lambda h: _log_gap(count(h), target))
