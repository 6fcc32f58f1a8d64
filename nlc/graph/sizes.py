"""Parameter and state sizes of a spec's levels, in numbers of floats, from the spec alone.

No torch: the counts are analytic, so ``nlc graph`` can print them instantly. Conventions
(linear maps carry no bias; ``D = model.width``, ``H`` = the level's heads, default
``model.heads``, ``d = D / H`` per head):

* attention: ``Wq, Wk, Wv, Wo`` = ``4 D^2`` (+ ``2 d`` gains with ``qk_norm``). State: the
  KV cache, ``2 D`` floats per token for ``min(window, train.seq_len)`` tokens.
* memory: ``D^2`` per key/value/query projected ``from: input`` (``project: false`` and ``from: <level>`` use that
  level's output: no weights); ``conv * D`` per short convolution; the output map ``D^2``
  (``2 D^2`` with ``output_gate``; none for a memory that only feeds others); a memory read as a
  gate has a read-out per head (``D + H``); a knob ``from: input`` is a ``D -> H`` projection with
  bias (``D H + H``), a learned knob ``H`` scalars; a learned (or copied) initial state is
  the memory weights themselves. State: the ``H`` memories (matrix ``d^2``; MLP of depth
  L ``d h + (L-2) h^2 + h d``, ``h = hidden`` or ``expansion * d``), doubled by the
  momentum buffer of rule ``momentum``, plus ``(conv-1) D`` per short convolution.
* mlp: ``2 D h`` (``3 D h`` for swiglu's gate/up/down), ``h = hidden`` or
  ``round(expansion * D)``; an lr knob ``from: input`` adds ``D + 1``, a learned one ``1``.
  State: a CMS level (``period: C``) updates its own copy of the weights per sequence
  (doubled by ``momentum``); a frozen MLP (``never``) has none.
* persistent: ``tokens * D``; no state. optimizer: nothing of its own.
* a conditioning, backprop or generation edge into a level: ``D^2`` (its map) per instance.

An initial state ``from: <level>`` belongs to that level and ``zero`` is not learned, so
neither counts as parameters.

*Budget*: :func:`check_model_bytes` refuses a spec whose fp32 parameters plus in-context
state of one training batch (``train.batch`` sequences) exceed ``nlc.limits`` ``model_bytes``,
before anything is allocated: an extra digit in a width or repeat fails at validation, not
as an out-of-memory kill (activations and optimizer buffers come on top of the estimate).

*Instances*: every repetition of a block has its own parameters. A level named by ``k``
layers of a block has ``k`` instances per repetition; a level the block only reaches
through references (keys/values/gates from another level, an ``init: {from: ...}``
meta-learner, persistent tokens, transfer edges) has one per repetition.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import networkx as nx

from ..errors import Issue
from ..spec.levels import AttentionLevel, MemoryLevel, MLPLevel, OptimizerLevel, PersistentLevel
from ..spec.model import ContextLayer, LevelLayer, ParallelLayer, Spec
from ..spec.values import INPUT, Knob
from .build import block_levels, build_graph, references


@dataclass(frozen=True)
class LevelSize:
    params: int  # one instance
    state: int  # one instance, one sequence
    instances: int

    @property
    def total_params(self) -> int:
        return self.params * self.instances

    @property
    def total_state(self) -> int:
        return self.state * self.instances


def _norm(kind: str, width: int) -> int:
    return {"rms": width, "layer": 2 * width}.get(kind, 0)


def memory_weights(level: MemoryLevel, width: int, heads: int) -> int:
    """Floats in the level's ``H`` memories (one set of weights, no optimiser buffers)."""
    d = width // heads
    shape = level.memory
    if shape.kind == "matrix" or shape.depth == 1:
        return heads * d * d
    h = shape.hidden or shape.expansion * d
    return heads * (d * h + (shape.depth - 2) * h * h + h * d)


def mlp_hidden(level: MLPLevel, width: int) -> int:
    return level.hidden or int(round(level.expansion * width))


