"""Spec -> IR: fill defaults, normalise gate conventions, order levels, unroll blocks."""
from __future__ import annotations

from ..capabilities import (
    CMSCase, KnobFacts, MemoryFacts, RuleCase, SourceFacts, coupled, guards, self_modifying,
)
from ..graph.build import frequency, ordered_levels, outer_of
from ..spec.levels import (
    AttentionLevel,
    MemoryLevel,
    MLPLevel,
    OptimizerLevel,
    PersistentLevel,
    Update,
)
from ..spec.load import source_line
from ..spec.model import ContextLayer, LevelLayer, ParallelLayer, Spec
from ..spec.presets import expand
from ..spec.values import Knob, Source
from .nodes import (
    AttentionIR,
    FeaturesIR,
    GradientMemoryIR,
    GradientRuleIR,
    KnobIR,
    LayerIR,
    MemoryIR,
    MLPIR,
    ModelIR,
    ObjectiveIR,
    OptimizerIR,
    PersistentIR,
    RuleIR,
    SourceIR,
)


def knob_ir(knob: Knob, *, complement: bool = False) -> KnobIR:
    init = knob.initial
    return KnobIR(
        kind=knob.kind, init=init, max=knob.max, source=knob.source,
        per_chunk=knob.per == "chunk", complement=complement,
    )


def rule_ir(update: Update) -> RuleIR:
    """Normalise gates: Titans' ``forget`` becomes ``retention`` with ``complement``."""
    if update.forget is not None:
        retention = knob_ir(update.forget, complement=True)
    elif update.retention is not None:
        retention = knob_ir(update.retention)
    else:
        retention = None
    return RuleIR(
        kind=update.rule,
        lr=knob_ir(update.lr),
        momentum=knob_ir(update.momentum) if update.momentum is not None else None,
        retention=retention,
        weight_decay=update.weight_decay,
        retention_kind=update.retention_kind,
        q=update.q if update.q is not None else 2.0,
        shrink=update.shrink if update.shrink is not None else 0.0,
        grad_clip=update.grad_clip,
        grad_normalize=update.grad_normalize,
        ns_steps=(update.ns_steps or 5) if update.output == "newton_schulz" else 0,
        mass=update.mass or 0.0,
        reduce=update.reduce,
    )


def source_ir(source: Source) -> SourceIR:
    return SourceIR(source.source, source.project, source.conv, source.norm == "l2",
                    source.activation == "silu")


def resolve(spec: Spec) -> ModelIR:
    """The IR of a *valid* spec (``load_spec`` has run every check)."""
    ordered = ordered_levels(spec)
    order = {name: i for i, group in enumerate(ordered) for name in group}
    width, heads = spec.model.width, spec.model.heads
    levels = {}
    for name, level in spec.levels.items():
        common = dict(name=name, type=level.type, order=order[name],
                      frequency=frequency(spec, name), outer=outer_of(spec, name),
                      origin=source_line(spec, f"levels.{name}"))
        levels[name] = _level_ir(level, common, width, heads)
    layers = []
    for b, block in enumerate(spec.model.blocks):
        for r in range(block.repeat):
            for i, layer in enumerate(block.layers):
                layers.append(_layer_ir(layer, b, r, i, spec))
    return ModelIR(
        name=spec.name or "model", vocab=spec.model.vocab, tokenizer=spec.model.tokenizer,
        width=width, norm=spec.model.norm, tie_embeddings=spec.model.tie_embeddings,
        levels=levels, layers=tuple(layers), ordered=tuple(tuple(g) for g in ordered),
        source_file=getattr(spec.raw, "file", "<spec>"),
        overrides=tuple(getattr(spec.raw, "overrides", ())),
    )


