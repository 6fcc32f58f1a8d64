"""Spec draws over the *whole* schema, for the fuzz test (tests/security/test_fuzz.py).

:mod:`tests.strategies` draws specs that are valid by construction, from a hand-written plan
of the language; a field added to the pydantic models is not drawn until someone extends
it. Here the drawing walks ``Spec.model_json_schema()`` itself, so every field of every
model is drawn, a new one included:

* :class:`SchemaWalker` draws a value for any JSON-schema node: objects (optional keys by
  a coin), arrays, ``anyOf`` / ``oneOf`` branches (a discriminated union by its tag),
  numbers and integers inside their declared range, enums and constants. Per example a
  *wild rate* makes some sites draw on purpose what the schema refuses or what is legal but
  absurd: NaN, infinities, huge integers, negative or zero sizes, wrong types, unknown keys,
  missing required keys, dangling level names. The dotted paths of those sites are kept
  (:attr:`FuzzCase.wild`) so the run half never shrinks a value the draw made huge on purpose.
* Strings that name a level (``level``, ``parallel``, ``from``, ``outer``, ...) are drawn
  from the example's own level names, of a fitting type, so layers and levels reference each
  other and a good share of draws validate.
* :func:`whole_schema_specs`: levels and model drawn by the walker, then (unless a coin says
  otherwise) a light *repair* of what a schema cannot say: heads divide the width, every
  usable level is applied by a layer, one optimizer level.
* :func:`mutated_specs`: a bundled spec or a :func:`tests.strategies.valid_specs` draw with
  one to three sites replaced by a walker draw of that site's schema (or deleted, or given a
  sibling unknown key).
"""
from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import yaml
from hypothesis import strategies as st

import nlc
from nlc.spec.load import bundled_models, load_raw
from tests.strategies import INPUT, level_names, valid_specs

SCHEMA = nlc.Spec.model_json_schema()
DEFS = SCHEMA["$defs"]
LEVEL_TYPES = tuple(SCHEMA["properties"]["levels"]["additionalProperties"]["discriminator"]["mapping"])
USABLE = ("attention", "memory", "mlp")

# A string under one of these keys names a level; the value lists the level types that fit
# (None: any). ``layers`` / ``parallel`` are the list items of those keys.
REFERENCES: dict[str, tuple[str, ...] | None] = {
    "level": USABLE, "layers": USABLE, "parallel": USABLE, "attention": ("attention",),
    "memory": ("memory",), "persistent": ("persistent",), "outer": ("optimizer",),
    "from": ("memory", "mlp"), "copy": ("memory", "mlp"), "to": None,
    "keys": ("memory",), "values": ("memory",), "queries": ("memory",),
}
FROM_INPUT = ("from", "keys", "values", "queries")  # keys that may also say ``input``

# Ordinary values of well-known keys: a draw that is not wild mostly stays at sizes that
# run in a test. Keys not listed draw from their schema range.
TYPICAL: dict[str, list] = {
    "width": [16, 24, 32, 48, 64], "heads": [1, 2, 4], "chunk": [1, 2, 4, 8, 16, 64],
    "tokens": [1, 2, 4, 8, 16], "seq_len": [16, 32, 64], "batch": [1, 2, 4], "vocab": [256],
    "hidden": [8, 16, 32], "expansion": [1, 2, 4], "window": [1, 2, 4, 16], "segment": [4, 8, 16],
    "depth": [1, 2, 3], "repeat": [1, 2], "warmup": [0, 5], "steps": [1, 2, 10], "conv": [0, 2, 4],
    "lr": [1e-3, 0.01, 0.1], "seed": [0, 1, 12345], "eval_every": [10], "eval_batches": [1, 2],
    "trials": [1, 5], "p": [1.0, 1.5, 3.0], "delta": [0.5, 1.0], "q": [1.5, 3.0], "shrink": [0.0, 0.01],
    "grad_clip": [0.5, 1.0], "eps": [1e-8], "betas": [[0.9, 0.95]], "max": [0.5, 1.0],
    "init": [0.1, 0.5], "learned": [0.1, 0.5], "value": [0.01, 0.5], "weight_decay": [0.0, 0.1],
    "momentum": [0.5, 0.9], "retention": [0.9, 0.99], "forget": [0.01, 0.1], "data": ["shakespeare"],
}

