"""Hypothesis strategies for nlc specs.

* :func:`valid_specs` draws spec *data* (plain dicts, as a user writes them in YAML) that
  is valid by construction: periods nest and fit the training sequence, a memory's chunk
  divides its period, heads divide the width, every same-time edge points forward in one global
  order (so there is no same-time cycle), nested initial states come only from strictly
  slower CMS levels of the same shape, exactly one optimizer is outermost, and every level
  reaches the output. What the runtime builds is read from the capability table
  (:mod:`nlc.capabilities`): memory update rules are drawn among the combinations it
  accepts, CMS objectives, lr forms and flush policies among those it does not refuse, so a
  row added there is drawn without a change here. Memories tick every token or every C
  tokens and read only the input (level sources are HOPE's self-modifying pattern, not drawn here);
  some map their keys and queries through ATLAS' polynomial feature map.
* :mod:`tests.spec_mutations`: one known mistake injected into such a draw, and fuzz inputs;
* :mod:`tests.runnable_specs`: draws shrunk to sizes the runtime runs in tests.

Draws are kept small (at most 6 levels, width at most 64) so that validating one is fast.
"""
from __future__ import annotations

import copy
import re
import typing
from typing import Any, Callable

from hypothesis import strategies as st
from pydantic import BaseModel

from nlc.capabilities import (
    CMS_AXES,
    CMSCase,
    Refusal,
    chunk_frozen,
    cms_init_refusals,
    cms_refusals,
    init_refusals,
    memory_combinations,
    memory_primitive,
)
from nlc.spec import levels as _levels_mod
from nlc.spec.optimizers import RULE_FIELDS
from nlc.spec import model as _model_mod
from nlc.spec import optimizers as _optimizers_mod
from nlc.spec import values as _values_mod
from nlc.graph.stability import DEEP_STEP_LIMIT

INPUT = "input"
USABLE = ("attention", "memory", "mlp")  # level types a model layer may apply

# Names that collide with type tags, keys or keywords of the spec language: a level may
# legally be called ``memory`` or ``type``, and the error locator must not confuse them.
TRICKY_NAMES = [
    "memory", "mlp", "attention", "matrix", "level", "parallel", "context", "outer",
    "type", "kind", "heads", "levels", "model", "optimizer", "persistent", "never",
    "learned", "zero", "copy", "period", "update", "x", "_", "L0", "mem_k", "from",
]

level_names = st.one_of(
    st.sampled_from(TRICKY_NAMES),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True),
).filter(lambda n: n != INPUT)


def _all_models() -> list[type[BaseModel]]:
    out = []
    for mod in (_levels_mod, _model_mod, _optimizers_mod, _values_mod):
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == mod.__name__:
                out.append(obj)
    return out


ALL_KEYS: frozenset[str] = frozenset(
    key
    for model in _all_models()
    for name, field in model.model_fields.items()
    for key in (name, field.alias)
    if key
) | {"extends", "from", "copy", "to", "int"}
"""Every key the spec language knows anywhere: a typo must not land on one of these."""


def _literals(tp: Any) -> set[str]:
    if typing.get_origin(tp) is typing.Literal:
        return {a for a in typing.get_args(tp) if isinstance(a, str)}
    return set().union(*(_literals(a) for a in typing.get_args(tp))) if typing.get_args(tp) else set()


ALL_LITERALS: frozenset[str] = frozenset(
    value for model in _all_models() for field in model.model_fields.values()
    for value in _literals(field.annotation)
) | {"never", "input"}
"""Every enumerated word of the language (``gd``, ``rms``, ``memory``, ...)."""

_E_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def free_text(max_size: int) -> st.SearchStrategy[str]:
    """Text for description-like fields. Strings such as ``1e5`` are left out: nlc reads
    them back as floats while PyYAML writes them unquoted, a known round-trip bug with
    its own xfail test (test_properties.py::test_spec_to_yaml_keeps_float_like_strings)."""
    return st.text(max_size=max_size).filter(lambda s: not _E_FLOAT.match(s))


small_floats = st.floats(min_value=1e-4, max_value=1.0, allow_nan=False, allow_infinity=False)
gate_floats = st.floats(min_value=1e-4, max_value=0.99, allow_nan=False)  # momentum, forget: < 1
unit_open = st.floats(min_value=0.01, max_value=0.99, allow_nan=False)


_COIN = st.booleans()


def _pick(draw: Callable, options: Any) -> Any:
    """One of ``options`` (shrinks towards the first; cheaper than a new sampled_from)."""
    options = list(options)
    return options[draw(st.integers(0, len(options) - 1))]


def _maybe(draw: Callable, d: dict, key: str, strategy: Any) -> None:
    """Set ``d[key]`` (from a strategy, or one of a list) unless a coin leaves the default."""
    if draw(_COIN):
        d[key] = draw(strategy) if isinstance(strategy, st.SearchStrategy) else _pick(draw, strategy)


