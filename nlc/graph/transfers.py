"""Validation rule 13, knowledge-transfer edges (``transfer:``, NL-arXiv §3.3): what each
kind compiles to, and where it can.

An edge ``{from: X, to: Y, kind: K}`` (docs/design.md, "Level semantics: transfer"):

* ``conditioning`` -- Y reads its normalised input plus ``W stopgrad(o_X)``, ``o_X`` what X's
  layer added to the residual stream at the same tokens: X's output conditions Y and no
  gradient crosses (NL-arXiv Eq. 25);
* ``backprop`` -- the same without the stop-gradient: one gradient flow through levels of
  different frequencies (how CMS learns);
* ``generation`` -- X generates a per-token diagonal weight on Y's output,
  ``y_Y (1 + W o_X)`` (a hypernetwork of Y's output scale, §3.3 item 5);
* ``initialization`` -- X meta-learns Y's initial state: either X is the optimizer level
  that trains Y's learned initial state (``outer``), or Y is re-initialised from slower
  X whenever X ticks, ``levels.Y.init: {from: X}`` (nested CMS, NL-arXiv Eq. 72). The edge names
  what Y's ``init`` does; one it does not do is refused with the line to write.

``W`` (``D x D``, zero at the start, so the edge changes nothing until trained) belongs to Y.
The first three need ``o_X`` where Y runs: X and Y are attention, memory or MLP levels applied
in layers of their own (``- X``, not inside ``parallel`` or ``context``), and every block
that applies Y applies X in an earlier layer (the nearest one feeds it): the same-step
dependencies then point forward and cannot form a cycle.
"""
from __future__ import annotations

import networkx as nx

from ..errors import Issue
from ..spec.levels import MemoryLevel, MLPLevel, OptimizerLevel
from ..spec.model import LevelLayer, Spec
from .build import outer_of
from .sizes import layer_levels

FORWARD = ("conditioning", "backprop", "generation")  # kinds that read o_X in Y's layer
PRODUCERS = ("attention", "memory", "mlp")


def check_transfers(spec: Spec, graph: nx.MultiDiGraph) -> list[Issue]:
    issues = []
    for t, edge in enumerate(spec.transfer):
        x, y, path = edge.source, edge.target, f"transfer.{t}"
        if x == y:
            continue  # a level feeding itself: rule 2 names the cycle
        if edge.kind == "initialization":
            issues += _check_initialization(spec, path, x, y)
            continue
        for field, name in (("from", x), ("to", y)):
            if spec.levels[name].type not in PRODUCERS:
                issues.append(Issue(f"{path}.{field}", f"a {edge.kind} edge connects levels with outputs; "
                                    f"'{name}' is {spec.levels[name].type} level",
                                    hint="use an attention, memory or mlp level"))
        if issues and issues[-1].path.startswith(path):
            continue
        issues += _check_placement(spec, path, edge.kind, x, y)
    return issues


def _check_placement(spec: Spec, path: str, kind: str, x: str, y: str) -> list[Issue]:
    issues, applied = [], False
    for b, block in enumerate(spec.model.blocks):
        for i, layer in enumerate(block.layers):
            names = set(layer_levels(layer))
            if not isinstance(layer, LevelLayer) and {x, y} & names:
                who = y if y in names else x
                kind_of = type(layer).__name__.replace("Layer", "").lower()
                issues.append(Issue(f"model.blocks.{b}.layers.{i}", f"'{who}' is joined by a {kind} edge "
                                    f"({path}) and so runs in a layer of its own, not inside a {kind_of} layer",
                                    hint=f"apply '{who}' as a layer of its own: - {who}"))
                continue
            if isinstance(layer, LevelLayer) and layer.level == y:
                applied = True
                before = [lay for lay in block.layers[:i] if isinstance(lay, LevelLayer) and lay.level == x]
                if not before:
                    issues.append(Issue(f"{path}.from", f"'{y}' reads the output of '{x}' ({kind}), but block "
                                        f"{b} applies '{y}' (layer {i}) with no layer of '{x}' before it",
                                        hint=f"apply '{x}' in an earlier layer of block {b}"))
    if not applied and not issues:
        issues.append(Issue(f"{path}.to", f"'{y}' is not applied in a layer, so no layer reads the {kind} "
                            f"edge from '{x}'", hint=f"apply '{y}' as a layer of a block"))
    return issues


def _check_initialization(spec: Spec, path: str, x: str, y: str) -> list[Issue]:
    target, source = spec.levels[y], spec.levels[x]
    init = getattr(target, "init", None)
    has_state = isinstance(target, MemoryLevel) or (isinstance(target, MLPLevel) and target.period.tokens)
    if init is not None and has_state:
        if init.kind == "from" and init.level == x:
            return []  # nested: Y re-initialised from X (rules 3 and 9 check it)
        if isinstance(source, OptimizerLevel) and init.kind == "learned" and outer_of(spec, y) == x:
            return []  # X trains Y's meta-learned initial state
    if not has_state:
        hint = f"'{y}' has no in-context state to initialise: remove the edge"
    elif isinstance(source, OptimizerLevel):
        hint = f"write levels.{y}.outer: {x} with a learned init, or remove the edge"
    else:
        hint = f"write levels.{y}.init: {{from: {x}}} (a task-driven CMS level from a slower one)"
    return [Issue(path, f"an initialization edge names what '{y}''s initial state does, and "
                  f"'{x}' does not meta-learn it (its init is "
                  f"{'none' if init is None or not has_state else init.kind})", hint=hint)]
