"""Seeds to statistics: mean ± std, median, divergence rate, ranks and the pairwise order.

Notation, for one metric and one model: v_1..v_N are the values of its N seeds, each one of

* *missing* (None): the metric does not apply (a length shorter than the task's prompt).
  Left out of everything; N counts only the seeds that are not missing;
* *diverged*: not finite (nan, ±inf: a run whose loss blew up). A diverged run is a result:
  d = the number of diverged seeds, divergence rate = d / N;
* *finite*: x_1..x_n, n = N - d.

and w is the worst value of the metric's scale: +inf where lower is better (bpb), -inf
where higher is better (accuracy).

* mean = (1/n) Σ x_i and std = sqrt(Σ (x_i - mean)^2 / (n - 1)) over the finite values only
  (the sample standard deviation; 0 for n = 1): the size of the runs that finished and their
  seed-to-seed noise. A model with n = 0 has no mean.
* median over all N seeds with every diverged seed counted as w: the middle of the sorted
  values (for even N the mean of the middle two; a middle pair holding w gives w). The median
  is w exactly when at least half the seeds diverged: a model that diverged on 2 of 3 seeds
  has median(x, w, w) = w, however good its finite seed.
* rank: the models ordered by median, 1 = best; equal medians share the smallest rank
  ("competition" ranking: 1, 2, 2, 4), so all models with median w tie for last.
* spread s = std when n ≥ 2, else 0.

Pairwise order of models a and b: a is *ordered* ahead of b when its median is better and
|median_a - median_b| > max(s_a, s_b), i.e. the difference of the central values exceeds the
spread of both. Otherwise the pair is *unresolved*, for one of these reasons:

* ``1 seed``: N < 2 for either model. One seed has no spread, so one seed orders nothing;
* ``within the spread``: the difference is at most the larger spread (equal included);
* ``diverged medians``: both medians are w (w - w is undefined; they tie in rank too).

Why these choices: the median with diverged seeds at w ranks a model by what a typical seed
gives, divergence included, without letting one diverged seed of three (or one lucky finite
seed of three) decide; the spread is the std of the finished runs, the same number the
tables print after ±, so a reader can check every verdict by eye. The spread uses only
finite values because a diverged seed has no size; its effect is in the median. With N ≥ 2,
n < 2 happens only when the median is w, where every difference to a finite median is
infinite: a spread of 0 there orders the finite model ahead, as the ranks do.

An ordered pair always agrees with the ranks (the better median has the better rank); an
unresolved pair may still have different ranks.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Mapping, Sequence

UNRESOLVED_ONE_SEED = "1 seed"
UNRESOLVED_SPREAD = "within the spread"
UNRESOLVED_DIVERGED = "diverged medians"


@dataclass(frozen=True)
class Stat:
    """One model's statistics for one metric (module doc). ``n``: finite seeds, ``seeds``:
    seeds that are not missing (N); ``median`` may be ±inf (the worst value w)."""

    mean: float | None
    std: float | None
    n: int
    rank: int | None = None
    median: float | None = None
    seeds: int = 0

    @property
    def diverged(self) -> int:
        return self.seeds - self.n

    @property
    def divergence_rate(self) -> float | None:
        return self.diverged / self.seeds if self.seeds else None

    @property
    def spread(self) -> float:
        return self.std if self.n >= 2 and self.std is not None else 0.0

    def to_json(self) -> dict:
        """The fields, plus ``diverged`` and ``divergence_rate`` (read back by :meth:`from_json`)."""
        return {**asdict(self), "diverged": self.diverged, "divergence_rate": self.divergence_rate}

    @classmethod
    def from_json(cls, data: Mapping) -> "Stat":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def worst(higher_is_better: bool) -> float:
    """The worst value w of a metric's scale (module doc)."""
    return -math.inf if higher_is_better else math.inf