# --------------------------------------------------------------------------- knobs, sources


KNOB_KINDS = ("constant", "learned", "data")  # as Knob.kind names them


@st.composite
def knobs(draw, kinds: tuple[str, ...] = KNOB_KINDS, *, gate: bool = False,
          tops: tuple[float, ...] = (0.5, 1.0, 2.0), pers: tuple[str, ...] = ("token", "chunk")):
    """A knob of one of ``kinds``: a number (short or long form), ``{learned: x}`` or
    ``{from: input, ...}`` with a ``max`` among ``tops`` and a ``per`` among ``pers``. A
    squashed knob (learned, or data-dependent) starts strictly inside (0, max); a ``gate``
    (momentum, retention, forget) stays below 1."""
    kind = _pick(draw, kinds)
    if kind == "constant":
        value = draw(gate_floats if gate else small_floats)
        return {"value": value} if draw(_COIN) else value
    if kind == "learned":
        return {"learned": draw(unit_open)}
    out: dict[str, Any] = {"from": INPUT}
    top = 1.0
    if draw(_COIN):
        top = _pick(draw, [t for t in tops if t <= 1] if gate else tops)
        out["max"] = top
    if draw(_COIN):
        out["init"] = draw(unit_open) * top
    if draw(_COIN):
        out["per"] = _pick(draw, pers)
    return out


@st.composite
def sources(draw):
    """Where keys/values/queries come from: the input, in its short or long form."""
    if draw(_COIN):
        return INPUT
    out: dict[str, Any] = {"from": INPUT}
    _maybe(draw, out, "project", _COIN)
    _maybe(draw, out, "conv", st.integers(0, 4))
    _maybe(draw, out, "norm", ["none", "l2"])
    _maybe(draw, out, "activation", ["none", "silu"])
    return out


# --------------------------------------------------------------------------- levels


MEMORY_CASES: dict[str, list] = {}
"""The memory update-rule combinations the capability table builds, by primitive family
(linear_attention, delta_rule, ...): a draw picks a family, then a combination of it."""
for _case, _primitive in memory_combinations():
    if not isinstance(_primitive, Refusal):
        MEMORY_CASES.setdefault(_primitive, []).append(_case)


def _cms_case(**fields: Any) -> CMSCase:
    """A plain CMS level (task objective, rule gd, constant lr, carry) with ``fields`` changed."""
    plain = dict(objective="task", window=1, self_target=False, rule="gd", momentum=False,
                 retention=False, weight_decay=0.0, retention_kind="l2", guards="", lr_kind="constant",
                 lr_source=INPUT, lr_per_chunk=False, flush="carry")
    return CMSCase(**{**plain, **fields})


CMS_LR_KINDS = tuple(k for k in CMS_AXES["lr_kind"] if not cms_refusals(_cms_case(lr_kind=k)))
CMS_LR_PERS = tuple(p for p in ("token", "chunk")
                    if not cms_refusals(_cms_case(lr_kind="data", lr_per_chunk=p == "chunk")))
CMS_FLUSHES = tuple(f for f in typing.get_args(_levels_mod.MLPLevel.model_fields["flush"].annotation)
                    if not cms_refusals(_cms_case(flush=f)))
CMS_INITS = tuple(i for i in CMS_AXES["init"] if i != "from" and not cms_init_refusals(i))
NESTED_RESETS = tuple(r for r in typing.get_args(_values_mod.Init.model_fields["reset"].annotation)
                      if not init_refusals("from", r, True, None))
"""What the capability table lets a CMS level say (nested ``from`` states are drawn apart).
Its objective is ``task``: the table also builds ``l2``, but such a level turns NaN within
128 tokens at every lr from 1.0 down to 0.01 (width 16 to 64, period 1 to 32) with no
validation warning, and valid draws must train finitely (tests/security/test_fuzz.py)."""


@st.composite
def objectives(draw, kind: str, window: int):
    """An objective of ``kind``; ``window`` 2 stands for any Omega window > 1 (as in
    :data:`nlc.capabilities.MEMORY_AXES`)."""
    out: dict[str, Any] = {"kind": kind}
    if kind == "lp":
        out["p"] = _pick(draw, [1, 1.5, 3, 4.0])
    if kind == "huber":  # a learned or data-dependent delta (Yaad) takes window 1
        out["delta"] = _pick(draw, [0.1, 1.0, 2.5] + ([] if window > 1 else [
            {"learned": 0.5}, {"from": "input", "init": 0.5, "max": 2.0}]))
    if window > 1:
        out["window"] = draw(st.integers(2, 4))
    elif draw(st.integers(0, 3)) == 0:
        out["window"] = 1
    return out


