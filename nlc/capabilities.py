"""What the runtime builds: the one capability table that validation and lowering both read.

The spec language can say more than the runtime executes. Every combination a spec can
write is either built by a runtime mixer or refused here, with the reason and a fix; the
validator (:mod:`nlc.graph.checks`, on the pydantic spec) turns a refusal into an
issue at the offending field's YAML line, and the lowering (``plan_memory``, ``CMSMixer``,
``SelfModifyingMemory``, ...) asserts the same table on the IR: a refusal there means the
validator let something through, a bug (:func:`assert_capable`).

The table is over plain values (strings, numbers, :class:`MemoryFacts`), which the spec
side and the IR side each supply, so this module imports nothing of the pipeline.

Decisions (issue 12): a memory updates every token (``period: 1``); the CMS flush policies
``drop`` / ``flush`` are refused (the model never ends a sequence: streaming carries the
state, so only ``carry`` is consistent); a memory reads another level's output only in
HOPE's self-modifying pattern (:func:`hope_refusals`); ``init: {copy: ...}`` is refused
(no mixer copies another level's initial state); ``reset`` is read only with a nested
initial state (``init: {from: X}``), where the model re-initialises the level whenever X
completes a chunk (``slower_chunk``, also what an omitted ``reset`` gets).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Iterator, Mapping

TABLE = "nlc/capabilities.py"


@dataclass(frozen=True)
class Refusal:
    """A combination the runtime does not build. ``field``: the dotted path of the
    offending field relative to its level (``period``, ``update.rule``, ...)."""

    field: str
    message: str
    hint: str


def assert_capable(where: str, refusals: list[Refusal]) -> None:
    """The lowering's assertion of the table: validation refuses these, so reaching one is
    a bug in the validator (not a user error)."""
    if refusals:
        text = "; ".join(f"{r.field}: {r.message}" for r in refusals)
        raise RuntimeError(f"{where}: the capability table ({TABLE}) refuses this, but it was "
                           f"not refused at validation (a bug): {text}")


# ------------------------------------------------------------------ memory update rules

MEMORY_AXES: dict[str, tuple] = {
    "memory": ("matrix", "mlp"),
    "objective": ("dot", "l2", "lp", "huber"),
    "rule": ("gd", "momentum", "delta", "dgd"),
    "window": (1, 2),
    "retention_kind": ("l2", "lq", "elastic"),
    "guards": ("", "grad_clip"),
}
"""Every value of each axis of a memory's update rule (a window is 1 or more: 2 stands for
any Omega window > 1; ``grad_normalize`` is a guard like ``grad_clip``). The ``task``
objective is refused for memories outright."""


@dataclass(frozen=True)
class RuleCase:
    """A memory's update rule as plain values. ``guards``: ``""`` or the first gradient guard
    given (``grad_clip`` or ``grad_normalize``: the field a refusal points at)."""

    memory: str
    objective: str
    rule: str
    window: int
    retention_kind: str
    guards: str


def memory_primitive(case: RuleCase) -> str | Refusal:
    """The primitive family that runs ``case`` (``linear_attention``, ``delta_rule``, ``dgd``,
    ``omega_rule``, ``deep_memory``; retention picks the gated variants at lowering), or why none.
    The table of :mod:`nlc.runtime.memory_rules`, first matching row wins."""
    c = case
    plain = c.window == 1 and c.retention_kind == "l2" and not c.guards
    matrix = c.memory == "matrix"
    if c.objective == "task":
        return Refusal("objective.kind", "the 'task' objective drives MLP (CMS) levels; a memory "
                       "needs an associative objective", "use l2, lp, huber or dot")
    if matrix and plain and c.rule == "gd" and c.objective == "dot":
        return "linear_attention"
    if matrix and plain and c.rule == "delta" and c.objective == "l2":
        return "delta_rule"
    if matrix and plain and c.rule == "dgd" and c.objective in ("l2", "dot"):
        return "dgd"
    if matrix and c.rule == "gd" and c.objective == "l2" and c.window > 1 \
            and c.retention_kind == "l2" and not c.guards:
        return "omega_rule"
    if c.rule in ("gd", "momentum"):
        return "deep_memory"
    return _exact_rule_refusal(c)


def _exact_rule_refusal(c: RuleCase) -> Refusal:
    """Why a delta / DGD rule does not run (they are exact matrix recurrences)."""
    name = {"delta": "the exact delta rule", "dgd": "DGD (HOPE Eq. 88)"}[c.rule]
    if c.rule == "delta" and c.memory != "matrix":
        return Refusal("update.rule", f"{name} needs a matrix memory",
                       "use rule 'gd' or 'momentum' for an MLP memory")
    if c.rule == "delta" and c.objective != "l2":
        return Refusal("update.rule", f"the delta rule minimises the l2 objective, not '{c.objective}'",
                       "set objective: {kind: l2} or use rule 'gd'")
    if c.rule == "dgd" and c.objective not in ("l2", "dot"):
        return Refusal("update.rule", f"{name} is defined for the l2 and dot objectives",
                       "set objective: {kind: l2} or use rule 'gd'")
    if c.rule == "dgd" and c.memory != "matrix":
        return Refusal("update.rule", f"{name} on an MLP memory runs only in HOPE's self-modifying "
                       "pattern", "use a matrix memory, rule 'gd' / 'momentum', or the HOPE pattern "
                       "(nlc cp hope)")
    if c.window > 1:
        return Refusal("objective.window", f"{name} has no Omega window (window {c.window})",
                       "use window: 1, or rule 'gd' / 'momentum'")
    if c.guards:
        return Refusal(f"update.{c.guards}", f"{name} takes no gradient guards (grad_clip / "
                       "grad_normalize)", "remove them, or use rule 'gd' / 'momentum'")
    return Refusal("update.retention_kind", f"{name} keeps l2 retention only, not "
                   f"'{c.retention_kind}'", "use retention_kind: l2, or rule 'gd' / 'momentum'")


def memory_combinations() -> Iterator[tuple[RuleCase, str | Refusal]]:
    """Every update-rule combination of :data:`MEMORY_AXES` with its primitive or refusal."""
    for values in product(*MEMORY_AXES.values()):
        case = RuleCase(*values)
        yield case, memory_primitive(case)


def memory_refusals(period: int, self_target: bool, init: str, coupled: bool) -> list[Refusal]:
    """What a memory level's period, targets and initial state ask beyond the runtime
    (``period`` 0 = never; ``coupled``: the memory is part of a HOPE pattern, checked by
    :func:`hope_refusals`)."""
    out = []
    if period != 1:
        out.append(Refusal("period", f"a memory level updates every token (period 1), not "
                           f"{'never' if period == 0 else f'every {period} tokens'}; periods C > 1 "
                           "are for CMS (mlp) levels", "remove 'period', or use an mlp level with "
                           "a period for a slower level"))
    if self_target and not coupled:
        out.append(Refusal("objective.self_target", "self-generated values (self_target) run only "
                           "in HOPE's self-modifying pattern", "remove self_target, or see nlc cp hope"))
    if init == "copy":
        out.append(Refusal("init", "no memory copies another level's initial state (init: {copy: ...})",
                           "use init: learned or zero"))
    return out


def init_refusals(init: str, reset: str, reset_given: bool, source: str | None) -> list[Refusal]:
    """``reset`` is read only with a nested initial state, ``init: {from: X}``: the model
    re-initialises the level from X whenever X completes a chunk (``slower_chunk``)."""
    if init == "from":
        if reset_given and reset != "slower_chunk":
            return [Refusal("init.reset", f"a nested initial state is re-initialised whenever '{source}' "
                            f"completes a chunk (reset: slower_chunk); reset: {reset} is not implemented",
                            "write reset: slower_chunk, or leave it out")]
        return []
    if reset_given and reset != "never":
        return [Refusal("init.reset", f"nothing reads reset: {reset} on an initial state that is "
                        f"'{init}': it starts every sequence", "remove 'reset': it applies only to "
                        "init: {from: LEVEL}, a nested CMS level")]
    return []


# ------------------------------------------------------------------ CMS (mlp) levels


@dataclass(frozen=True)
class CMSCase:
    """An mlp level with a period (a CMS level) as plain values."""

    objective: str
    window: int
    self_target: bool
    rule: str
    momentum: bool  # a momentum knob is given
    retention: bool  # a retention / forget knob is given
    weight_decay: float
    retention_kind: str
    guards: str  # "" or the first gradient guard given (as RuleCase.guards)
    lr_kind: str  # constant | learned | data
    lr_source: str | None
    lr_per_chunk: bool
    flush: str


CMS_AXES: dict[str, tuple] = {
    "objective": ("task", "l2", "dot", "lp", "huber"),
    "lr_kind": ("constant", "learned", "data"),
    "init": ("learned", "zero", "from", "copy"),
}
"""The axes a CMS level varies on once its refusals below are applied."""


def cms_refusals(c: CMSCase) -> list[Refusal]:
    """Why the CMS runtime (:class:`~nlc.runtime.cms.CMSMixer`: summed chunk gradients,
    NL Eqs. 70-71) does not build ``c``; empty when it does."""
    out = []
    if c.objective not in ("task", "l2"):
        out.append(Refusal("objective.kind", f"a CMS level learns from the task loss or the l2 "
                           f"reconstruction of its input, not '{c.objective}'", "use kind task or l2"))
    if c.objective == "l2" and (c.window != 1 or c.self_target):
        field = "objective.window" if c.window != 1 else "objective.self_target"
        out.append(Refusal(field, "a CMS level's l2 objective has no window and no self-generated "
                           "targets", f"remove '{field.split('.')[1]}'"))
    if c.rule != "gd":
        out.append(Refusal("update.rule", f"a CMS level steps by the summed chunk gradient (NL Eqs. "
                           f"70-71), rule gd, not '{c.rule}'", "use rule: gd"))
    for given, field in ((c.momentum, "update.momentum"), (c.retention, "update.retention"),
                         (c.weight_decay > 0, "update.weight_decay"),
                         (c.retention_kind != "l2", "update.retention_kind"),
                         (c.guards, f"update.{c.guards}")):
        if given:
            name = field.split(".")[1]
            out.append(Refusal(field, f"a CMS level takes no {name} (the CMS runtime applies plain "
                               "summed-gradient steps)", f"remove '{name}'"))
    if c.lr_kind == "data" and c.lr_source != "input":
        out.append(Refusal("update.lr.from", f"a CMS level's lr comes from its input, not from level "
                           f"'{c.lr_source}'", "use lr: {from: input, init: ..., max: ...}"))
    if c.lr_kind == "data" and c.lr_per_chunk:
        out.append(Refusal("update.lr.per", "a CMS level's data-dependent lr changes every token",
                           "remove 'per: chunk'"))
    if c.flush != "carry":
        out.append(Refusal("flush", f"flush: {c.flush} is not applied: the model never ends a "
                           "sequence (streaming carries the state), so pending partial-chunk sums are "
                           "always carried to the next chunk", "remove 'flush' (carry)"))
    return out


def cms_init_refusals(init: str) -> list[Refusal]:
    """CMS initial states: learned, zero and nested (``from``, checked by the graph rules)."""
    if init == "copy":
        return [Refusal("init", "no CMS level copies another level's initial state (init: {copy: ...})",
                        "use init: learned or zero, or {from: LEVEL} for a nested CMS level")]
    return []


def frozen_mlp_refusals(init: str, flush: str) -> list[Refusal]:
    """An mlp level with ``period: never`` has no in-context state to initialise or flush."""
    out = []
    if init in ("zero", "copy"):  # 'from': a nested state, refused by validation rule 9
        out.append(Refusal("init", "an MLP with period 'never' has no in-context state: its "
                           "weights are slow parameters of its outer level", "remove 'init'"))
    if flush != "carry":
        out.append(Refusal("flush", "an MLP with period 'never' has no pending updates to flush",
                           "remove 'flush'"))
    return out


# ------------------------------------------------------------------ HOPE coupling


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
    update: object
    chunk: int
    read_after_write: bool
    keys: SourceFacts
    values: SourceFacts
    queries: SourceFacts
    init: str
    output_gate: bool

    def level_sources(self) -> list[str]:
        """Levels whose outputs this memory uses (keys, values, queries, gates)."""
        knobs = [k.source for k in (self.lr, self.momentum, self.retention) if k is not None and k.kind == "data"]
        names = [s.source for s in (self.keys, self.values, self.queries)] + knobs
        return [n for n in names if n not in (None, "input")]


HOPE_PATTERN = ("HOPE's pattern (nlc cp hope): the main memory takes keys, values, lr and retention "
                "each from its own component memory and queries from its input; every component reads "
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
    seen: set[str] = set()
    for role, (field, src) in roles.items():
        if role in missing:
            continue
        if src in seen:
            refuse(m.name, field, f"'{m.name}' takes its {role} from '{src}', which already gives another "
                   "role: keys, values, lr and retention each need a memory of their own")
        seen.add(src or "")
    if m.queries.source != "input":
        refuse(m.name, "queries.from", f"the main memory '{m.name}' reads its queries from a static "
               f"projection of its input, not from level '{m.queries.source}' (adaptive queries are "
               "not implemented)", "write queries: {from: input, ...}")
    if m.forget:
        refuse(m.name, "update.forget", "HOPE's gate is the retention (keep) factor alpha, not a "
               "forget gate", "write retention: {from: LEVEL, init: ...}")
    elif m.retention is not None and m.retention.max != 1:
        refuse(m.name, "update.retention.max", "HOPE's retention is sigmoid(.) in (0, 1)", "remove 'max'")
    for name, field, src in (("keys", "keys", m.keys), ("values", "values", m.values)):
        if src.conv or src.silu or not src.project or (name == "values" and src.l2_norm):
            refuse(m.name, field, f"'{m.name}' uses the {name} its component generates as they are"
                   + (" (only norm: l2 applies)" if name == "keys" else ""), f"write {field}: {src.source}")
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
                   f"retention from the same memories as '{m.name}' ({', '.join(s for _, s in roles.values())})")
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
             ("update.lr.per", lv.lr.per_chunk is False and not (lv.retention and lv.retention.per_chunk),
              "per-token lr and retention", "remove 'per'"),
             ("read", not lv.read_after_write, "a read before its write", "read: before_write"),
             ("init", lv.init == "learned", "a learned initial state", "remove 'init'"),
             ("heads", (lv.heads, lv.hidden, lv.activation) == (main.heads, main.hidden, main.activation),
              f"the heads, hidden width and activation of '{main.name}'", "give them the same memory and heads"))
    for field, ok, what, hint in wants:
        if not ok:
            refuse(lv.name, field, f"'{lv.name}' is part of the self-modifying memory '{main.name}' "
                   f"(HOPE): it needs {what}", hint)


def guards(grad_clip: float | None, grad_normalize: bool) -> str:
    """The ``guards`` value of :class:`RuleCase` / :class:`CMSCase` / :class:`MemoryFacts`."""
    return "grad_clip" if grad_clip is not None else "grad_normalize" if grad_normalize else ""
