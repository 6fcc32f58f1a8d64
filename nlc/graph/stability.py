"""Validation rule 10's stability at initialisation: specs whose inner updates provably grow
the memory's error from the first writes are refused, each message deriving its bound.

Notation: ``lr`` the level's initial inner step per token (``lr / chunk`` with ``reduce: mean``), ``window`` its objective's window, ``|k|^2``
a key's squared norm (1 when l2-normalised, about head_dim / 3 for a fresh projection of an
RMS-normed input), ``A`` an lq memory's accumulator, ``C`` a CMS period, ``D`` the width; for an MLP memory of depth ``L`` on
head dim ``d`` with hidden width ``h``, ``(1 + (L - 1) h / d) |k|^2`` estimates its tangent
kernel at the N(0, 1/fan_in) initial weights (each layer's input has ``|x_l|^2`` about
``|k|^2 D_(l-1) / d`` and the backward pass keeps the error's norm).
"""
from __future__ import annotations

import networkx as nx

from ..errors import Issue
from ..spec.levels import MemoryLevel, MLPLevel
from ..spec.model import Spec
from .sizes import layer_levels


def check_stability(spec: Spec, graph: nx.MultiDiGraph) -> list[Issue]:
    issues = []
    for name, level in spec.levels.items():
        update = getattr(level, "update", None)
        if update is None:
            continue
        # the inner step per token: reduce: mean (TTT) divides a chunk-frozen memory's lr by its chunk
        lr = update.lr.initial / (level.chunk if isinstance(level, MemoryLevel) and update.reduce == "mean" else 1)
        if isinstance(level, MemoryLevel) and (_feeds_error_back(level) or level.memory.kind == "mlp") \
                and level.keys.norm != "l2" and level.keys.source == "input" and level.keys.project:
            head_dim = spec.model.width // (level.heads or spec.model.heads)  # the estimate holds for projections
            step = lr * level.objective.window * head_dim / 3
            if step >= 1 and not _feeds_error_back(level):
                issues.append(Issue(f"levels.{name}.update.lr", f"an MLP memory on the dot objective reinforces "
                                    f"itself: each write grows one layer in proportion to the other, by about lr "
                                    f"|k| |v|, and projected keys and values start with |k|^2 about head_dim / 3 = "
                                    f"{head_dim / 3:.3g}: lr {lr} x window {level.objective.window} "
                                    f"x {head_dim / 3:.3g} = {step:.3g} grows it exponentially",
                                    hint="use keys: {from: input, norm: l2}, or lr < "
                                    f"{3 / (level.objective.window * head_dim):.2g}"))
            elif step >= 1:
                issues.append(Issue(f"levels.{name}.update.lr", f"the memory starts stepping with lr "
                                    f"{lr} on keys that are not l2-normalised: a projected key "
                                    f"starts with |k|^2 about head_dim / 3 = {head_dim / 3:.3g}, and a write over "
                                    f"a window of {level.objective.window} multiplies the memory's error by about "
                                    f"(1 - 2 lr window |k|^2), so it diverges within a few tokens",
                                    hint="use keys: {from: input, norm: l2}" + _deep_bound(level, head_dim)
                                    + f", or lr < {3 / (level.objective.window * head_dim):.2g}"))
        if isinstance(level, MemoryLevel) and level.memory.kind == "matrix" and level.keys.norm == "l2" \
                and level.objective.kind == "l2" and level.update.rule in ("gd", "momentum") \
                and lr * level.objective.window > 1:
            issues.append(Issue(f"levels.{name}.update.lr", f"a matrix memory stepping on ||S k - v||^2 over a "
                                f"window of {level.objective.window} unit-norm keys multiplies its error along them "
                                f"by about (1 - 2 lr window) = {1 - 2 * lr * level.objective.window:.3g}"
                                ": beyond -1 it grows at every write and diverges",
                                hint=f"use lr <= {1 / level.objective.window:.3g}"))
        if isinstance(level, MemoryLevel) and level.memory.kind == "mlp" and level.keys.norm == "l2" \
                and level.init.kind != "zero" and _feeds_error_back(level) and update.grad_clip is None and not update.grad_normalize:
            d = spec.model.width // (level.heads or spec.model.heads)
            shape = level.memory
            kernel = _kernel(shape, d)
            step = lr * level.objective.window * kernel
            if step >= DEEP_STEP_LIMIT:
                issues.append(Issue(f"levels.{name}.update.lr", f"an MLP memory of depth {shape.depth} on head "
                                    f"dim {d} with hidden width {shape.hidden or shape.expansion * d} starts with "
                                    f"a tangent kernel of about 1 + (depth - 1) hidden / head_dim = {kernel:.3g} "
                                    f"on unit-norm keys: lr {lr} x window "
                                    f"{level.objective.window} x {kernel:.3g} = {step:.3g} overshoots its error "
                                    "from the first writes, and with no gradient guard it diverges",
                                    hint=f"use lr < {DEEP_STEP_LIMIT / (level.objective.window * kernel):.2g}, "
                                    "or bound the step with update.grad_clip (e.g. 1.0) or grad_normalize: true"))
        if isinstance(level, MemoryLevel) and level.objective.kind == "lp" and level.objective.p > 2 \
                and update.grad_clip is None and not update.grad_normalize:
            issues.append(Issue(f"levels.{name}.objective.p", f"the lp objective with p {level.objective.p:g} > 2 "
                                f"steps by p |e|^(p-1) per error component: its step grows faster than the error, "
                                "so one large error overshoots and the memory diverges (p 3 at lr 1 was NaN within "
                                "24 tokens), whatever the lr; a gradient guard bounds the step",
                                hint="set update.grad_clip (e.g. 1.0) or grad_normalize: true, or use p <= 2"))
        if isinstance(level, MemoryLevel) and update.retention_kind == "lq" and update.q > 2 \
                and (level.memory.kind == "matrix" or level.init.kind == "zero"):
            issues.append(Issue(f"levels.{name}.update.q", f"lq retention reads the memory as A / ||A||_q^(q-2) "
                                f"(Moneta), and this memory's accumulator A starts at zero ("
                                f"{'a matrix memory' if level.memory.kind == 'matrix' else 'init: zero'}): with q "
                                f"{update.q:g} > 2 its first small writes are divided by a vanishing norm and the "
                                "weights blow up (q 4 reached 1e18 within 32 tokens)",
                                hint="use q: 2, another retention_kind, or an MLP memory with init: learned"))
        if isinstance(level, MLPLevel) and level.objective is not None and level.objective.kind == "l2":
            step = update.lr.initial * level.period.tokens * spec.model.width
            if step >= CMS_L2_STEP_LIMIT:
                issues.append(Issue(f"levels.{name}.update.lr", f"a CMS level on the l2 objective sums "
                                    f"{level.period.tokens} tokens' gradients of ||MLP(x) - x||^2, and its input "
                                    f"has |x|^2 about the width {spec.model.width} after the norm: lr "
                                    f"{update.lr.initial} x period x width = {step:.3g} makes each update "
                                    "overshoot, and the level diverges within a few periods",
                                    hint=f"use lr < {CMS_L2_STEP_LIMIT / (level.period.tokens * spec.model.width):.2g}"))
    return issues + _check_unnormalised_learners(spec)


