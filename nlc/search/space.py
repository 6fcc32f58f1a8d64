"""A spec's ``search:`` block as a search space, and sampling it into plain trial specs.

``search.space`` maps a dotted path of the spec to one dimension::

    model.blocks.0.layers: {choice: [[memory, cms_fast], [memory, cms_fast, cms_slow]]}
    levels.cms_slow.period: {choice: [64, 128, 256]}
    levels.outer.lr: {loguniform: [3.0e-4, 3.0e-3]}
    levels.memory.chunk: {choice: [16, 32], when: {levels.memory.memory.depth: 2}}

A dimension is *active* in a trial when every ``when`` entry holds (the path's sampled or
spec value equals the given value; a list given for a non-list value means "any of") and
the level its path lies in is still part of the model. Structural choices can leave a
level of the spec unused (here ``cms_slow`` in the first layer list): such a level is
dropped from the trial spec, with the transfer edges naming it, and its dimensions are
inactive. Dimensions are sampled in dependency order (a ``when`` path first; the model,
transfer and train sections before the levels), so a trial asks only for active ones.

A trial spec is the search spec with ``search`` removed and the sampled values set; it is
validated like any spec, and an invalid sample is reported, never raised.
"""
from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass
from typing import Any, Protocol

import networkx as nx
import yaml
from pydantic import ValidationError

from ..errors import Issue, SpecError
from ..graph.build import block_levels, build_graph
from ..spec import Spec, load_raw
from ..graph.validate import validate
from ..spec.model import SearchDim
from ..spec.overrides import apply_overrides, split_path
from ..spec.source import RawSpec