def mlp_weights(level: MLPLevel, width: int) -> int:
    return (3 if level.activation == "swiglu" else 2) * width * mlp_hidden(level, width)


def _knob_params(knob: Knob | None, width: int, heads: int) -> int:
    if knob is None or knob.kind == "constant":
        return 0
    if knob.kind == "learned":
        return heads
    return width * heads + heads if knob.source == INPUT else 0


def level_params_and_state(spec: Spec, name: str) -> tuple[int, int]:
    """``(parameters, per-sequence state)`` of one instance of a level (with the ``D x D`` map
    of every conditioning / backprop / generation edge into it)."""
    params, state = _own_params_and_state(spec, name)
    edges = sum(1 for e in spec.transfer if e.target == name and e.kind != "initialization")
    return params + edges * spec.model.width ** 2, state


def _own_params_and_state(spec: Spec, name: str) -> tuple[int, int]:
    level, width = spec.levels[name], spec.model.width
    heads = getattr(level, "heads", None) or spec.model.heads
    if isinstance(level, AttentionLevel):
        params = 4 * width * width + (2 * (width // heads) if level.qk_norm else 0)
        cached = min(level.window or spec.train.seq_len, spec.train.seq_len)
        return params, 2 * width * cached
    if isinstance(level, MemoryLevel):
        weights = memory_weights(level, width, heads)
        sources = (level.keys, level.values, level.queries)
        # HOPE's components (memories only others read) own no sources: their input conv is one,
        # shared, and their static keys / values are the main memory's; the main memory counts them
        component = name not in block_levels(spec) and level.objective.self_target
        own = () if component else sources
        convs = [s.conv for s in own]
        generated = [r.target for r in references(spec) if r.owner == name and r.kind == "generation"
                     and isinstance(spec.levels.get(r.target), MemoryLevel)]
        if not component and generated:
            convs.append(spec.levels[generated[0]].queries.conv)
        params = sum(width * width for s in own if s.source == INPUT and s.project)
        params += sum(c * width for c in convs)
        if level.features.degree is not None:  # a polynomial feature map: its coefficients per head
            params += heads * (level.features.degree + 1)
        if name in block_levels(spec):  # a memory only read by others (HOPE's k, v, ...) has no output map
            params += width * width * (2 if level.output_gate else 1)
        if any(r.target == name and ".update." in r.path for r in references(spec)):
            params += width + heads  # a memory read as a gate (HOPE's eta, alpha): a scalar read-out per head
        up = level.update
        params += sum(_knob_params(k, width, heads) for k in (up.lr, up.momentum, up.retention, up.forget))
        if level.objective.delta is not None:  # a learned or data-dependent Huber threshold (Yaad)
            params += _knob_params(level.objective.delta, width, heads)
        if getattr(level.memory, "norm", "none") == "layernorm":  # TTT: a gain and a bias per head
            params += 2 * width
        params += weights if level.init.kind in ("learned", "copy") else 0
        state = weights * (2 if up.momentum is not None else 1)  # a momentum buffer per weight
        state += sum((c - 1) * width for c in convs if c > 1)
        return params, state
    if isinstance(level, MLPLevel):
        weights = mlp_weights(level, width)
        params = weights if level.init.kind in ("learned", "copy") else 0
        state = 0
        if level.period.tokens is not None:  # CMS: each sequence updates its own copy
            up = level.update
            state = weights * (2 if up is not None and up.rule == "momentum" else 1)
            if up is not None:
                params += _knob_params(up.lr, width, 1)
        return params, state
    if isinstance(level, PersistentLevel):
        return level.tokens * width, 0
    return 0, 0


def layer_levels(layer: object) -> list[str]:
    """The levels a layer applies (a MAC layer's persistent tokens included)."""
    if isinstance(layer, LevelLayer):
        return [layer.level]
    if isinstance(layer, ParallelLayer):
        return list(layer.parallel)
    if isinstance(layer, ContextLayer):
        ctx = layer.context
        return [ctx.attention, ctx.memory] + ([ctx.persistent] if ctx.persistent else [])
    return []


def instances(spec: Spec, graph: nx.MultiDiGraph | None = None) -> Counter:
    """How many parameter copies of each level the model holds (see module docstring)."""
    graph = build_graph(spec) if graph is None else graph
    count: Counter = Counter()
    for block in spec.model.blocks:
        direct = Counter(n for layer in block.layers for n in layer_levels(layer) if n in spec.levels)
        used = set(direct)
        for name in direct:
            used |= nx.ancestors(graph, name)
        for name in used:
            if not isinstance(spec.levels[name], OptimizerLevel):
                count[name] += block.repeat * direct.get(name, 1)
    return count


def level_sizes(spec: Spec, graph: nx.MultiDiGraph | None = None) -> dict[str, LevelSize]:
    copies = instances(spec, graph)
    out = {}
    for name, level in spec.levels.items():
        params, state = level_params_and_state(spec, name)
        out[name] = LevelSize(params, state, 1 if isinstance(level, OptimizerLevel) else copies[name])
    return out


def model_params(spec: Spec) -> dict[str, int]:
    """Parameters outside the levels: embeddings, output head, norms, combine weights."""
    m = spec.model
    norms = _norm(m.norm, m.width)  # final norm
    combine = 0
    for block in m.blocks:
        for layer in block.layers:
            per = _norm(layer.norm, m.width)
            if isinstance(layer, ParallelLayer) and layer.combine == "learned":
                combine += block.repeat * len(layer.parallel)
            if isinstance(layer, ParallelLayer) and layer.combine == "gate":
                per += 2 * _norm(layer.norm, m.width)  # the two gated branches are normalised
            norms += block.repeat * per
    return {"embedding": m.vocab * m.width, "head": 0 if m.tie_embeddings else m.vocab * m.width,
            "norms": norms, "combine": combine}


def total_params(spec: Spec) -> int:
    return sum(s.total_params for s in level_sizes(spec).values()) + sum(model_params(spec).values())


FLOAT_BYTES = 4  # fp32


def model_bytes(spec: Spec) -> dict[str, tuple[int, int]]:
    """``part -> (parameter bytes, state bytes of one training batch)``; a part is a level
    (all its instances) or ``""`` for the embedding, head, norms and combine weights."""
    batch = spec.train.batch
    parts = {name: (s.total_params * FLOAT_BYTES, s.total_state * batch * FLOAT_BYTES)
             for name, s in level_sizes(spec).items()}
    parts[""] = (sum(model_params(spec).values()) * FLOAT_BYTES, 0)
    return parts


def check_model_bytes(spec: Spec, limit: int) -> list[Issue]:
    """An error at the largest part when the estimate exceeds ``limit`` bytes, saying the
    estimate and how to raise the limit."""
    parts = model_bytes(spec)
    params, state = (sum(p[i] for p in parts.values()) for i in (0, 1))
    if params + state <= limit:
        return []
    name = max(parts, key=lambda n: sum(parts[n]))
    copies = level_sizes(spec)[name].instances if name else 0
    largest = (f"level '{name}' ({copies} {'copy' if copies == 1 else 'copies'}) takes {_size(sum(parts[name]))}"
               if name else f"the embedding and head take {_size(parts[''][0])}")
    return [Issue(
        f"levels.{name}" if name else "model.width",
        f"the model needs about {_size(params + state)} (parameters {_size(params)} + in-context state "
        f"{_size(state)} for train.batch {spec.train.batch}, fp32), above the limit of {_size(limit)}; "
        f"{largest}",
        hint=f"shrink model.width, repeat, train.batch or train.seq_len, or raise the limit: "
             f"nlc --max-model-bytes {params + state} ... or nlc.limits.raised(model_bytes={params + state})",
    )]


def _size(n: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