NAN, INF = float("nan"), float("inf")
WILD_NUMBERS = [NAN, INF, -INF, 0, -1, -0.5, 1e308, 1e-320, 10**12, 2**63, 2**64 + 1, -10**9, 1.5, 10**6]
WILD_OTHERS: list[Any] = ["", "x", "never", "input", "1e5", True, False, None, [], {}, [1, 2], {"a": 1},
                          "é\x00", "x" * 300]
UNKNOWN_KEYS = ["zz_unknown", "widht", "type2", "levels", "from", "__class__"]


@dataclass
class FuzzCase:
    """One fuzz input: spec data, where it came from and the dotted paths drawn wild."""

    origin: str
    data: Any
    wild: frozenset[str] = frozenset()

    @property
    def text(self) -> str:
        return yaml.safe_dump(self.data, sort_keys=False, default_flow_style=None, allow_unicode=True)

    def __repr__(self) -> str:  # hypothesis prints the falsifying example: show the YAML
        return f"FuzzCase({self.origin!r}, wild={sorted(self.wild)})\n{self.text}"


class SchemaWalker:
    """Draws values for JSON-schema nodes (see the module docstring). ``names`` maps each
    level name of the example to its type; ``rate`` is the chance, in thousandths, that a
    site draws wild."""

    def __init__(self, draw: Callable, names: dict[str, str], rate: int) -> None:
        self.draw, self.names, self.rate = draw, names, rate
        self.wild: set[str] = set()

    def pick(self, options: Any) -> Any:
        options = list(options)
        return options[self.draw(st.integers(0, len(options) - 1))]

    def coin(self, thousandths: int = 500) -> bool:
        """True with chance ``thousandths``/1000; shrinks towards False (hypothesis favours
        and shrinks towards 0: a minimal example has fewer optional keys and wild sites)."""
        return self.draw(st.integers(0, 999)) >= 1000 - thousandths

    def goes_wild(self, path: tuple) -> bool:
        if self.rate and self.coin(self.rate):
            self.wild.add(".".join(map(str, path)))
            return True
        return False

    # -- values ------------------------------------------------------------------------
    def value(self, node: dict, path: tuple) -> Any:
        node = resolve(node)
        key = _key_of(path)
        if self.goes_wild(path):
            return self.wild_value(node, path)
        for union in ("oneOf", "anyOf"):
            if union in node:
                return self.value(self.branch(node), path)
        if "const" in node:
            return node["const"]
        if "enum" in node:
            return self.pick(node["enum"])
        kind = node.get("type")
        if kind == "object" or "properties" in node:
            return self.obj(node, path)
        if kind == "array":
            return self.array(node, path)
        if kind in ("integer", "number"):
            return self.number(node, key, kind == "integer")
        if kind == "boolean":
            return self.coin()
        if kind == "null":
            return None
        if kind == "string":
            if key in REFERENCES and self.names:
                return self.reference(key, path)
            return self.pick(TYPICAL.get(key) or ["x", "shakespeare", "model.width", "a b"])
        return self.pick([1, "x", None, [1], {"k": 1}])  # untyped (a search choice, say)

    def branch(self, node: dict) -> dict:
        branches = node.get("oneOf") or node.get("anyOf")
        real = [b for b in branches if resolve(b).get("type") != "null"]
        return self.pick(real if real and self.coin(850) else branches)

    def obj(self, node: dict, path: tuple) -> dict:
        out: dict[str, Any] = {}
        required = set(node.get("required", ()))
        for name, sub in node.get("properties", {}).items():
            if name in required or self.coin(300):
                out[name] = self.value(sub, (*path, name))
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and not node.get("properties"):
            for _ in range(self.draw(st.integers(node.get("minProperties", 0), 2))):
                out[self.pick(["model.width", "train.batch", "levels.a.update.lr", "x"])] = \
                    self.value(extra, (*path, "*"))
        return out

    def array(self, node: dict, path: tuple) -> list:
        if "prefixItems" in node:
            return [self.value(sub, (*path, i)) for i, sub in enumerate(node["prefixItems"])]
        low = node.get("minItems", 0)
        n = self.draw(st.integers(low, max(low, min(node.get("maxItems", 3), 3))))
        return [self.value(node.get("items", {}), (*path, i)) for i in range(n)]

    def number(self, node: dict, key: str, integer: bool) -> float | int:
        low = node.get("minimum", node.get("exclusiveMinimum"))
        high = node.get("maximum", node.get("exclusiveMaximum"))
        typical = [v for v in TYPICAL.get(key, []) if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and (low is None or v >= low) and (high is None or v <= high)
                   and (not integer or float(v).is_integer())]
        if typical and self.coin(800):
            value = self.pick(typical)
            return int(value) if integer else float(value)
        lo = 0 if low is None else low + (1 if "exclusiveMinimum" in node and integer else 0)
        hi = lo + 8 if high is None else high
        if integer:
            return self.draw(st.integers(int(math.ceil(lo)), int(hi)))
        value = self.draw(st.floats(lo, min(hi, lo + 2), allow_nan=False, exclude_min="exclusiveMinimum" in node))
        return value

    def reference(self, key: str, path: tuple) -> str:
        fits = REFERENCES[key] if path[0] != "transfer" else None
        good = [n for n, t in self.names.items() if fits is None or t in fits]
        if key in FROM_INPUT and path[0] != "transfer" and self.coin(500):
            return INPUT
        return self.pick(good if good and self.coin(900) else list(self.names))

    def wild_value(self, node: dict, path: tuple) -> Any:
        kind = node.get("type")
        if kind == "object" and self.coin():
            out = self.obj(node, path)
            if out and self.coin():
                out.pop(self.pick(sorted(out)))  # a required key, maybe
            else:
                out[self.pick(UNKNOWN_KEYS)] = self.pick([1, "x", None])
            return out
        if _key_of(path) in REFERENCES and self.coin():
            return self.pick(["ghost", INPUT, "", "model", *self.names])
        return self.pick(WILD_NUMBERS + WILD_OTHERS if self.coin(600) else WILD_OTHERS + WILD_NUMBERS[:4])