def _level_ir(level, common: dict, width: int, heads: int):
    if isinstance(level, AttentionLevel):
        h = level.heads or heads
        return AttentionIR(**common, heads=h, head_dim=width // h, window=level.window,
                           rope=level.rope, persistent=level.persistent, qk_norm=level.qk_norm)
    if isinstance(level, MemoryLevel):
        h = level.heads or heads
        head_dim = width // h
        shape = level.memory
        mlp = shape.kind == "mlp"
        objective = level.objective
        return MemoryIR(
            **common, heads=h, head_dim=head_dim, memory=shape.kind,
            depth=shape.depth if mlp else 1,
            hidden=(shape.hidden or shape.expansion * head_dim) if mlp else head_dim,
            residual=shape.residual if mlp else False,
            activation=shape.activation if mlp else "identity",
            objective=_objective_ir(objective), rule=rule_ir(level.update),
            period=level.period.tokens or 0, chunk=level.chunk,
            norm=shape.norm if mlp else "none",
            read_after_write=level.read == "after_write",
            keys=source_ir(level.keys), values=source_ir(level.values), queries=source_ir(level.queries),
            init=level.init.kind, init_level=level.init.level, reset=level.init.reset,
            output_gate=level.output_gate, lifetime=level.lifetime,
            features=(FeaturesIR(level.features.kind, level.features.degree)
                      if level.features.kind != "identity" else None),
        )
    if isinstance(level, MLPLevel):
        return MLPIR(
            **common, hidden=level.hidden or int(round(level.expansion * width)),
            activation=level.activation, period=level.period.tokens or 0,
            objective=(_objective_ir(level.objective) if level.objective
                       else ObjectiveIR("task") if level.period.tokens else None),
            rule=rule_ir(level.update) if level.update else None,
            init=level.init.kind, init_level=level.init.level, reset=level.init.reset,
            flush=level.flush, lifetime=level.lifetime,
        )
    if isinstance(level, PersistentLevel):
        return PersistentIR(**common, tokens=level.tokens)
    assert isinstance(level, OptimizerLevel)
    written = expand(level)
    return OptimizerIR(**common, rule=level.rule, lr=level.lr, betas=tuple(level.betas),
                       weight_decay=level.weight_decay, eps=level.eps, grad_clip=level.grad_clip,
                       warmup=level.warmup, schedule=level.schedule, steps=level.period.steps,
                       matrices=_gradient_rule(written.matrices), others=_gradient_rule(written.others))


def _gradient_rule(rule) -> GradientRuleIR:
    return GradientRuleIR(
        momenta=tuple(GradientMemoryIR(m.memory, m.hidden, m.objective, m.retention, m.lr, m.period, m.nesterov,
                                       m.bias_correction, m.output, m.ns_steps, m.weight) for m in rule.momenta),
        second_moment=rule.second_moment.retention if rule.second_moment else None,
        decay=rule.decay, scale=rule.scale)


def _objective_ir(objective) -> ObjectiveIR:
    return ObjectiveIR(
        kind=objective.kind, p=objective.p if objective.p is not None else 2.0,
        delta=knob_ir(objective.delta) if objective.delta is not None else KnobIR("constant", 1.0),
        window=objective.window, self_target=objective.self_target,
    )


def _layer_levels(layer) -> tuple[str, ...]:
    if isinstance(layer, LevelLayer):
        return (layer.level,)
    if isinstance(layer, ParallelLayer):
        return tuple(layer.parallel)
    return (layer.context.attention, layer.context.memory)


def _layer_ir(layer, b: int, r: int, i: int, spec: Spec) -> LayerIR:
    origin = source_line(spec, f"model.blocks.{b}.layers.{i}")
    if isinstance(layer, LevelLayer):
        kind, levels, combine = "level", (layer.level,), ""
    elif isinstance(layer, ParallelLayer):
        kind, levels, combine = "parallel", tuple(layer.parallel), layer.combine
    else:
        assert isinstance(layer, ContextLayer)
        ctx = layer.context
        kind, combine = "context", ""
        levels = (ctx.attention, ctx.memory) + ((ctx.persistent,) if ctx.persistent else ())
    names = _layer_names(spec.model.blocks[b].layers, b, r)
    segment = layer.context.segment if isinstance(layer, ContextLayer) else None
    return LayerIR(name=names[i], kind=kind, levels=levels, combine=combine, norm=layer.norm,
                   residual=layer.residual, segment=segment, block=b, repeat=r, origin=origin,
                   transfers=_transfers_into(spec, b, i, names) if kind == "level" else ())


def _transfers_into(spec: Spec, b: int, i: int, names: list[str]) -> tuple[tuple[str, str], ...]:
    """``(kind, source layer)`` of the conditioning / backprop / generation edges into layer
    ``i`` of block ``b``: the nearest earlier layer of the source level (validation rule 13)."""
    layers = spec.model.blocks[b].layers
    out = []
    for edge in spec.transfer:
        if edge.kind != "initialization" and edge.target == layers[i].level:
            j = max(j for j in range(i) if isinstance(layers[j], LevelLayer) and layers[j].level == edge.source)
            out.append((edge.kind, names[j]))
    return tuple(out)