def median(values: Sequence[float]) -> float:
    """The middle of the sorted values; the mean of the middle two for an even count."""
    xs = sorted(values)
    middle = len(xs) // 2
    if len(xs) % 2:
        return xs[middle]
    return (xs[middle - 1] + xs[middle]) / 2


def seed_stat(values: Sequence[float | None], higher_is_better: bool) -> Stat:
    """Mean ± std of the finite values, median with diverged values at w, counts (module doc)."""
    present = [float(v) for v in values if v is not None]
    finite = [x for x in present if math.isfinite(x)]
    if not present:
        return Stat(None, None, 0)
    middle = median([x if math.isfinite(x) else worst(higher_is_better) for x in present])
    if not finite:
        return Stat(None, None, 0, median=middle, seeds=len(present))
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((x - mean) ** 2 for x in finite) / (len(finite) - 1)) if len(finite) > 1 else 0.0
    return Stat(mean, std, len(finite), median=middle, seeds=len(present))


def ranked(per_model: Mapping[str, Sequence[float | None]], higher_is_better: bool) -> dict[str, Stat]:
    """``model -> Stat`` with ranks by median (module doc); a model with no values has none."""
    stats = {model: seed_stat(values, higher_is_better) for model, values in per_model.items()}
    medians = [s.median for s in stats.values() if s.median is not None]
    out = {}
    for model, stat in stats.items():
        if stat.median is None:
            out[model] = stat
            continue
        better = sum(1 for m in medians if (m > stat.median if higher_is_better else m < stat.median))
        out[model] = Stat(stat.mean, stat.std, stat.n, better + 1, stat.median, stat.seeds)
    return out


def unresolved_reason(difference: float, *stats: Stat) -> str | None:
    """Why ``difference`` (of central values of ``stats``) resolves nothing, or None when it
    exceeds the spread of every one of them (module doc)."""
    if any(stat.seeds < 2 for stat in stats):
        return UNRESOLVED_ONE_SEED
    if math.isnan(difference):
        return UNRESOLVED_DIVERGED
    if not abs(difference) > max(stat.spread for stat in stats):
        return UNRESOLVED_SPREAD
    return None


@dataclass(frozen=True)
class Order:
    """The order of a pair (a, b): ``verdict`` "ahead" (a better), "behind" (b better),
    "unresolved" (``reason`` says why) or "missing" (a model without values)."""

    verdict: str
    reason: str | None = None


def order(a: Stat, b: Stat, higher_is_better: bool) -> Order:
    """Whether ``a`` is ordered ahead of or behind ``b`` (module doc)."""
    if a.median is None or b.median is None:
        return Order("missing", "no values")
    reason = unresolved_reason(a.median - b.median, a, b)
    if reason is not None:
        return Order("unresolved", reason)
    return Order("ahead" if (a.median > b.median) == higher_is_better else "behind")


def format_value(value: float | None, digits: int = 3, percent: bool = False) -> str:
    """One number as the tables print it: ``--`` when missing, ``diverged`` when infinite."""
    if value is None:
        return "--"
    if not math.isfinite(value):
        return "diverged"
    return f"{100 * value:.1f}%" if percent else f"{value:.{digits}f}"


def format_stat(stat: Stat, digits: int = 3, percent: bool = False) -> str:
    """``mean ± std, med M`` (the median only with two seeds or more); ``diverged`` when no
    seed ended finite; ``--`` without values. Percentages for accuracies (no % sign)."""
    if stat.seeds == 0:
        return "--"
    scale, places = (100.0, 1) if percent else (1.0, digits)
    if stat.mean is None:
        return "diverged"
    text = f"{stat.mean * scale:.{places}f}"
    if stat.n > 1:
        text += f" ± {stat.std * scale:.{places}f}"
    if stat.seeds > 1:
        text += ", med " + ("diverged" if not math.isfinite(stat.median) else f"{stat.median * scale:.{places}f}")
    return text
