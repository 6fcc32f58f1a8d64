"""Invalid specs for the validator's tests: :func:`mutations` takes a
:func:`tests.strategies.valid_specs` draw and injects exactly one known mistake, returning
``(data, expected dotted path prefix, expected message fragment)``; :func:`yaml_values`,
:func:`yamlish_text` and :func:`corrupted_specs` are fuzz inputs for the loader."""
from __future__ import annotations

import copy
from typing import Any, Callable

from hypothesis import strategies as st

from tests.strategies import ALL_KEYS, INPUT, _COIN, _pick, valid_specs

# --------------------------------------------------------------------------- mutations

Mutation = tuple  # (data, expected path prefix, expected message fragment)


def _levels_of(data: dict, *types: str) -> list[str]:
    return [n for n, lv in data["levels"].items() if lv["type"] in types]


def _fresh(data: dict, base: str) -> str:
    name, i = base, 0
    while name in data["levels"] or name == INPUT:
        i += 1
        name = f"{base}{i}"
    return name


def _add_layer(data: dict, layer: Any) -> str:
    layers = data["model"]["blocks"][0]["layers"]
    layers.append(layer)
    return f"model.blocks.0.layers.{len(layers) - 1}"


def _outermost(data: dict) -> tuple[str, int]:
    opts = {n: (lv.get("period") or {"steps": 1})["steps"] for n, lv in data["levels"].items()
            if lv["type"] == "optimizer"}
    slowest = max(opts.values())
    return next(n for n, s in opts.items() if s == slowest), slowest


def _typo(draw, word: str, taken: frozenset[str] | set[str]) -> str:
    """A near miss of ``word`` (doubled, dropped or swapped letter) that is not in ``taken``."""
    candidates = set()
    for i in range(len(word)):
        candidates.add(word[:i] + word[i] + word[i:])  # doubled
        if len(word) > 2:
            candidates.add(word[:i] + word[i + 1:])  # dropped
        if i + 1 < len(word) and word[i] != word[i + 1]:
            candidates.add(word[:i] + word[i + 1] + word[i] + word[i + 2:])  # swapped
    candidates = sorted(c for c in candidates if c and c not in taken and c != word and c != INPUT)
    if not candidates:
        return word + "_x"
    return _pick(draw, candidates)


def _mut_cycle(draw, data: dict) -> Mutation:
    variant = _pick(draw, ["self", "pair", "transfer", "context"])
    if variant == "self":
        name = _fresh(data, "loop_mem")
        field = _pick(draw, ["keys", "values", "queries", "lr"])
        lv: dict[str, Any] = {"type": "memory", "read": "after_write"}
        if field == "lr":
            lv["update"] = {"rule": "gd", "lr": {"from": name}}
            path = f"levels.{name}.update.lr"
        else:
            lv[field] = name
            path = f"levels.{name}.{field}"
        data["levels"][name] = lv
        _add_layer(data, name)
        return data, path, "at the same time"
    if variant == "pair":
        a, b = _fresh(data, "cyc_a"), _fresh(data, "cyc_b")
        field = _pick(draw, ["keys", "values", "queries"])
        data["levels"][a] = {"type": "memory", "read": "after_write", field: b}
        data["levels"][b] = {"type": "memory", "read": "after_write", field: {"from": a}}
        _add_layer(data, {"parallel": [a, b]})
        return data, "levels.cyc_", "at the same time"
    if variant == "transfer":
        name = _pick(draw, sorted(data["levels"]))
        edges = data.setdefault("transfer", [])
        edges.append({"from": name, "to": name, "kind": _pick(draw, 
            ["conditioning", "backprop", "generation"])})
        return data, f"transfer.{len(edges) - 1}", "at the same time"
    attn, mem = _fresh(data, "mac_attn"), _fresh(data, "mac_mem")
    data["levels"][attn] = {"type": "attention"}
    data["levels"][mem] = {"type": "memory", "read": "after_write"}
    path = _add_layer(data, {"context": {"attention": attn, "memory": mem}})
    return data, path, "at the same time"