def _layer_names(layers, b: int, r: int) -> list[str]:
    """The names of one repetition of a block's layers, distinct: a layer's name is its state
    key (and its attribute in the emitted model), so two layers of one name would share one
    state and one set of weights.

    A layer is ``b{b}_r{r}_{first two levels}``, or ``b{b}_r{r}_l{i}_{...}`` (``i``: its index
    in the block) when its first level is used by another layer of the block, or when the short
    name is another layer's name too: ``[a, b_c]`` and ``[a_b, c]`` both join to ``a_b_c``, a
    level called ``l1_x`` meets layer 1's indexed name. Indexed names never meet each other
    (a level name does not start with a digit, so ``l{i}_`` ends at the first ``_``), so
    indexing every short name that meets another leaves all names distinct."""
    used = [lv for layer in layers for lv in _layer_levels(layer)]
    suffixes = ["_".join(_layer_levels(layer)[:2]) for layer in layers]
    indexed = [f"b{b}_r{r}_l{i}_{suffix}" for i, suffix in enumerate(suffixes)]
    names = [f"b{b}_r{r}_{suffix}" if used.count(_layer_levels(layer)[0]) == 1 else indexed[i]
             for i, (layer, suffix) in enumerate(zip(layers, suffixes))]
    while True:
        clashes = [i for i, name in enumerate(names) if names.count(name) > 1 and name != indexed[i]]
        if not clashes:
            return names
        for i in clashes:
            names[i] = indexed[i]


def source_facts(source: SourceIR) -> SourceFacts:
    return SourceFacts(source.source, source.project, source.conv, source.l2_norm, source.silu)


def knob_facts(knob: KnobIR) -> KnobFacts:
    return KnobFacts(knob.kind, knob.source, knob.per_chunk, knob.max)


def output_of(rule: RuleIR) -> str:
    """The update's output map as the spec names it."""
    return "newton_schulz" if rule.ns_steps else "identity"


def rule_case(level: MemoryIR) -> RuleCase:
    """A memory's update rule as the capability table reads it."""
    r, o = level.rule, level.objective
    return RuleCase(level.memory, o.kind, r.kind, o.window, r.retention_kind,
                    guards(r.grad_clip, r.grad_normalize), output_of(r), r.momentum is not None)


def memory_facts(level: MemoryIR) -> MemoryFacts:
    """The capability table's view of a memory level (the validator builds it from the spec)."""
    r, o = level.rule, level.objective
    return MemoryFacts(
        name=level.name, memory=level.memory, depth=level.depth, residual=level.residual,
        heads=level.heads, hidden=level.hidden if level.memory == "mlp" else 0,
        activation=level.activation, objective=o.kind, window=o.window, self_target=o.self_target,
        rule=r.kind, lr=knob_facts(r.lr), momentum=knob_facts(r.momentum) if r.momentum else None,
        retention=knob_facts(r.retention) if r.retention else None,
        forget=bool(r.retention and r.retention.complement), weight_decay=r.weight_decay,
        retention_kind=r.retention_kind, guards=guards(r.grad_clip, r.grad_normalize),
        output=output_of(r), update=r, chunk=level.chunk, read_after_write=level.read_after_write,
        keys=source_facts(level.keys), values=source_facts(level.values),
        queries=source_facts(level.queries), init=level.init, output_gate=level.output_gate,
        features=level.features.kind if level.features else "identity")


def cms_case(level: MLPIR) -> CMSCase:
    """A CMS level as the capability table reads it."""
    r, o = level.rule, level.objective
    return CMSCase(
        objective=o.kind, window=o.window, self_target=o.self_target, rule=r.kind,
        momentum=r.momentum is not None, retention=r.retention is not None,
        weight_decay=r.weight_decay, retention_kind=r.retention_kind,
        guards=guards(r.grad_clip, r.grad_normalize), lr_kind=r.lr.kind, lr_source=r.lr.source,
        lr_per_chunk=r.lr.per_chunk, flush=level.flush, output=output_of(r), reduce=r.reduce)


def coupled_components(ir: ModelIR, name: str) -> tuple[str, ...]:
    """The other memories a memory is coupled with through its sources (HOPE's k, v, eta,
    alpha memories), transitively, in spec order."""
    sources = {n: memory_facts(lv).level_sources() for n, lv in ir.levels.items()
               if isinstance(lv, MemoryIR)}
    return coupled(name, sources)


def is_self_modifying(level: MemoryIR) -> bool:
    """Whether HOPE's self-modifying mixer runs ``level`` (it reads other memories, or
    generates its own targets from static sources; :func:`nlc.capabilities.self_modifying`)."""
    return self_modifying(memory_facts(level))
