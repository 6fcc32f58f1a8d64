"""Semantic checks of a schema-valid spec, all collected in one pass.

The rules (docs/design.md, "Validation rules", states them for users):

1. every level name used anywhere resolves, to a level of a type that fits the use;
2. no two levels need each other at the same time: the same-time edges form a DAG
   (the message prints the cycle);
3. a level's initial state is meta-learned only by a strictly slower level;
4. exactly one outermost level (an optimizer level on the slowest step clock);
5. every level reaches the output (is used by a layer, or feeds a level that does);
6. periods that do not nest, or exceed the training sequence (of a level that lives for
   one sequence), are warned about;
7. dimensions agree: heads divide the width, attention with RoPE has an even head dim, a
   state copied or meta-learned from another level has the same shape;
8. the runtime builds what the spec says (:mod:`nlc.capabilities`, the table the lowering
   asserts): memory update rules, memory periods (on the chunk grid, read before write),
   CMS objectives / rules / lr / flush,
   initial states and resets, and couplings of memories (only HOPE's self-modifying pattern,
   which also runs a memory with self-generated targets and static sources);
9. a nested initial state (``init: {from: X}``, NL-arXiv Eq. 72) belongs to a task-driven
   CMS level applied in a layer of its own, in a block that applies X in a layer of its own
   (the model re-initialises it from that layer's state when X updates);
10. a knob squashed by a sigmoid (data-dependent or learned, every knob) starts strictly
    inside (0, max) (a gate's max <= 1 is a range of the spec model). *Warning*: a
    deep (MLP) memory stepping with a constant lr >= 1 on keys that are not l2-normalised
    (the language's defaults) diverges within a few chunks.
11. *Warning*: an optimizer level's ``warmup`` is shorter than the updates it makes in the
    run (``train.steps // period.steps``); otherwise its lr never leaves the warm-up ramp.
12. ``lifetime: stream`` or ``document`` (:mod:`nlc.graph.lifetimes`): on a level with
    in-context state that a layer applies, shared by the levels of its layer and by a nested
    state's source;
13. ``transfer:`` edges (:mod:`nlc.graph.transfers`): conditioning, backprop and generation join
    levels in layers of their own, the source before the target in every block; an
    initialization edge names what the target's ``init`` does.
"""
from __future__ import annotations

import difflib
import math

import networkx as nx

from ..capabilities import (
    CMSCase,
    KnobFacts,
    MemoryFacts,
    Refusal,
    RuleCase,
    SourceFacts,
    chunk_frozen,
    cms_init_refusals,
    cms_refusals,
    coupled,
    guards,
    frozen_mlp_refusals,
    hope_refusals,
    init_refusals,
    memory_primitive,
    memory_refusals,
    self_modifying,
)
from ..errors import Issue
from ..spec.levels import AttentionLevel, MemoryLevel, MLPLevel, OptimizerLevel
from ..spec.model import ContextLayer, LevelLayer, Spec
from ..spec.values import Knob, Source
from .build import block_levels, build_graph, frequency, outermost, references
from .lifetimes import check_lifetimes
from .sizes import layer_levels
from .stability import check_stability
from .transfers import check_transfers