@st.composite
def memory_updates(draw, case):
    """The update block of a memory with the update-rule combination ``case``
    (:class:`nlc.capabilities.RuleCase`). A data-dependent lr keeps ``max <= 1``: a larger one
    is warned about for gradient rules on a matrix memory's l2 objective."""
    out: dict[str, Any] = {"rule": case.rule}
    if draw(_COIN):
        out["lr"] = draw(knobs(tops=(0.5, 1.0)))
    gate = knobs(gate=True)
    if case.momentum:
        out["momentum"] = draw(gate)
    kind = _pick(draw, [None, "retention", "forget"])
    if kind:
        out[kind] = draw(gate)
    _maybe(draw, out, "weight_decay", [0.0, 0.01, 0.5])
    if case.retention_kind != "l2" or draw(_COIN):
        out["retention_kind"] = case.retention_kind
    if case.retention_kind == "lq":  # q > 2 needs a memory that does not start at zero (rule 10)
        out["q"] = _pick(draw, [2.0, 3.0, 4.0] if case.memory == "mlp" else [2.0])
    if case.retention_kind == "elastic":
        out["shrink"] = _pick(draw, [0.0, 0.01, 0.1])
    if case.retention_kind == "kl":
        out["mass"] = _pick(draw, [1.0, 4.0, 8.0])
    family = memory_primitive(case)
    if isinstance(family, str) and chunk_frozen(family, case.objective):  # TTT's mean of a chunk
        _maybe(draw, out, "reduce", ["sum", "mean"])
    if case.guards:  # grad_clip, grad_normalize or both
        which = _pick(draw, ["grad_clip", "grad_normalize", "both"])
        if which != "grad_normalize":
            out["grad_clip"] = _pick(draw, [0.5, 1.0, 10.0])
        if which != "grad_clip":
            out["grad_normalize"] = True
    elif draw(st.integers(0, 3)) == 0:
        out["grad_normalize"] = False
    if case.output != "identity" or draw(st.integers(0, 3)) == 0:
        out["output"] = case.output
    if case.output == "newton_schulz":
        _maybe(draw, out, "ns_steps", [1, 3, 5])
    return out


@st.composite
def cms_updates(draw):
    """The update block of a CMS level: all the capability table builds (rule gd, an lr)."""
    out: dict[str, Any] = {"rule": "gd"}
    if draw(_COIN):
        out["lr"] = draw(knobs(CMS_LR_KINDS, pers=CMS_LR_PERS))
    return out


@st.composite
def gradient_rules(draw):
    """A ``rule: memories`` group (nlc.spec.optimizers.GradientRule): up to two gradient memories."""
    momenta = []
    for _ in range(draw(st.integers(0, 2))):
        memory: dict[str, Any] = {}
        fields = [("memory", ["matrix", "mlp"]), ("objective", ["dot", "l2"]), ("retention", [0.0, 0.9, 1.0]),
                  ("lr", [0.1, 1.0]), ("period", [1, 3]), ("weight", [0.5, 1.0])]
        for field, values in fields:
            _maybe(draw, memory, field, values)
        if memory.get("memory") != "mlp":  # an MLP memory is read at the current gradient, as it is
            _maybe(draw, memory, "nesterov", _COIN)
            _maybe(draw, memory, "output", ["identity", "newton_schulz"])
            if memory.get("retention", 0.9) < 1:  # retention 1 has no bias to correct
                _maybe(draw, memory, "bias_correction", _COIN)
        momenta.append(memory)
    rule: dict[str, Any] = {"momenta": momenta}
    _maybe(draw, rule, "second_moment", st.sampled_from([None, {}, {"retention": 0.99}]))
    _maybe(draw, rule, "decay", ["decoupled", "l2"])
    if any(m.get("output") == "newton_schulz" for m in momenta):
        _maybe(draw, rule, "scale", ["none", "match_adamw"])
    return rule


@st.composite
def memory_shapes(draw, kind: str):
    if kind == "matrix":
        return {"kind": "matrix"}
    out: dict[str, Any] = {"kind": "mlp"}
    _maybe(draw, out, "depth", st.integers(1, 3))
    _maybe(draw, out, "hidden", [8, 16, 32])
    _maybe(draw, out, "expansion", st.integers(1, 4))
    _maybe(draw, out, "residual", _COIN)
    _maybe(draw, out, "activation", ["gelu", "silu", "relu", "identity"])
    _maybe(draw, out, "norm", ["none", "layernorm"])
    return out