class Suggester(Protocol):
    """What sampling needs of an Optuna trial (``optuna.Trial`` is one)."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int) -> int: ...


@dataclass(frozen=True)
class TrialSpec:
    """One sampled trial: its values, and the validated spec or why it is invalid."""

    values: dict[str, Any]  # path -> value, active dimensions only
    dropped: tuple[str, ...]  # levels the sampled structure no longer uses
    spec: Spec | None
    issues: tuple[Issue, ...]  # every issue (errors and warnings) of the trial spec
    data: dict  # the plain trial spec (extends resolved, defaults not filled in)

    @property
    def valid(self) -> bool:
        return self.spec is not None

    @property
    def error(self) -> str:
        """The validation errors, one ``file:line: path: message`` per line."""
        return "\n".join(i.format() for i in self.issues if i.severity == "error")

    def yaml(self) -> str:
        return yaml.safe_dump(self.data, sort_keys=False, default_flow_style=None, width=100)


@dataclass(frozen=True)
class Dimension:
    path: str
    dim: SearchDim

    @property
    def level(self) -> str | None:
        """The level the path lies in (``levels.NAME...``), else None."""
        parts = self.path.split(".")
        return parts[1] if parts[0] == "levels" and len(parts) > 1 else None

    def suggest(self, trial: Suggester) -> Any:
        d = self.dim
        if d.choice is not None:
            if all(_is_scalar(c) for c in d.choice):
                return trial.suggest_categorical(self.path, list(d.choice))
            shown = [json.dumps(c) for c in d.choice]  # Optuna stores scalars: lists as text
            return json.loads(trial.suggest_categorical(self.path, shown))
        if d.uniform is not None:
            return trial.suggest_float(self.path, *d.uniform)
        if d.loguniform is not None:
            return trial.suggest_float(self.path, *d.loguniform, log=True)
        return trial.suggest_int(self.path, *d.integer)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def condition_holds(actual: Any, expected: Any) -> bool:
    """``when`` semantics: equal, or (a list given for a non-list value) one of the list."""
    if actual == expected:
        return True
    return isinstance(expected, list) and not isinstance(actual, list) and actual in expected


class SearchSpace:
    """The search space of a spec file (or YAML text) with a ``search:`` block."""

    def __init__(self, source: Any, overrides: list[str] | tuple[str, ...] = ()) -> None:
        self.spec = _load_search_spec(source, overrides)
        self.raw: RawSpec = self.spec.raw
        self.search = self.spec.search
        self.dimensions = _dependency_order(self.raw, self.search.space)
        self.used_levels = _reached_levels(self.spec)
        _check_paths(self.raw, self.dimensions)

    @property
    def directions(self) -> list[str]:
        return ["maximize" if o == "tokens_per_s" else "minimize" for o in self.search.objectives]

    def sample(self, trial: Suggester) -> TrialSpec:
        """Sample the active dimensions into a trial spec and validate it."""
        data = copy.deepcopy(self.raw.data)
        data.pop("search", None)
        values: dict[str, Any] = {}
        dropped: list[str] = []
        for dim in self.dimensions:
            if dim.level is not None and dim.level in dropped:
                continue
            if any(not condition_holds(_lookup(data, path), want)
                   for path, want in (dim.dim.when or {}).items()):
                continue
            values[dim.path] = dim.suggest(trial)
            _assign(data, dim.path, values[dim.path])
            dropped = self._unused_levels(data)
        return self._materialise(values, dropped)

    def _unused_levels(self, data: dict) -> list[str]:
        """Levels of the search spec that the sampled structure no longer reaches."""
        try:
            spec = Spec.model_validate(data)
        except ValidationError:
            return []  # reported by validation of the whole trial spec
        return sorted(self.used_levels - _reached_levels(spec))

    def _materialise(self, values: dict[str, Any], dropped: list[str]) -> TrialSpec:
        raw = copy.deepcopy(self.raw)
        edits = ["~search"] + [f"{path}={json.dumps(value)}" for path, value in values.items()]
        edits += [f"~levels.{name}" for name in dropped]
        transfer = raw.data.get("transfer") or []
        edits += [f"~transfer.{i}" for i in reversed(range(len(transfer)))
                  if {transfer[i].get("from"), transfer[i].get("to")} & set(dropped)]
        try:
            apply_overrides(raw, edits)
        except SpecError as err:
            return TrialSpec(values, tuple(dropped), None, tuple(err.issues), raw.data)
        spec, issues = validate(raw)
        return TrialSpec(values, tuple(dropped), spec, tuple(issues), raw.data)


def _load_search_spec(source: Any, overrides: list[str] | tuple[str, ...]) -> Spec:
    raw = load_raw(source, overrides)
    spec, issues = validate(raw)
    if spec is None:
        raise SpecError([i for i in issues if i.severity == "error"])
    if spec.search is None:
        raise SpecError([Issue("search", "the spec has no 'search:' block", raw.file, 1, 1,
                               hint="add search: {space: {levels.outer.lr: {loguniform: [1.0e-4, 1.0e-2]}}}")])
    return spec


def _reached_levels(spec: Spec) -> set[str]:
    graph = build_graph(spec)
    reached = set(block_levels(spec))
    for name in list(reached):
        reached |= nx.ancestors(graph, name)
    return reached


def _lookup(data: Any, path: str) -> Any:
    node = data
    for part in split_path(path):
        if isinstance(node, dict) and str(part) in node:
            node = node[str(part)]
        elif isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
            node = node[part]
        else:
            return None
    return node


def _assign(data: dict, path: str, value: Any) -> None:
    *parents, last = split_path(path)
    node: Any = data
    for part in parents:
        node = node[part] if isinstance(node, list) else node[str(part)]
    node[last if isinstance(node, list) else str(last)] = value


def _space_issue(raw: RawSpec, path: str, message: str, hint: str | None = None, *, sub: tuple = ()) -> Issue:
    mark = raw.mark(("search", "space", path, *sub), key=not sub)
    where = ".".join(["search", "space", path, *map(str, sub)])
    return Issue(where, message, mark.file if mark else raw.file, mark.line if mark else None,
                 mark.column if mark else None, hint)


def _dependency_order(raw: RawSpec, space: dict[str, SearchDim]) -> list[Dimension]:
    """``when`` targets first; model/transfer/train before levels; else as written."""
    pending = [Dimension(p, d) for p, d in space.items()]
    pending.sort(key=lambda d: d.level is not None)  # stable: keeps the written order
    ordered: list[Dimension] = []
    while pending:
        done = {d.path for d in ordered}
        ready = next((d for d in pending if not (set(d.dim.when or {}) & set(space)) - done), None)
        if ready is None:
            cycle = " -> ".join(d.path for d in pending)
            raise SpecError([_space_issue(raw, pending[0].path, f"'when' conditions form a cycle: {cycle}",
                                          "a dimension's condition may only name dimensions that do not depend on it")])
        ordered.append(ready)
        pending.remove(ready)
    return ordered


def _check_paths(raw: RawSpec, dimensions: list[Dimension]) -> None:
    """Every dimension names a field of the spec, every ``when`` a path or a dimension."""
    issues: list[Issue] = []
    paths = {d.path for d in dimensions}
    for dim in dimensions:
        problem = _path_problem(raw, dim)
        if problem:
            issues.append(_space_issue(raw, dim.path, problem, "'nlc show SPEC' prints every path"))
        for path in dim.dim.when or {}:
            if path not in paths and _lookup(raw.data, path) is None:
                issues.append(_space_issue(raw, dim.path, f"'when' names '{path}', which is neither a search "
                                           "dimension nor a value of the spec",
                                           "name a dimension of search.space or a path nlc show prints",
                                           sub=("when", path)))
    if issues:
        raise SpecError(issues)


def _path_problem(raw: RawSpec, dim: Dimension) -> str | None:
    """Why ``dim.path`` is not a settable field of the spec, or None."""
    parts = split_path(dim.path)
    node: Any = raw.data
    for depth, part in enumerate(parts):
        here = ".".join(map(str, parts[:depth]))
        if isinstance(node, list):
            if isinstance(part, int) and -len(node) <= part < len(node):
                node = node[part]
                continue
            return f"no such path: '{here}' is a list of {len(node)} items"
        if not isinstance(node, dict):
            return f"no such path: '{here}' is a value, not a mapping"
        if str(part) in node:
            node = node[str(part)]
        elif depth < len(parts) - 1:
            close = difflib.get_close_matches(str(part), [str(k) for k in node], n=1, cutoff=0.6)
            return f"no such path '{'.'.join(map(str, parts[:depth + 1]))}'" + (
                f" (did you mean '{close[0]}'?)" if close else "")
        else:
            return _unknown_field(raw, dim, here, str(part))
    return None


def _unknown_field(raw: RawSpec, dim: Dimension, parent: str, key: str) -> str | None:
    """Whether the schema rejects ``key`` (not given in the spec) at ``parent``."""
    probe = copy.deepcopy(raw)
    probe.data.pop("search", None)
    _assign(probe.data, dim.path, _example(dim.dim))
    _, issues = validate(probe)
    unknown = next((i for i in issues if i.path == dim.path and i.message.startswith("unknown key")), None)
    if unknown is None:
        return None
    return f"'{key}' is not a field at '{parent}'" + (f" ({unknown.hint})" if unknown.hint else "")


def _example(dim: SearchDim) -> Any:
    if dim.choice is not None:
        return dim.choice[0]
    return (dim.uniform or dim.loguniform or dim.integer)[0]
