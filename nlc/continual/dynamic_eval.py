"""Dynamic evaluation (Krause et al. 2018): chosen weights learn by SGD on the stream they score.

The honest baseline for test-time learning (issue 19, protocol 3(b)): any model, frozen but
for a chosen set of its parameters -- by default the weights of its ``mlp`` levels that are
frozen in context (in the bundled Transformer the level ``mlp``:
``b<i>_r<j>_mlp.mixer.mlp.gate_up.weight`` and ``.down.weight``) -- which are updated
online, on the same causal stream, with the update a CMS level of the task objective makes
(:mod:`nlc.runtime.cms`, NL-arXiv Eqs. 70-71)::

    theta <- theta - lr * sum_{t in chunk} grad_theta l_t(theta)      after every chunk of P tokens

Notation: P the period (tokens per chunk), lr the step size, l_t the next-token
cross-entropy (nats) of token t, theta the chosen weights (one copy per stream row),
B rows, T tokens of one model call.

* **The objective is the sum** of the chunk's per-token losses, as a CMS level sums its
  chunk's per-token gradients (``reduction="sum"`` in the model's teach step, no division
  by P): the same ``lr`` means the same step for the same gradients.
* **Causal.** A chunk is scored with the weights of the chunks before it, then its loss
  is differentiated and the step taken; no token is scored by weights that saw its target.
* **Chunks are cut at multiples of P from the start of a segment** (P must divide the
  segment length), where a CMS level of ``lifetime: sequence`` starting a segment fires too.
  The gradient runs through the chunk's own forward only: the state the chunk starts
  from (attention's cache, memories) is detached, as the CMS teach signal is.
* **Rows are separate streams**: each has its own copy of theta (a shared copy would let
  one row's text steer another's scores), so the chunks run row by row.
* Nothing of the model changes: the weights are swapped in for each call
  (:func:`torch.func.functional_call`); the model's own parameters stay bitwise as they were.

``cms_step(source)`` reads the CMS levels of a model or spec (their period, constant lr
and objective), so the baseline can take "the same period and step size as the CMS
levels" of, e.g., ``nlc/bundled/hope.yaml``: the fastest task-objective level's
(16 tokens, lr 1e-3 there; all three of its levels have lr 1e-3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..ir.nodes import MLPIR, ModelIR
from ..ir.resolve import resolve
from ..runtime.lifetime import detach_state
from ..graph.validate import load_spec
from ..spec import Spec
from ..status import BAD_INPUT
from .metrics import ContinualError

__all__ = ["CMSLevel", "DeploymentError", "DynamicEval", "cms_levels", "cms_step", "dynamic_parameters",
           "dynamic_segment", "token_nats"]


class DeploymentError(ContinualError):
    """A deployment or dynamic-evaluation argument that cannot be used; ``argument`` names it
    (the keyword of :func:`nlc.continual.deployment.deploy`, or ``dynamic_<field>``)."""

    exit_status = BAD_INPUT

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        super().__init__(message)


@dataclass(frozen=True)
class CMSLevel:
    """One CMS level driven by the task loss: its name, period (tokens) and constant lr."""

    name: str
    period: int
    lr: float


@dataclass(frozen=True)
class DynamicEval:
    """Dynamic evaluation's settings: ``period`` P (tokens per SGD step), ``lr`` and the spec
    levels whose parameters learn (None: the frozen ``mlp`` levels, :func:`dynamic_parameters`)."""

    period: int
    lr: float
    levels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.period, bool) or not isinstance(self.period, int) or self.period < 1:
            raise DeploymentError("dynamic_period", f"dynamic evaluation's period must be a whole number of "
                                                    f"tokens >= 1, got {self.period!r}")
        number = isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool)
        if not (number and math.isfinite(self.lr) and self.lr >= 0):
            raise DeploymentError("dynamic_lr", f"dynamic evaluation's lr must be a finite number >= 0, "
                                                f"got {self.lr!r}")

    def to_json(self) -> dict:
        return {"period": self.period, "lr": self.lr, "levels": None if self.levels is None else list(self.levels)}


def _model_ir(source) -> ModelIR:
    """The IR of a compiled model, a :class:`ModelIR`, a :class:`Spec`, a spec file or bundled name."""
    if isinstance(source, ModelIR):
        return source
    if isinstance(source, nn.Module):
        if getattr(source, "ir", None) is None:
            raise ContinualError("the model has no .ir: give a model made by nlc.compile or nlc.load, or its spec")
        return source.ir
    if isinstance(source, (Spec, str, Path)):
        return resolve(source if isinstance(source, Spec) else load_spec(source))
    raise ContinualError(f"expected a model, spec or spec path, not {type(source).__name__}")


def cms_levels(source) -> list[CMSLevel]:
    """The CMS levels of ``source`` that learn from the task loss, fastest first. A level
    whose lr is not a constant (learned or per token) is refused: no single step to match."""
    found = []
    for name, level in _model_ir(source).levels.items():
        if not (isinstance(level, MLPIR) and level.period and level.objective is not None
                and level.objective.kind == "task"):
            continue
        if level.rule.lr.kind != "constant":
            raise ContinualError(f"CMS level {name!r} has a {level.rule.lr.kind} lr, not a constant: give "
                                 "dynamic evaluation's lr yourself")
        found.append(CMSLevel(name, level.period, float(level.rule.lr.init)))
    return sorted(found, key=lambda level: level.period)


def cms_step(source) -> tuple[int, float]:
    """``(period, lr)`` of the fastest task-objective CMS level of ``source`` (a model, a
    spec or its path): dynamic evaluation at "the CMS levels' period and step size"."""
    levels = cms_levels(source)
    if not levels:
        raise ContinualError(f"{_model_ir(source).name!r} has no CMS level that learns from the task loss: "
                             "give dynamic evaluation's period and lr")
    return levels[0].period, levels[0].lr


def dynamic_parameters(model: nn.Module, levels: Sequence[str] | None = None) -> dict[str, nn.Parameter]:
    """``{name: parameter}`` of the spec ``levels`` (:meth:`NLCModel.parameters_by_level`);
    None: every ``mlp`` level that is frozen in context (``period: never``, a Transformer's
    MLP). A CMS level's parameters are only its initial weights, read where a state is made,
    so they are no default: learning them changes nothing a carried state goes on with."""
    by_level = model.parameters_by_level()
    if levels is None:
        levels = [name for name, level in _model_ir(model).levels.items()
                  if isinstance(level, MLPIR) and not level.period]
    unknown = [name for name in levels if name not in by_level]
    if unknown or not levels:
        problem = f"{unknown} hold no parameters" if levels else "the model has no frozen mlp level"
        raise DeploymentError("dynamic_levels", f"dynamic evaluation's levels: {problem}; name them from the "
                                                f"levels with parameters: {sorted(n for n in by_level if n)}")
    chosen = {id(p) for name in levels for p in by_level[name]}
    return {name: p for name, p in model.named_parameters() if id(p) in chosen}


def token_nats(logits: Tensor, targets: Tensor) -> Tensor:
    """Next-token cross-entropy in nats per token, (B, T), computed in float32."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view(targets.shape)