class _Plan:
    """What the generator decided about each level before filling in the details."""

    def __init__(self) -> None:
        self.order: list[str] = []  # global order: same-time edges only point forward
        self.type: dict[str, str] = {}
        self.period: dict[str, int | None] = {}  # tokens, or None (never / not in context)
        self.after_write: set[str] = set()
        self.prepends: set[str] = set()  # attention levels with persistent tokens of their own
        self.edges: set[tuple[str, str]] = set()  # (used, user), initial states apart: for reachability

    def lagged(self, name: str) -> bool:
        return self.type[name] == "mlp" or (self.type[name] == "memory" and name not in self.after_write)


@st.composite
def valid_specs(draw, max_levels: int = 6):
    """Spec data (plain dicts) that validates with no error and no warning."""
    width = _pick(draw, [16, 24, 32, 48, 64])
    divisors = [d for d in range(1, 17) if width % d == 0]
    even_dims = [d for d in divisors if width // d % 2 == 0]  # RoPE rotates pairs of channels
    seq_len = _pick(draw, [32, 64, 128])
    batch = draw(st.integers(1, 8))
    chain = [1]  # token periods: every pair divides (they nest), all shorter than seq_len
    while len(chain) < 4:
        nxt = chain[-1] * _pick(draw, [2, 4])
        if nxt >= seq_len:
            break
        chain.append(nxt)

    n_other = draw(st.integers(1, max_levels - 1))
    two_opts = n_other >= 2 and n_other <= max_levels - 2 and draw(_COIN)
    kinds = draw(st.lists(st.sampled_from(["attention", "memory", "memory", "mlp", "mlp", "persistent"]),
                          min_size=n_other, max_size=n_other))
    n_att = kinds.count("attention")
    fixed, seen_p = [], 0
    for k in kinds:  # each persistent level is prepended by its own attention level
        if k == "persistent":
            seen_p += 1
            k = "persistent" if seen_p <= n_att else "mlp"
        fixed.append(k)
    kinds = fixed
    ordered_kinds = ([k for k in kinds if k == "attention"] + [k for k in kinds if k == "persistent"]
                     + [k for k in kinds if k in ("memory", "mlp")])
    names = draw(st.lists(level_names, min_size=n_other + 1 + two_opts,
                          max_size=n_other + 1 + two_opts, unique=True))
    plan = _Plan()
    for name, k in zip(names, ordered_kinds):
        plan.order.append(name)
        plan.type[name] = k
    opt_o = names[n_other]
    opt_f = names[n_other + 1] if two_opts else None
    for opt in (opt_o, opt_f):
        if opt:
            plan.order.append(opt)
            plan.type[opt] = "optimizer"

    # --- periods and read modes first: context layers and nested states depend on them
    for name in plan.order:
        if plan.type[name] == "memory":
            # a memory ticks every token, or every C tokens of the chain (read before write)
            plan.period[name] = 1 if draw(st.integers(0, 3)) else _pick(draw, chain)
            if plan.period[name] == 1 and draw(st.integers(0, 3)) == 0:
                plan.after_write.add(name)
        elif plan.type[name] == "mlp":
            plan.period[name] = _pick(draw, [*chain, None])  # None: frozen
        else:
            plan.period[name] = None

    attentions = [n for n in plan.order if plan.type[n] == "attention"]
    persistents = [n for n in plan.order if plan.type[n] == "persistent"]
    levels: dict[str, dict] = {}

    for name in plan.order:
        t = plan.type[name]
        lv: dict[str, Any] = {"type": t}
        if t == "attention":
            _maybe(draw, lv, "heads", even_dims)
            _maybe(draw, lv, "window", [4, 16, 64])
            _maybe(draw, lv, "rope", _COIN)
            _maybe(draw, lv, "qk_norm", _COIN)
            i = attentions.index(name)
            if i < len(persistents):
                lv["persistent"] = persistents[i]
                plan.prepends.add(name)
                plan.edges.add((persistents[i], name))
        elif t == "persistent":
            lv["tokens"] = draw(st.integers(1, 8))
        elif t == "memory":
            case = _pick(draw, MEMORY_CASES[_pick(draw, MEMORY_CASES)])
            shape = draw(memory_shapes(case.memory))
            if shape != {"kind": "matrix"} or draw(_COIN):
                lv["memory"] = shape
            objective = draw(objectives(case.objective, case.window))
            if objective != {"kind": "l2"} or draw(_COIN):
                lv["objective"] = objective
            update = draw(memory_updates(case))
            if update != {"rule": "gd"} or draw(_COIN):
                lv["update"] = update
            period = plan.period[name]
            if period > 1 or draw(st.integers(0, 3)) == 0:
                lv["period"] = period
            chunk = _pick(draw, [1, 2, 4, 16, 64])
            if period > 1:  # a tick writes whole chunks (powers of two: the smaller divides)
                chunk = min(chunk, period)
            if chunk != 64 or draw(_COIN):  # 64 is the default
                lv["chunk"] = chunk
            _maybe(draw, lv, "heads", divisors)
            if name in plan.after_write:
                lv["read"] = "after_write"
            elif draw(_COIN):
                lv["read"] = "before_write"
            for field in ("keys", "values", "queries"):
                if draw(_COIN):
                    lv[field] = draw(sources())
            if draw(st.integers(0, 3)) == 0:  # ATLAS' feature map: on l2-normalised keys and queries
                lv["features"] = {"kind": "polynomial", "degree": draw(st.integers(1, 8))}
                for field in ("keys", "queries"):
                    source = lv.get(field, INPUT)
                    lv[field] = {**(source if isinstance(source, dict) else {"from": source}), "norm": "l2"}
            _maybe(draw, lv, "init", ["learned", "zero"])
            _maybe(draw, lv, "output_gate", _COIN)
            _keep_memory_stable(lv)
        elif t == "mlp":
            _maybe(draw, lv, "hidden", [16, 32, 64])
            _maybe(draw, lv, "expansion", [1, 2, 2.5, 4])
            _maybe(draw, lv, "activation", ["swiglu", "gelu", "silu", "relu"])
            period = plan.period[name]
            if period is None:
                if draw(_COIN):
                    lv["period"] = "never"
            else:
                lv["period"] = period
                lv["objective"] = {"kind": "task"}
                lv["update"] = draw(cms_updates())
                _maybe(draw, lv, "flush", CMS_FLUSHES)
                _maybe(draw, lv, "init", CMS_INITS)
        elif t == "optimizer":
            _maybe(draw, lv, "rule", ["adamw", "adam", "sgd", "muon", "m3", "dmgd", "memories"])
            _maybe(draw, lv, "lr", [1e-3, 3e-4, 0.01, 1.0e-2])
            reads = RULE_FIELDS[lv.get("rule", "adamw")]  # a field its rule does not read is an error
            if "betas" in reads:
                _maybe(draw, lv, "betas", [[0.9, 0.95], [0.9, 0.999]])
            _maybe(draw, lv, "weight_decay", [0.0, 0.1])
            if "eps" in reads:
                _maybe(draw, lv, "eps", [1e-8, 1e-6])
            if "momentum" in reads:
                _maybe(draw, lv, "momentum", [0.0, 0.9, 0.95])
            if "nesterov" in reads and lv.get("momentum", 0.95 if lv.get("rule") == "muon" else 0) > 0:
                _maybe(draw, lv, "nesterov", _COIN)
            for field, values in (("ns_steps", [1, 5]), ("slow_period", [1, 2, 4]), ("slow_beta", [0.9, 0.99]),
                                  ("slow_weight", [0.0, 0.5]), ("hidden", [4, 16])):
                if field in reads:
                    _maybe(draw, lv, field, values)
            if lv.get("rule") == "memories":
                lv["matrices"] = draw(gradient_rules())
                _maybe(draw, lv, "others", gradient_rules())
            _maybe(draw, lv, "grad_clip", [None, 1.0])
            _maybe(draw, lv, "warmup", st.integers(0, 20))
            _maybe(draw, lv, "schedule", ["cosine", "constant", "linear"])
        if draw(st.integers(0, 4)) == 0:
            lv["description"] = draw(free_text(12))
        levels[name] = lv

    # --- optimizer clocks and which optimizer trains what
    steps_o = draw(st.integers(2 if opt_f else 1, 4))
    if steps_o != 1 or draw(_COIN):
        levels[opt_o]["period"] = {"steps": steps_o}
    others = [n for n in plan.order if plan.type[n] != "optimizer"]
    if opt_f:
        levels[opt_f]["period"] = {"steps": draw(st.integers(1, steps_o - 1))}
        use_f = draw(st.lists(st.sampled_from(others), min_size=1, max_size=len(others) - 1, unique=True))
        for n in use_f:
            levels[n]["outer"] = opt_f
            plan.edges.add((opt_f, n))
    for n in others:
        if "outer" not in levels[n]:
            plan.edges.add((opt_o, n))
            if draw(st.integers(0, 5)) == 0:
                levels[n]["outer"] = opt_o

    # --- nested initial states (NL-arXiv Eq. 72): only (task-driven) CMS levels have them,
    # meta-learned by a strictly slower CMS level of the same shape
    cms = sorted((n for n in others if plan.type[n] == "mlp" and plan.period[n] is not None),
                 key=lambda n: -plan.period[n])  # slowest first: their shape is final
    for name in cms:
        slower = [s for s in cms if plan.period[s] > plan.period[name]]
        if not slower or not draw(_COIN):
            continue
        src = _pick(draw, slower)
        for key in ("hidden", "expansion", "activation"):
            if key in levels[src]:
                levels[name][key] = copy.deepcopy(levels[src][key])
            else:
                levels[name].pop(key, None)
        init: dict[str, Any] = {"from": src}  # placement is fixed after the blocks
        _maybe(draw, init, "reset", NESTED_RESETS)
        levels[name]["init"] = init

    # --- knowledge-transfer edges (rule 13, nlc.graph.transfers): an initialization edge names
    # what a learned initial state's outer optimizer does; conditioning / backprop / generation
    # are drawn forward in the global order and kept after the blocks only where they compile
    transfer = []
    for _ in range(draw(st.integers(0, 2))):
        kind = _pick(draw, ["conditioning", "backprop", "generation", "initialization"])
        if kind == "initialization":
            pairs = [(levels[n].get("outer", opt_o), n) for n in others if _learned_state(levels[n])]
        else:
            pairs = [(s, n) for i, s in enumerate(others) for n in others[i + 1:]
                     if plan.type[s] in USABLE and plan.type[n] in USABLE]
        if pairs:
            s, n = _pick(draw, pairs)
            transfer.append({"from": s, "to": n, "kind": kind})

    # --- model blocks
    usable = [n for n in others if plan.type[n] in USABLE]
    lagged_memories = [n for n in usable if plan.type[n] == "memory" and plan.lagged(n)]
    blocks = []
    for _ in range(draw(st.integers(1, 2))):
        layers = []
        for _ in range(draw(st.integers(1, 3))):
            layers.append(draw(_layers(usable, attentions, lagged_memories, persistents, plan)))
        block: dict[str, Any] = {"layers": layers}
        _maybe(draw, block, "repeat", st.integers(1, 3))
        blocks.append(block)
    sinks = {n for block in blocks for layer in block["layers"] for n in _layer_levels(layer)}
    while True:  # every level must reach the output: apply the unreached ones too
        _drop_misplaced_nested_states(levels, blocks)  # which may leave their sources unreached
        reached = _ancestors(sinks, plan.edges | _init_edges(levels))
        missing = [n for n in usable if n not in reached]
        if not missing:
            break
        blocks[-1]["layers"].append(missing[0] if draw(_COIN) else {"level": missing[0]})
        sinks.add(missing[0])

    transfer = [e for e in transfer if e["kind"] == "initialization" or _compiles(e, blocks)]
    _draw_lifetimes(draw, levels, blocks)
    model: dict[str, Any] = {"width": width, "blocks": blocks}
    heads = _pick(draw, even_dims if attentions else divisors)
    if heads != 4 or draw(_COIN):  # 4 is the default
        model["heads"] = heads
    _guard_fast_mlp_memories(levels, width, heads)
    _normalise_learners(levels, blocks)
    if draw(st.integers(0, 3)) == 0:
        model["tokenizer"] = "gpt2"
        model["vocab"] = _pick(draw, [50257, 50304])  # at least the tokenizer's
    _maybe(draw, model, "norm", ["rms", "layer"])
    _maybe(draw, model, "tie_embeddings", _COIN)

    train: dict[str, Any] = {"seq_len": seq_len, "batch": batch}
    _maybe(draw, train, "steps", st.integers(1, 500))
    for lv in levels.values():  # a warm-up shorter than the updates the run makes (rule 11)
        if lv["type"] == "optimizer" and lv.get("warmup"):
            updates = train.get("steps", 200) // lv.get("period", {}).get("steps", 1)
            if lv["warmup"] >= updates:
                lv["warmup"] = max(0, updates - 1)
    _maybe(draw, train, "seed", st.integers(0, 2**31))
    _maybe(draw, train, "data", ["shakespeare", "tinystories"])
    _maybe(draw, train, "dtype", ["float32", "bfloat16"])

    spec: dict[str, Any] = {"nlc": 1}
    _maybe(draw, spec, "name", st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True))
    _maybe(draw, spec, "description", free_text(30))
    spec["levels"] = levels
    spec["model"] = model
    if transfer:
        spec["transfer"] = transfer
    spec["train"] = train
    if draw(st.integers(0, 3)) == 0:
        spec["search"] = draw(_search(levels))
    return spec


