"""Reading spec text: safe YAML with positions, ``extends``, and command-line overrides.

The result is a :class:`RawSpec`: the merged plain data plus a *provenance* map from
every dotted path to the file, line and column it came from, so any later error can
point at the YAML that caused it. Only ``yaml.SafeLoader`` is used: a ``!!python/...``
tag is an error, never an object, so a spec can never run code.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import Issue, SpecError

PathKey = tuple  # a dotted path as a tuple of str keys and int list indices


@dataclass(frozen=True)
class Mark:
    file: str
    line: int
    column: int


@dataclass
class RawSpec:
    """Merged spec data and where each value came from."""

    data: dict
    key_marks: dict[PathKey, Mark] = field(default_factory=dict)
    value_marks: dict[PathKey, Mark] = field(default_factory=dict)
    file: str = "<spec>"

    def mark(self, path: PathKey, *, key: bool = False) -> Mark | None:
        """The mark of ``path`` or of its closest ancestor that has one."""
        marks = self.key_marks if key else self.value_marks
        for cut in range(len(path), -1, -1):
            found = marks.get(tuple(path[:cut])) or self.value_marks.get(tuple(path[:cut]))
            if found:
                return found
        return None


def _mark(file: str, node: yaml.Node) -> Mark:
    return Mark(file, node.start_mark.line + 1, node.start_mark.column + 1)


MAX_DEPTH = 64  # nesting levels of a spec
MAX_VALUES = 20_000  # values after expanding YAML aliases (a few hundred in any real spec)


def _construct(node: yaml.Node, file: str, path: PathKey, raw: RawSpec, budget: list[int] | None = None,
               active: frozenset[int] = frozenset()) -> Any:
    """Plain data from a composed node, recording marks on the way down.

    Guards against what plain YAML allows but a spec never needs: recursive aliases,
    absurd nesting, and alias "bombs" (an alias expands to a copy each time it is used)."""
    budget = [MAX_VALUES] if budget is None else budget
    budget[0] -= 1
    where = ".".join(map(str, path))
    if budget[0] < 0:
        raise SpecError([Issue(where, f"the spec expands to more than {MAX_VALUES} values",
                               file, *_line_col(node), hint="YAML aliases repeat their anchor; use fewer")])
    if len(path) > MAX_DEPTH or id(node) in active:
        problem = "a YAML alias refers to itself" if id(node) in active else f"nested deeper than {MAX_DEPTH} levels"
        raise SpecError([Issue(where, problem, file, *_line_col(node))])
    active = active | {id(node)}
    raw.value_marks[path] = _mark(file, node)
    if not isinstance(node, yaml.ScalarNode) and node.tag not in _PLAIN_TAGS:
        raise SpecError([Issue(where, f"YAML tag {node.tag!r} is not allowed",
                               file, *_line_col(node), hint="specs are plain YAML data: remove the tag")])
    if isinstance(node, yaml.MappingNode):
        merged: dict = {}
        out: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # YAML merge key: ``<<: *anchor``
                for source in _merge_sources(value_node, file):
                    for key, value in _construct(source, file, path, raw, budget, active).items():
                        merged.setdefault(key, value)
                raw.value_marks[path] = _mark(file, node)
                continue
            key = _construct_scalar(key_node, file, path)
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise SpecError([Issue(where, f"mapping key {key!r} must be a string",
                                       file, *_line_col(key_node))])
            key = str(key)
            if key in out:
                first = raw.key_marks[(*path, key)]
                raise SpecError([Issue(".".join(map(str, (*path, key))),
                                       f"duplicate key '{key}', first given at line {first.line}",
                                       file, *_line_col(key_node), hint="each key may appear once")])
            raw.key_marks[(*path, key)] = _mark(file, key_node)
            out[key] = _construct(value_node, file, (*path, key), raw, budget, active)
        return {**merged, **out}
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, file, (*path, i), raw, budget, active) for i, item in enumerate(node.value)]
    return _construct_scalar(node, file, path)


_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


def _merge_sources(node: yaml.Node, file: str) -> list[yaml.Node]:
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    if not all(isinstance(item, yaml.MappingNode) for item in items):
        raise SpecError([Issue("", "'<<' merges a mapping (or a list of mappings)", file, *_line_col(node))])
    return list(items)


def _line_col(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _construct_scalar(node: yaml.Node, file: str, path: PathKey) -> Any:
    where = ".".join(map(str, path))
    if not isinstance(node, yaml.ScalarNode):
        raise SpecError([Issue(where, "a mapping key must be a plain scalar", file, *_line_col(node))])
    try:
        value = _SCALARS.construct_object(node, deep=True)
        _SCALARS.constructed_objects.clear()
        return value
    except yaml.constructor.ConstructorError as err:
        raise SpecError([Issue(where, f"YAML: {err.problem}", file, *_line_col(node),
                               hint="specs use plain YAML; tags like !!python/... are not allowed")]) from None
    except (ValueError, TypeError, OverflowError) as err:  # e.g. !!int abc, 2001-13-45
        raise SpecError([Issue(where, f"cannot read the value {node.value!r}: {err}", file,
                               *_line_col(node), hint="quote it to make it a string")]) from None


class _SafeSpecLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 would keep a string)."""




class SpecDumper(yaml.SafeDumper):
    """SafeDumper that quotes every string the loader would read as a float."""


for _cls in (_SafeSpecLoader, SpecDumper):
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
        list("-+0123456789."),
    )
_SCALARS = _SafeSpecLoader("")


