"""The level graph: levels as nodes, dependencies as edges, frequencies and ordered levels.

An edge ``A -> B`` records that B uses A. It is *same-time* when B's state at token t
needs A's state at token t (NL-arXiv §3.2, Definition 2's ordering); it is
*lagged* when B only needs an earlier state of A (a memory read before its own write,
a CMS block frozen inside its chunk, a parameter that never changes in context). Only
same-time edges can form a forbidden cycle: two levels that need each other at the same
time. Lagged mutual reads are what makes HOPE's memories self-modifying.

Frequencies are updates per token, as exact fractions:

* attention (non-parametric, recomputed every token): infinite;
* a memory or CMS level with ``period: C``: 1/C;
* an optimizer level with ``period: {steps: k}``: 1/(k * batch * seq_len);
* a level that never changes in context (``period: never``, persistent tokens) is
  stepped by its outer optimizer, so it has that optimizer's frequency.

Ordered levels (paper: "the higher the level, the lower its frequency"): the distinct
frequencies sorted from fastest to slowest; level 0 is the fastest.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import networkx as nx

from ..spec.levels import AttentionLevel, MemoryLevel, MLPLevel, OptimizerLevel
from ..spec.model import ContextLayer, LevelLayer, ParallelLayer, Spec
from ..spec.values import INPUT

INFINITE = Fraction(10**18)  # stands for f = infinity (attention) in comparisons


@dataclass(frozen=True)
class Ref:
    """A reference from one place in the spec to a level name."""

    path: str  # dotted path of the referring field
    owner: str | None  # the level that holds the field (None: model/transfer sections)
    target: str
    kind: str  # conditioning | initialization | copy | backprop | generation | structure
    allowed: tuple[str, ...]  # level types the target may have


def references(spec: Spec) -> list[Ref]:
    """Every level name the spec mentions, with where and what kind of use."""
    refs: list[Ref] = []
    for name, level in spec.levels.items():
        base = f"levels.{name}"
        # a memory reads its sources from memories only (HOPE's coupling); a CMS lr from either
        producers = ("memory",) if isinstance(level, MemoryLevel) else ("memory", "mlp")
        if isinstance(level, MemoryLevel):
            for field in ("keys", "values", "queries"):
                src = getattr(level, field).source
                if src != INPUT:
                    refs.append(Ref(f"{base}.{field}.from", name, src, "generation", producers))
        update = getattr(level, "update", None)
        if update is not None:
            for knob_name in ("lr", "momentum", "retention", "forget"):
                knob = getattr(update, knob_name)
                if knob is not None and knob.source not in (None, INPUT):
                    refs.append(Ref(f"{base}.update.{knob_name}.from", name, knob.source, "generation",
                                    producers))
        if isinstance(level, (MemoryLevel, MLPLevel)) and level.init.level is not None:
            kind = "copy" if level.init.kind == "copy" else "initialization"
            refs.append(Ref(f"{base}.init", name, level.init.level, kind, (level.type,)))
        if isinstance(level, AttentionLevel) and level.persistent is not None:
            refs.append(Ref(f"{base}.persistent", name, level.persistent, "conditioning", ("persistent",)))
        if not isinstance(level, OptimizerLevel) and level.outer is not None:
            refs.append(Ref(f"{base}.outer", name, level.outer, "initialization", ("optimizer",)))
    for b, block in enumerate(spec.model.blocks):
        for i, layer in enumerate(block.layers):
            lp = f"model.blocks.{b}.layers.{i}"
            if isinstance(layer, LevelLayer):
                refs.append(Ref(f"{lp}.level", None, layer.level, "structure", ("attention", "memory", "mlp")))
            elif isinstance(layer, ParallelLayer):
                refs += [Ref(f"{lp}.parallel.{j}", None, n, "structure", ("attention", "memory", "mlp"))
                         for j, n in enumerate(layer.parallel)]
            elif isinstance(layer, ContextLayer):
                ctx = layer.context
                refs.append(Ref(f"{lp}.context.attention", None, ctx.attention, "structure", ("attention",)))
                refs.append(Ref(f"{lp}.context.memory", None, ctx.memory, "structure", ("memory",)))
                if ctx.persistent is not None:
                    refs.append(Ref(f"{lp}.context.persistent", None, ctx.persistent, "structure", ("persistent",)))
    for t, edge in enumerate(spec.transfer):
        kinds = ("attention", "memory", "mlp", "persistent", "optimizer")
        refs.append(Ref(f"transfer.{t}.from", None, edge.source, edge.kind, kinds))
        refs.append(Ref(f"transfer.{t}.to", None, edge.target, edge.kind, kinds))
    return refs


def outermost(spec: Spec) -> list[str]:
    """The optimizer levels on the slowest step clock."""
    optimizers = {n: lv for n, lv in spec.levels.items() if isinstance(lv, OptimizerLevel)}
    if not optimizers:
        return []
    slowest = max(lv.period.steps for lv in optimizers.values())
    return [n for n, lv in optimizers.items() if lv.period.steps == slowest]


def outer_of(spec: Spec, name: str) -> str | None:
    level = spec.levels[name]
    if isinstance(level, OptimizerLevel):
        return None
    if level.outer is not None:
        return level.outer
    slowest = outermost(spec)
    return slowest[0] if len(slowest) == 1 else None


def frequency(spec: Spec, name: str) -> Fraction:
    """Updates per token (see module docstring)."""
    level = spec.levels[name]
    if isinstance(level, AttentionLevel):
        return INFINITE
    if isinstance(level, OptimizerLevel):
        return Fraction(1, level.period.steps * spec.train.batch * spec.train.seq_len)
    period = getattr(level, "period", None)
    if period is not None and period.tokens is not None:
        return Fraction(1, period.tokens)
    outer = outer_of(spec, name)  # never changes in context: moves with its optimizer
    if outer is not None and isinstance(spec.levels.get(outer), OptimizerLevel):
        return frequency(spec, outer)
    return Fraction(0)


def is_lagged_output(spec: Spec, name: str) -> bool:
    """True when the level's output at token t uses only its state before token t."""
    level = spec.levels[name]
    if isinstance(level, MemoryLevel):
        return level.read == "before_write"
    return not isinstance(level, AttentionLevel)  # MLP/CMS frozen in chunk, persistent, optimizer


