"""``metrics.jsonl``: one JSON object per optimizer step and per validation.

Records (every value a plain number or a string):

* ``{"kind": "train", "step", "loss", "bpb", "lr": {optimizer level: lr}, "tokens_per_s",
  "elapsed"}``; ``loss`` is the mean next-token cross-entropy (nats) of the step's global
  batch, ``lr`` each optimizer level's lr for its update at this step (or, for a level
  with ``{steps: k}`` that is accumulating, for its next update), ``tokens_per_s`` the
  global tokens of the step over its wall time, ``elapsed`` seconds of training since the
  run began (resumed runs continue the count);
* ``{"kind": "val", "step", "loss", "bpb", "tokens", "elapsed"}``.

On resume the file is cut back to the records of steps up to the checkpoint's step (a
torn last line from a killed process is dropped), so no step appears twice.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..files import atomic_write_text


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
    """Appends records to ``path`` (when ``write`` is true: rank 0) and keeps them all."""

    def __init__(self, path: Path, *, write: bool = True) -> None:
        self.path, self.writes = path, write
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

    def of_kind(self, kind: str) -> list[dict]:
        return [r for r in self.records if r.get("kind") == kind]