def check_spec(spec: Spec) -> list[Issue]:
    issues = _check_references(spec)
    if issues:  # later checks assume names resolve
        return issues
    graph = build_graph(spec)
    for check in (_check_cycles, _check_initialisation, _check_outermost, _check_reaches_output,
                  _check_periods, _check_dimensions, _check_capabilities, _check_nesting, _check_knobs,
                  check_stability, _check_warmup, check_lifetimes, check_transfers):
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
        if tokens >= spec.train.seq_len and tokens > 1 and getattr(level, "lifetime", "sequence") == "sequence":
            issues.append(Issue(f"levels.{name}.period", f"period {tokens} is not shorter than train.seq_len "
                                f"{spec.train.seq_len}: no update reaches an output inside a training sequence",
                                hint="use a shorter period or longer sequences, or lifetime: stream (or document) "
                                "to carry the level's state across sequences", severity="warning"))
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
        elif isinstance(level, AttentionLevel) and level.rope and (width // (heads or spec.model.heads)) % 2:
            where = f"levels.{name}.heads" if heads is not None else "model.heads"
            issues.append(Issue(where, f"RoPE rotates pairs of channels, and attention level '{name}' has "
                                f"an odd head dim {width // (heads or spec.model.heads)}",
                                hint="choose heads so that width / heads is even, or set rope: false"))
        if isinstance(level, MLPLevel) and level.hidden is None and round(level.expansion * width) < 1:
            issues.append(Issue(f"levels.{name}.expansion", f"expansion {level.expansion} x width {width} "
                                "rounds to a hidden width of 0", hint=f"use expansion >= {1 / width:.3g} or hidden: N"))
        init = getattr(level, "init", None)
        if init is not None and init.level is not None and init.level in spec.levels:
            if _state_shape(spec.levels[init.level]) != _state_shape(level):
                issues.append(Issue(f"levels.{name}.init", f"the state of '{init.level}' has a different "
                                    f"shape from the state of '{name}'",
                                    hint="initial states are copied: give both levels the same memory/hidden/heads"))
    return issues


def _check_capabilities(spec: Spec, graph: nx.MultiDiGraph) -> list[Issue]:
    """Rule 8: what the runtime builds (:mod:`nlc.capabilities`, the table lowering asserts)."""
    memories = {n: _memory_facts(spec, n, lv) for n, lv in spec.levels.items() if isinstance(lv, MemoryLevel)}
    sources = {n: f.level_sources() for n, f in memories.items()}
    mains = [n for n in dict.fromkeys(block_levels(spec)) if n in memories and self_modifying(memories[n])]
    hope = set(mains) | {c for n in mains for c in coupled(n, sources)}
    found: list[tuple[str, Refusal]] = []
    for name, level in spec.levels.items():
        refusals: list[Refusal] = []
        if isinstance(level, MemoryLevel):
            f = memories[name]
            rule = memory_primitive(RuleCase(f.memory, f.objective, f.rule, f.window, f.retention_kind,
                                             f.guards, f.output, f.momentum is not None))
            if isinstance(rule, Refusal) and (name not in hope or f.objective == "task"):
                refusals.append(rule)
            refusals += memory_refusals(level.period.tokens or 0, f.self_target, f.init, name in hope,
                                        chunk=level.chunk, read_after_write=level.read == "after_write",
                                        frozen=isinstance(rule, str) and chunk_frozen(rule, f.objective),
                                        reduce=level.update.reduce,
                                        norm=getattr(level.memory, "norm", "none"))
        elif isinstance(level, MLPLevel) and level.period.tokens is None:
            refusals += frozen_mlp_refusals(level.init.kind, level.flush)
        elif isinstance(level, MLPLevel):
            refusals += cms_refusals(_cms_case(level)) + cms_init_refusals(level.init.kind)
        init = getattr(level, "init", None)
        if init is not None:
            refusals += init_refusals(init.kind, init.reset, "reset" in init.model_fields_set, init.level)
        found += [(name, r) for r in refusals]
    for main in mains:
        found += hope_refusals(memories[main], memories)
    issues = [Issue(f"levels.{name}.{r.field}", r.message, hint=r.hint) for name, r in found]
    for b, block in enumerate(spec.model.blocks):
        for i, layer in enumerate(block.layers):
            if isinstance(layer, ContextLayer) and layer.context.memory in mains:
                issues.append(Issue(f"model.blocks.{b}.layers.{i}.context.memory", f"a context (MAC) layer "
                                    f"reads a memory with static sources; '{layer.context.memory}' is a "
                                    "self-modifying (HOPE) memory", hint="apply it in a layer of its own"))
            attention = spec.levels.get(layer.context.attention) if isinstance(layer, ContextLayer) else None
            if getattr(attention, "persistent", None) and layer.context.persistent:
                issues.append(Issue(f"model.blocks.{b}.layers.{i}.context.persistent", f"attention level "
                                    f"'{layer.context.attention}' already prepends the persistent tokens of "
                                    f"'{attention.persistent}'; a context layer prepends one persistent level",
                                    hint="give persistent tokens in one place: the attention level or the layer"))
    return list({(i.path, i.message): i for i in issues}.values())


def _source_facts(source: Source) -> SourceFacts:
    return SourceFacts(source.source, source.project, source.conv, source.norm == "l2",
                       source.activation == "silu")


def _knob_facts(knob: Knob) -> KnobFacts:
    return KnobFacts(knob.kind, knob.source, knob.per == "chunk", knob.max)


def _memory_facts(spec: Spec, name: str, level: MemoryLevel) -> MemoryFacts:
    """The capability table's view of a memory level (sizes resolved as the IR does)."""
    shape, update, objective = level.memory, level.update, level.objective
    heads = level.heads or spec.model.heads
    mlp = shape.kind == "mlp"
    retention = update.forget if update.forget is not None else update.retention
    return MemoryFacts(
        name=name, memory=shape.kind, depth=shape.depth if mlp else 1,
        residual=mlp and shape.residual, heads=heads,
        hidden=(shape.hidden or shape.expansion * (spec.model.width // heads)) if mlp else 0,
        activation=shape.activation if mlp else "identity", objective=objective.kind,
        window=objective.window, self_target=objective.self_target, rule=update.rule,
        lr=_knob_facts(update.lr), momentum=_knob_facts(update.momentum) if update.momentum else None,
        retention=_knob_facts(retention) if retention is not None else None,
        forget=update.forget is not None, weight_decay=update.weight_decay,
        retention_kind=update.retention_kind, guards=guards(update.grad_clip, update.grad_normalize),
        output=update.output, update=update, chunk=level.chunk, read_after_write=level.read == "after_write",
        keys=_source_facts(level.keys), values=_source_facts(level.values),
        queries=_source_facts(level.queries), init=level.init.kind, output_gate=level.output_gate,
        features=level.features.kind)


def _cms_case(level: MLPLevel) -> CMSCase:
    update, objective = level.update, level.objective
    kind = objective.kind if objective is not None else "task"
    return CMSCase(
        objective=kind, window=objective.window if objective else 1,
        self_target=bool(objective and objective.self_target), rule=update.rule,
        momentum=update.momentum is not None,
        retention=update.retention is not None or update.forget is not None,
        weight_decay=update.weight_decay, retention_kind=update.retention_kind,
        guards=guards(update.grad_clip, update.grad_normalize), lr_kind=update.lr.kind,
        lr_source=update.lr.source, lr_per_chunk=update.lr.per == "chunk",
        flush=level.flush, output=update.output, reduce=update.reduce)


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
        source = spec.levels.get(init.level)
        if not (isinstance(source, MLPLevel) and source.period.tokens is not None):
            issues.append(Issue(f"levels.{name}.init", f"'{init.level}' has no in-context state for '{name}' to be "
                                "re-initialised from: a nested initial state comes from a slower CMS level (an mlp "
                                "level with a period in tokens)",
                                hint=f"give '{init.level}' a period, objective and update, or use init: learned"))
            continue
        for b, block in enumerate(spec.model.blocks):
            own = {layer.level for layer in block.layers if isinstance(layer, LevelLayer)}
            shared = [(i, layer) for i, layer in enumerate(block.layers) if not isinstance(layer, LevelLayer)
                      and name in set(layer_levels(layer))]
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


def _check_knobs(spec: Spec, graph: nx.MultiDiGraph) -> list[Issue]:
    issues = []
    for name, level in spec.levels.items():
        update, objective = getattr(level, "update", None), getattr(level, "objective", None)
        knobs = [] if update is None else [(role, getattr(update, role), f"levels.{name}.update.{role}")
                                           for role in ("lr", "momentum", "retention", "forget")]
        if objective is not None:
            knobs.append(("delta", objective.delta, f"levels.{name}.objective.delta"))
        for role, knob, path in knobs:
            if knob is None or knob.kind == "constant":
                continue
            if not 0 < knob.initial < knob.max:  # every knob is max * sigmoid(.) (nlc.runtime.knobs)
                where, hint = ("init", "give an init below max, or a larger max") if knob.kind == "data" \
                    else ("learned", "use a value below 1, or {from: input, init: ..., max: ...}")
                issues.append(Issue(f"{path}.{where}", f"the {role} knob is {knob.max} * sigmoid(.): it "
                                    f"starts strictly inside (0, {knob.max}), not at {knob.initial}", hint=hint))
    return issues


def _check_warmup(spec: Spec, graph: nx.MultiDiGraph) -> list[Issue]:
    """Rule 11: a warm-up (in the level's own updates, :mod:`nlc.training.lr`) that lasts the
    whole run is almost always a forgotten edit after lowering ``train.steps``."""
    issues = []
    for name, level in spec.levels.items():
        if not isinstance(level, OptimizerLevel) or not level.warmup:
            continue
        updates = spec.train.steps // level.period.steps
        if level.warmup >= updates:
            clock = "" if level.period.steps == 1 else f" (one every {level.period.steps} steps)"
            issues.append(Issue(f"levels.{name}.warmup", f"warmup {level.warmup} is not shorter than the "
                                f"{updates} updates '{name}' makes in train.steps {spec.train.steps}{clock}: "
                                "the lr never leaves its warm-up ramp",
                                hint=f"use a warmup below {updates} (often a tenth of it), or more train.steps",
                                severity="warning"))
    return issues
