"""Evaluation: bits per byte on a corpus split, accuracy on synthetic tasks at lengths.

``evaluate_lm`` (:mod:`.lm`) scores next-token prediction on held-out text, and
``evaluate_stream`` on its consecutive segments with carried against fresh state;
``evaluate_task`` (:mod:`.tasks`) scores MQAR, selective copying, passkey and NIAH at
several lengths, including lengths beyond training; :mod:`.report` renders both as rich
tables and JSON.
"""
from __future__ import annotations

from .lm import evaluate_lm, evaluate_stream
from .report import lm_json, lm_table, stream_table, task_table, write_json
from .tasks import TASKS, EvaluationError, TaskReport, accuracy_stderr, evaluate_task, task_batch, teach_targets

__all__ = ["TASKS", "EvaluationError", "TaskReport", "accuracy_stderr", "evaluate_lm", "evaluate_stream",
           "evaluate_task", "lm_json", "lm_table", "stream_table", "task_batch", "task_table", "teach_targets", "write_json"]
