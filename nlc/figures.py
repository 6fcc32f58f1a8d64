"""Matplotlib figures for nlc's plots: a headless (Agg) figure, and an atomic PNG save.

A figure is a ``matplotlib.figure.Figure`` on its own Agg canvas: neither pyplot nor
``matplotlib.use`` is involved, so importing nlc or drawing a plot never changes the
backend of the process that uses it (a notebook's inline backend, a GUI, ``svg``).
"""
from __future__ import annotations

import io
from pathlib import Path

from .files import atomic_write_bytes

DPI = 110


def new_figure(width: float, height: float, layout: str | None = None):
    """A matplotlib ``Figure`` of ``width`` x ``height`` inches on an Agg canvas of its own
    (no display needed; the global backend and pyplot's state untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: keeps CLI startup free of matplotlib
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)  # attaches itself as figure.canvas
    return figure


def save_figure(figure, path: str | Path, **savefig: object) -> Path:
    """``figure`` as PNG at ``path``, written atomically (:mod:`nlc.files`); returns ``path``."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **savefig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
