"""``metrics.jsonl``: one JSON object per optimizer step and per validation.

Records (every value a plain number or a string):

* ``{"kind": "train", "step", "loss", "bpb", "lr": {optimizer level: lr}, "tokens_per_s",
  "elapsed"}``; ``loss`` is the mean next-token cross-entropy (nats) of the step's global
  batch, ``lr`` each optimizer level's lr for its update at this step (or, for a level
  with ``{steps: k}`` that is accumulating, for its next update), ``tokens_per_s`` the
  global tokens of the step over its wall time, ``elapsed`` seconds of training since the
  run began (resumed runs continue the count);
* ``{"kind": "val", "step", "loss", "bpb", "tokens", "elapsed"}``;
* ``{"kind": "non_finite", "step", "level", "position", "message"}``: the last record of a
  run stopped by a NaN or inf (:class:`~nlc.errors.NonFiniteError`: the level blamed, or
  null; the token position, or null; the whole message).

Every record written here also goes to the run's experiment trackers
(:mod:`nlc.training.trackers`, ``loggers=``); :meth:`MetricsLog.track` sends the records that
only the trackers get (the per-level parameter norms of each validation).

On resume the file is cut back to the records of steps up to the checkpoint's step (a
torn last line from a killed process is dropped), so no step appears twice.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..files import atomic_write_text
from .trackers import Tracker


def read_metrics(path: str | Path) -> list[dict]:
    """Every complete record of a ``metrics.jsonl`` (a torn last line is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLog:
    """Appends records to ``path`` and sends them to ``trackers`` (when ``write`` is true:
    rank 0) and keeps them all."""

    def __init__(self, path: Path, *, write: bool = True, trackers: Sequence[Tracker] = ()) -> None:
        self.path, self.writes = path, write
        self.trackers = list(trackers) if write else []
        self.records: list[dict] = []

    def start(self, resume_step: int | None) -> None:
        """Begin a fresh file, or keep the records up to ``resume_step`` (atomic rewrite)."""
        self.records = ([r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
                        if resume_step is not None else [])
        if not self.writes:
            return
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def log(self, record: dict) -> None:
        self.records.append(record)
        if self.writes:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        self.track(record)

    def track(self, record: dict) -> None:
        """Send ``record`` to the trackers only (not to the file)."""
        for tracker in self.trackers:
            tracker.log(record)

    def start_trackers(self, spec_yaml: str, config: dict) -> None:
        for tracker in self.trackers:
            tracker.start(self.path.parent, spec_yaml, config)

    def close(self) -> None:
        """Close the trackers (each one, even if another fails)."""
        trackers, self.trackers = self.trackers, []
        errors = []
        for tracker in trackers:
            try:
                tracker.close()
            except Exception as err:  # noqa: BLE001 - re-raised below after the others closed
                errors.append(err)
        if errors:
            raise errors[0]

    def of_kind(self, kind: str) -> list[dict]:
        return [r for r in self.records if r.get("kind") == kind]
