"""The task columns of the comparison: retrieval zero-shot, MQAR and copying trained.

Protocol (documented in docs/results.md):

* **Passkey and single-needle retrieval** (RULER S-NIAH with 7-digit number values and
  adjective-noun word values) are scored *zero-shot* on the language model trained on
  Shakespeare, at lengths ``m * seq_len`` for the plan's multiples m. A length shorter than
  the task's own prompt (passkey needs about 260 bytes, NIAH about 400) has no examples:
  it is recorded as ``None`` and printed as "--".
* **MQAR and selective copying** mean nothing for a model never trained on them, so, as
  Zoology and the Mamba synthetics do, every model is trained *from scratch on the task*
  (same parameter-matched architecture, same seed, the outer lr chosen on the LM
  validation sweep, ``task_steps`` AdamW steps of ``task_batch`` examples), then scored on
  fresh examples. MQAR steps cycle through the plan's lengths (length L holds L // 16
  key-value pairs), so the increasing-pairs column is in-distribution.

Training batches: step s of the task run seeded with ``seed`` draws its examples with
:func:`nlc.evaluate.task_batch` at seed ``TRAIN_SEED_BASE * (seed + 1) + s``; evaluation
uses seed ``seed`` itself, so no training example is ever scored. The loss is the
cross-entropy of the scored positions (``TaskBatch.targets``, -100 elsewhere); models
with CMS levels driven by the task loss get the context-only teach targets
(:func:`nlc.evaluate.teach_targets`) in training exactly as in evaluation.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..compiler import compile_spec
from ..evaluate import evaluate_task, task_batch, teach_targets
from ..tasks import IGNORE, TaskError
from ..training.optim import OuterLevels

TRAIN_SEED_BASE = 1_000_000
RETRIEVAL_TASKS = ("passkey", "niah_number", "niah_word")


def train_on_task(model: nn.Module, task: str, lengths: tuple[int, ...], steps: int, batch: int,
                  seed: int) -> list[float]:
    """Train ``model`` on ``task`` (``mqar`` | ``copy``) in place; the per-step losses."""
    outer = OuterLevels(model, steps)
    teach = getattr(model, "teach_period", None) is not None
    device = next(model.parameters()).device
    model.train()
    losses = []
    for step in range(1, steps + 1):
        length = lengths[(step - 1) % len(lengths)]
        examples = task_batch(task, batch, length, model.vocab, TRAIN_SEED_BASE * (seed + 1) + step)
        tokens = examples.tokens.to(device)
        targets = teach_targets(examples).to(device) if teach else None
        logits, _ = model(tokens, model.init_state(batch), targets)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), examples.targets.to(device).flatten(),
                               ignore_index=IGNORE)
        loss.backward()
        outer.step(step)
        losses.append(float(loss.detach()))
    return losses


def task_accuracy(model: nn.Module, task: str, lengths: tuple[int, ...], examples: int,
                  seed: int) -> dict[int, float]:
    """Accuracy of ``model`` on ``task`` at each length (:func:`nlc.evaluate.evaluate_task`)."""
    return dict(evaluate_task(model, task, list(lengths), n=examples, seed=seed, check_finite=False).accuracy)


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


def fresh_model(spec_path, overrides: list[str], seed: int) -> nn.Module:
    """The parameter-matched model compiled anew (the starting point of a task run)."""
    return compile_spec(spec_path, overrides=overrides, seed=seed)
