"""The capability table's HOPE coupling: when a memory may read other memories' outputs.

A memory reads another level's output only as HOPE's self-modifying memory (HOPE Eqs.
86-89): a main memory whose keys, values, lr and retention each come from a component
memory, all of them alike. :func:`hope_refusals` lists every way a coupling differs from
:data:`HOPE_PATTERN`, over :class:`MemoryFacts` (plain values the validator and the
lowering each supply); :func:`coupled` finds the levels a memory reads. With queries from a
fifth component the pattern is HOPE's adaptive-q ablation (NL-arXiv Table 6). Part of
:mod:`nlc.capabilities` (import the names from there); imports nothing of the pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .rules import Refusal


@dataclass(frozen=True)
class SourceFacts:
    source: str  # "input" or a level name
    project: bool
    conv: int
    l2_norm: bool
    silu: bool


@dataclass(frozen=True)
class KnobFacts:
    kind: str  # constant | learned | data
    source: str | None
    per_chunk: bool
    max: float


@dataclass(frozen=True)
class MemoryFacts:
    """What the HOPE check needs of a memory level, resolved (heads, hidden width).
    ``update``: any value equal between two levels exactly when their update blocks are."""

    name: str
    memory: str
    depth: int
    residual: bool
    heads: int
    hidden: int
    activation: str
    objective: str
    window: int
    self_target: bool
    rule: str
    lr: KnobFacts
    momentum: KnobFacts | None
    retention: KnobFacts | None
    forget: bool  # the retention was given as Titans' forget gate
    weight_decay: float
    retention_kind: str
    guards: str
    output: str  # identity | newton_schulz
    update: object
    chunk: int
    read_after_write: bool
    keys: SourceFacts
    values: SourceFacts
    queries: SourceFacts
    init: str
    output_gate: bool
    features: str  # the feature map of the keys and queries: identity | polynomial

    def level_sources(self) -> list[str]:
        """Levels whose outputs this memory uses (keys, values, queries, gates)."""
        knobs = [k.source for k in (self.lr, self.momentum, self.retention) if k is not None and k.kind == "data"]
        names = [s.source for s in (self.keys, self.values, self.queries)] + knobs
        return [n for n in names if n not in (None, "input")]


HOPE_PATTERN = ("HOPE's pattern (nlc cp hope): the main memory takes keys, values, lr and retention "
                "each from its own component memory and queries from its input (or, adaptive q, from a "
                "fifth component); every component reads "
                "its own input unprojected (queries: {from: input, project: false}) and the same four "
                "components; all are residual depth-2 MLP memories with rule dgd and objective "
                "{kind: l2, self_target: true}")


def coupled(name: str, sources: Mapping[str, list[str]]) -> tuple[str, ...]:
    """The levels ``name`` reads through its sources, transitively (itself excluded), in the
    order of ``sources``."""
    seen, todo = set(), [name]
    while todo:
        for src in sources.get(todo.pop(), []):
            if src not in seen and src != name:
                seen.add(src)
                todo.append(src)
    return tuple(n for n in sources if n in seen)


def hope_refusals(main: MemoryFacts, levels: Mapping[str, MemoryFacts]) -> list[tuple[str, Refusal]]:
    """``(level, refusal)`` for every way the coupling of ``main`` (a memory applied in a layer
    whose sources name other levels) differs from :data:`HOPE_PATTERN`. ``levels``: the
    memory levels of the spec by name."""
    out: list[tuple[str, Refusal]] = []

    def refuse(level: str, field: str, message: str, hint: str = HOPE_PATTERN) -> None:
        out.append((level, Refusal(field, message, hint)))

    m = main
    roles = {"keys": ("keys.from", m.keys.source),
             "values": ("values.from", m.values.source),
             "lr": ("update.lr.from", m.lr.source if m.lr.kind == "data" else None),
             "retention": ("update.retention.from",
                           m.retention.source if m.retention is not None and m.retention.kind == "data" else None)}
    missing = [role for role, (_, src) in roles.items() if src in (None, "input", m.name) or src not in levels]
    if missing:
        named = [(f, s) for f, s in (*roles.values(), ("queries.from", m.queries.source),
                                     ("update.momentum.from", m.momentum and m.momentum.source))
                 if s not in (None, "input")]
        field, src = next(((f, s) for f, s in named if s != m.name), named[0])
        if src == m.name:
            refuse(m.name, field, f"'{m.name}' reads its own output; a memory reads other memories "
                   "only as HOPE's self-modifying memory, whose sources are component memories")
        else:
            refuse(m.name, field, f"'{m.name}' reads level '{src}', and a memory reads other memories "
                   f"only as HOPE's self-modifying memory, which takes keys, values, lr and retention "
                   f"each from a component memory; '{m.name}' takes its {', '.join(missing)} from "
                   "elsewhere")
    if m.queries.source not in ("input", None) and not missing:  # adaptive q: a fifth component
        if m.queries.source == m.name or m.queries.source not in levels:
            refuse(m.name, "queries.from", f"the queries of '{m.name}' come from its input or from a "
                   f"component memory of its own, not from '{m.queries.source}'",
                   "write queries: {from: input, ...} or {from: A_COMPONENT_MEMORY, norm: l2}")
        else:
            roles["queries"] = ("queries.from", m.queries.source)
    seen: set[str] = set()
    for role, (field, src) in roles.items():
        if role in missing:
            continue
        if src in seen:
            refuse(m.name, field, f"'{m.name}' takes its {role} from '{src}', which already gives another "
                   "role: keys, values, lr and retention each need a memory of their own")
        seen.add(src or "")
    if m.forget:
        refuse(m.name, "update.forget", "HOPE's gate is the retention (keep) factor alpha, not a "
               "forget gate", "write retention: {from: LEVEL, init: ...}")
    elif m.retention is not None and m.retention.max != 1:
        refuse(m.name, "update.retention.max", "HOPE's retention is sigmoid(.) in (0, 1)", "remove 'max'")
    generated = [("keys", "keys", m.keys), ("values", "values", m.values)]
    if "queries" in roles:
        generated.append(("queries", "queries", m.queries))
    for name, field, src in generated:
        if src.conv or src.silu or not src.project or (name == "values" and src.l2_norm):
            refuse(m.name, field, f"'{m.name}' uses the {name} its component generates as they are"
                   + (" (only norm: l2 applies)" if name != "values" else ""), f"write {field}: {src.source}")
    components = [levels[src] for _, src in roles.values() if src in levels and src != m.name]
    if len(components) < len(roles) or out:
        return out  # the checks below compare the components with the roles
    first = components[0]
    for lv in (m, *components):
        _hope_level(lv, m, refuse)
    for c in components:
        mine = {"keys.from": c.keys.source, "values.from": c.values.source,
                "update.lr.from": c.lr.source if c.lr.kind == "data" else None,
                "update.retention.from": c.retention.source if c.retention and c.retention.kind == "data" else None}
        wrong = [f for (f, src), (_, want) in zip(mine.items(), roles.values()) if src != want]
        if wrong:
            refuse(c.name, wrong[0], f"the component '{c.name}' must read keys, values, lr and "
                   f"retention from the same memories as '{m.name}' "
                   f"({', '.join(s for _, s in list(roles.values())[:4])})")
        if c.update != m.update:
            refuse(c.name, "update", f"the component '{c.name}' must have the update block of '{m.name}' "
                   "(the five memories share one lr and one retention gate)")
        if c.queries.project or c.queries.conv or c.queries != first.queries:
            refuse(c.name, "queries", f"the component '{c.name}' reads its input unprojected and "
                   "unconvolved, like the other components", "write queries: {from: input, project: false}")
        for field, src in (("keys", c.keys), ("values", c.values)):
            if src.conv or src.silu or src.l2_norm or not src.project:
                refuse(c.name, field, f"the component '{c.name}' uses its {field} as generated: options "
                       f"on them are not applied", f"write {field}: {src.source}")
        if c.chunk != first.chunk or m.chunk % c.chunk:
            refuse(c.name, "chunk", f"the components share one chunk ({first.chunk}) that divides the "
                   f"main memory's chunk {m.chunk}", f"use chunk: {first.chunk}")
        if c.output_gate:
            refuse(c.name, "output_gate", f"the component '{c.name}' has no output projection to gate",
                   "remove output_gate")
    return out


def _hope_level(lv: MemoryFacts, main: MemoryFacts, refuse) -> None:
    """The checks every memory of a HOPE pattern shares (HOPE Eqs. 86-89)."""
    wants = (("memory.kind", lv.memory == "mlp" and lv.depth == 2 and lv.residual,
              "a residual depth-2 MLP memory", "memory: {kind: mlp, depth: 2, residual: true}"),
             ("update.rule", lv.rule == "dgd", "rule dgd", "rule: dgd"),
             ("objective", lv.objective == "l2" and lv.self_target and lv.window == 1,
              "objective l2 with self_target and no window", "objective: {kind: l2, self_target: true}"),
             ("update", lv.weight_decay == 0 and lv.retention_kind == "l2" and not lv.guards,
              "no weight_decay, retention_kind, grad_clip or grad_normalize", "remove them"),
             ("update.output", lv.output == "identity", "the DGD step itself (no Newton-Schulz output)",
              "remove 'output'"),
             ("update.lr.per", lv.lr.per_chunk is False and not (lv.retention and lv.retention.per_chunk),
              "per-token lr and retention", "remove 'per'"),
             ("read", not lv.read_after_write, "a read before its write", "read: before_write"),
             ("init", lv.init == "learned", "a learned initial state", "remove 'init'"),
             ("features", lv.features == "identity", "no feature map on its keys and queries (the "
              "self-modifying primitive reads them as generated)", "remove 'features'"),
             ("heads", (lv.heads, lv.hidden, lv.activation) == (main.heads, main.hidden, main.activation),
              f"the heads, hidden width and activation of '{main.name}'", "give them the same memory and heads"))
    for field, ok, what, hint in wants:
        if not ok:
            refuse(lv.name, field, f"'{lv.name}' is part of the self-modifying memory '{main.name}' "
                   f"(HOPE): it needs {what}", hint)