def _keep_memory_stable(lv: dict) -> None:
    """A memory whose write steps on its error (l2 / lp / huber objectives, delta and DGD
    rules) with lr x window x |k|^2 >= 1 on keys that are not l2-normalised (projected keys
    start with |k|^2 about head_dim / 3) diverges within a few tokens, and validation refuses
    it, and so is an MLP memory on the dot objective (its layers feed each other's growth): such
    a memory gets l2-normalised keys (a matrix memory on the dot objective keeps any keys)."""
    update, objective = lv.get("update", {}), lv.get("objective", {})
    if update.get("q", 2.0) > 2 and lv.get("init") == "zero":  # lq on a zero start blows up (rule 10)
        update["q"] = 2.0
    if objective.get("p", 2) > 2 and "grad_clip" not in update and not update.get("grad_normalize"):
        lv["update"] = update = {"rule": "gd", **update, "grad_clip": 1.0}  # lp, p > 2: a guard (rule 10)
    if objective.get("kind", "l2") == "dot" and update.get("rule", "gd") not in ("delta", "dgd") \
            and lv.get("memory", {}).get("kind") != "mlp":
        return
    keys = lv.get("keys", INPUT)
    lv["keys"] = {**(keys if isinstance(keys, dict) else {"from": keys}), "norm": "l2"}
    window = objective.get("window", 1)
    lr = update.get("lr", 1.0)
    initial = lr if not isinstance(lr, dict) else lr.get("value", lr.get("learned", lr.get("init", 0.5 * lr.get("max", 1.0))))
    if objective.get("kind", "l2") == "l2" and update.get("rule", "gd") in ("gd", "momentum") \
            and initial * window > 1:  # unit-norm keys: the error grows as (1 - 2 lr window)
        lv.setdefault("update", {"rule": "gd"})["lr"] = 0.5 / window