def build_graph(spec: Spec) -> nx.MultiDiGraph:
    """Nodes: levels (attributes: type, frequency, order). Edges: uses, with
    ``same_time`` telling whether they take part in the cycle check."""
    graph = nx.MultiDiGraph()
    for name, level in spec.levels.items():
        graph.add_node(name, type=level.type, frequency=frequency(spec, name))
    for ref in references(spec):
        if ref.target not in spec.levels or ref.kind == "structure":
            continue
        if ref.owner is not None:
            lagged = ref.kind in ("initialization", "copy") or is_lagged_output(spec, ref.target)
            graph.add_edge(ref.target, ref.owner, kind=ref.kind, path=ref.path, same_time=not lagged)
    for t, edge in enumerate(spec.transfer):
        if edge.source in spec.levels and edge.target in spec.levels:
            graph.add_edge(edge.source, edge.target, kind=edge.kind, path=f"transfer.{t}",
                           same_time=edge.kind != "initialization")
    for b, block in enumerate(spec.model.blocks):
        for i, layer in enumerate(block.layers):
            if isinstance(layer, ContextLayer) and {layer.context.attention, layer.context.memory} <= set(spec.levels):
                path = f"model.blocks.{b}.layers.{i}.context"
                mem, attn = layer.context.memory, layer.context.attention
                # MAC: attention reads the memory's retrieval; the memory writes the attention output
                graph.add_edge(mem, attn, kind="conditioning", path=path,
                               same_time=not is_lagged_output(spec, mem))
                graph.add_edge(attn, mem, kind="conditioning", path=path, same_time=True)
                if layer.context.persistent in spec.levels:
                    graph.add_edge(layer.context.persistent, attn, kind="conditioning", path=path,
                                   same_time=False)
    for name in spec.levels:
        outer = outer_of(spec, name)
        if outer in spec.levels and not graph.has_edge(outer, name):
            graph.add_edge(outer, name, kind="initialization", path=f"levels.{name}", same_time=False)
    order = ordered_levels(spec)
    nx.set_node_attributes(graph, {n: i for i, group in enumerate(order) for n in group}, "order")
    return graph


def block_levels(spec: Spec) -> list[str]:
    """Levels applied to the residual stream by some layer (they feed the output)."""
    return [r.target for r in references(spec) if r.kind == "structure" and r.target in spec.levels]


def ordered_levels(spec: Spec) -> list[list[str]]:
    """Levels grouped by frequency, fastest first; within a group, in dependency order."""
    same_time = nx.DiGraph()
    same_time.add_nodes_from(spec.levels)
    for ref in references(spec):
        if ref.owner and ref.target in spec.levels and not is_lagged_output(spec, ref.target):
            same_time.add_edge(ref.target, ref.owner)
    try:
        topo = {n: i for i, n in enumerate(nx.topological_sort(same_time))}
    except nx.NetworkXUnfeasible:
        topo = {n: i for i, n in enumerate(spec.levels)}
    by_freq: dict[Fraction, list[str]] = {}
    for name in spec.levels:
        by_freq.setdefault(frequency(spec, name), []).append(name)
    return [sorted(by_freq[f], key=topo.__getitem__) for f in sorted(by_freq, reverse=True)]
