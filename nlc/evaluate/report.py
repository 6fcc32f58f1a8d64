"""Evaluation results as a rich table (for the terminal) and as JSON (for files).

Two kinds of result: a :class:`~nlc.evaluate.tasks.TaskReport` (accuracy per length on a
synthetic task) and language-model results per length (``{"loss", "bpb", "tokens",
"loss_stderr", "bpb_stderr"}`` from :func:`nlc.evaluate.evaluate_lm`). Every measured
number is shown with its standard error, ``0.750 ± 0.061`` (``± n/a`` where one batch or
example leaves no spread to measure); the JSON has them as ``*_stderr`` / ``stderr``.
Lengths beyond the model's training length are marked with ``*`` in the table and
``"beyond_training": true`` in the JSON.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from rich.table import Table

from ..files import atomic_write_text

from .tasks import TaskReport

__all__ = ["lm_table", "lm_json", "stream_table", "task_table", "write_json"]


def _length_label(length: int, train_length: int | None) -> str:
    beyond = train_length is not None and length > train_length
    return f"{length}{'*' if beyond else ''}"


def _plus_minus(value: float, stderr: float | None, digits: int) -> str:
    return f"{value:.{digits}f} ± {'n/a' if stderr is None else f'{stderr:.{digits}f}'}"


def task_table(report: TaskReport, title: str = "") -> Table:
    """One row per length: accuracy (per token or per example) on ``report.task``, ± its
    standard error."""
    table = Table(title=title or f"{report.task}: accuracy ({report.scoring.replace('_', ' ')}, "
                                 f"n={report.examples}, seed={report.seed})")
    table.add_column("length", justify="right")
    table.add_column("accuracy ± stderr", justify="right")
    for length, accuracy in report.accuracy.items():
        table.add_row(_length_label(length, report.train_length),
                      _plus_minus(accuracy, report.stderr.get(length), 3))
    if report.train_length is not None:
        table.caption = f"* beyond the training length {report.train_length}"
    return table


def lm_table(results: dict[int, dict], train_length: int | None, title: str) -> Table:
    """One row per length: loss (nats/token) and bits per byte ± their standard errors over
    the batches, perplexity, tokens scored."""
    table = Table(title=title)
    for name in ("length", "loss ± stderr", "bpb ± stderr", "perplexity", "tokens"):
        table.add_column(name, justify="right")
    for length, result in results.items():
        table.add_row(_length_label(length, train_length),
                      _plus_minus(result["loss"], result["loss_stderr"], 4),
                      _plus_minus(result["bpb"], result["bpb_stderr"], 4),
                      f"{_perplexity(result['loss']):.3f}", f"{int(result['tokens']):,}")
    if train_length is not None:
        table.caption = f"* beyond the training length {train_length}"
    return table


def stream_table(results: dict[str, dict], streams: list[str], title: str) -> Table:
    """Carried-state against fresh-state bits per byte on the same consecutive segments
    (:func:`nlc.evaluate.evaluate_stream`), the difference in the caption."""
    table = Table(title=title)
    for name in ("state", "loss ± stderr", "bpb ± stderr", "tokens"):
        table.add_column(name, justify="right")
    for mode, result in results.items():
        table.add_row(mode, _plus_minus(result["loss"], result["loss_stderr"], 4),
                      _plus_minus(result["bpb"], result["bpb_stderr"], 4), f"{int(result['tokens']):,}")
    gain = results["fresh"]["bpb"] - results["carried"]["bpb"]
    table.caption = (f"carried - fresh: {-gain:+.4f} bpb; levels carried across segments: {', '.join(streams)}"
                     if streams else "no level has lifetime: stream or document, so both start every segment afresh")
    return table


def lm_json(results: dict[int, dict], train_length: int | None, data: str) -> dict:
    """The JSON form of per-length LM results (perplexity added; ``loss_stderr`` and
    ``bpb_stderr`` as :func:`nlc.evaluate.evaluate_lm` gives them)."""
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
