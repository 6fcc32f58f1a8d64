"""Mean ± standard deviation over seeds, and ranks across models.

Notation: for one metric and model, x_1..x_n are the values of the n seeds;
mean = (1/n) Σ x_i, std = sqrt(Σ (x_i - mean)^2 / (n - 1)) (the sample standard deviation;
0 for n = 1). Ranks order the models' means, 1 = best (``higher_is_better`` says which
end); equal means share the smallest rank ("competition" ranking: 1, 2, 2, 4). Missing
values (None: a length the task cannot fill) are left out; a model with none has no
mean and no rank.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence


@dataclass(frozen=True)
class Stat:
    mean: float | None
    std: float | None
    n: int
    rank: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def mean_std(values: Sequence[float | None]) -> Stat:
    """Mean and sample std of the values that are not None (module doc)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return Stat(None, None, 0)
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return Stat(mean, std, len(xs))


def ranked(per_model: Mapping[str, Sequence[float | None]], higher_is_better: bool) -> dict[str, Stat]:
    """``model -> Stat`` with ranks (module doc)."""
    stats = {model: mean_std(values) for model, values in per_model.items()}
    means = [s.mean for s in stats.values() if s.mean is not None]
    out = {}
    for model, stat in stats.items():
        if stat.mean is None:
            out[model] = stat
            continue
        better = sum(1 for m in means if (m > stat.mean if higher_is_better else m < stat.mean))
        out[model] = Stat(stat.mean, stat.std, stat.n, better + 1)
    return out


def format_stat(stat: Stat, digits: int = 3, percent: bool = False) -> str:
    """``mean ± std`` (``--`` without values); percentages for accuracies."""
    if stat.mean is None:
        return "--"
    scale, places = (100.0, 1) if percent else (1.0, digits)
    text = f"{stat.mean * scale:.{places}f}"
    if stat.n > 1:
        text += f" ± {stat.std * scale:.{places}f}"
    return text