def _key_sites(data: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every key that is a field of the language (not a level name, search path
    or a discriminating tag: those give a different, also located, error)."""
    out = []
    if isinstance(data, dict):
        for key, value in data.items():
            here = (*path, key)
            is_name = (len(path) == 1 and path[0] == "levels") or (path[-2:] == ("search", "space")) \
                or (path and path[-1] == "when")
            is_tag = (len(path) == 2 and path[0] == "levels" and key == "type") \
                or (len(path) == 3 and path[0] == "levels" and path[2] == "memory" and key == "kind") \
                or (len(path) == 5 and path[:2] == ("model", "blocks") and key in ("level", "parallel", "context"))
            if not is_name and not is_tag:
                out.append(here)
            out += _key_sites(value, here)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            out += _key_sites(item, (*path, i))
    return out


def _get(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


def _rename_key(mapping: dict, old: str, new: str) -> None:
    items = [(new if k == old else k, v) for k, v in mapping.items()]
    mapping.clear()
    mapping.update(items)


def _mut_unknown_key(draw, data: dict) -> Mutation:
    path = _pick(draw, _key_sites(data))
    parent = _get(data, path[:-1])
    typo = _typo(draw, path[-1], ALL_KEYS | set(parent))
    _rename_key(parent, path[-1], typo)
    return data, ".".join(map(str, (*path[:-1], typo))), f"unknown key '{typo}'"


def _mut_wrong_type(draw, data: dict) -> Mutation:
    sites: list[tuple[tuple, Any, str]] = [
        (("model", "width"), "wide", "got 'wide'; expected an integer"),
        (("model", "blocks"), "everything", "expected a list"),
        (("train", "batch"), [8], "expected an integer"),
        (("levels",), ["a", "b"], "expected a mapping"),
        (("model", "tie_embeddings"), "perhaps", "got 'perhaps'; expected true or false"),
    ]
    for n in _levels_of(data, "attention"):
        sites.append((("levels", n, "rope"), "sometimes", "expected true or false"))
    for n in _levels_of(data, "memory"):
        sites.append((("levels", n, "chunk"), 2.5, "got 2.5; expected an integer"))
        sites.append((("levels", n, "update"), "fast", "got 'fast'; expected a mapping"))
    for n in _levels_of(data, "persistent"):
        sites.append((("levels", n, "tokens"), "many", "expected an integer"))
    for n in _levels_of(data, "optimizer"):
        sites.append((("levels", n, "lr"), "high", "got 'high'; expected a number"))
    path, value, fragment = _pick(draw, sites)
    _get(data, path[:-1])[path[-1]] = value
    return data, ".".join(path), fragment


def _mut_init_from_faster(draw, data: dict) -> Mutation:
    in_context = [n for n in _levels_of(data, "memory", "mlp")
                  if data["levels"][n].get("period", 1 if data["levels"][n]["type"] == "memory" else "never")
                  != "never"]
    if not in_context or draw(st.integers(0, 3)) == 0:
        attentions = _levels_of(data, "attention")
        if attentions and in_context:  # a transfer edge of kind initialization, from faster to slower
            edges = data.setdefault("transfer", [])
            edges.append({"from": _pick(draw, attentions), "to": _pick(draw, in_context),
                          "kind": "initialization"})
            return data, f"transfer.{len(edges) - 1}", "not slower"
        name = _fresh(data, "late_mem")
        data["levels"][name] = {"type": "memory"}
        _add_layer(data, name)
        in_context = [name]
    target = _pick(draw, in_context)
    lv = data["levels"][target]
    src = _fresh(data, "fast_src")
    clone = copy.deepcopy(lv)
    clone["period"] = 1  # as fast as anything in context (the target's period is >= 1)
    clone.pop("init", None)
    old = lv.get("init")
    if isinstance(old, dict):  # keep the old source reachable, through the clone
        clone["init"] = {"from": old["from"]}
    data["levels"][src] = clone
    lv["init"] = {"from": src}
    return data, f"levels.{target}.init", "not slower"


def _mut_dimension(draw, data: dict) -> Mutation:
    width = data["model"]["width"]
    bad = _pick(draw, [h for h in (3, 5, 7, 9, 11, width + 1) if width % h])
    holders = _levels_of(data, "attention", "memory")
    if holders and draw(_COIN):
        name = _pick(draw, holders)
        data["levels"][name]["heads"] = bad
        return data, f"levels.{name}.heads", "do not divide the width"
    data["model"]["heads"] = bad
    return data, "model.heads", "do not divide the width"


def _reference_sites(data: dict) -> list[tuple[tuple, str]]:
    """(data path to the name, the dotted path nlc reports) for every level reference."""
    out = []
    for name, lv in data["levels"].items():
        base = ("levels", name)
        for field in ("keys", "values", "queries"):
            value = lv.get(field)
            if isinstance(value, str) and value != INPUT:
                out.append(((*base, field), f"levels.{name}.{field}"))
            elif isinstance(value, dict) and value.get("from") != INPUT:
                out.append(((*base, field, "from"), f"levels.{name}.{field}"))
        knob_names = ("lr", "momentum", "retention", "forget") if lv["type"] == "memory" else ("lr",)
        for knob in knob_names:
            value = lv.get("update", {}).get(knob)
            if isinstance(value, dict) and value.get("from") not in (None, INPUT):
                out.append(((*base, "update", knob, "from"), f"levels.{name}.update.{knob}"))
        if isinstance(lv.get("init"), dict):
            out.append(((*base, "init", "from"), f"levels.{name}.init"))
        for field in ("persistent", "outer"):
            if field in lv:
                out.append(((*base, field), f"levels.{name}.{field}"))
    for b, block in enumerate(data["model"]["blocks"]):
        for i, layer in enumerate(block["layers"]):
            lp = ("model", "blocks", b, "layers", i)
            dotted = ".".join(map(str, lp))
            if isinstance(layer, str):
                out.append((lp, dotted))
            elif "level" in layer:
                out.append(((*lp, "level"), f"{dotted}.level"))
            elif "parallel" in layer:
                out += [((*lp, "parallel", j), f"{dotted}.parallel.{j}") for j in range(len(layer["parallel"]))]
            else:
                out += [((*lp, "context", k), f"{dotted}.context.{k}") for k in layer["context"]
                        if k in ("attention", "memory", "persistent")]
    for t, edge in enumerate(data.get("transfer", [])):
        out += [(("transfer", t, k), f"transfer.{t}.{k}") for k in ("from", "to")]
    return out


def _mut_dangling(draw, data: dict) -> Mutation:
    where, reported = _pick(draw, _reference_sites(data))
    old = _get(data, where)
    ghost = _pick(draw, [_typo(draw, old, set(data["levels"])), "ghost_level"])
    _get(data, where[:-1])[where[-1]] = ghost
    return data, reported, f"unknown level '{ghost}'"


def _mut_bad_period(draw, data: dict) -> Mutation:
    holders = _levels_of(data, "memory", "mlp")
    if holders and draw(st.integers(0, 3)):
        name = _pick(draw, holders)
        value, fragment = _pick(draw, [
            (0, "greater than 0"), (-1, "greater than 0"), (-16, "greater than 0"),
            ("often", "unknown period"), ("-4", "unknown period"), ("", "unknown period"),
            (True, "not a boolean"), ({"tokens": 0}, "greater than 0"),
        ])
        data["levels"][name]["period"] = value
        return data, f"levels.{name}.period", fragment
    name = _pick(draw, _levels_of(data, "optimizer"))
    value, fragment = _pick(draw, [
        ({"steps": 0}, "greater than 0"), ({"steps": -2}, "greater than 0"),
        (4, "optimizer-step clock"), ("never", "optimizer-step clock"), ("weekly", "unknown period"),
    ])
    data["levels"][name]["period"] = value
    return data, f"levels.{name}", fragment


def _mut_second_outermost(draw, data: dict) -> Mutation:
    outer, steps = _outermost(data)
    faster = [n for n in _levels_of(data, "optimizer") if n != outer]
    if faster and draw(_COIN):  # the faster optimizer moves onto the slowest clock
        name = faster[0]
        data["levels"][name]["period"] = {"steps": steps}
    else:
        name = _fresh(data, "outer_two")
        lv: dict[str, Any] = {"type": "optimizer", "rule": _pick(draw, ["adamw", "sgd"])}
        if steps != 1 or draw(_COIN):
            lv["period"] = {"steps": steps}
        data["levels"][name] = lv
    if list(data["levels"]).index(name) < list(data["levels"]).index(outer):
        name = outer  # nlc names the second one in file order
    return data, f"levels.{name}.period", "more than one outermost"


MUTATIONS: dict[str, Callable[[Callable, dict], Mutation]] = {
    "cycle": _mut_cycle,
    "unknown_key": _mut_unknown_key,
    "wrong_type": _mut_wrong_type,
    "init_from_faster": _mut_init_from_faster,
    "dimension": _mut_dimension,
    "dangling": _mut_dangling,
    "bad_period": _mut_bad_period,
    "second_outermost": _mut_second_outermost,
}


@st.composite
def mutations(draw, kinds: tuple[str, ...] | None = None):
    """``(data, path_prefix, fragment)``: a valid draw with exactly one injected mistake."""
    kind = _pick(draw, sorted(kinds or MUTATIONS))
    data = copy.deepcopy(draw(valid_specs()))
    return MUTATIONS[kind](draw, data)


# --------------------------------------------------------------------------- fuzz inputs

yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=False), st.text(max_size=12), st.dates(),
    st.sampled_from(["nlc", "levels", "model", "type", "memory", "never", "input", "1e-3", "~"]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(sorted(ALL_KEYS))), inner, max_size=4),
    ),
    max_leaves=25,
)
"""Random YAML data (dicts, lists and scalars), as ``yaml.safe_dump`` can write it."""

YAML_TOKENS = [
    "nlc", "levels", "model", "type", "memory", "attention", "period", "never", "1", "0", "-3",
    "1e-3", "0x1F", "true", "null", "~", ":", ": ", "- ", "-", "[", "]", "{", "}", ",", "?", "'",
    '"', "#", "<<: ", "|", ">", "!!str ", "!!map ", "!!seq ", "!!python/none ",
    "!foo ", "%YAML 1.1\n", "---\n", "...\n", "\n", "\n  ", "\n    ", "\t", " ", "x", "\\", "é",
    "\ufeff", "blocks", "layers", "extends", "hope", "missing.yaml",
]
"""Tokens of YAML-looking text. Anchors/aliases, explicit ``!!int``/``!!float`` tags and
dates are left out: the loader crashes they cause (recursive aliases, ``!!int x``,
impossible dates) have their own xfail tests in tests/spec/test_loader.py."""

yamlish_text = st.lists(st.sampled_from(YAML_TOKENS), max_size=40).map("".join)


@st.composite
def corrupted_specs(draw):
    """A valid draw with one random subtree replaced by random YAML data."""
    data = copy.deepcopy(draw(valid_specs()))
    paths = [()]
    _collect_paths(data, (), paths)
    where = _pick(draw, paths[1:])
    _get(data, where[:-1])[where[-1]] = draw(yaml_values)
    return data


def _collect_paths(data: Any, path: tuple, out: list) -> None:
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        out.append((*path, key))
        _collect_paths(value, (*path, key), out)
