"""Continual language modelling: train on domains in sequence, score every domain after each.

Protocol (GEM's result matrix, Lopez-Paz & Ranzato 2017, in bits per byte). Stages
k = 0 .. T-1, one per domain of the stream, each with the same token budget
(``tokens_per_stage``, rounded to whole optimizer steps of ``batch x seq_len`` tokens).
Stage k continues the *same model* on domain k with :func:`nlc.training.train`; after it,
the validation bits per byte of every domain (fixed windows, :func:`.domains.domain_bpb`)
is row k of the matrix R (T x T, lower is better).
The model's in-context and CMS levels update inside every forward -- in training and in
evaluation -- as the spec says; only the outer optimizer levels stop between stages.

Each stage is one ``nlc.train`` run (its folder ``stages/<k>-<domain>/`` holds its
metrics, curves and checkpoint), so the outer optimizer starts afresh at every stage:
AdamW moments reset, warm-up and lr schedule over the stage -- the per-task optimizer of
most continual-learning benchmarks. (``nlc.train`` resumes only the run it wrote, with its
own data, so a single optimizer across domains would need a continuation entry point
there.)

Baselines, same budgets, same evaluation (``baselines=True``):

* ``naive``: the bundled Transformer spec trained through the same sequence -- plain
  fine-tuning, the forgetting lower bound. It takes the main spec's width, heads and
  ``train`` settings (batch, seq_len, seed, dtype) so both see the same tokens.
* ``joint``: the main spec trained once on the union of the domains (equal shares,
  :func:`.domains.union_corpus`) for T stages' worth of steps -- the upper bound. Its R
  has a single row (the final model); its ACC is the mean of that row.

Metrics (:func:`.metrics.cl_metrics`, ``lower_is_better=True``): ACC = mean final bpb,
BWT (< 0: the old domains got worse), forgetting (> 0: bpb above the best earlier value).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..compiler import compile_spec
from ..spec.load import bundled_specs
from .domains import DEFAULT_STREAM, domain_bpb, load_domains, union_corpus
from .metrics import ContinualError, cl_metrics

__all__ = ["ContinualRun", "Protocol", "baseline_overrides", "run_continual", "run_protocol",
           "steps_per_stage", "train_in_sequence"]

NAIVE_SPEC = "transformer"


@dataclass
class ContinualRun:
    """One model's pass through a stream: R (stage x task) and its metrics."""

    label: str                        # "model" | "naive" | "joint"
    spec: str                         # the spec's name
    stages: list[str]                 # the row labels (the stage's domain or group)
    tasks: list[str]                  # the column labels
    R: list[list[float]]
    lower_is_better: bool
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"label": self.label, "spec": self.spec, "stages": self.stages,
                "tasks": self.tasks, "R": self.R, "lower_is_better": self.lower_is_better,
                "metrics": self.metrics}


def steps_per_stage(tokens_per_stage: int, batch: int, seq_len: int) -> int:
    """Optimizer steps that consume ``tokens_per_stage`` tokens (at least one)."""
    if tokens_per_stage < 1:
        raise ContinualError(f"tokens_per_stage must be >= 1, got {tokens_per_stage}")
    return max(1, math.ceil(tokens_per_stage / (batch * seq_len)))


def train_in_sequence(model, stages: Sequence[tuple[str, object]], steps: int, out: Path,
                      seed: int, progress: bool, score: Callable[[object, int], list[float]],
                      check_finite: bool = True) -> list[list[float]]:
    """Train ``model`` on each ``(name, data)`` stage in turn (``steps`` optimizer steps,
    one ``nlc.train`` run each, in ``out/<k>-<name>``; the state of ``lifetime: stream`` levels
    carried from one stage into the next); after stage k, ``score(model, k)`` is row k of the
    returned matrix. ``check_finite=False`` lets a diverged stage finish with
    non-finite scores (the paper benchmark counts such runs) instead of raising
    :class:`~nlc.errors.NonFiniteError`."""
    from ..training import train  # at call time: tests/runtime/test_lifetime.py patches nlc.training.train

    rows, carried = [], None
    for k, (name, data) in enumerate(stages):
        result = train(model, data=data, out=out / f"{k}-{name}", steps=steps, seed=seed + k,
                       progress=progress, check_finite=check_finite, carry=carried)
        model, carried = result.model, result.carried  # lifetime: stream levels go on learning
        rows.append([float(v) for v in score(model, k)])
    return rows


