"""The update schedule: which level changes when, derived from the IR. Pure, no torch.

It is the one clock of a compiled model (docs/design.md, "Level semantics: the clock"):
generated code holds it as a literal (``Model.SCHEDULE``), the runtime asks it which
levels are due, and the training loop asks it which optimizer levels step.

Two clocks (tokens, the unit of time of NL-arXiv §3.2's update frequency; optimizer steps,
the clock of the outermost level, pre-training, NL-arXiv §6):

* tokens, inside a context: a memory or CMS level with period C changes after every
  C-th token (``fires(level, t)`` for 0-based token index t, counted from the start of
  the level's stream); attention is recomputed every token; ``never`` levels do not
  change. A nested level (``init: {from: X}``) is re-initialised from ``X`` whenever
  ``X`` fires (``resets``). Levels in ``teach`` learn from the task loss: the model runs
  them in segments of the gcd of their periods and hands each the "due" flag of
  :meth:`fired`;
* optimizer steps: an optimizer level with ``period: {steps: k}`` steps its parameter
  group at optimizer steps k, 2k, 3k, ... (1-based ``step``), accumulating gradients in
  between. ``due(step)`` is the set of optimizer levels that step.

The training loop compiles one graph per distinct due-set (``due_sets``), never one per
step. :meth:`timeline` lists both clocks over a horizon (``nlc schedule``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .ir.nodes import AttentionIR, MemoryIR, MLPIR, ModelIR, OptimizerIR


@dataclass(frozen=True)
class UpdateSchedule:
    token_periods: dict[str, int]  # in-context levels: period in tokens (attention: 1)
    step_periods: dict[str, int]  # optimizer levels: period in optimizer steps
    groups: dict[str, str]  # every non-optimizer level -> its optimizer level
    resets: dict[str, str] = field(default_factory=dict)  # nested level -> the level whose tick re-initialises it
    teach: tuple[str, ...] = ()  # levels that learn from the task loss (CMS, objective task)

    @classmethod
    def from_ir(cls, ir: ModelIR) -> "UpdateSchedule":
        tokens, steps, groups, resets, teach = {}, {}, {}, {}, []
        for name, level in ir.levels.items():
            if isinstance(level, OptimizerIR):
                steps[name] = level.steps
                continue
            groups[name] = level.outer
            if isinstance(level, AttentionIR):
                tokens[name] = 1
            elif isinstance(level, (MemoryIR, MLPIR)) and level.period:
                tokens[name] = level.period
                if level.init == "from":
                    resets[name] = level.init_level
                if isinstance(level, MLPIR) and level.objective is not None and level.objective.kind == "task":
                    teach.append(name)
        return cls(tokens, steps, groups, resets, tuple(teach))

    # -------------------------------------------------------------------- token clock
    def fires(self, level: str, t: int) -> bool:
        """Whether an in-context level's state changes after token ``t`` (0-based)."""
        period = self.token_periods.get(level)
        return period is not None and (t + 1) % period == 0

    def fired(self, levels, t: int) -> frozenset[str]:
        """The levels among ``levels`` that fire after token ``t``: the "due" set a mixer gets."""
        return frozenset(n for n in levels if self.fires(n, t))

    def resets_after(self, level: str, t: int) -> bool:
        """Whether a nested level is re-initialised after token ``t`` (its source fired)."""
        source = self.resets.get(level)
        return source is not None and self.fires(source, t)

    def segment(self, levels) -> int:
        """The segment the model runs teaching levels in: the gcd of their periods (every
        boundary of each is a segment boundary, and a segment never crosses one)."""
        return math.gcd(*(self.token_periods[n] for n in levels))

    # -------------------------------------------------------------------- step clock
    def due(self, step: int) -> frozenset[str]:
        """Optimizer levels that step at optimizer step ``step`` (1-based)."""
        if step < 1:
            raise ValueError(f"optimizer steps count from 1, got {step}")
        return frozenset(n for n, k in self.step_periods.items() if step % k == 0)

    def due_sets(self) -> list[frozenset[str]]:
        """The distinct due-sets over one full cycle of the optimizer clocks."""
        if not self.step_periods:
            return []
        cycle = math.lcm(*self.step_periods.values())
        return sorted({self.due(s) for s in range(1, cycle + 1)}, key=sorted)

    def stepped_levels(self, step: int) -> frozenset[str]:
        """Levels whose slow parameters change at optimizer step ``step``."""
        due = self.due(step)
        return frozenset(n for n, g in self.groups.items() if g in due) | due

    # -------------------------------------------------------------------- both
    def timeline(self, tokens: int, steps: int) -> list[dict]:
        """One row per level: its clock, period and the ticks within the horizon
        (``tokens`` tokens of a stream, ``steps`` optimizer steps; 0-based token index,
        1-based step), slowest-changing levels last."""
        rows = []
        for name, period in sorted(self.token_periods.items(), key=lambda e: (e[1], e[0])):
            row = {"level": name, "clock": "tokens", "period": period,
                   "ticks": [t for t in range(tokens) if self.fires(name, t)]}
            if name in self.resets:
                row["reset_by"] = self.resets[name]
            if name in self.teach:
                row["teach"] = True
            rows.append(row)
        for name, period in sorted(self.step_periods.items(), key=lambda e: (e[1], e[0])):
            members = sorted(n for n, g in self.groups.items() if g == name)
            rows.append({"level": name, "clock": "steps", "period": period, "trains": members,
                         "ticks": [s for s in range(1, steps + 1) if name in self.due(s)]})
        return rows
