"""The update schedule: which level changes when, derived from the IR. Pure, no torch.

Two clocks (paper notes section 7.1):

* tokens, inside a context: a memory or CMS level with period C changes after every
  C-th token (``fires(level, t)`` for 0-based token index t, counted from the start of
  the context); attention is recomputed every token; ``never`` levels do not change;
* optimizer steps: an optimizer level with ``period: {steps: k}`` steps its parameter
  group at optimizer steps k, 2k, 3k, ... (1-based ``step``), accumulating gradients in
  between. ``due(step)`` is the set of optimizer levels that step.

The training loop compiles one graph per distinct due-set (``due_sets``), never one per
step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .ir.nodes import AttentionIR, MemoryIR, MLPIR, ModelIR, OptimizerIR


@dataclass(frozen=True)
class UpdateSchedule:
    token_periods: dict[str, int]  # in-context levels: period in tokens (attention: 1)
    step_periods: dict[str, int]  # optimizer levels: period in optimizer steps
    groups: dict[str, str]  # every non-optimizer level -> its optimizer level

    @classmethod
    def from_ir(cls, ir: ModelIR) -> "UpdateSchedule":
        tokens, steps, groups = {}, {}, {}
        for name, level in ir.levels.items():
            if isinstance(level, OptimizerIR):
                steps[name] = level.steps
                continue
            groups[name] = level.outer
            if isinstance(level, AttentionIR):
                tokens[name] = 1
            elif isinstance(level, (MemoryIR, MLPIR)) and level.period:
                tokens[name] = level.period
        return cls(tokens, steps, groups)

    def due(self, step: int) -> frozenset[str]:
        """Optimizer levels that step at optimizer step ``step`` (1-based)."""
        if step < 1:
            raise ValueError(f"optimizer steps count from 1, got {step}")
        return frozenset(n for n, k in self.step_periods.items() if step % k == 0)

    def fires(self, level: str, t: int) -> bool:
        """Whether an in-context level's state changes after token ``t`` (0-based)."""
        period = self.token_periods.get(level)
        return period is not None and (t + 1) % period == 0

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