def baseline_overrides(spec) -> list[str]:
    """Settings the naive baseline takes from the main spec: width, heads, train settings."""
    t = spec.train
    return [f"model.width={spec.model.width}", f"model.heads={spec.model.heads}",
            f"train.batch={t.batch}", f"train.seq_len={t.seq_len}", f"train.seed={t.seed}",
            f"train.dtype={t.dtype}"]


def _naive_spec_path() -> Path:
    return bundled_specs()[NAIVE_SPEC]


@dataclass(frozen=True)
class Protocol:
    """What a continual experiment trains on and how it scores: ``stages`` (name, data) in
    order, the column labels ``tasks``, the ``union`` data of the joint baseline, and
    ``score(model, k)``, row k of R (k: the stages trained so far, minus one)."""

    stages: list[tuple[str, object]]
    tasks: list[str]
    union: object
    lower_is_better: bool
    score: Callable[[object, int], list[float]]

    def metrics(self, R: list[list[float]]) -> dict[str, float]:
        return cl_metrics(R, lower_is_better=self.lower_is_better)


def run_protocol(model, spec, protocol: Protocol, steps: int, out: Path, *, overrides: Sequence[str],
                 seed: int, baselines: bool, extra_baseline_overrides: Sequence[str], progress: bool,
                 check_finite: bool = True) -> list[ContinualRun]:
    """``model`` (compiled from ``spec`` with ``overrides``) through the stages, then the
    naive and joint baselines (module doc); every run scored by ``protocol.score``."""
    score = protocol.score

    def sequential(label, m):
        R = train_in_sequence(m, protocol.stages, steps, out / "stages" / label, seed, progress, score,
                              check_finite)
        return ContinualRun(label, m.spec.name, [name for name, _ in protocol.stages],
                            protocol.tasks, R, protocol.lower_is_better, protocol.metrics(R))

    runs = [sequential("model", model)]
    if not baselines:
        return runs
    naive = compile_spec(_naive_spec_path(), seed=seed,
                         overrides=(*baseline_overrides(model.spec), *extra_baseline_overrides))
    runs.append(sequential("naive", naive))
    joint = compile_spec(spec, overrides=tuple(overrides))
    last = len(protocol.stages) - 1  # the joint model has seen every stage's data
    R = train_in_sequence(joint, [("joint", protocol.union)], steps * len(protocol.stages),
                          out / "stages" / "joint", seed, progress, lambda m, _k: score(m, last),
                          check_finite)
    runs.append(ContinualRun("joint", joint.spec.name, ["joint (all stages)"], protocol.tasks, R,
                             protocol.lower_is_better, {"acc": sum(R[0]) / len(R[0])}))
    return runs


def run_continual(spec, stream: Sequence[str] = DEFAULT_STREAM, tokens_per_stage: int | None = None,
                  *, out: str | Path = "runs/continual", overrides: Sequence[str] = (),
                  seed: int | None = None, eval_batches: int | None = None, baselines: bool = True,
                  extra_baseline_overrides: Sequence[str] = (), progress: bool = False,
                  corpora: dict | None = None, check_finite: bool = True) -> list[ContinualRun]:
    """Run the protocol of the module doc; returns the runs (``model``, then ``naive`` and
    ``joint`` when ``baselines``). ``corpora`` ({name: Corpus}) skips loading the stream's
    corpora (they must be the stream's domains, in order); ``check_finite=False``: see
    :func:`train_in_sequence`."""
    overrides = (*overrides, *([f"train.seed={seed}"] if seed is not None else []))
    model = compile_spec(spec, overrides=overrides)
    t = model.spec.train
    domains = corpora if corpora is not None else load_domains(list(stream), model.spec.model.tokenizer)
    if list(domains) != list(stream):
        raise ContinualError(f"the corpora given ({list(domains)}) are not the stream {list(stream)}")
    names = list(domains)

    def score(m, _k):
        row = domain_bpb(m, domains, t.batch, t.seq_len, eval_batches or t.eval_batches, t.seed,
                         check_finite)
        return [row[name] for name in names]

    protocol = Protocol(list(domains.items()), names, union_corpus(domains), True, score)
    steps = steps_per_stage(tokens_per_stage or t.steps * t.batch * t.seq_len, t.batch, t.seq_len)
    return run_protocol(model, spec, protocol, steps, Path(out), overrides=overrides, seed=t.seed,
                        baselines=baselines, extra_baseline_overrides=extra_baseline_overrides,
                        progress=progress, check_finite=check_finite)
