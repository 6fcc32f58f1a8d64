"""Semantic checks of a schema-valid spec, all collected in one pass.

The rules (docs/design.md, "Validation rules", states them for users):

1. every level name used anywhere resolves, to a level of a type that fits the use;
2. no two levels need each other at the same time: the same-time edges form a DAG
   (the message prints the cycle);
3. a level's initial state is meta-learned only by a strictly slower level;
4. exactly one outermost level (an optimizer level on the slowest step clock);
5. every level reaches the output (is used by a layer, or feeds a level that does);
6. chunks hold whole periods; periods that do not nest, or exceed the training
   sequence, are warned about;
7. dimensions agree: heads divide the width, a state copied or meta-learned from
   another level has the same shape;
8. update rules fit their memory and objective (delta rule: matrix + L2; DGD: L2 or dot;
   the task objective only drives MLP (CMS) levels; a CMS level steps by gd or momentum);
9. a nested initial state (``init: {from: X}``, NL-arXiv Eq. 72) belongs to a task-driven
   CMS level applied in a layer of its own, in a block that applies X in a layer of its own
   (the model re-initialises it from that layer's state when X updates);
10. a knob squashed by a sigmoid (data-dependent, or a memory's learned knob) starts strictly
    inside (0, max), and a retention / momentum / forget gate keeps max <= 1. *Warning*: a
    deep (MLP) memory stepping with a constant lr >= 1 on keys that are not l2-normalised
    (the language's defaults) diverges within a few chunks.
"""
from __future__ import annotations

import difflib
import math

import networkx as nx

from ..errors import Issue
from ..spec.levels import MemoryLevel, MLPLevel, OptimizerLevel
from ..spec.model import LevelLayer, Spec
from .build import block_levels, build_graph, frequency, outermost, references


def check_spec(spec: Spec) -> list[Issue]:
    issues = _check_references(spec)
    if issues:  # later checks assume names resolve
        return issues
    graph = build_graph(spec)
    for check in (_check_cycles, _check_initialisation, _check_outermost, _check_reaches_output,
                  _check_periods, _check_dimensions, _check_rules, _check_nesting, _check_knobs):
        issues += check(spec, graph)
    return issues