def _guard_fast_mlp_memories(levels: dict, width: int, heads: int) -> None:
    """An MLP memory on unit-norm keys that steps on its error with ``lr x window x (1 +
    (depth - 1) hidden / head_dim) >= DEEP_STEP_LIMIT`` and no gradient guard, from
    N(0, 1/fan_in) weights, is refused (rule 10, nlc/graph/stability.py): such a memory gets ``grad_clip: 1.0``."""
    for lv in levels.values():
        memory, update, objective = lv.get("memory", {}), lv.get("update", {"rule": "gd"}), lv.get("objective", {})
        keys = lv.get("keys")
        if lv["type"] != "memory" or memory.get("kind") != "mlp" or "grad_clip" in update or lv.get("init") == "zero" \
                or update.get("grad_normalize") or not (isinstance(keys, dict) and keys.get("norm") == "l2"):
            continue
        if objective.get("kind", "l2") == "dot" and update.get("rule", "gd") not in ("delta", "dgd"):
            continue
        d = width // lv.get("heads", heads)
        kernel = 1 + (memory.get("depth", 2) - 1) * memory.get("hidden", memory.get("expansion", 4) * d) / d
        lr = update.get("lr", 1.0)
        initial = lr if not isinstance(lr, dict) else lr.get("value", lr.get("learned", lr.get("init", 0.5 * lr.get("max", 1.0))))
        if initial * objective.get("window", 1) * kernel >= DEEP_STEP_LIMIT:
            lv["update"] = {**update, "grad_clip": 1.0}


