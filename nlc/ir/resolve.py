"""Spec -> IR: fill defaults, normalise gate conventions, order levels, unroll blocks."""
from __future__ import annotations

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
from ..spec.values import Knob, Source
from .nodes import (
    AttentionIR,
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
        source_file=getattr(spec._raw, "file", "<spec>"),
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
            read_after_write=level.read == "after_write",
            keys=source_ir(level.keys), values=source_ir(level.values), queries=source_ir(level.queries),
            init=level.init.kind, init_level=level.init.level, reset=level.init.reset,
            output_gate=level.output_gate,
        )
    if isinstance(level, MLPLevel):
        return MLPIR(
            **common, hidden=level.hidden or int(round(level.expansion * width)),
            activation=level.activation, period=level.period.tokens or 0,
            objective=(_objective_ir(level.objective) if level.objective
                       else ObjectiveIR("task") if level.period.tokens else None),
            rule=rule_ir(level.update) if level.update else None,
            init=level.init.kind, init_level=level.init.level, reset=level.init.reset,
            flush=level.flush,
        )
    if isinstance(level, PersistentLevel):
        return PersistentIR(**common, tokens=level.tokens)
    assert isinstance(level, OptimizerLevel)
    return OptimizerIR(**common, rule=level.rule, lr=level.lr, betas=tuple(level.betas),
                       weight_decay=level.weight_decay, eps=level.eps, grad_clip=level.grad_clip,
                       warmup=level.warmup, schedule=level.schedule, steps=level.period.steps)


def _objective_ir(objective) -> ObjectiveIR:
    return ObjectiveIR(
        kind=objective.kind, p=objective.p if objective.p is not None else 2.0,
        delta=objective.delta if objective.delta is not None else 1.0,
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
    used = [lv for other in spec.model.blocks[b].layers for lv in _layer_levels(other)]
    suffix = "_".join(levels[:2])
    name = f"b{b}_r{r}_{suffix}" if used.count(levels[0]) == 1 else f"b{b}_r{r}_l{i}_{suffix}"
    segment = layer.context.segment if isinstance(layer, ContextLayer) else None
    return LayerIR(name=name, kind=kind, levels=levels, combine=combine, norm=layer.norm,
                   residual=layer.residual, segment=segment, block=b, repeat=r, origin=origin)


def level_sources(level: MemoryIR) -> list[str]:
    """Levels whose outputs this memory uses as keys, values, queries or gates."""
    knobs = [level.rule.lr, level.rule.momentum, level.rule.retention]
    names = [s.source for s in (level.keys, level.values, level.queries)]
    names += [k.source for k in knobs if k is not None and k.source is not None]
    return [n for n in names if n != "input"]


def coupled_components(ir: ModelIR, name: str) -> tuple[str, ...]:
    """The other memories a memory is coupled with through its sources (HOPE's k, v, eta,
    alpha memories), transitively, in spec order."""
    seen, todo = set(), [name]
    while todo:
        level = ir.levels[todo.pop()]
        if isinstance(level, MemoryIR):
            for src in level_sources(level):
                if src not in seen and src != name:
                    seen.add(src)
                    todo.append(src)
    return tuple(n for n in ir.levels if n in seen)
