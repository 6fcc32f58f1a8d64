"""The synthetic tasks of the comparison, trained as their literature trains them.

Every model is trained from scratch on each task with the same protocol, then scored on
held-out examples at the training shapes and beyond them:

* **MQAR** (Zoology, Arora et al. 2023): a mixture of (sequence length, key-value pairs)
  shapes in training, one shape per optimizer step, cycling; no random filler between
  the queries (Zoology Fig. 2: ``random_non_queries=False``); tested at the training
  shapes and at longer sequences with more pairs. The vocabulary is the model's (bytes:
  keys ``1 .. 127``, values ``128 .. 255``).
* **Selective copying** (Mamba, Gu & Dao 2023): 16 tokens from an alphabet of 16 to copy
  (:data:`nlc.evaluate.tasks.COPY_TOKENS`); trained at length L, tested at L and beyond.
* **Passkey retrieval** (landmark attention): the byte-level prompt trained at length L
  (scored on the key's digits only), tested at L, 2L, 4L, 8L: length extrapolation.

Training (:class:`TaskRun`): the model's own outer optimizer (:class:`nlc.training.optim.
OuterLevels`: the spec's rule, betas, weight decay and level periods) with the task's lr,
warm-up and schedule written over the spec's (:meth:`TaskProtocol.overrides`: the
literature's warm-up + cosine decay, global gradient clip 1). ``tokens_per_step`` is fixed,
so a shape of length T gets ``tokens_per_step // T`` examples a step. The loss is the
cross-entropy of the scored positions; a model whose CMS levels learn from the task loss
gets the context-only teach targets (:func:`nlc.evaluate.teach_targets`), in training as in
scoring. A non-finite loss stops the run: ``diverged`` is part of the result.

Seeds (:func:`examples_generator`): the examples of (split, seed, shape, step) come from a
generator seeded with a SHA-256 of those four, so the training stream (split ``train``,
one step each), the calibration set (``calibration``: what the budget rule looks at) and
the reported test set (``test``) are separate streams; every length's examples are
independent of which other lengths are scored. Exact repeats between streams are possible
only by chance: for MQAR and copying the example space is astronomically larger than any
run; a passkey prompt is fixed by its key (1 .. 50000) and its filler split, so at the
training length about ``train examples / (50000 * (filler bytes + 1))`` of the test
prompts also occur in training; the longer test lengths never occur in training.
"""
from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..compiler import compile_spec
from ..evaluate.tasks import COPY_ALPHABET, COPY_TOKENS, task_logits, teach_targets
from ..tasks import IGNORE, TaskBatch, mqar, passkey, score, selective_copy
from ..training.optim import OuterLevels
from .task_protocol import Shape, SyntheticError, TaskProtocol

PASSKEY_KEYS = 50_000
SPLITS = ("train", "calibration", "test")
EVAL_BATCH = 16


