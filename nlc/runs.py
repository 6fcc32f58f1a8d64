"""Run folders as a researcher compares them: find the runs under a folder, summarise each.

A run folder is what ``nlc train --out`` writes: ``metrics.jsonl`` (:mod:`nlc.training.metrics`)
and ``checkpoint/`` (:mod:`nlc.training.checkpoint`). :func:`find_runs` looks a few levels
below the folders given (a search writes its trials at ``OUT/trials/NNNN``) without
entering a run, a hidden folder or a symbolic link (no loops, no checkpoint snapshots).
:func:`read_run` summarises one run and never raises for what is inside it: a damaged
folder (truncated meta.json, an edited spec, unreadable metrics) becomes a :class:`Run`
whose status is ``unreadable: <reason>``, so one bad run never hides the others.

Status of a readable run (readers change nothing, so a run still writing is read as is):

* ``diverged``: its last metrics record is ``non_finite`` (the run stopped on a NaN/inf);
* ``running-or-killed``: no checkpoint, or steps logged after the last checkpoint;
* ``complete``: the checkpoint is at the planned step count;
* ``stopped``: the checkpoint is at the last logged step, before the planned count (it
  continues with ``nlc train ... --resume``).

torch is imported only when a checkpoint is read, so importing this module stays light.
"""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import NLCError
from .figures import new_figure, save_figure

DEPTH = 3  # levels below a given folder searched for runs
CHECKPOINT_NAMES = ("checkpoint", ".checkpoint.old")  # the latest one, or one in mid-swap


@dataclass
class Run:
    """One run's summary; ``None`` where the run does not tell (no checkpoint yet, no
    validation yet). ``tokens_per_s`` is the median over the train records (the first
    steps include warm-up); ``records`` are the metrics records, for plots."""

    path: Path
    status: str
    spec: str | None = None
    step: int | None = None
    steps: int | None = None
    train_loss: float | None = None
    val_bpb: float | None = None
    tokens_per_s: float | None = None
    records: list[dict] = field(default_factory=list, repr=False)

    def as_json(self) -> dict:
        """The summary as JSON-safe values (path as text, non-finite numbers as null)."""
        data = asdict(self)
        del data["records"]
        data["path"] = str(self.path)
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in data.items()}


def is_run(folder: Path) -> bool:
    """A folder holding ``metrics.jsonl`` or a checkpoint (even a damaged one); False for a
    folder whose entries cannot be looked at."""
    try:
        return any((folder / name).exists() for name in ("metrics.jsonl", *CHECKPOINT_NAMES))
    except OSError:
        return False


def find_runs(root: str | Path, depth: int = DEPTH) -> list[Path]:
    """The run folders at ``root`` or up to ``depth`` levels below it, sorted by path.
    A folder that cannot be listed is passed over (it cannot be shown to hold a run)."""
    root = Path(root)
    if is_run(root):
        return [root]
    if depth == 0:
        return []
    try:
        children = sorted(p for p in root.iterdir()
                          if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    except OSError:
        return []
    return [run for child in children for run in find_runs(child, depth - 1)]


def read_run(path: str | Path) -> Run:
    """The summary of the run at ``path``; ``status="unreadable: <reason>"`` when its
    metrics or its checkpoint cannot be read (see the module doc; files named relative to
    the run), with the metrics records kept when it is the checkpoint that is damaged."""
    path = Path(path)
    from .training.metrics import read_metrics  # lazy: keeps CLI startup free of torch

    records: list[dict] = []
    try:
        records = [r for r in read_metrics(path / "metrics.jsonl") if isinstance(r, dict)]
        return _summary(path, records)
    except NLCError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    except UnicodeDecodeError:
        reason = f"{path / 'metrics.jsonl'}: not UTF-8 text"
    except OSError as err:
        reason = f"{err.filename or path}: {err.strerror or err}"
    return Run(path, f"unreadable: {reason.replace(f'{path}{os.sep}', '')}", records=records)  # names in the run


def _summary(path: Path, records: list[dict]) -> Run:
    from .training.checkpoint import NoCheckpointError, read_meta, stored_spec  # lazy: keeps CLI startup free of torch

    try:
        meta = read_meta(path)
    except NoCheckpointError:
        meta = None
    saved, planned = (meta["step"], meta.get("steps")) if meta is not None else (None, None)
    logged = max((r["step"] for r in records if _is_int(r.get("step"))), default=None)
    train, val = _of_kind(records, "train"), _of_kind(records, "val")
    speeds = [s for r in train if _is_number(s := r.get("tokens_per_s"))]
    return Run(
        path, _status(records, saved, logged, planned),
        spec=stored_spec(meta).name if meta is not None else None,
        step=max((s for s in (saved, logged) if s is not None), default=None), steps=planned,
        train_loss=_number(train[-1].get("loss")) if train else None,
        val_bpb=_number(val[-1].get("bpb")) if val else None,
        tokens_per_s=statistics.median(speeds) if speeds else None, records=records)


def _status(records: list[dict], saved: int | None, logged: int | None, planned: int | None) -> str:
    if records and records[-1].get("kind") == "non_finite":
        return "diverged"
    if saved is None or (logged is not None and logged > saved):
        return "running-or-killed"
    if planned is not None and saved >= planned:
        return "complete"
    return "stopped"


def _of_kind(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r.get("kind") == kind]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: object) -> float | None:
    return float(value) if _is_number(value) else None


def plot_runs(runs: list[Run], path: str | Path, labels: list[str] | None = None) -> Path:
    """One PNG at ``path``: the runs' validation bpb (left) and train loss (right) against
    the optimizer step, one colour per run; written atomically (:mod:`nlc.figures`)."""
    labels = labels or [str(run.path) for run in runs]
    figure = new_figure(12, 4.5, layout="constrained")
    val_axes, train_axes = figure.subplots(1, 2)
    for run, label, colour in zip(runs, labels, _colours(len(runs))):
        for axes, kind, key, style in ((val_axes, "val", "bpb", {"marker": "o", "ms": 3, "lw": 1.5}),
                                       (train_axes, "train", "loss", {"lw": 1.0, "alpha": 0.85})):
            points = [(r["step"], r[key]) for r in _of_kind(run.records, kind)
                      if _is_int(r.get("step")) and _is_number(r.get(key))]
            if points:
                axes.plot(*zip(*points), label=label.replace("$", r"\$"), color=colour, **style)  # no mathtext
    for axes, title, ylabel in ((val_axes, "validation", "bits per byte"), (train_axes, "train", "loss (nats)")):
        axes.set(title=title, xlabel="optimizer step", ylabel=ylabel)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize="small")
    return save_figure(figure, path)


def _colours(count: int) -> list:
    """Distinct colours for ``count`` runs (matplotlib's cycle, then a colour map)."""
    from matplotlib import colormaps  # lazy: keeps CLI startup free of matplotlib

    if count <= 10:
        return [f"C{i}" for i in range(count)]
    return [colormaps["viridis"](i / (count - 1)) for i in range(count)]