def resolve(node: dict) -> dict:
    while "$ref" in node:
        node = DEFS[node["$ref"].rsplit("/", 1)[-1]]
    return node


def _key_of(path: tuple) -> str:
    """The nearest dict key of a path (list indices skipped: ``layers.0`` -> ``layers``)."""
    return next((p for p in reversed(path) if isinstance(p, str)), "")


def _branches(node: dict) -> list[dict]:
    node = resolve(node)
    inner = node.get("oneOf") or node.get("anyOf")
    return [b for sub in inner for b in _branches(sub)] if inner else [node]




# --------------------------------------------------------------------------- schema at a path

def schema_at(data: Any, path: tuple) -> dict | None:
    """The schema node of the value at ``path`` in spec ``data`` (a level by its ``type``,
    a union by the branch that fits the current value); None when the path leaves the schema."""
    node: dict | None = SCHEMA
    here = data
    for part in path:
        node = _fit(resolve(node), here)
        if node is None:
            return None
        if isinstance(here, list) and isinstance(part, str) and part.isdigit():
            part = int(part)
        if isinstance(part, int):
            node = node.get("items") or (node.get("prefixItems") or [None] * (part + 1))[part]
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
        here = here.get(part) if isinstance(here, dict) else \
            here[part] if isinstance(here, list) and isinstance(part, int) and part < len(here) else None
        if node is None:
            return None
    return resolve(node)


def _fit(node: dict, value: Any) -> dict | None:
    if "discriminator" in node and isinstance(value, dict):
        tag = value.get("type")
        target = node["discriminator"]["mapping"].get(tag) if isinstance(tag, str) else None
        return resolve({"$ref": target}) if target else None
    if "oneOf" not in node and "anyOf" not in node:
        return node
    want = "object" if isinstance(value, dict) else "array" if isinstance(value, list) else None
    for branch in _branches(node):
        if branch.get("type") == want or (want == "object" and "properties" in branch):
            return branch
    return None


# --------------------------------------------------------------------------- strategies

WILD_RATES = [0, 0, 0, 0, 0, 5, 30, 300]  # thousandths per site; 0 (no wild site) most often