def parse_yaml(text: str, file: str) -> RawSpec:
    """Parse one YAML document into a :class:`RawSpec` (no extends, no overrides)."""
    raw = RawSpec(data={}, file=file)
    try:
        node = yaml.compose(text, Loader=_SafeSpecLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        message = f"YAML syntax: {err.problem or err.context}"
        if err.context and err.context_mark and err.problem:
            where = err.context_mark
            message += f", {err.context} started at line {where.line + 1}, column {where.column + 1}"
        raise SpecError([Issue("", message, file, line, col,
                               hint="check brackets, indentation and quoting")]) from None
    except yaml.YAMLError as err:
        raise SpecError([Issue("", f"YAML: {err}", file)]) from None
    except RecursionError:
        raise SpecError([Issue("", f"the YAML is nested deeper than {MAX_DEPTH} levels", file)]) from None
    if node is None:
        raise SpecError([Issue("", "the spec is empty", file, 1, 1, hint="start with 'nlc: 1'")])
    data = _construct(node, file, (), raw)
    if not isinstance(data, dict):
        raise SpecError([Issue("", "a spec is a mapping of keys (nlc, levels, model, ...)", file,
                               *_line_col(node))])
    raw.data = data
    return raw


def deep_merge(base: RawSpec, child: RawSpec) -> RawSpec:
    """``child`` over ``base``: maps merge key by key, everything else (lists too) replaces."""

    def merge(b: Any, c: Any, path: PathKey) -> Any:
        if isinstance(b, dict) and isinstance(c, dict):
            out = dict(b)
            for key, value in c.items():
                out[key] = merge(b.get(key), value, (*path, key)) if key in b else value
            return out
        drop_marks(out_raw, path)
        return c

    out_raw = RawSpec(data={}, file=child.file)
    out_raw.key_marks.update(base.key_marks)
    out_raw.value_marks.update(base.value_marks)
    out_raw.data = merge(copy.deepcopy(base.data), child.data, ())
    out_raw.key_marks.update(child.key_marks)
    out_raw.value_marks.update(child.value_marks)
    return out_raw


def drop_marks(raw: RawSpec, path: PathKey) -> None:
    for marks in (raw.key_marks, raw.value_marks):
        for key in [k for k in marks if k[: len(path)] == path]:
            del marks[key]


def read_spec(source: str | Path, *, bundled_dir: Path | None = None, _seen: tuple = ()) -> RawSpec:
    """Read a spec file or text, resolving ``extends`` (a path relative to the file, or
    the name of a bundled spec). Cycles in ``extends`` are reported."""
    path, text, name = _text_of(source)
    if path is not None:
        resolved = path.resolve()
        if resolved in _seen:
            chain = " -> ".join(str(p.name) for p in (*_seen, resolved))
            raise SpecError([Issue("extends", f"'extends' forms a cycle: {chain}", name, 1, 1)])
        _seen = (*_seen, resolved)
    raw = parse_yaml(text, name)
    parent = raw.data.pop("extends", None)
    if parent is None:
        return raw
    parents = parent if isinstance(parent, list) else [parent]
    base: RawSpec | None = None
    for item in parents:
        if not isinstance(item, str):
            mark = raw.value_marks[("extends",)]
            raise SpecError([Issue("extends", "'extends' takes a file name or a list of them",
                                   mark.file, mark.line, mark.column)])
        target = _resolve_extends(item, path, bundled_dir)
        if target is None:
            mark = raw.value_marks[("extends",)]
            raise SpecError([Issue("extends", f"cannot find spec {item!r} to extend", mark.file,
                                   mark.line, mark.column, hint="give a path relative to this file or a bundled spec name (nlc ls)")])
        loaded = read_spec(target, bundled_dir=bundled_dir, _seen=_seen)
        base = loaded if base is None else deep_merge(base, loaded)
    drop_marks(raw, ("extends",))
    return deep_merge(base, raw) if base is not None else raw


def _text_of(source: str | Path) -> tuple[Path | None, str, str]:
    """(path, text, display name): a Path, or a one-line string naming an existing file or
    ending in .yaml/.yml, is read from disk; any other string is YAML text."""
    text = str(source)
    if "\x00" in text and "\n" not in text:
        raise SpecError([Issue("", "a file name cannot contain a NUL character", repr(text))])
    is_path = isinstance(source, Path) or ("\n" not in text and (
        text.endswith((".yaml", ".yml")) or Path(text).is_file()))
    if not is_path:
        return None, text, "<text>"
    path = Path(source)
    try:
        return path, path.read_text(encoding="utf-8"), text
    except FileNotFoundError:
        problem, hint = f"no such spec file: {text}", "nlc ls lists the bundled specs"
    except IsADirectoryError:
        problem, hint = f"{text} is a directory, not a spec file", "give a .yaml file"
    except PermissionError:
        problem, hint = f"no permission to read {text}", None
    except UnicodeDecodeError:
        problem, hint = "the spec is not UTF-8 text", None
    except OSError as err:
        problem, hint = f"cannot read {text}: {err.strerror}", None
    raise SpecError([Issue("", problem, text, hint=hint)])


def _resolve_extends(item: str, path: Path | None, bundled_dir: Path | None) -> Path | None:
    candidates = []
    if path is not None:
        candidates.append(path.parent / item)
    if bundled_dir is not None:
        candidates += [bundled_dir / item, bundled_dir / f"{item}.yaml"]
    found = next((c for c in candidates if c.is_file()), None)
    return Path(os.path.normpath(found)) if found is not None else None
