"""The capability table's HOPE coupling: when a memory may read other memories' outputs.

A memory reads another level's output only as HOPE's self-modifying memory (NL-arXiv
Eqs. 86-89): a main memory whose keys, values, lr and retention each come from a component
memory (HOPE) or statically from its input (NL-arXiv Table 6's ablations), all its
memories alike; a memory that generates its own targets (``self_target``) from static
sources alone is the same pattern without components. :func:`self_modifying` says which
memories the self-modifying mixer runs, :func:`hope_refusals` lists every way one differs
from :data:`HOPE_PATTERN`, over :class:`MemoryFacts` (plain values the validator and the
lowering each supply); :func:`coupled` finds the levels a memory reads. With queries from a
component the pattern is HOPE's adaptive-q ablation (NL-arXiv Table 6). Part of
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


HOPE_PATTERN = ("HOPE's pattern (nlc cp hope): a residual depth-2 MLP memory with objective {kind: l2, "
                "self_target: true} and rule dgd (or gd / momentum) whose keys, values, lr and retention "
                "each come from a component memory of its own or statically from its input (the retention "
                "may be absent), and queries from its input (or a component: adaptive q); every component "
                "reads its input unprojected, as the others (queries: {from: input, project: false}, "
                "optionally conv and norm), has the main memory's keys, values and update block, and is a "
                "memory like it")

ROLE_NAMES = {"k": "keys", "v": "values", "eta": "lr", "alpha": "retention", "q": "queries"}
"""The roles a component memory can generate (:mod:`nlc.primitives.selfmod`), by spec name."""


def self_modifying(m: MemoryFacts) -> bool:
    """Whether HOPE's self-modifying mixer runs memory ``m`` (applied in a layer): it reads
    other memories' outputs (components), or generates its own targets from static sources."""
    return bool(m.level_sources()) or m.self_target


def component_roles(m: MemoryFacts) -> dict[str, str]:
    """Role (k, v, eta, alpha, q) -> the level that generates it, for the roles of ``m`` that
    come from another level (the others are static, from the input, or absent)."""
    sources = {"k": m.keys.source, "v": m.values.source,
               "eta": m.lr.source if m.lr.kind == "data" else None,
               "alpha": m.retention.source if m.retention is not None and m.retention.kind == "data" else None,
               "q": m.queries.source}
    return {r: s for r, s in sources.items() if s not in (None, "input")}


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
    """``(level, refusal)`` for every way the self-modifying memory ``main`` (a memory applied in a
    layer, :func:`self_modifying`) and its components differ from :data:`HOPE_PATTERN`.
    ``levels``: the memory levels of the spec by name."""
    out: list[tuple[str, Refusal]] = []

    def refuse(level: str, field: str, message: str, hint: str = HOPE_PATTERN) -> None:
        out.append((level, Refusal(field, message, hint)))

    m = main
    fields = {"k": "keys.from", "v": "values.from", "eta": "update.lr.from",
              "alpha": "update.forget.from" if m.forget else "update.retention.from", "q": "queries.from"}
    roles = component_roles(m)
    if roles and not (m.memory == "mlp" and m.self_target):  # not meant as HOPE: one refusal
        r, src = next(iter(roles.items()))
        refuse(m.name, fields[r], f"'{m.name}' reads level '{src}', and a memory reads other memories "
               "only as HOPE's self-modifying memory, an MLP memory with self-generated targets "
               "(objective: {kind: l2, self_target: true})")
        return out
    given: dict[str, str] = {}  # component -> the role it generates
    for r, src in roles.items():
        if src == m.name:
            refuse(m.name, fields[r], f"'{m.name}' reads its own output; a memory reads other memories "
                   "only as HOPE's self-modifying memory, whose sources are component memories")
        elif src in given:
            refuse(m.name, fields[r], f"'{m.name}' takes its {ROLE_NAMES[r]} from '{src}', which already "
                   f"gives its {ROLE_NAMES[given[src]]}: each role needs a memory of its own")
        elif src in levels:
            given[src] = r
    if m.momentum is not None and m.momentum.source not in (None, "input"):
        refuse(m.name, "update.momentum.from", f"no component generates the momentum of '{m.name}': "
               "HOPE's components generate keys, values, lr, retention and queries",
               "write momentum: 0.9, {learned: 0.9} or {from: input, init: 0.9}")
    if m.forget:
        refuse(m.name, "update.forget", "HOPE's gate is the retention (keep) factor alpha, not a "
               "forget gate", "write retention: {from: LEVEL, init: ...}")
    elif "alpha" in roles and m.retention.max != 1:
        refuse(m.name, "update.retention.max", "HOPE's retention is sigmoid(.) in (0, 1)", "remove 'max'")
    for r, field in (("k", "keys"), ("v", "values"), ("q", "queries")):
        src = getattr(m, field)
        if r in roles and (src.conv or src.silu or not src.project or (r == "v" and src.l2_norm)):
            refuse(m.name, field, f"'{m.name}' uses the {field} its component generates as they are"
                   + (" (only norm: l2 applies)" if r != "v" else ""), f"write {field}: {src.source}")
    if out:
        return out  # the checks below compare the components with the roles
    components = [levels[c] for c in given]
    for lv in (m, *components):
        _hope_level(lv, m, refuse, with_components=bool(components))
    for c in components:
        _component(c, m, components[0], refuse)
    return out


