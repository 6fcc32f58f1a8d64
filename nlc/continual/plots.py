"""Heatmaps of continual-learning matrices R (stage x task), one panel per run.

Rows are the stages (after training on the row's domain), columns the evaluated tasks;
each cell shows its value. Drawn with matplotlib's Agg backend, written to a temporary
file and renamed into place.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..figures import new_figure, save_figure


def plot_matrices(panels: dict[str, tuple[Sequence[str], Sequence[Sequence[float]]]],
                  tasks: Sequence[str], path: str | Path, label: str, lower_is_better: bool
                  ) -> Path:
    """One heatmap per entry of ``panels`` (title -> (stage labels, R)), sharing one colour
    scale; ``label`` names the value (e.g. ``"validation bpb"``). Returns ``path``."""
    path = Path(path)
    values = [v for _, R in panels.values() for row in R for v in row]
    low, high = min(values), max(values)
    cmap = "viridis_r" if lower_is_better else "viridis"  # bright = good in both cases
    figure = new_figure(1.5 + 4.8 * len(panels), 4.2, layout="constrained")
    image = None
    for index, (title, (stages, R)) in enumerate(panels.items()):
        axes = figure.add_subplot(1, len(panels), index + 1)
        image = axes.imshow(R, cmap=cmap, vmin=low, vmax=high)
        axes.set_xticks(range(len(tasks)), labels=tasks, rotation=45, ha="right")
        axes.set_yticks(range(len(R)), labels=list(stages))
        axes.set_xlabel("evaluated on")
        axes.set_ylabel("after training on")
        axes.set_title(title)
        for i, row in enumerate(R):
            for j, value in enumerate(row):
                dark = ((value - low) / (high - low or 1) < 0.5) != lower_is_better
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                          color="white" if dark else "black")
    figure.colorbar(image, ax=figure.axes, label=label, shrink=0.8)
    return save_figure(figure, path)
