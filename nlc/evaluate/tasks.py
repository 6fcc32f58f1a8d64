"""Accuracy of a model on the synthetic tasks at several sequence lengths.

``evaluate_task(model, task, lengths, n, seed)`` draws ``n`` examples of ``task`` at each
length from :mod:`nlc.tasks`, runs the model on them from a fresh state, and scores the
argmax of its logits with :func:`nlc.tasks.score` (per token for MQAR and copying, per
example -- the whole answer right, which for a causal model is exact match of a greedy
decode -- for passkey and NIAH). Lengths beyond the model's training ``seq_len`` are
allowed and flagged: that is the length-extrapolation test.

Test-time learning, as the spec says. Levels with their own inner objective (memories,
``l2`` CMS) update on every token of the example. CMS levels driven by the task loss get
the teach signal of the *context only*: next-token targets ``tokens[t + 1]`` everywhere
except at the scored positions (and the last position), which carry -100. So the model is
never trained on an answer -- not even after predicting it; an answer token that is also
an input (MQAR values, the first digits of a passkey) is read as context, as teacher
forcing does. Selective copying scores marker positions whose targets are not next tokens;
the same rule applies (the markers' positions carry -100).

Task settings (fixed so that lengths are comparable):

* ``mqar``: vocabulary = the model's, ``num_kv_pairs = length // 16`` (zoology's
  (64, 4), (128, 8), (256, 16) ratio), capped at the ``vocab // 2 - 1`` distinct keys;
* ``copy``: selective copying with the Mamba setting, 16 tokens to copy from an alphabet
  of 16 (noise and marker included), ``length`` the whole input;
* ``passkey``: the landmark-attention prompt, ``length`` bytes;
* ``niah``: RULER single needle (word key; ``niah_value`` "number" = 7 digits, "word" =
  adjective-noun, "uuid"), ``length`` bytes; the noise haystack, or prose from
  ``haystack_text`` (RULER's essay haystack).

A NaN or inf in the logits stops the evaluation (``check_finite``, default) with a
:class:`~nlc.errors.NonFiniteError` naming the task, length, examples, the level that went
non-finite first and the token (:meth:`nlc.runtime.model.NLCModel.diagnose_non_finite`);
scoring NaN logits would give a meaningless accuracy.

The examples at a length come from a generator seeded with ``(seed, length)``, so a
length's numbers do not depend on which other lengths were evaluated.

Spread (``TaskReport.stderr``, :func:`accuracy_stderr`): the examples are the independent
draws. Per-example accuracy p over N examples is a binomial proportion, standard error
``sqrt(p (1 - p) / N)`` (0 when every answer is right or every one wrong: more examples,
not certainty). Per-token accuracy pools c_i right of m_i scored tokens of example i,
p = Σc / Σm; tokens of one example are not independent, so its standard error is the
ratio estimator's over examples, ``sqrt(Σ(c_i - p m_i)² / (N (N - 1))) / mean(m)``
(None for one example).

Notation: N examples, T tokens per example (the length), V vocabulary.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from ..errors import NLCError, NonFiniteError
from ..runtime.diagnose import non_finite_error
from ..tasks import IGNORE, TaskBatch, mqar, niah, passkey, score, selective_copy
from ..tasks.needle_values import KINDS as NEEDLE_KINDS

__all__ = ["TASKS", "TaskReport", "EvaluationError", "accuracy_stderr", "evaluate_task", "task_batch",
           "task_logits", "teach_targets"]

TASKS = ("mqar", "copy", "passkey", "niah")
COPY_TOKENS, COPY_ALPHABET = 16, 16
MQAR_LENGTH_PER_PAIR = 16
BYTE_VOCAB = 256


class EvaluationError(NLCError):
    """An evaluation that cannot run as asked: an unknown task, a task the model cannot
    read, or bad sizes."""


@dataclass(frozen=True)
class TaskReport:
    """Accuracy of one model on one task, per length (``lengths`` in the order asked)."""

    task: str
    scoring: str                      # "per_token" | "per_example"
    examples: int                     # n per length
    seed: int
    train_length: int | None          # the model's training seq_len, when it has a spec
    accuracy: dict[int, float] = field(default_factory=dict)
    niah_value: str | None = None     # niah: the needle's value kind
    stderr: dict[int, float | None] = field(default_factory=dict)  # of each accuracy (module doc)

    def beyond_training(self, length: int) -> bool:
        return self.train_length is not None and length > self.train_length

    def to_json(self) -> dict:
        data = asdict(self)
        data["accuracy"] = {str(k): v for k, v in self.accuracy.items()}
        data["stderr"] = {str(k): v for k, v in self.stderr.items()}
        data["beyond_training"] = {str(k): self.beyond_training(k) for k in self.accuracy}
        return data


def length_generator(seed: int, length: int) -> torch.Generator:
    """The generator of the examples at one length (independent of the other lengths)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + length)