def dynamic_segment(model: nn.Module, x: Tensor, y: Tensor, state: dict, weights: dict[str, Tensor],
                    dynamic: DynamicEval) -> tuple[Tensor, dict, dict[str, Tensor]]:
    """One segment of one stream row, ``x, y`` (1, T), with P dividing T: each chunk is
    scored with ``weights`` (the chosen parameters by name), then one SGD step on its
    summed loss (module doc). Returns the per-token nats (1, T), the state and the
    weights after the segment."""
    if x.shape[0] != 1:
        raise ContinualError(f"dynamic evaluation runs one stream row at a time, got {x.shape[0]} rows")
    names, nats = list(weights), []
    for start in range(0, x.shape[1], dynamic.period):
        chunk = slice(start, start + dynamic.period)
        leaves = {name: w.detach().requires_grad_() for name, w in weights.items()}
        with torch.enable_grad():
            logits, state = functional_call(model, leaves, (x[:, chunk], state), {"targets": y[:, chunk]})
            scored = token_nats(logits, y[:, chunk])
            grads = torch.autograd.grad(scored.sum(), [leaves[n] for n in names], allow_unused=True)
        weights = {n: leaves[n].detach() - dynamic.lr * g if g is not None else leaves[n].detach()
                   for n, g in zip(names, grads)}
        nats.append(scored.detach())
        state = detach_state(state)
    return torch.cat(nats, dim=1), state, weights
