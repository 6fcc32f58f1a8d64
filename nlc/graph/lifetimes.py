"""Validation rule 12, level lifetimes: what ``lifetime: stream`` and ``document`` may be given to.

A level's lifetime is how long its in-context state lives (docs/design.md, "Level
semantics"): ``sequence`` (the default) starts it afresh with every sequence; ``stream``
carries it from one sequence to the next of the same stream; ``document`` carries it too
and starts it afresh where a document begins. The runtime carries (and resets) a *layer's*
state, so:

* a ``stream`` or ``document`` level has in-context state (a memory, or an MLP with a period in tokens: a
  Transformer MLP, ``period: never``, has none);
* it is applied in a layer (a HOPE component lives inside its memory's state and takes that
  memory's lifetime);
* the levels of one layer (``parallel`` or a MAC ``context``) share one lifetime;
* a nested initial state (``init: {from: X}``) has X's lifetime (the level is re-initialised
  from X's state whenever X updates, which must then live exactly as long).
"""
from __future__ import annotations

import networkx as nx

from ..errors import Issue
from ..spec.levels import MemoryLevel, MLPLevel
from ..spec.model import Spec
from .sizes import layer_levels


def check_lifetimes(spec: Spec, graph: nx.MultiDiGraph) -> list[Issue]:
    issues = []
    applied: set[str] = set()
    for b, block in enumerate(spec.model.blocks):
        for i, layer in enumerate(block.layers):
            names = layer_levels(layer)
            applied |= set(names)
            kinds = {_lifetime(spec, n) for n in names}
            if len(kinds) > 1:
                each = ", ".join(f"'{n}' {_lifetime(spec, n)}" for n in names)
                issues.append(Issue(f"model.blocks.{b}.layers.{i}", f"the levels of one layer share a lifetime, "
                                    f"but they differ: {each}", hint="give them the same lifetime, or apply "
                                    "them in layers of their own"))
    for name, level in spec.levels.items():
        life = getattr(level, "lifetime", "sequence")
        if life == "sequence":
            continue
        if isinstance(level, MLPLevel) and level.period.tokens is None:
            issues.append(Issue(f"levels.{name}.lifetime", f"'{name}' is an MLP with period 'never': it has no "
                                "in-context state for a stream to carry", hint="give it a period in tokens "
                                "(a CMS level), or remove 'lifetime'"))
        elif name not in applied:
            issues.append(Issue(f"levels.{name}.lifetime", f"'{name}' is not applied in a layer, so it has no "
                                "state of its own to carry: a level read by another one lives in that "
                                "level's state", hint="set lifetime on the level a layer applies, or remove it"))
        init = getattr(level, "init", None)
        if init is not None and init.kind == "from" and _lifetime(spec, init.level) != life:
            issues.append(Issue(f"levels.{name}.lifetime", f"'{name}' ({life}) is re-initialised from "
                                f"'{init.level}', which lives for one {_lifetime(spec, init.level)}: a nested "
                                "state has its source's lifetime",
                                hint=f"give '{init.level}' lifetime: {life} too, or the same lifetime here"))
    for name, level in spec.levels.items():
        init = getattr(level, "init", None)
        if init is not None and init.kind == "from" and _lifetime(spec, name) == "sequence" \
                and _lifetime(spec, init.level) != "sequence":
            source = _lifetime(spec, init.level)
            issues.append(Issue(f"levels.{name}.init", f"'{name}' lives for one sequence but is re-initialised "
                                f"from '{init.level}', which lives for the {source}",
                                hint=f"give '{name}' lifetime: {source} too"))
    return issues


def _lifetime(spec: Spec, name: str) -> str:
    level = spec.levels.get(name)
    return getattr(level, "lifetime", "sequence") if isinstance(level, (MemoryLevel, MLPLevel)) else "sequence"