def task_batch(task: str, n: int, length: int, vocab: int, seed: int,
               haystack_text: str | None = None, niah_value: str = "number") -> TaskBatch:
    """The ``n`` examples of ``task`` at ``length`` that :func:`evaluate_task` scores."""
    if niah_value not in NEEDLE_KINDS:
        raise EvaluationError(f"unknown NIAH value kind {niah_value!r}: choose one of {', '.join(NEEDLE_KINDS)}")
    if task in ("passkey", "niah") and vocab < BYTE_VOCAB:
        raise EvaluationError(f"{task} prompts are UTF-8 bytes: it needs a byte-level model "
                               f"(vocabulary {BYTE_VOCAB}), this one has {vocab}")
    gen = length_generator(seed, length)
    if task == "mqar":
        pairs = min(length // MQAR_LENGTH_PER_PAIR, vocab // 2 - 1)
        return mqar(n, length, max(pairs, 1), vocab, gen)
    if task == "copy":
        return selective_copy(n, length, COPY_TOKENS, COPY_ALPHABET, gen)
    if task == "passkey":
        return passkey(n, length, gen)
    if task == "niah":
        return niah(n, length, gen, value=niah_value, prose=haystack_text)
    raise EvaluationError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")


def teach_targets(batch: TaskBatch) -> Tensor:
    """Next-token targets of the context: ``tokens[t + 1]``, -100 at scored positions and
    at the last position (see the module doc)."""
    targets = torch.full_like(batch.tokens, IGNORE)
    targets[:, :-1] = batch.tokens[:, 1:]
    return targets.masked_fill(batch.answer_mask, IGNORE)


def accuracy_stderr(batch: TaskBatch, logits: Tensor, accuracy: float) -> float | None:
    """The standard error of ``accuracy`` (:func:`nlc.tasks.score` of ``logits`` on
    ``batch``) over its examples; the module doc gives the formulas."""
    n = batch.tokens.shape[0]
    if batch.scoring == "per_example":
        return math.sqrt(accuracy * (1.0 - accuracy) / n)
    if n < 2:
        return None
    predictions = logits.argmax(dim=-1).to(batch.targets.device)
    right = ((predictions == batch.targets) & batch.answer_mask).sum(dim=1).double()
    scored = batch.answer_mask.sum(dim=1).double()
    spread = (right - accuracy * scored).square().sum() / (n * (n - 1))
    return float(spread.sqrt() / scored.mean())


def _device(model) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def task_logits(model, batch: TaskBatch, batch_size: int, *, check_finite: bool = True) -> Tensor:
    """The model's logits (N, T, V) on ``batch``, each example from a fresh state, in
    mini-batches of ``batch_size`` examples (CPU, float32); with ``check_finite`` a
    mini-batch with a NaN or inf logit raises :class:`~nlc.errors.NonFiniteError`."""
    device = _device(model)
    teach = getattr(model, "teach_period", None) is not None
    targets = teach_targets(batch) if teach else None
    pieces = []
    for start in range(0, batch.tokens.shape[0], batch_size):
        tokens = batch.tokens[start:start + batch_size].to(device)
        part = None if targets is None else targets[start:start + batch_size].to(device)
        logits, _ = model(tokens, model.init_state(tokens.shape[0]), part)
        if check_finite and not bool(torch.isfinite(logits).all()):
            raise non_finite_error(model, f"non-finite logits on examples {start + 1}-{start + tokens.shape[0]} "
                                          f"({tokens.shape[1]} tokens)", step=start // batch_size + 1,
                                   tokens=tokens, targets=part)
        pieces.append(logits.float().cpu())
    return torch.cat(pieces, dim=0)


def evaluate_task(model, task: str, lengths: list[int] | tuple[int, ...], n: int = 50,
                  seed: int = 0, haystack_text: str | None = None,
                  batch_size: int = 16, niah_value: str = "number", check_finite: bool = True) -> TaskReport:
    """Accuracy of ``model`` on ``n`` examples of ``task`` at each of ``lengths``.

    The model is put in eval mode for the call and its mode restored afterwards.
    ``check_finite``: stop at the first non-finite logits (see the module doc).
    """
    if task not in TASKS:
        raise EvaluationError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    if n < 1 or batch_size < 1:
        raise EvaluationError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    spec = getattr(model, "spec", None)
    was_training = model.training
    model.eval()
    accuracy, stderr, scoring = {}, {}, ""
    try:
        for length in lengths:
            batch = task_batch(task, n, length, model.vocab, seed, haystack_text, niah_value)
            try:
                logits = task_logits(model, batch, batch_size, check_finite=check_finite)
            except NonFiniteError as err:
                raise err.reworded(prefix=f"{task} at length {length}: ") from None
            accuracy[length] = score(batch, logits)
            stderr[length] = accuracy_stderr(batch, logits, accuracy[length])
            scoring = batch.scoring
    finally:
        model.train(was_training)
    return TaskReport(task=task, scoring=scoring, examples=n, seed=seed,
                      train_length=spec.train.seq_len if spec is not None else None,
                      accuracy=accuracy, niah_value=niah_value if task == "niah" else None, stderr=stderr)
