"""The step budget of a synthetic task, fixed on the reference Transformer.

Rule (issue 19): a task counts only if it is learnable at the comparison's size; its step
budget is the one at which the reference Transformer (the parameter-matched model the
caller compiles) reaches ``target`` (90%) at the training shapes, and every model is
trained for that budget.

1. **Curve run.** A fresh reference trained for up to ``max_steps`` (its lr schedule spans
   ``max_steps``), scored every ``eval_every`` steps on the *calibration* split (never the
   reported test split) at each training shape. The criterion is the lowest of those
   accuracies: every training shape must be learned. The run stops at the first
   evaluation that reaches the target, ``reached_at``.
2. **Budget** = ``reached_at * margin`` rounded up to a multiple of ``eval_every``, at most
   ``max_steps`` (``margin`` 1 by default: step 3 checks the budget itself).
3. **Confirmation.** A fresh reference trained for exactly the budget, its schedule
   spanning the budget as every model's will, must reach the target on the calibration
   split too (the shorter schedule anneals earlier, which usually helps but is not
   guaranteed). If it does not, the budget doubles, at most to ``max_steps``, and is
   confirmed again. The confirmed run *is* the reference's comparison run at that seed
   (same model, seed, protocol and budget): its result is returned as ``reference``.

Not learnable (``counts`` False, ``reason`` in words): the curve never reaches the target
within ``max_steps``, the reference diverges, or no confirmation passes. Such a task is
reported as not counted, never dropped.

The runs are made by a factory ``new_run(total_steps)`` returning an object with
``train_to(step)``, ``accuracy(shapes, split) -> {shape key: accuracy}``, ``result()``,
``step`` and ``diverged`` (:class:`.synthetic.TaskRun`); tests inject a scripted one.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from .synthetic import start_run
from .task_protocol import CalibrationSettings, Shape, TaskProtocol

Log = Callable[[str], None]


class Run(Protocol):
    step: int
    diverged: bool

    def train_to(self, step: int) -> None: ...

    def accuracy(self, shapes: tuple[Shape, ...], split: str) -> dict[str, float]: ...

    def result(self) -> dict: ...


@dataclass
class Calibration:
    """The budget of one task. ``curve`` holds ``[step, lowest training-shape accuracy]``
    of the curve run, ``confirmations`` ``[budget, the same accuracy or None if it
    diverged]`` of each confirmation run; ``reference`` is the confirmed run's result (None when not counted)."""

    task: str
    settings: CalibrationSettings
    curve: list[list[float]] = field(default_factory=list)
    reached_at: int | None = None
    confirmations: list[list[float]] = field(default_factory=list)
    budget: int | None = None
    counts: bool = False
    reason: str = ""
    reference: dict | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _percent(accuracy: float | None) -> str:
    return "diverged" if accuracy is None else f"{accuracy:.1%}"


def criterion(run: Run, shapes: tuple[Shape, ...]) -> float:
    """The lowest calibration-split accuracy over the training shapes."""
    return min(run.accuracy(shapes, "calibration").values())


def calibrate(task: str, new_run: Callable[[int], Run], train_shapes: tuple[Shape, ...],
              settings: CalibrationSettings, log: Log = lambda _: None) -> Calibration:
    """The budget of ``task`` by the module doc's rule, on runs from ``new_run``."""
    found = Calibration(task=task, settings=settings)
    target, every, most = settings.target, settings.eval_every, settings.max_steps
    curve_run = new_run(most)
    for step in range(every, most + every, every):
        curve_run.train_to(min(step, most))
        if curve_run.diverged:
            found.reason = f"the reference diverged (non-finite loss) at step {curve_run.step}"
            return found
        accuracy = criterion(curve_run, train_shapes)
        found.curve.append([curve_run.step, accuracy])
        log(f"  calibrating {task}: step {curve_run.step}, accuracy {accuracy:.1%} at the training shapes")
        if accuracy >= target:
            found.reached_at = curve_run.step
            break
    if found.reached_at is None:
        best = max(a for _, a in found.curve)
        found.reason = (f"not learnable at this size within {most} steps: the reference reached at most "
                        f"{best:.1%} (target {target:.0%})")
        return found
    budget = min(most, every * math.ceil(found.reached_at * settings.margin / every))
    while True:
        run = new_run(budget)
        run.train_to(budget)
        accuracy = None if run.diverged else criterion(run, train_shapes)
        found.confirmations.append([budget, accuracy])
        log(f"  confirming {task}: a {budget}-step run ends at {_percent(accuracy)}")
        if accuracy is not None and accuracy >= target:
            found.budget, found.counts, found.reference = budget, True, run.result()
            found.reason = f"the reference reaches {accuracy:.1%} in a {budget}-step run"
            return found
        if budget >= most:
            tried = ", ".join(f"{b}: {_percent(a)}" for b, a in found.confirmations)
            found.reason = (f"the reference reached {target:.0%} at step {found.reached_at} of a {most}-step run, "
                            f"but no run of its own length up to {most} steps did ({tried})")
            return found
        budget = min(most, 2 * budget)


def calibrate_task(spec: str | Path, overrides: list[str], protocol: TaskProtocol, settings: CalibrationSettings,
                   seed: int, device: str | None = None, log: Log = lambda _: None) -> Calibration:
    """The budget of ``protocol``'s task on the reference ``spec`` (with ``overrides``: the
    matched size) trained from ``seed``."""
    return calibrate(protocol.task, lambda steps: start_run(spec, overrides, protocol, seed, steps, device),
                     protocol.train, settings, log)
