"""What every synthetic task returns, and how its accuracy is scored.

Notation: N examples, T positions, V vocabulary size. ``logits[n, t]`` is the model's
prediction at position t, compared with ``targets[n, t]`` (for the language-model tasks
that is the next token; for selective copying it is the data token a marker stands for).

``score`` takes the per-position argmax (teacher forcing: the answer's earlier tokens are
in ``tokens``) and returns

* ``per_token``  (MQAR, selective copying, induction heads; as zoology and the Mamba
  synthetics do): correct scored positions / scored positions, pooled over the batch;
* ``per_example`` (passkey, NIAH): the fraction of examples whose *whole* answer span is
  predicted correctly. For a causal model this equals exact match of a greedy decode of
  the answer's length from the prompt: every teacher-forced argmax is right exactly when
  greedy decoding reproduces the answer token by token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import NLCError

IGNORE = -100
"""Target value of positions that are not scored (PyTorch's ``ignore_index``)."""

Scoring = Literal["per_token", "per_example"]


class TaskError(NLCError):
    """A synthetic task was asked for something its definition cannot produce."""


@dataclass(frozen=True)
class TaskBatch:
    """N examples of one task, each exactly T tokens long.

    ``tokens`` (N, T) int64 inputs; ``targets`` (N, T) int64, ``IGNORE`` where not
    scored; ``answer_mask`` (N, T) bool, the scored positions (``targets != IGNORE``);
    ``answers`` the answer text of each example for the text tasks (empty for token
    tasks), for scoring greedy decodes by string match.
    """

    task: str
    tokens: torch.Tensor
    targets: torch.Tensor
    answer_mask: torch.Tensor
    scoring: Scoring
    answers: tuple[str, ...] = ()


def seeded(generator: torch.Generator | int) -> torch.Generator:
    """The generator itself, or a fresh CPU generator seeded with the int given."""
    if isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(int(generator))


def require(condition: bool, message: str) -> None:
    """Raise :class:`TaskError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise TaskError(message)


def score(batch: TaskBatch, logits: torch.Tensor) -> float:
    """Accuracy of the argmax of ``logits`` (N, T, V) on ``batch`` (see module doc)."""
    require(
        logits.dim() == 3 and tuple(logits.shape[:2]) == tuple(batch.tokens.shape),
        f"logits of shape {tuple(logits.shape)} do not match the {batch.task} batch: "
        f"expected ({batch.tokens.shape[0]}, {batch.tokens.shape[1]}, vocab)",
    )
    predictions = logits.detach().argmax(dim=-1).to(batch.targets.device)
    correct = (predictions == batch.targets) & batch.answer_mask
    if batch.scoring == "per_token":
        return float(correct.sum()) / float(batch.answer_mask.sum())
    all_right = correct.sum(dim=1) == batch.answer_mask.sum(dim=1)
    return float(all_right.float().mean())