def _check_references(spec: Spec) -> list[Issue]:
    issues = []
    names = list(spec.levels)
    for ref in references(spec):
        level = spec.levels.get(ref.target)
        if level is None:
            close = difflib.get_close_matches(ref.target, names, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"levels are: {', '.join(names)}"
            issues.append(Issue(ref.path, f"unknown level '{ref.target}'", hint=hint))
        elif level.type not in ref.allowed:
            article = "an" if level.type[0] in "aeiou" or level.type == "mlp" else "a"
            issues.append(Issue(ref.path, f"level '{ref.target}' is {article} {level.type} level; "
                                f"this place needs a level of type {' or '.join(ref.allowed)}"))
    return issues


def _check_cycles(spec: Spec, graph: nx.MultiDiGraph) -> list[Issue]:
    same_time = nx.DiGraph()
    for a, b, data in graph.edges(data=True):
        if data["same_time"]:
            same_time.add_edge(a, b, path=data["path"])
    issues = []
    for component in nx.strongly_connected_components(same_time):
        if len(component) == 1 and not same_time.has_edge(*(2 * tuple(component))):
            continue
        cycle = nx.find_cycle(same_time.subgraph(component))
        chain = " -> ".join([cycle[0][0], *(b for _, b in cycle)])
        issues.append(Issue(
            same_time.edges[cycle[-1]]["path"],
            f"levels need each other at the same time: {chain}",
            hint="let one of them read before its write, read: before_write, so it uses the previous state",
        ))
    return issues


def _check_initialisation(spec: Spec, graph: nx.MultiDiGraph) -> list[Issue]:
    issues = []
    for a, b, data in graph.edges(data=True):
        if data["kind"] == "initialization" and frequency(spec, a) >= frequency(spec, b) \
                and not isinstance(spec.levels[a], OptimizerLevel):
            issues.append(Issue(data["path"], f"'{a}' cannot meta-learn the initial state of '{b}': "
                                "it is not slower", hint="initial states come only from a slower level"))
    return issues


def _check_outermost(spec: Spec, graph: nx.MultiDiGraph) -> list[Issue]:
    slowest = outermost(spec)
    if not slowest:
        return [Issue("levels", "no outermost level: add an optimizer level",
                      hint="e.g. 'outer: {type: optimizer, rule: adamw, lr: 1.0e-3}'")]
    if len(slowest) > 1:
        return [Issue(f"levels.{slowest[1]}.period", "more than one outermost level: "
                      f"{', '.join(slowest)} share the slowest step clock",
                      hint="give one of them a longer period {steps: k} or merge them")]
    return []


def _check_reaches_output(spec: Spec, graph: nx.MultiDiGraph) -> list[Issue]:
    sinks = set(block_levels(spec))
    if not sinks:
        return []
    reach = set(sinks)
    for sink in sinks:
        reach |= nx.ancestors(graph, sink)
    return [Issue(f"levels.{name}", f"level '{name}' does not reach the output", hint=_UNUSED_HINT.get(
                spec.levels[name].type, "use it in a model layer or reference it from a level that is used"))
            for name in spec.levels if name not in reach]


_UNUSED_HINT = {
    "optimizer": "name it as some level's 'outer:', or remove it",
    "persistent": "name it in an attention level's 'persistent:' or a context layer",
}


def _check_periods(spec: Spec, graph: nx.MultiDiGraph) -> list[Issue]:
    issues = []
    periods: dict[int, str] = {}
    for name, level in spec.levels.items():
        period = getattr(level, "period", None)
        tokens = period.tokens if period is not None else None
        if tokens is None:
            continue
        periods.setdefault(tokens, name)
        if isinstance(level, MemoryLevel) and level.chunk % tokens:
            issues.append(Issue(f"levels.{name}.chunk", f"chunk {level.chunk} does not hold whole "
                                f"periods of {tokens} tokens", hint=f"use a multiple of {tokens}"))
        if tokens >= spec.train.seq_len and tokens > 1:
            issues.append(Issue(f"levels.{name}.period", f"period {tokens} is not shorter than train.seq_len "
                                f"{spec.train.seq_len}: no update reaches an output inside a training sequence",
                                hint="use a shorter period or longer sequences", severity="warning"))
    ordered = sorted(periods)
    for fast, slow in zip(ordered, ordered[1:]):
        if slow % fast:
            issues.append(Issue(f"levels.{periods[slow]}.period", f"periods {fast} and {slow} do not nest: "
                                f"the schedule repeats only every {math.lcm(*ordered)} tokens",
                                hint="periods that divide each other keep one compiled graph per level",
                                severity="warning"))
    return issues


def _state_shape(level: object) -> tuple:
    if isinstance(level, MemoryLevel):
        return ("memory", level.memory.model_dump_json(), level.heads)
    if isinstance(level, MLPLevel):
        return ("mlp", level.hidden, level.expansion, level.activation)
    return (type(level).__name__,)


def _check_dimensions(spec: Spec, graph: nx.MultiDiGraph) -> list[Issue]:
    issues = []
    width = spec.model.width
    for name, level in spec.levels.items():
        heads = getattr(level, "heads", None)
        if heads is not None and width % heads:
            issues.append(Issue(f"levels.{name}.heads", f"{heads} heads do not divide the width {width}",
                                hint=f"use a divisor of {width}"))
        init = getattr(level, "init", None)
        if init is not None and init.level is not None and init.level in spec.levels:
            if _state_shape(spec.levels[init.level]) != _state_shape(level):
                issues.append(Issue(f"levels.{name}.init", f"the state of '{init.level}' has a different "
                                    f"shape from the state of '{name}'",
                                    hint="initial states are copied: give both levels the same memory/hidden/heads"))
    return issues


def _check_rules(spec: Spec, graph: nx.MultiDiGraph) -> list[Issue]:
    issues = []
    for name, level in spec.levels.items():
        if isinstance(level, MLPLevel) and level.update is not None and level.update.rule not in ("gd", "momentum"):
            issues.append(Issue(f"levels.{name}.update.rule", f"a CMS level steps by the summed chunk gradient "
                                f"(NL Eqs. 70-71), not by rule '{level.update.rule}'", hint="use rule gd or momentum"))
        if not isinstance(level, MemoryLevel):
            continue
        base, rule, objective = f"levels.{name}", level.update.rule, level.objective.kind
        if rule == "delta" and level.memory.kind != "matrix":
            issues.append(Issue(f"{base}.update.rule", "the exact delta rule needs a matrix memory",
                                hint="use rule 'gd' or 'momentum' for an MLP memory"))
        elif rule == "delta" and objective != "l2":
            issues.append(Issue(f"{base}.update.rule", f"the delta rule minimises the l2 objective, not "
                                f"'{objective}'", hint="set objective: {kind: l2} or use rule 'gd'"))
        if rule == "dgd" and objective not in ("l2", "dot"):
            issues.append(Issue(f"{base}.update.rule", "DGD (HOPE Eq. 88) is defined for the l2 and "
                                "dot objectives"))
        if objective == "task":
            issues.append(Issue(f"{base}.objective.kind", "the 'task' objective drives MLP (CMS) levels; "
                                "a memory needs an associative objective",
                                hint="use l2, lp, huber or dot"))
    return issues


def _is_task_cms(level: object) -> bool:
    return isinstance(level, MLPLevel) and level.period.tokens is not None and (
        level.objective is None or level.objective.kind == "task")


def _check_nesting(spec: Spec, graph: nx.MultiDiGraph) -> list[Issue]:
    issues = []
    for name, level in spec.levels.items():
        init = getattr(level, "init", None)
        if init is None or init.kind != "from":
            continue
        if not _is_task_cms(level):
            issues.append(Issue(f"levels.{name}.init", f"'{name}' is not a CMS level driven by the task "
                                "objective: nested initial states ('init: {from: ...}') re-initialise only "
                                "those (NL-arXiv Eq. 72)",
                                hint="use init: learned or zero, or make it an mlp level with a period "
                                "and objective: {kind: task}"))
            continue
        for b, block in enumerate(spec.model.blocks):
            own = {layer.level for layer in block.layers if isinstance(layer, LevelLayer)}
            shared = [(i, layer) for i, layer in enumerate(block.layers) if not isinstance(layer, LevelLayer)
                      and name in _layer_names(layer)]
            for i, _ in shared:
                issues.append(Issue(f"model.blocks.{b}.layers.{i}", f"level '{name}' has a nested initial "
                                    f"state (from '{init.level}') and cannot share a layer",
                                    hint=f"apply '{name}' in a layer of its own"))
            if (name in own or shared) and init.level not in own:
                issues.append(Issue(f"levels.{name}.init", f"'{name}' is re-initialised from the state of "
                                    f"'{init.level}' in the same block, but block {b} does not apply "
                                    f"'{init.level}' in a layer of its own",
                                    hint=f"add '{init.level}' as a layer of block {b}"))
    return issues


def _layer_names(layer: object) -> set[str]:
    parallel = getattr(layer, "parallel", None)
    if parallel is not None:
        return set(parallel)
    context = layer.context
    return {context.attention, context.memory}


def _check_knobs(spec: Spec, graph: nx.MultiDiGraph) -> list[Issue]:
    issues = []
    for name, level in spec.levels.items():
        update = getattr(level, "update", None)
        if update is None:
            continue
        for role in ("lr", "momentum", "retention", "forget"):
            knob, path = getattr(update, role), f"levels.{name}.update.{role}"
            if knob is None or knob.kind == "constant":
                continue
            if role != "lr" and knob.max > 1:
                issues.append(Issue(f"{path}.max", f"a {role} gate stays in (0, 1); max {knob.max} lets it "
                                    "leave", hint="use max <= 1: the gate is max * sigmoid(.)"))
            squashed = knob.kind == "data" or isinstance(level, MemoryLevel)  # a CMS learned lr: softplus
            if squashed and not 0 < knob.initial < knob.max:
                where, hint = ("init", "give an init below max, or a larger max") if knob.kind == "data" \
                    else ("learned", "use a value below 1, or {from: input, init: ..., max: ...}")
                issues.append(Issue(f"{path}.{where}", f"the {role} knob is {knob.max} * sigmoid(.): it "
                                    f"starts strictly inside (0, {knob.max}), not at {knob.initial}", hint=hint))
        if isinstance(level, MemoryLevel) and level.memory.kind == "mlp" and update.lr.kind == "constant" \
                and update.lr.value >= 1 and level.keys.norm != "l2":
            issues.append(Issue(f"levels.{name}.update.lr", f"a deep (MLP) memory stepping with the constant lr "
                                f"{update.lr.value} on keys that are not l2-normalised diverges within a few "
                                "chunks", hint="use lr: 0.1 or less, a data-dependent lr, or keys: {from: input, "
                                "norm: l2}", severity="warning"))
    return issues
