"""Continual-learning results: ``continual.json``, the ``R.png`` heatmap, rich tables.

``save_runs`` writes both files into the run folder; ``summary_table`` compares the runs
(ACC, BWT, forgetting) and ``matrix_table`` prints one run's R.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rich.table import Table

from ..evaluate.report import write_json
from .plots import plot_matrices
from .stream import ContinualRun

__all__ = ["matrix_table", "save_runs", "summary_table"]

METRIC_NOTES = {
    True: "R = validation bits per byte (lower is better); ACC = mean final bpb; "
          "BWT < 0 and forgetting > 0 mean old domains got worse",
    False: "R = accuracy (higher is better); BWT < 0 and forgetting > 0 mean old tasks got worse",
}


def save_runs(runs: Sequence[ContinualRun], out: str | Path, settings: dict) -> tuple[Path, Path]:
    """Write ``out/continual.json`` (settings + every run) and ``out/R.png``."""
    out = Path(out)
    lower = runs[0].lower_is_better
    payload = {"settings": settings, "convention": METRIC_NOTES[lower],
               "runs": [run.to_json() for run in runs]}
    json_path = write_json(out / "continual.json", payload)
    panels = {f"{run.label}: {run.spec}": (run.stages, run.R) for run in runs}
    png = plot_matrices(panels, runs[0].tasks, out / "R.png",
                        "validation bpb" if lower else "accuracy", lower)
    return json_path, png


def summary_table(runs: Sequence[ContinualRun]) -> Table:
    table = Table(title="continual learning", caption=METRIC_NOTES[runs[0].lower_is_better])
    for name in ("run", "spec", "ACC", "BWT", "forgetting"):
        table.add_column(name, justify="left" if name in ("run", "spec") else "right")
    for run in runs:
        cells = [f"{run.metrics[k]:+.4f}" if k in run.metrics else "-"
                 for k in ("acc", "bwt", "forgetting")]
        table.add_row(run.label, run.spec, *cells)
    return table


def matrix_table(run: ContinualRun) -> Table:
    table = Table(title=f"R of {run.label} ({run.spec}): row = after training on, column = evaluated on")
    table.add_column("stage")
    for task in run.tasks:
        table.add_column(task, justify="right")
    for stage, row in zip(run.stages, run.R):
        table.add_row(stage, *(f"{v:.3f}" for v in row))
    return table