@st.composite
def whole_schema_specs(draw) -> FuzzCase:
    """Spec data drawn by walking the whole JSON schema (see the module docstring)."""
    n = draw(st.integers(1, 5))
    names = draw(st.lists(level_names, min_size=n + 1, max_size=n + 1, unique=True))
    types = [draw(st.sampled_from(USABLE + ("memory", "persistent")))] + \
        [draw(st.sampled_from(LEVEL_TYPES)) for _ in range(n - 1)] + ["optimizer"]
    plan = dict(zip(names, types))
    walker = SchemaWalker(draw, plan, draw(st.sampled_from(WILD_RATES)))
    level_def = SCHEMA["properties"]["levels"]["additionalProperties"]["discriminator"]["mapping"]
    levels = {name: walker.value({"$ref": level_def[t]}, ("levels", name)) for name, t in plan.items()}
    data: dict[str, Any] = {"nlc": 1 if not walker.goes_wild(("nlc",)) else walker.pick([2, "1", 1.0, None])}
    for key, sub in SCHEMA["properties"].items():
        if key in ("nlc", "levels"):
            continue
        if key == "model" or walker.coin(400):
            data[key] = walker.value(sub, (key,))
    data["levels"] = levels
    if not walker.coin(150):
        _repair(data, plan, walker)
        _repair_by_feedback(data, walker)
    return FuzzCase("schema", data, frozenset(walker.wild))


def _repair_by_feedback(data: dict, walker: SchemaWalker, rounds: int = 12) -> None:
    """Act on what the validator blames, where the draw was not wild: a field that is there
    is deleted (an optional one falls back to its default; a required one is then missing),
    a missing one is drawn from its schema (in range), and a level itself (it reaches no
    output, say) is applied by the last block. A path blamed again is fixed one owner up. Schema-driven like the draw: the validator's
    own paths say what to change, so this needs no list of the language's rules."""
    rate, walker.rate = walker.rate, 0
    seen: Counter = Counter()
    try:
        for _ in range(rounds):
            try:
                spec, issues = nlc.validate(yaml.safe_dump(data, sort_keys=False))
            except Exception:  # noqa: BLE001 - a crash is the fuzz test's to report, on this data
                return
            blamed = [i.path for i in issues if i.severity == "error"]
            if spec is not None or not blamed:
                return
            changed = False
            for dotted in dict.fromkeys(blamed):
                seen[dotted] += 1
                if seen[dotted] > 1:  # blamed again after a fix: change its owner instead
                    dotted = ".".join(dotted.split(".")[:max(1, dotted.count(".") + 2 - seen[dotted])])
                if not any(dotted == w or dotted.startswith(w + ".") or w.startswith(dotted + ".")
                           for w in walker.wild):
                    changed |= _fix(data, dotted, walker)
            if not changed:
                break
        for dotted in blamed:  # still refused: drop the optional top-level sections blamed
            if dotted.split(".")[0] not in SCHEMA["required"]:
                data.pop(dotted.split(".")[0], None)
    finally:
        walker.rate = rate


def _fix(data: dict, dotted: str, walker: SchemaWalker) -> bool:
    parts = dotted.split(".")
    levels, blocks = data.get("levels"), data.get("model", {}).get("blocks") if isinstance(data.get("model"), dict) else None
    if len(parts) == 2 and parts[0] == "levels" and isinstance(levels, dict) and parts[1] in levels:
        usable = isinstance(levels[parts[1]], dict) and levels[parts[1]].get("type") in USABLE
        if usable and isinstance(blocks, list) and blocks and isinstance(blocks[-1], dict) \
                and isinstance(blocks[-1].get("layers"), list):
            blocks[-1]["layers"].append(parts[1])
            return True
        if len(levels) > 1 and not usable:
            del levels[parts[1]]
            return True
        return False
    if _delete(data, parts):
        return True
    parent = _walk(data, parts[:-1])
    node = schema_at(data, tuple(parts)) if isinstance(parent, dict) and parts[-1] not in parent else None
    if node is None:
        return False
    parent[parts[-1]] = walker.value(node, tuple(parts))
    return True


