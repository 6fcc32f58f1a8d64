"""The capability table's per-level rules: which memory update rules, initial states and CMS
(mlp) levels the runtime builds, each as plain values in, a primitive or refusals out.

Part of :mod:`nlc.capabilities` (import the names from there); the coupling of several
memories in HOPE's pattern is :mod:`nlc.capabilities.hope`, which builds on
:class:`Refusal` from here. This module imports nothing of the pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Iterator

TABLE = "nlc/capabilities"


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
    "retention_kind": ("l2", "lq", "elastic", "kl"),
    "guards": ("", "grad_clip"),
    "output": ("identity", "newton_schulz"),
    "momentum": (False, True),
}
"""Every value of each axis of a memory's update rule (a window is 1 or more: 2 stands for
any Omega window > 1; ``grad_normalize`` is a guard like ``grad_clip``). The ``task``
objective is refused for memories outright. A momentum is what rule ``momentum`` is, and rules
``gd`` and ``delta`` take none (the spec model says so, :class:`nlc.spec.levels.Update`): only
``dgd`` varies on it."""


@dataclass(frozen=True)
class RuleCase:
    """A memory's update rule as plain values. ``guards``: ``""`` or the first gradient guard
    given (``grad_clip`` or ``grad_normalize``: the field a refusal points at); ``output``:
    ``identity`` or ``newton_schulz`` (ATLAS' Muon inner optimizer)."""

    memory: str
    objective: str
    rule: str
    window: int
    retention_kind: str
    guards: str
    output: str = "identity"
    momentum: bool = False  # a momentum knob is given (rule momentum; dgd: HOPE's memories only)


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
    if c.output == "newton_schulz" and c.rule not in ("gd", "momentum"):
        return Refusal("update.output", f"Newton-Schulz orthogonalises a momentum of gradients (Muon, "
                       f"rules gd and momentum); rule '{c.rule}' is an exact recurrence",
                       "use rule: momentum, or remove 'output'")
    if c.output == "newton_schulz" and c.retention_kind != "l2":
        return Refusal("update.retention_kind", f"the Muon update (output newton_schulz) keeps l2 "
                       f"retention only, not '{c.retention_kind}'", "use retention_kind: l2, or remove 'output'")
    if c.output == "newton_schulz":
        return "deep_memory"
    if matrix and plain and c.rule == "gd" and c.objective == "dot":
        return "linear_attention"
    if matrix and plain and c.rule == "delta" and c.objective == "l2":
        return "delta_rule"
    if matrix and c.rule == "dgd" and c.momentum:
        return Refusal("update.momentum", "the matrix DGD rule (NL-arXiv Eqs. 92-93) has no momentum; "
                       "DGD with momentum runs in HOPE's self-modifying memories (MLP, self_target)",
                       "remove 'momentum', or use rule: momentum")
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
    name = {"delta": "the exact delta rule", "dgd": "DGD (NL-arXiv Eq. 88)"}[c.rule]
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
                       "(a residual depth-2 MLP with objective: {kind: l2, self_target: true}; nlc cp hope)")
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
        case = RuleCase(**dict(zip(MEMORY_AXES, values)))
        if case.rule == "dgd" or case.momentum == (case.rule == "momentum"):
            yield case, memory_primitive(case)


def chunk_frozen(family: str, objective: str) -> bool:
    """Whether a memory primitive family takes its gradients at the chunk-start state (the
    deep memory, the Omega rule, DGD on l2): its results then depend on where chunks start."""
    return family in ("deep_memory", "omega_rule") or (family == "dgd" and objective == "l2")


def memory_refusals(period: int, self_target: bool, init: str, coupled: bool, *, chunk: int = 1,
                    frozen: bool = False, read_after_write: bool = False, reduce: str = "sum",
                    norm: str = "none") -> list[Refusal]:
    """What a memory level's period, targets, initial state, chunk reduction and output norm
    ask beyond the runtime (``period`` 0 = never; ``coupled``: the memory is part of a HOPE
    pattern, checked by :func:`~nlc.capabilities.hope.hope_refusals`; ``frozen``: its rule is
    chunk-frozen, :func:`chunk_frozen`). A period C > 1 ticks every C tokens (docs/design.md,
    "Level semantics"): the ticks must sit on the chunk grid, and reads see the last tick's state."""
    out = []
    if reduce == "mean" and (coupled or not frozen):
        why = ("HOPE's self-modifying memories sum their chunk's writes (NL-arXiv Eqs. 90-91)" if coupled
               else "this rule is exact at every token: its chunk is a speed-up, not a mini-batch to average")
        out.append(Refusal("update.reduce", why, "remove 'reduce' (sum), or use a chunk-frozen rule "
                           "(gd / momentum on an MLP memory)"))
    if norm != "none" and coupled:
        out.append(Refusal("memory.norm", "HOPE's memories are x + W1 act(W2 x) (NL-arXiv Eq. 89), without "
                           "an output norm", "remove 'norm'"))
    if period == 0:
        out.append(Refusal("period", "a memory level is updated in context: period 'never' would make "
                           "it a fixed random map", "give a period in tokens (1: every token)"))
    elif period > 1 and coupled:
        out.append(Refusal("period", f"HOPE's self-modifying memories update every token, not every "
                           f"{period}", "remove 'period' from the memories of the HOPE pattern"))
    elif period > 1:
        if frozen and chunk > 1 and period % chunk:
            out.append(Refusal("period", f"a memory ticking every {period} tokens writes whole chunks of "
                               f"its rule, but its chunk {chunk} does not divide {period}",
                               f"set chunk: {period} (one gradient step per tick, at the state of the "
                               f"last tick) or a divisor of {period}"))
        if read_after_write:
            out.append(Refusal("read", f"a memory ticking every {period} tokens is read as it stood at "
                               "its last tick, before the write of the tokens since",
                               "use read: before_write (the default), or period 1"))
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
    output: str = "identity"
    reduce: str = "sum"


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
                         (c.guards, f"update.{c.guards}"), (c.output != "identity", "update.output"),
                         (c.reduce != "sum", "update.reduce")):
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


def guards(grad_clip: float | None, grad_normalize: bool) -> str:
    """The ``guards`` value of :class:`RuleCase` / :class:`CMSCase` / :class:`~nlc.capabilities.hope.MemoryFacts`."""
    return "grad_clip" if grad_clip is not None else "grad_normalize" if grad_normalize else ""