def _normalise_learners(levels: dict, blocks: list) -> None:
    """A layer with ``norm: none`` that applies a memory or CMS level is refused (rule 10:
    nothing bounds a learner's step on the raw residual stream): such a layer keeps rms."""
    def learns(name: str) -> bool:
        lv = levels[name]
        return lv["type"] == "memory" or (lv["type"] == "mlp" and isinstance(lv.get("period"), int))

    for block in blocks:
        for layer in block["layers"]:
            if isinstance(layer, dict) and layer.get("norm") == "none" and any(map(learns, _layer_levels(layer))):
                del layer["norm"]


def _learned_state(lv: dict) -> bool:
    """A memory or CMS level whose initial state its outer optimizer meta-learns."""
    in_context = lv["type"] == "memory" or (lv["type"] == "mlp" and isinstance(lv.get("period"), int))
    return in_context and lv.get("init", "learned") == "learned"


def _compiles(edge: dict, blocks: list) -> bool:
    """A conditioning / backprop / generation edge compiles (rule 13): both levels only in layers
    of their own, the target applied, and in every block that applies it the source earlier."""
    x, y, applied = edge["from"], edge["to"], False
    for block in blocks:
        names = [_layer_levels(layer) for layer in block["layers"]]
        if any(isinstance(layer, dict) and "level" not in layer and {x, y} & set(_layer_levels(layer))
               for layer in block["layers"]):
            return False
        for i, n in enumerate(names):
            if n == [y]:
                applied = True
                if [x] not in names[:i]:
                    return False
    return applied


def _draw_lifetimes(draw: Callable, levels: dict, blocks: list) -> None:
    """Lifetimes (rule 12, nlc.graph.lifetimes): levels that must share one (those of a layer,
    a nested state and its source) form a group; a group of memory and CMS levels only, each
    applied in a layer, may draw ``stream`` or ``document`` for all its levels."""
    group = {name: name for name in levels}

    def root(name: str) -> str:
        while group[name] != name:
            name = group[name]
        return name

    applied = set()
    for block in blocks:
        for layer in block["layers"]:
            names = _layer_levels(layer)
            applied |= set(names)
            for other in names[1:]:
                group[root(other)] = root(names[0])
    for source, target in _init_edges(levels):
        group[root(target)] = root(source)
    members: dict[str, list[str]] = {}
    for name in levels:
        members.setdefault(root(name), []).append(name)
    for names in members.values():
        if all(n in applied and _learned_state({**levels[n], "init": "learned"}) for n in names) \
                and draw(st.integers(0, 3)) == 0:
            life = _pick(draw, ["stream", "document"])
            for n in names:
                levels[n]["lifetime"] = life


