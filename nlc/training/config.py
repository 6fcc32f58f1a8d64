"""What one training run needs to know, and what it hands back.

:class:`TrainConfig` gathers the spec's ``train:`` section (batch, sequence length, seed,
validation cadence, dtype) with the run's own options (output folder, checkpoint cadence,
device). :class:`TrainResult` is what :func:`nlc.train` returns.

Resume: a run may be continued with another ``train.steps`` or ``train.eval_every``
(:data:`RESUMABLE`), nothing else; :func:`spec_identity` is what a resume compares.

Seeds: the batch of optimizer step ``s`` comes from a generator seeded with
``step_seed(seed, s)``, a 63-bit hash of the pair, so any step's batch is known without
replaying the ones before it (this is what makes resume exact). Validation batches use
``step_seed(seed, 0)`` (optimizer steps count from 1, so the streams never collide).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .checkpoint import spec_hash

if TYPE_CHECKING:  # pragma: no cover
    from ..spec import Spec


def step_seed(seed: int, step: int) -> int:
    """A generator seed for ``step`` of a run seeded with ``seed`` (stable across runs,
    platforms and Python versions; distinct pairs give unrelated seeds)."""
    digest = hashlib.sha256(f"nlc-train:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


RESUMABLE = ("steps", "eval_every")
"""The ``train:`` fields a resume may change: the budget and the validation cadence. Every
other field changes the model, its initialisation, its numerics, its data stream or what
the logged validation bpb measures (``eval_batches``), so a resume refuses it."""


def with_budget(spec: "Spec", steps: int, eval_every: int) -> "Spec":
    """``spec`` with its :data:`RESUMABLE` fields set to ``steps`` and ``eval_every``."""
    return spec.model_copy(update={"train": spec.train.model_copy(update={"steps": steps, "eval_every": eval_every})})


def spec_identity(spec: "Spec") -> str:
    """sha256 of the spec with the :data:`RESUMABLE` fields left out (set to 1): two runs of
    the same identity train the same model on the same data stream, and differ at most in
    how far they go and how often they validate. ``nlc train --resume`` compares it."""
    return spec_hash(with_budget(spec, 1, 1))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one run. ``steps``, ``batch`` (global, over all ranks), ``seq_len``,
    ``seed``, ``eval_every``, ``eval_batches`` and ``dtype`` come from ``spec.train``."""

    out: Path
    steps: int
    batch: int
    seq_len: int
    seed: int
    eval_every: int
    eval_batches: int
    dtype: str
    checkpoint_every: int
    keep_checkpoints: bool = False
    progress: bool = True
    device: torch.device = field(default_factory=default_device)

    @classmethod
    def from_spec(cls, spec: "Spec", out: str | Path, *, checkpoint_every: int | None = None,
                  keep_checkpoints: bool = False, progress: bool = True,
                  device: str | torch.device | None = None) -> "TrainConfig":
        t = spec.train
        return cls(out=Path(out), steps=t.steps, batch=t.batch, seq_len=t.seq_len, seed=t.seed,
                   eval_every=t.eval_every, eval_batches=t.eval_batches, dtype=t.dtype,
                   checkpoint_every=checkpoint_every or t.eval_every, keep_checkpoints=keep_checkpoints,
                   progress=progress, device=torch.device(device) if device else default_device())

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of the forward pass (None: full float32)."""
        return torch.bfloat16 if self.dtype == "bfloat16" else None


@dataclass
class TrainResult:
    """``model`` (trained, on its device), ``metrics`` (every record of ``metrics.jsonl``,
    resumed runs included), ``val_bpb`` (the final validation bits per byte) and
    ``checkpoint`` (the folder of the final checkpoint); ``carried``: the state the streams of
    ``lifetime: stream`` levels go on from (None without such levels), for ``train(carry=...)``."""

    model: torch.nn.Module
    metrics: list[dict]
    val_bpb: float
    checkpoint: Path
    out: Path
    carried: dict | None = None
