"""Matplotlib figures for nlc's plots: a headless (Agg) figure, and an atomic PNG save."""
from __future__ import annotations

import io
from pathlib import Path

from .files import atomic_write_bytes

DPI = 110


def new_figure(width: float, height: float, layout: str | None = None):
    """A matplotlib ``Figure`` of ``width`` x ``height`` inches on the Agg backend (no
    display needed; pyplot's global state untouched)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout=layout)


def save_figure(figure, path: str | Path, **savefig: object) -> Path:
    """``figure`` as PNG at ``path``, written atomically (:mod:`nlc.files`); returns ``path``."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **savefig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
