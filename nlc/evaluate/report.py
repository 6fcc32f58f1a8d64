"""Evaluation results as a rich table (for the terminal) and as JSON (for files).

Two kinds of result: a :class:`~nlc.evaluate.tasks.TaskReport` (accuracy per length on a
synthetic task) and language-model results per length (``{"loss", "bpb", "tokens"}`` from
:func:`nlc.evaluate.evaluate_lm`). Lengths beyond the model's training length are marked
with ``*`` in the table and ``"beyond_training": true`` in the JSON.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from rich.table import Table

from ..files import atomic_write_text

from .tasks import TaskReport

__all__ = ["lm_table", "lm_json", "task_table", "write_json"]


def _length_label(length: int, train_length: int | None) -> str:
    beyond = train_length is not None and length > train_length
    return f"{length}{'*' if beyond else ''}"


def task_table(report: TaskReport, title: str = "") -> Table:
    """One row per length: accuracy (per token or per example) on ``report.task``."""
    table = Table(title=title or f"{report.task}: accuracy ({report.scoring.replace('_', ' ')}, "
                                 f"n={report.examples}, seed={report.seed})")
    table.add_column("length", justify="right")
    table.add_column("accuracy", justify="right")
    for length, accuracy in report.accuracy.items():
        table.add_row(_length_label(length, report.train_length), f"{accuracy:.3f}")
    if report.train_length is not None:
        table.caption = f"* beyond the training length {report.train_length}"
    return table


def lm_table(results: dict[int, dict], train_length: int | None, title: str) -> Table:
    """One row per length: loss (nats/token), bits per byte, perplexity, tokens scored."""
    table = Table(title=title)
    for name in ("length", "loss", "bpb", "perplexity", "tokens"):
        table.add_column(name, justify="right")
    for length, result in results.items():
        table.add_row(_length_label(length, train_length), f"{result['loss']:.4f}",
                      f"{result['bpb']:.4f}", f"{_perplexity(result['loss']):.3f}",
                      f"{int(result['tokens']):,}")
    if train_length is not None:
        table.caption = f"* beyond the training length {train_length}"
    return table


def lm_json(results: dict[int, dict], train_length: int | None, data: str) -> dict:
    """The JSON form of per-length LM results (perplexity added)."""
    return {
        "task": "lm", "data": data, "train_length": train_length,
        "lengths": {str(length): {**result, "perplexity": _perplexity(result["loss"]),
                                  "beyond_training": train_length is not None
                                  and length > train_length}
                    for length, result in results.items()},
    }


def write_json(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON, atomically (temp file + rename)."""
    return atomic_write_text(Path(path), json.dumps(payload, indent=2) + "\n")


def _perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))  # exp overflows a float beyond ~709
