"""Spec draws the runtime executes in tests: :func:`tiny_specs` shrinks a
:func:`tests.strategies.valid_specs` draw (width <= 32, chunks / periods / MAC segments <=
:data:`TINY_GRID`); :func:`runnable_specs` also leaves out what the runtime refuses by design
and keeps learning rates in a stable regime."""
from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from tests.strategies import INPUT, USABLE, _copy_misplaced_nested_states, _layer_levels, _source_name, valid_specs


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
    widths = [w for w in (16, 24, 32) if all(w % h == 0 for h in heads)]
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
            per = lv.get("chunk", 64) // p  # chunks hold whole periods
            lv["chunk"] = remap[p] * max(1, min(per, TINY_GRID // remap[p]))
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


_KNOBS = ("lr", "momentum", "retention", "forget")


def _from_input(value: Any) -> Any:
    """A source or knob that another level produced, re-pointed at the input."""
    src = _source_name(value)
    if src is None or src == INPUT:
        return value
    if isinstance(value, str):
        return INPUT
    return {k: v for k, v in value.items() if k not in ("per",)} | {"from": INPUT}


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
    """Drop from a tiny draw the features the runtime rejects by design (each with a
    located error, see ``test_generated_properties.py``): memory periods other than 1,
    sources and knobs produced by other levels (HOPE couplings), self-generated targets,
    cross-level initial states of memories, and CMS update rules other than plain ``gd``
    with a constant, learned or per-token input-driven lr. Levels that only fed another
    level are then applied as layers of the last block, so every level reaches the output
    (a nested initial state that this misplaces becomes a copy). CMS periods are scaled (all by one power
    of two: their order and nesting hold) so that the shortest is at least
    ``min_cms_period``.

    Memories and CMS levels are also kept in a numerically stable regime: an lr of at most
    :data:`STABLE_LR`, and l2-normalised memory keys, values and queries (the language's
    defaults, unnormalised sources and lr 1.0, make gradient-descent memories diverge within a
    few tokens, and an ``lp`` objective with p > 2 does at any fixed lr once its errors are
    large), with no ``lq`` retention of q < 2."""
    data = copy.deepcopy(data)
    for lv in data["levels"].values():
        if lv["type"] == "memory":
            lv.pop("period", None)
            for field in ("keys", "values", "queries"):
                if field in lv:
                    lv[field] = _from_input(lv[field])
            for field in ("keys", "values", "queries"):
                lv[field] = _l2_normalised(lv.get(field, INPUT))
            update = lv.setdefault("update", {"rule": "gd"})
            for knob in _KNOBS:
                if knob in update:
                    update[knob] = _from_input(update[knob])
            update["lr"] = _small_lr(update.get("lr"))
            if update.get("retention_kind") == "lq" and update.get("q", 2.0) < 2:
                update["q"] = 2.0  # W = A ||A||_q^(2-q) grows faster than A: it runs away
            lv.get("objective", {}).pop("self_target", None)
            if isinstance(lv.get("init"), dict):
                del lv["init"]
        elif lv["type"] == "mlp" and isinstance(lv.get("period"), int):
            lr = lv.get("update", {}).get("lr")
            if isinstance(lr, dict) and "from" in lr:  # per-token, from the input
                lr = {k: v for k, v in lr.items() if k != "per"} | {"from": INPUT}
            lv["update"] = {"rule": "gd", "lr": _small_lr(lr)}
    cms = [lv for lv in data["levels"].values() if lv["type"] == "mlp" and isinstance(lv.get("period"), int)]
    scale, shortest = 1, min((lv["period"] for lv in cms), default=min_cms_period)
    while shortest * scale < min_cms_period:
        scale *= 2
    for lv in cms:
        lv["period"] *= scale
    memories = {n for n, lv in data["levels"].items() if lv["type"] == "memory"}
    transfer = [e for e in data.get("transfer", [])  # memory periods are 1 now: not slower
                if not (e["kind"] == "initialization" and e["from"] in memories)]
    if transfer:
        data["transfer"] = transfer
    else:
        data.pop("transfer", None)
    usable = [n for n, lv in data["levels"].items() if lv["type"] in USABLE]
    applied = {n for block in data["model"]["blocks"] for layer in block["layers"]
               for n in _layer_levels(layer)}
    data["model"]["blocks"][-1]["layers"] += [n for n in usable if n not in applied]
    _copy_misplaced_nested_states(data["levels"], data["model"]["blocks"])
    return data


def runnable_specs(max_levels: int = 6, min_cms_period: int = 2) -> st.SearchStrategy[dict]:
    """A :func:`tiny_specs` draw without the features the runtime rejects by design (see
    :func:`_runnable`): most of these compile and run. The default ``min_cms_period`` keeps
    task-driven CMS levels off period 1, whose teach loop runs token by token (a draw then
    costs tens of times more); with ``min_cms_period <= 2`` every period stays at most
    ``TINY_GRID``."""
    return tiny_specs(max_levels).map(lambda data: _runnable(data, min_cms_period))
