"""Hypothesis strategies for nlc specs.

* :func:`valid_specs` draws spec *data* (plain dicts, as a user writes them in YAML) that
  is valid by construction: periods nest and fit the training sequence, chunks hold whole
  periods, heads divide the width, every same-time edge points forward in one global
  order (so there is no same-time cycle), initial states come only from strictly slower
  levels of the same shape, exactly one optimizer is outermost, and every level reaches
  the output.
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

from nlc.spec import levels as _levels_mod
from nlc.spec import model as _model_mod
from nlc.spec import values as _values_mod

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
    for mod in (_levels_mod, _model_mod, _values_mod):
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


@st.composite
def knobs(draw, sources: list[str], *, allow_level: bool = True, allow_input: bool = True,
          gate: bool = False):
    """A knob in any of its forms: a number, ``{learned: x}``, ``{from: input|level, ...}``.
    A squashed knob (learned, or data-dependent) starts strictly inside (0, max); a ``gate``
    (momentum, retention, forget) keeps ``max <= 1``."""
    options = ["const", "const_long", "learned"]
    if allow_input:
        options.append("input")
    if allow_level and sources:
        options.append("level")
    kind = _pick(draw, options)
    if kind == "const":
        return draw(small_floats)
    if kind == "const_long":
        return {"value": draw(small_floats)}
    if kind == "learned":
        return {"learned": draw(unit_open)}
    out: dict[str, Any] = {"from": INPUT if kind == "input" else _pick(draw, sources)}
    top = 1.0
    if draw(_COIN):
        top = _pick(draw, [0.5, 1.0] if gate else [0.5, 1.0, 2.0])
        out["max"] = top
    if draw(_COIN):
        out["init"] = draw(unit_open) * top
    if draw(_COIN):
        out["per"] = _pick(draw, ["token", "chunk"])
    return out


@st.composite
def sources(draw, levels: list[str]):
    """Where keys/values/queries come from: the input (short or long form) or a level."""
    kind = _pick(draw, ["input", "input_long", "level", "level_long"] if levels
                                else ["input", "input_long"])
    src = INPUT if kind.startswith("input") else _pick(draw, levels)
    if not kind.endswith("long"):
        return src
    out: dict[str, Any] = {"from": src}
    if src == INPUT:
        _maybe(draw, out, "project", _COIN)
    _maybe(draw, out, "conv", st.integers(0, 4))
    _maybe(draw, out, "norm", ["none", "l2"])
    _maybe(draw, out, "activation", ["none", "silu"])
    return out


def _source_name(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("from")
    return None


# --------------------------------------------------------------------------- levels


@st.composite
def objectives(draw):
    kind = _pick(draw, ["dot", "l2", "l2", "lp", "huber"])
    out: dict[str, Any] = {"kind": kind}
    if kind == "lp":
        out["p"] = _pick(draw, [1, 1.5, 3, 4.0])
    if kind == "huber":
        out["delta"] = _pick(draw, [0.1, 1.0, 2.5])
    _maybe(draw, out, "window", st.integers(1, 4))
    _maybe(draw, out, "self_target", _COIN)
    return out


@st.composite
def updates(draw, rules: list[str], knob_sources: list[str], *, level_knobs_only_lr: bool = False):
    """An update block with a rule from ``rules``. ``level_knobs_only_lr``: only ``lr``
    may come from another level (an MLP level's other knobs are not graph edges)."""
    rule = _pick(draw, rules)
    out: dict[str, Any] = {"rule": rule}
    if draw(_COIN):
        out["lr"] = draw(knobs(knob_sources))
    other = knobs(knob_sources, allow_level=not level_knobs_only_lr, gate=True)
    if rule == "momentum":
        out["momentum"] = draw(other)
    gate = _pick(draw, [None, "retention", "forget"])
    if gate:
        out[gate] = draw(other)
    _maybe(draw, out, "weight_decay", [0.0, 0.01, 0.5])
    rk = _pick(draw, [None, "l2", "lq", "elastic"])
    if rk:
        out["retention_kind"] = rk
    if rk == "lq":
        out["q"] = _pick(draw, [1.5, 2.0, 3.0])
    if rk == "elastic":
        out["shrink"] = _pick(draw, [0.0, 0.01, 0.1])
    _maybe(draw, out, "grad_clip", [0.5, 1.0, 10.0])
    _maybe(draw, out, "grad_normalize", _COIN)
    return out


@st.composite
def memory_shapes(draw):
    if draw(_COIN):
        return {"kind": "matrix"}
    out: dict[str, Any] = {"kind": "mlp"}
    _maybe(draw, out, "depth", st.integers(1, 3))
    _maybe(draw, out, "hidden", [8, 16, 32])
    _maybe(draw, out, "expansion", st.integers(1, 4))
    _maybe(draw, out, "residual", _COIN)
    _maybe(draw, out, "activation", ["gelu", "silu", "relu", "identity"])
    return out


class _Plan:
    """What the generator decided about each level before filling in the details."""

    def __init__(self) -> None:
        self.order: list[str] = []  # global order: same-time edges only point forward
        self.type: dict[str, str] = {}
        self.period: dict[str, int | None] = {}  # tokens, or None (never / not in context)
        self.after_write: set[str] = set()
        self.edges: set[tuple[str, str]] = set()  # (used, user): for reachability

    def lagged(self, name: str) -> bool:
        return self.type[name] == "mlp" or (self.type[name] == "memory" and name not in self.after_write)

    def readable_by(self, owner: str) -> list[str]:
        """Levels ``owner`` may read keys/values/knobs from without a same-time cycle."""
        i = self.order.index(owner)
        return [n for n in self.order if self.type[n] in ("memory", "mlp")
                and (self.lagged(n) or self.order.index(n) < i)]


@st.composite
def valid_specs(draw, max_levels: int = 6):
    """Spec data (plain dicts) that validates with no error and no warning."""
    width = _pick(draw, [16, 24, 32, 48, 64])
    divisors = [d for d in range(1, 17) if width % d == 0]
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

    # --- periods and read modes first: what may read what depends on them
    for name in plan.order:
        if plan.type[name] == "memory":
            plan.period[name] = _pick(draw, chain)
            if draw(st.integers(0, 3)) == 0:
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
        readable = plan.readable_by(name) if t in ("memory", "mlp") else []
        if t == "attention":
            _maybe(draw, lv, "heads", divisors)
            _maybe(draw, lv, "window", [4, 16, 64])
            _maybe(draw, lv, "rope", _COIN)
            _maybe(draw, lv, "qk_norm", _COIN)
            i = attentions.index(name)
            if i < len(persistents):
                lv["persistent"] = persistents[i]
                plan.edges.add((persistents[i], name))
        elif t == "persistent":
            lv["tokens"] = draw(st.integers(1, 8))
        elif t == "memory":
            readable = [n for n in readable if plan.type[n] == "memory"]  # a memory reads memories
            shape = draw(memory_shapes())
            if shape != {"kind": "matrix"} or draw(_COIN):
                lv["memory"] = shape
            objective = draw(objectives())
            if objective != {"kind": "l2"} or draw(_COIN):
                lv["objective"] = objective
            rules = ["gd", "momentum"]
            if shape["kind"] == "matrix" and objective["kind"] == "l2":
                rules.append("delta")
            if objective["kind"] in ("l2", "dot"):
                rules.append("dgd")
            update = draw(updates(rules, readable))
            if update != {"rule": "gd"} or draw(_COIN):
                lv["update"] = update
            period = plan.period[name]
            if period != 1 or draw(_COIN):
                lv["period"] = period
            chunk = period * _pick(draw, [1, 2, 4, 16])
            if chunk != 64 or draw(_COIN):  # 64 is the default
                lv["chunk"] = chunk
            _maybe(draw, lv, "heads", divisors)
            if name in plan.after_write:
                lv["read"] = "after_write"
            elif draw(_COIN):
                lv["read"] = "before_write"
            for field in ("keys", "values", "queries"):
                if draw(_COIN):
                    lv[field] = draw(sources(readable))
            _maybe(draw, lv, "init", ["learned", "zero"])
            _maybe(draw, lv, "output_gate", _COIN)
            _keep_deep_memory_stable(lv)
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
                lv["update"] = draw(updates(["gd", "momentum"], readable, level_knobs_only_lr=True))
                _maybe(draw, lv, "flush", ["carry", "drop", "flush"])
            _maybe(draw, lv, "init", ["learned", "zero"])
        elif t == "optimizer":
            _maybe(draw, lv, "rule", ["adamw", "adam", "sgd"])
            _maybe(draw, lv, "lr", [1e-3, 3e-4, 0.01, 1.0e-2])
            _maybe(draw, lv, "betas", [[0.9, 0.95], [0.9, 0.999]])
            _maybe(draw, lv, "weight_decay", [0.0, 0.1])
            _maybe(draw, lv, "eps", [1e-8, 1e-6])
            _maybe(draw, lv, "grad_clip", [None, 1.0])
            _maybe(draw, lv, "warmup", st.integers(0, 20))
            _maybe(draw, lv, "schedule", ["cosine", "constant", "linear"])
        if draw(st.integers(0, 4)) == 0:
            lv["description"] = draw(free_text(12))
        levels[name] = lv
        for field in ("keys", "values", "queries"):
            src = _source_name(lv.get(field))
            if src not in (None, INPUT):
                plan.edges.add((src, name))
        for knob_name in ("lr", "momentum", "retention", "forget"):
            src = _source_name(lv.get("update", {}).get(knob_name))
            if src not in (None, INPUT):
                plan.edges.add((src, name))

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

    # --- initial states meta-learned by strictly slower levels of the same shape
    shape_keys = {"memory": ("memory", "heads"), "mlp": ("hidden", "expansion", "activation")}
    in_context = sorted((n for n in others if plan.period[n] is not None),
                        key=lambda n: -plan.period[n])  # slowest first: their shape is final
    for name in in_context:
        t = plan.type[name]
        rule = levels[name].get("update", {}).get("rule")
        slower = [s for s in in_context if plan.type[s] == t and plan.period[s] > plan.period[name]
                  and not (rule == "delta" and levels[s].get("memory", {"kind": "matrix"})["kind"] != "matrix")]
        if not slower or not draw(_COIN):
            continue
        src = _pick(draw, slower)
        for key in shape_keys[t]:
            if key in levels[src]:
                levels[name][key] = copy.deepcopy(levels[src][key])
            else:
                levels[name].pop(key, None)
        # nested ('from') only for task-driven CMS levels; placement is fixed after the blocks
        init: dict[str, Any] = {_pick(draw, ["from", "copy"]) if t == "mlp" else "copy": src}
        _maybe(draw, init, "reset", ["never", "context", "slower_chunk"])
        levels[name]["init"] = init
        plan.edges.add((src, name))

    # --- knowledge-transfer edges
    transfer = []
    for _ in range(draw(st.integers(0, 2))):
        kind = _pick(draw, ["conditioning", "backprop", "generation", "initialization"])
        if kind == "initialization":  # from an optimizer, or from a slower in-context level
            pairs = [(o, n) for o in (opt_o, opt_f) if o for n in others]
            pairs += [(s, n) for s in others for n in others
                      if plan.period[s] is not None and
                      (plan.type[n] == "attention" or (plan.period[n] or 10**9) < plan.period[s])]
        else:  # same-time: only forward in the global order
            pairs = [(s, n) for i, s in enumerate(others) for n in others[i + 1:]]
        if pairs:
            s, n = _pick(draw, pairs)
            transfer.append({"from": s, "to": n, "kind": kind})
            plan.edges.add((s, n))

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
        reached = _ancestors(sinks, plan.edges)
        missing = [n for n in usable if n not in reached]
        if not missing:
            break
        blocks[-1]["layers"].append(missing[0] if draw(_COIN) else {"level": missing[0]})
        sinks.add(missing[0])

    _copy_misplaced_nested_states(levels, blocks)
    model: dict[str, Any] = {"width": width, "blocks": blocks}
    heads = _pick(draw, divisors)
    if heads != 4 or draw(_COIN):  # 4 is the default
        model["heads"] = heads
    if draw(st.integers(0, 3)) == 0:
        model["tokenizer"] = "gpt2"
        model["vocab"] = _pick(draw, [256, 1000, 50257])
    _maybe(draw, model, "norm", ["rms", "layer"])
    _maybe(draw, model, "tie_embeddings", _COIN)

    train: dict[str, Any] = {"seq_len": seq_len, "batch": batch}
    _maybe(draw, train, "steps", st.integers(1, 500))
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


def _keep_deep_memory_stable(lv: dict) -> None:
    """An MLP memory with a constant lr >= 1 on unnormalised keys (the defaults) diverges
    and is warned about: give it lr 0.5."""
    lr = lv.get("update", {}).get("lr", 1.0)
    value = lr.get("value") if isinstance(lr, dict) else lr
    keys = lv.get("keys", INPUT)
    normalised = isinstance(keys, dict) and keys.get("norm") == "l2"
    deep = lv.get("memory", {}).get("kind") == "mlp"
    if deep and value is not None and value >= 1 and not normalised:
        lv.setdefault("update", {"rule": "gd"})["lr"] = 0.5


def _copy_misplaced_nested_states(levels: dict, blocks: list) -> None:
    """A nested initial state (``init: {from: X}``) needs its level in a layer of its own in
    blocks that apply X in a layer of their own (validation rule 9); elsewhere it becomes
    ``copy: X`` (the same edge)."""
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
                lv["init"] = {"copy": init["from"], **{k: v for k, v in init.items() if k != "from"}}
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
    if persistents and draw(_COIN):
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