def _component(c: MemoryFacts, m: MemoryFacts, first: MemoryFacts, refuse) -> None:
    """The checks of a component ``c`` of the self-modifying memory ``m`` (``first``: the
    first component, whose input and chunk every component shares)."""
    mine, want = component_roles(c), {r: s for r, s in component_roles(m).items() if r != "q"}
    wrong = [r for r in ("k", "v", "eta", "alpha") if mine.get(r) != want.get(r)]
    if wrong:
        field = {"k": "keys.from", "v": "values.from", "eta": "update.lr.from",
                 "alpha": "update.retention.from"}[wrong[0]]
        refuse(c.name, field, f"the component '{c.name}' must read keys, values, lr and retention "
               f"from the same memories as '{m.name}' "
               f"({', '.join(f'{ROLE_NAMES[r]}: {s}' for r, s in want.items()) or 'none: all static'})")
    if c.update != m.update:
        refuse(c.name, "update", f"the component '{c.name}' must have the update block of '{m.name}' "
               "(the memories of the pattern share one lr, retention and momentum)")
    if c.queries.source != "input" or c.queries.project or c.queries != first.queries:
        refuse(c.name, "queries", f"the component '{c.name}' reads its input unprojected, like the other "
               "components (a short conv and norm: l2 apply, the same for all)",
               "write queries: {from: input, project: false, conv: 4, norm: l2}")
    for field in ("keys", "values"):
        src, main_src = getattr(c, field), getattr(m, field)
        if src.source == main_src.source == "input" and src != main_src:
            refuse(c.name, field, f"the component '{c.name}' reads the static {field} of '{m.name}' (one "
                   "projection serves the pattern): give it the same options", f"copy {field} of '{m.name}'")
        elif src.source != "input" and (src.conv or src.silu or src.l2_norm or not src.project):
            refuse(c.name, field, f"the component '{c.name}' uses its {field} as generated: options "
                   f"on them are not applied", f"write {field}: {src.source}")
    if c.chunk != first.chunk or m.chunk % c.chunk:
        refuse(c.name, "chunk", f"the components share one chunk ({first.chunk}) that divides the "
               f"main memory's chunk {m.chunk}", f"use chunk: {first.chunk}")
    if c.output_gate:
        refuse(c.name, "output_gate", f"the component '{c.name}' has no output projection to gate",
               "remove output_gate")


def _wants(lv: MemoryFacts, main: MemoryFacts) -> tuple[tuple[str, bool, str, str], ...]:
    """``(field, ok, what it needs, hint)`` of every check a memory of a HOPE pattern shares
    (NL-arXiv Eqs. 86-89)."""
    per = [f"update.{n}.per" for n, k in (("lr", lv.lr), ("retention", lv.retention), ("momentum", lv.momentum))
           if k is not None and k.per_chunk]
    return (("memory.kind", lv.memory == "mlp" and lv.depth == 2 and lv.residual,
             "a residual depth-2 MLP memory", "memory: {kind: mlp, depth: 2, residual: true}"),
            ("update.rule", lv.rule in ("dgd", "gd", "momentum"), "rule dgd (or gd / momentum)", "rule: dgd"),
            ("objective", lv.objective == "l2" and lv.self_target and lv.window == 1,
             "objective l2 with self_target and no window", "objective: {kind: l2, self_target: true}"),
            ("update", lv.weight_decay == 0 and lv.retention_kind == "l2" and not lv.guards,
             "no weight_decay, retention_kind, grad_clip or grad_normalize", "remove them"),
            ("update.output", lv.output == "identity", "the DGD step itself (no Newton-Schulz output)",
             "remove 'output'"),
            ((per or ["update.lr.per"])[0], not per, "per-token lr, retention and momentum", "remove 'per'"),
            ("read", not lv.read_after_write, "a read before its write", "read: before_write"),
            ("init", lv.init == "learned", "a learned initial state", "remove 'init'"),
            ("features", lv.features == "identity", "no feature map on its keys and queries (the "
             "self-modifying primitive reads them as generated)", "remove 'features'"),
            ("heads", (lv.heads, lv.hidden, lv.activation) == (main.heads, main.hidden, main.activation),
             f"the heads, hidden width and activation of '{main.name}'", "give them the same memory and heads"))


def _hope_level(lv: MemoryFacts, main: MemoryFacts, refuse, *, with_components: bool) -> None:
    """Refuse each way ``lv`` fails :func:`_wants`. A main memory without components is one
    only by its self-generated targets: its refusals say so."""
    for field, ok, what, hint in _wants(lv, main):
        if ok:
            continue
        if with_components:
            refuse(lv.name, field, f"'{lv.name}' is part of the self-modifying memory '{main.name}' "
                   f"(HOPE): it needs {what}", hint)
        else:  # static sources: a self-modifying memory only through self_target
            refuse(lv.name, "objective.self_target", f"self-generated values (self_target) run only in HOPE's "
                   f"self-modifying pattern, where '{lv.name}' needs {what}", f"{hint}, or remove self_target")