def _check_unnormalised_learners(spec: Spec) -> list[Issue]:
    """A level that learns in context steps by about ``lr |x|^2`` on its input x; with
    ``norm: none`` x is the raw residual stream, which the level's own writes grow."""
    issues = []
    for b, block in enumerate(spec.model.blocks):
        for i, layer in enumerate(block.layers):
            if layer.norm != "none":
                continue
            learners = [n for n in layer_levels(layer) if isinstance(spec.levels.get(n), MemoryLevel)
                        or (isinstance(spec.levels.get(n), MLPLevel) and spec.levels[n].period.tokens is not None)]
            if learners:
                issues.append(Issue(f"model.blocks.{b}.layers.{i}.norm", f"norm: none hands "
                                    f"{', '.join(map(repr, learners))} the raw residual stream: a level that learns "
                                    "in context steps by about lr |x|^2 on its input, and its own writes grow |x| "
                                    "further, so nothing bounds it (a fuzzed spec went NaN within 5 tokens; the same "
                                    "spec with rms norms stayed finite at lr 10)",
                                    hint="use norm: rms or norm: layer on this layer"))
    return issues


# lr x period x width below which an l2 CMS level stays finite (measured: 1,024 tokens at
# widths 16-128, periods 1-32, every activation, at 0.2; NaN within 128 tokens at 0.64)
CMS_L2_STEP_LIMIT = 0.25
# lr x window x kernel below which an unguarded MLP memory on unit-norm keys stays finite
# (tests/graph/test_stability.py: depth 2 and 3, relu / gelu / silu / identity, head dims
# 2-16, hidden 16-64; the first NaN within one 32-token sequence at 0.7, identity, depth 2)
DEEP_STEP_LIMIT = 0.5


def _kernel(shape, head_dim: int) -> float:
    """The tangent-kernel estimate ``1 + (L - 1) h / d`` of an MLP memory on unit-norm keys."""
    return 1 + (shape.depth - 1) * (shape.hidden or shape.expansion * head_dim) / head_dim


def _deep_bound(level: MemoryLevel, head_dim: int) -> str:
    """The lr bound an MLP memory still needs once its keys are unit-norm (none for a matrix)."""
    if level.memory.kind != "mlp" or level.init.kind == "zero":
        return ""
    return f" with lr < {DEEP_STEP_LIMIT / (level.objective.window * _kernel(level.memory, head_dim)):.2g}"


def _feeds_error_back(level: MemoryLevel) -> bool:
    """Whether a memory's write is a step on its error ``M(k) - v`` (the l2 / lp / huber
    objectives, the delta and DGD rules), whose size scales with lr |k|^2; a dot objective
    writes ``lr v k^T``: a matrix memory grows linearly at worst, an MLP memory's layers feed
    each other's growth (the raw-key rule covers it too)."""
    return level.objective.kind in ("l2", "lp", "huber") or level.update.rule in ("delta", "dgd")