def chance(task: str, vocab: int = 256) -> float:
    """Accuracy of guessing: a uniform value token (MQAR), a uniform data token (copying),
    a uniform key (passkey, every digit right)."""
    return {"mqar": 1 / (vocab - vocab // 2), "copy": 1 / (COPY_ALPHABET - 2), "passkey": 1 / PASSKEY_KEYS}[task]


def examples_generator(split: str, seed: int, shape: Shape, step: int = 0) -> torch.Generator:
    """The generator of the examples of (split, seed, shape, step) (module doc)."""
    if split not in SPLITS:
        raise SyntheticError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    digest = hashlib.sha256(f"{split}/{seed}/{shape.key}/{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def task_examples(task: str, shape: Shape, n: int, vocab: int, generator: torch.Generator) -> TaskBatch:
    """``n`` examples of ``task`` at ``shape`` (the module doc's settings)."""
    if task == "mqar":
        return mqar(n, shape.length, shape.pairs, vocab, generator, random_non_queries=False)
    if task == "copy":
        return selective_copy(n, shape.length, COPY_TOKENS, COPY_ALPHABET, generator)
    return passkey(n, shape.length, generator)


def training_batch(protocol: TaskProtocol, step: int, seed: int, vocab: int) -> TaskBatch:
    """The examples of optimizer step ``step`` (1-based) of a run seeded with ``seed``."""
    shape = protocol.shape_at(step)
    return task_examples(protocol.task, shape, protocol.batch_size(shape), vocab,
                         examples_generator("train", seed, shape, step))


def held_out(protocol: TaskProtocol, shape: Shape, split: str, seed: int, vocab: int) -> TaskBatch:
    """The ``protocol.examples`` held-out examples of ``shape`` in ``split`` (calibration | test)."""
    if split == "train":
        raise SyntheticError("held-out examples come from the calibration or test split, not train")
    return task_examples(protocol.task, shape, protocol.examples, vocab, examples_generator(split, seed, shape))


def task_loss(model: nn.Module, batch: TaskBatch) -> torch.Tensor:
    """Cross-entropy of the scored positions, with the teach targets of a model that needs them."""
    device = next(model.parameters()).device
    teach = teach_targets(batch).to(device) if getattr(model, "teach_period", None) is not None else None
    logits, _ = model(batch.tokens.to(device), model.init_state(batch.tokens.shape[0]), teach)
    return F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.to(device).flatten(), ignore_index=IGNORE)


class TaskRun:
    """One model trained on one task for ``total_steps`` optimizer steps (the lr schedule
    spans them); :meth:`train_to` advances it, :meth:`accuracy` scores it at any point."""

    def __init__(self, model: nn.Module, protocol: TaskProtocol, seed: int, total_steps: int) -> None:
        if total_steps < 1:
            raise SyntheticError(f"a task run needs at least one step, got {total_steps}")
        self.model, self.protocol, self.seed, self.total_steps = model, protocol, seed, total_steps
        self.outer = OuterLevels(model, total_steps)
        self.step, self.losses, self.diverged, self.seconds = 0, [], False, 0.0

    def train_to(self, step: int) -> None:
        """Train steps ``self.step + 1 .. step`` (capped at the run's length; stops at a
        non-finite loss, which marks the run diverged)."""
        clock = time.perf_counter()
        self.model.train()
        while self.step < min(step, self.total_steps) and not self.diverged:
            self.step += 1
            loss = task_loss(self.model, training_batch(self.protocol, self.step, self.seed, self.model.vocab))
            if not math.isfinite(float(loss.detach())):
                self.diverged = True
                break
            loss.backward()
            self.outer.step(self.step)
            self.losses.append(float(loss.detach()))
        self.seconds += time.perf_counter() - clock

    def accuracy(self, shapes: tuple[Shape, ...], split: str) -> dict[str, float]:
        """Accuracy on the held-out examples of ``split`` at each shape, keyed by shape."""
        was_training = self.model.training
        self.model.eval()
        try:
            scores = {}
            for shape in shapes:
                batch = held_out(self.protocol, shape, split, self.seed, self.model.vocab)
                scores[shape.key] = score(batch, task_logits(self.model, batch, EVAL_BATCH, check_finite=False))
            return scores
        finally:
            self.model.train(was_training)

    def result(self) -> dict:
        """The run as JSON: test accuracy at every shape of the protocol, and how training went."""
        return {"task": self.protocol.task, "seed": self.seed, "steps": self.step, "budget": self.total_steps,
                "lr": self.protocol.lr, "diverged": self.diverged,
                "final_loss": self.losses[-1] if self.losses else None, "train_seconds": self.seconds,
                "accuracy": self.accuracy(self.protocol.shapes, "test")}


def start_run(spec: str | Path, overrides: list[str], protocol: TaskProtocol, seed: int, steps: int,
              device: str | None = None) -> TaskRun:
    """A fresh model of ``spec`` (with ``overrides``, then the task's optimizer settings),
    initialised with ``seed``, set up for a ``steps``-step run."""
    model = compile_spec(spec, overrides=[*overrides, *protocol.overrides()], seed=seed, device=device)
    return TaskRun(model, protocol, seed, steps)


def train_task(spec: str | Path, overrides: list[str], protocol: TaskProtocol, seed: int, steps: int,
               device: str | None = None) -> dict:
    """Train a fresh model on the task for ``steps`` steps and score it: :meth:`TaskRun.result`."""
    run = start_run(spec, overrides, protocol, seed, steps, device)
    run.train_to(steps)
    return run.result()
