"""The zero-shot retrieval columns: passkey and single-needle retrieval on the trained LM.

Passkey and single-needle retrieval (RULER S-NIAH with 7-digit number values and
adjective-noun word values) are scored *zero-shot* on the language model trained on
Shakespeare, at lengths ``m * seq_len`` for the plan's multiples m. A length shorter than
the task's own prompt has no examples: it is recorded as ``None`` and printed as "--".
The synthetic tasks trained per model (MQAR, selective copying, passkey trained at L and
tested at 2L..8L) are :mod:`.synthetic`, with their step budget from :mod:`.calibration`.
"""
from __future__ import annotations

from torch import nn

from ..evaluate import evaluate_task
from ..tasks import TaskError

RETRIEVAL_TASKS = ("passkey", "niah_number", "niah_word")


def retrieval_accuracy(model: nn.Module, task: str, lengths: list[int], examples: int,
                       seed: int) -> dict[int, float | None]:
    """Zero-shot accuracy on ``passkey``, ``niah_number`` or ``niah_word`` at each length
    (None where the length is shorter than the task's prompt)."""
    scores: dict[int, float | None] = {}
    for length in lengths:
        try:
            scores[length] = _retrieval_at(model, task, length, examples, seed)
        except TaskError:
            scores[length] = None
    return scores


def _retrieval_at(model: nn.Module, task: str, length: int, examples: int, seed: int) -> float:
    name, value = {"passkey": ("passkey", "number"), "niah_number": ("niah", "number"),
                   "niah_word": ("niah", "word")}[task]
    return evaluate_task(model, name, [length], n=examples, seed=seed, niah_value=value,
                         check_finite=False).accuracy[length]