def _init_edges(levels: dict) -> set[tuple[str, str]]:
    """(X, level) for every nested initial state ``init: {from: X}``."""
    return {(lv["init"]["from"], n) for n, lv in levels.items() if isinstance(lv.get("init"), dict)}


def _drop_misplaced_nested_states(levels: dict, blocks: list) -> None:
    """A nested initial state (``init: {from: X}``) needs its level in a layer of its own in
    blocks that apply X in a layer of their own (validation rule 9); elsewhere it is dropped
    (the level starts from its learned state): no other cross-level initial state is built."""
    for name, lv in levels.items():
        init = lv.get("init")
        if not (isinstance(init, dict) and "from" in init):
            continue
        for block in blocks:
            own = {layer if isinstance(layer, str) else layer.get("level") for layer in block["layers"]}
            applied = {n for layer in block["layers"] for n in _layer_levels(layer)}
            if name in applied and (name not in own or init["from"] not in own or any(
                    name in _layer_levels(layer) for layer in block["layers"]
                    if isinstance(layer, dict) and "level" not in layer)):
                del lv["init"]
                break


@st.composite
def _layers(draw, usable, attentions, lagged_memories, persistents, plan: _Plan):
    kinds = ["single", "single_long"]
    if len(usable) >= 2:
        kinds.append("parallel")
    if attentions and lagged_memories:
        kinds.append("context")
    kind = _pick(draw, kinds)
    norm_res: dict[str, Any] = {}
    _maybe(draw, norm_res, "norm", ["rms", "layer", "none"])
    _maybe(draw, norm_res, "residual", _COIN)
    if kind == "single":
        return _pick(draw, usable)
    if kind == "single_long":
        return {"level": _pick(draw, usable), **norm_res}
    if kind == "parallel":
        chosen = draw(st.lists(st.sampled_from(usable), min_size=2, max_size=3, unique=True))
        combines = ["sum", "mean", "learned"] + (["gate"] if len(chosen) == 2 else [])
        out = {"parallel": chosen}
        _maybe(draw, out, "combine", combines)
        return {**out, **norm_res}
    attn, mem = _pick(draw, attentions), _pick(draw, lagged_memories)
    ctx: dict[str, Any] = {"attention": attn, "memory": mem}
    _maybe(draw, ctx, "segment", [8, 16, 64])
    plan.edges |= {(attn, mem), (mem, attn)}
    if persistents and attn not in plan.prepends and draw(_COIN):  # one persistent level per context
        ctx["persistent"] = _pick(draw, persistents)
        plan.edges.add((ctx["persistent"], attn))
    return {"context": ctx, **norm_res}


def _layer_levels(layer: Any) -> list[str]:
    if isinstance(layer, str):
        return [layer]
    if "level" in layer:
        return [layer["level"]]
    if "parallel" in layer:
        return list(layer["parallel"])
    return [layer["context"]["attention"], layer["context"]["memory"]]


def _ancestors(sinks: set[str], edges: set[tuple[str, str]]) -> set[str]:
    reached, frontier = set(sinks), list(sinks)
    while frontier:
        node = frontier.pop()
        for a, b in edges:
            if b == node and a not in reached:
                reached.add(a)
                frontier.append(a)
    return reached


@st.composite
def _search(draw, levels: dict):
    space: dict[str, Any] = {}
    for _ in range(draw(st.integers(1, 2))):
        path = _pick(draw, ["model.width", "train.batch", "train.seed",
                                     *[f"levels.{n}.update.lr" for n in levels]])
        kind = _pick(draw, ["choice", "uniform", "loguniform", "int"])
        low = _pick(draw, [1e-4, 1e-3, 0.01])
        dim: dict[str, Any] = {
            "choice": {"choice": [1, 2, "x"]},
            "uniform": {"uniform": [low, 1.0]},
            "loguniform": {"loguniform": [low, 1.0]},
            "int": {"int": [1, 8]},
        }[kind]
        if draw(st.integers(0, 3)) == 0:
            dim["when"] = {"model.norm": "rms"}
        space[path] = dim
    out: dict[str, Any] = {"space": space}
    _maybe(draw, out, "trials", st.integers(1, 50))
    _maybe(draw, out, "objectives", [["val_bpb"], ["val_bpb", "params"]])
    _maybe(draw, out, "prune", ["none", "median", "halving"])
    return out
