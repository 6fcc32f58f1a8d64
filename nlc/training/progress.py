"""The training progress bar (rich, on stderr): step, loss, bpb, tokens/s, ETA.

:class:`TrainProgress` is a context manager; when disabled (``--no-progress``, or any
rank but 0 of a distributed run) every method does nothing.
"""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, total: int, start: int, *, enabled: bool, title: str) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self._bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  bpb {task.fields[bpb]}  {task.fields[speed]} tok/s"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=self.console, disable=not enabled)
        self._task = self._bar.add_task(title, total=total, completed=start, loss="-", bpb="-", speed="-")

    def __enter__(self) -> "TrainProgress":
        self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.__exit__(*exc)

    def update(self, record: dict) -> None:
        """Advance to a train record's step and show its numbers."""
        self._bar.update(self._task, completed=record["step"], loss=f"{record['loss']:.4f}",
                         bpb=f"{record['bpb']:.4f}", speed=f"{record['tokens_per_s']:,.0f}")

    def note(self, text: str) -> None:
        """A line above the bar (validation results, resume notices)."""
        if self.enabled:
            self._bar.console.print(text)