def _walk(data: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return None
    return data


def _delete(data: Any, parts: list[str]) -> bool:
    """Delete the deepest existing key on a dotted path (keys may hold dots: search paths)."""
    trail: list[tuple[Any, Any]] = []
    here, i = data, 0
    while i < len(parts):
        if isinstance(here, list) and parts[i].isdigit() and int(parts[i]) < len(here):
            trail.append((here, int(parts[i])))
            here, i = here[int(parts[i])], i + 1
            continue
        if not isinstance(here, dict):
            break
        j = next((j for j in range(len(parts), i, -1) if ".".join(parts[i:j]) in here), None)
        if j is None:
            break
        key = ".".join(parts[i:j])
        trail.append((here, key))
        here, i = here[key], j
    if i < len(parts):
        return False  # the blamed field is not there: the caller draws it
    while trail:
        parent, key = trail.pop()
        protected = len(trail) == 0 and key in ("nlc", "levels", "model") or \
            (len(trail) == 1 and trail[0][1] == "levels")
        if protected:
            return False
        if isinstance(parent, list) and len(parent) <= 1:
            continue  # an empty list is refused too: drop the list's owner instead
        del parent[key]
        return True
    return False


def _repair(data: dict, plan: dict[str, str], walker: SchemaWalker) -> None:
    """Make the common cross-field rules hold where the draw left them plain (wild sites are
    left alone): heads divide the width, every usable level is applied, a memory's chunk
    holds whole periods."""
    model = data.get("model")
    if not isinstance(model, dict) or not isinstance(data.get("levels"), dict):
        return
    width = model.get("width", 128)
    if isinstance(width, int) and not isinstance(width, bool) and width > 0 and "model.width" not in walker.wild:
        for where in [model, *[lv for lv in data["levels"].values() if isinstance(lv, dict)]]:
            heads = where.get("heads")
            if isinstance(heads, int) and heads > 0 and width % heads:
                where["heads"] = 1
        if width % 4 and "heads" not in model:
            model["heads"] = 1
    for name, lv in data["levels"].items():
        if isinstance(lv, dict) and lv.get("type") == "memory":
            period, chunk = lv.get("period", 1), lv.get("chunk", 64)
            if isinstance(period, int) and isinstance(chunk, int) and period > 0 and chunk % period:
                lv["chunk"] = period
    blocks = model.get("blocks")
    if isinstance(blocks, list) and blocks and isinstance(blocks[-1], dict) and isinstance(blocks[-1].get("layers"), list):
        applied = yaml.safe_dump(blocks)
        blocks[-1]["layers"] += [n for n, t in plan.items() if t in USABLE and n not in applied]


def _collect(data: Any, path: tuple = ()) -> list[tuple]:
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    out = []
    for key, value in items:
        out.append((*path, key))
        out += _collect(value, (*path, key))
    return out


def _bundled_data() -> dict[str, dict]:
    return {name: load_raw(path).data for name, path in sorted(bundled_models().items())}


BUNDLED = _bundled_data()


@st.composite
def mutated_specs(draw, base: str | None = None) -> FuzzCase:
    """A bundled spec (resolved ``extends``) or a valid draw, with 1-3 sites changed: a fresh
    draw of the site's schema (in range or wild), deleted, or given an unknown sibling key."""
    if base is None:
        base = draw(st.sampled_from(["bundled", "valid"]))
    if base == "bundled":
        name = draw(st.sampled_from(sorted(BUNDLED)))
        data, origin = copy.deepcopy(BUNDLED[name]), f"bundled:{name}"
    else:
        data, origin = copy.deepcopy(draw(valid_specs())), "valid"
    levels = data.get("levels", {})
    walker = SchemaWalker(draw, {n: lv.get("type", "memory") for n, lv in levels.items()},
                          draw(st.sampled_from([0, 0, 50, 300])))
    for _ in range(draw(st.integers(1, 3))):
        paths = _collect(data)
        if not paths:
            break
        path = walker.pick(paths)
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        op = walker.pick(["redraw", "redraw", "redraw", "delete", "unknown"])
        node = schema_at(data, path)
        if op == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
            walker.wild.add(".".join(map(str, path)))
        elif op == "unknown" and isinstance(parent, dict):
            parent[walker.pick(UNKNOWN_KEYS)] = walker.pick([1, "x", None, {"a": 1}])
        elif node is not None:
            parent[path[-1]] = walker.value(node, path)
        else:
            parent[path[-1]] = walker.wild_value({}, path)
            walker.wild.add(".".join(map(str, path)))
    return FuzzCase(origin, data, frozenset(walker.wild))


def fuzz_cases() -> st.SearchStrategy[FuzzCase]:
    """Everything the fuzz test draws: whole-schema draws, mutated bundled specs, mutated
    valid draws and plain valid draws (these must all compile and run)."""
    return st.one_of(
        whole_schema_specs(),
        mutated_specs("bundled"),
        mutated_specs("valid"),
        valid_specs().map(lambda d: FuzzCase("valid", d)),
    )
