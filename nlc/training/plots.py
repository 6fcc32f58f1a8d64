"""``curves.png``: train and validation bits per byte against the optimizer step.

Drawn with matplotlib's Agg backend (no display needed), written to a temporary file and
renamed into place, so a reader never sees a half-written image.
"""
from __future__ import annotations

from pathlib import Path

from ..figures import new_figure, save_figure


def plot_curves(records: list[dict], path: str | Path, title: str = "") -> Path:
    """Plot the ``train`` and ``val`` records' bpb; returns ``path``."""
    path = Path(path)
    figure = new_figure(7, 4)
    axes = figure.add_subplot()
    for kind, style in (("train", {"lw": 1.0, "alpha": 0.8}), ("val", {"marker": "o", "lw": 1.5})):
        points = [(r["step"], r["bpb"]) for r in records if r.get("kind") == kind]
        if points:
            steps, bpb = zip(*points)
            axes.plot(steps, bpb, label=kind, **style)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("bits per byte")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend()
    figure.tight_layout()
    return save_figure(figure, path)
