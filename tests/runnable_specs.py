"""Spec draws the runtime executes in tests: :func:`tiny_specs` shrinks a
:func:`tests.strategies.valid_specs` draw (width <= 32, chunks / periods / MAC segments <=
:data:`TINY_GRID`); :func:`runnable_specs` also keeps learning rates in a stable regime. Every
valid draw is one the runtime builds (validation reads the capability table the lowering
asserts), so nothing is left out."""
from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from tests.strategies import INPUT, valid_specs


TINY_GRID = 16
"""The largest chunk, period and MAC segment in a :func:`tiny_specs` draw."""


def _shrink_to_tiny(data: dict) -> dict | None:
    """A :func:`valid_specs` draw made small enough to run in a test (``None``: no tiny
    width fits its heads). Periods keep their order and nesting (ranked onto 1, 2, 4, 8
    when the largest exceeds 8), chunks and segments shrink to at most ``TINY_GRID``,
    block repeats to at most 2, the width to at most 32, the vocabulary to the 256 bytes."""
    data = copy.deepcopy(data)
    levels, model = data["levels"], data["model"]
    heads = [model.get("heads", 4)] + [lv["heads"] for lv in levels.values() if "heads" in lv]
    rope = [model.get("heads", 4)] + [lv["heads"] for lv in levels.values()  # even head dims
                                      if lv["type"] == "attention" and "heads" in lv]
    widths = [w for w in (16, 24, 32) if all(w % h == 0 for h in heads) and all(w // h % 2 == 0 for h in rope)]
    if not widths:
        return None
    if model["width"] > 32:
        model["width"] = widths[-1]

    def period_of(lv: dict) -> int | None:
        if lv["type"] == "memory":
            return lv.get("period", 1)
        if lv["type"] == "mlp" and isinstance(lv.get("period"), int):
            return lv["period"]
        return None

    periods = sorted({p for lv in levels.values() if (p := period_of(lv)) is not None})
    remap = {p: p for p in periods} if not periods or periods[-1] <= 8 else \
        {p: 2 ** i for i, p in enumerate(periods)}
    for lv in levels.values():
        p = period_of(lv)
        if p is None:
            continue
        if "period" in lv or remap[p] != 1:
            lv["period"] = remap[p]
        if lv["type"] == "memory":
            # a chunk divides the period (powers of two), and fits the tiny grid
            lv["chunk"] = min(lv.get("chunk", 64), TINY_GRID) if p == 1 else min(lv.get("chunk", 64), remap[p])
    for block in model["blocks"]:
        if block.get("repeat", 1) > 2:
            block["repeat"] = 2
        for layer in block["layers"]:
            if isinstance(layer, dict) and "context" in layer and "segment" in layer["context"]:
                layer["context"]["segment"] = min(layer["context"]["segment"], TINY_GRID)
    model.pop("tokenizer", None)
    model.pop("vocab", None)
    data["train"]["seq_len"] = 32
    data["train"]["batch"] = 2
    return data


def tiny_specs(max_levels: int = 6) -> st.SearchStrategy[dict]:
    """A :func:`valid_specs` draw shrunk to run fast: width <= 32, vocabulary 256, at most
    two repeats per block, every
    chunk / period / MAC segment at most ``TINY_GRID`` (powers of two, so streaming splits
    on that grid are chunk- and period-aligned for every level), ``train.seq_len`` 32."""
    return valid_specs(max_levels).map(_shrink_to_tiny).filter(lambda d: d is not None)


STABLE_LR = 0.01
"""The largest memory or CMS learning rate in a :func:`runnable_specs` draw."""


def _l2_normalised(source: Any) -> dict:
    return {"from": source, "norm": "l2"} if isinstance(source, str) else {**source, "norm": "l2"}


def _small_lr(knob: Any) -> Any:
    """An lr knob of the same form, at most :data:`STABLE_LR` (absent: the default is 1.0)."""
    if knob is None:
        return STABLE_LR
    if not isinstance(knob, dict):
        return min(knob, STABLE_LR)
    knob = dict(knob)
    for field in ("value", "learned"):
        if field in knob:
            knob[field] = min(knob[field], STABLE_LR)
    if "from" in knob:  # a data-dependent lr starts strictly below its max
        knob["max"] = STABLE_LR
        knob["init"] = min(knob.get("init", STABLE_LR / 2), STABLE_LR / 2)
    return knob


def _runnable(data: dict, min_cms_period: int) -> dict:
    """A tiny draw in a numerically stable regime: memories and CMS levels step with an lr of
    at most :data:`STABLE_LR` on l2-normalised memory keys, values and queries (the language's
    defaults, unnormalised sources and lr 1.0, make gradient-descent memories diverge within a
    few tokens, and an ``lp`` objective with p > 2 does at any fixed lr once its errors are
    large). CMS periods are scaled (all by one power of two: their order and nesting hold)
    so that the shortest is at least ``min_cms_period``."""
    data = copy.deepcopy(data)
    for lv in data["levels"].values():
        if lv["type"] == "memory":
            for field in ("keys", "values", "queries"):
                lv[field] = _l2_normalised(lv.get(field, INPUT))
            update = lv.setdefault("update", {"rule": "gd"})
            update["lr"] = _small_lr(update.get("lr"))
        elif lv["type"] == "mlp" and isinstance(lv.get("period"), int):
            lv["update"]["lr"] = _small_lr(lv["update"].get("lr"))
    cms = [lv for lv in data["levels"].values() if lv["type"] == "mlp" and isinstance(lv.get("period"), int)]
    scale, shortest = 1, min((lv["period"] for lv in cms), default=min_cms_period)
    while shortest * scale < min_cms_period:
        scale *= 2
    for lv in cms:
        lv["period"] *= scale
    return data


def runnable_specs(max_levels: int = 6, min_cms_period: int = 2) -> st.SearchStrategy[dict]:
    """A :func:`tiny_specs` draw in a stable regime (see :func:`_runnable`): these compile,
    run and stay finite. The default ``min_cms_period`` keeps task-driven CMS levels off
    period 1, whose teach loop runs token by token (a draw then costs tens of times more); with
    ``min_cms_period <= 2`` every period stays at most ``TINY_GRID``."""
    return tiny_specs(max_levels).map(lambda data: _runnable(data, min_cms_period))
