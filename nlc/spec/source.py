"""Reading spec text: safe YAML with positions, ``extends``, and command-line overrides.

The result is a :class:`RawSpec`: the merged plain data plus a *provenance* map from
every dotted path to the file, line and column it came from, so any later error can
point at the YAML that caused it. Only ``yaml.SafeLoader`` is used: a ``!!python/...``
tag is an error, never an object, so a spec can never run code.

Spec text is untrusted, so it is bounded before it costs anything (:mod:`nlc.limits`): a
file's size is checked before it is read, and the composer counts nesting depth and nodes
*as if every alias were expanded* while it composes, so a huge, deep or "billion laughs"
document is refused after at most ``yaml_nodes`` nodes, never expanded.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import limits
from ..status import BAD_INPUT
from ..errors import Issue, SpecError

PathKey = tuple  # a dotted path as a tuple of str keys and int list indices
RAISE_HINT = "raise it with nlc --max-spec-bytes N"


class SpecInputError(SpecError):
    """The spec text cannot be used at all: a missing or unreadable file, not UTF-8, or over
    :mod:`nlc.limits`. Bad input rather than an invalid spec, so the CLI exits 2, not 1."""

    exit_status = BAD_INPUT


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
    overrides: tuple[str, ...] = ()  # applied so far, in order (the generated code's REGENERATE)

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


def _construct(node: yaml.Node, file: str, path: PathKey, raw: RawSpec,
               active: frozenset[int] = frozenset()) -> Any:
    """Plain data from a composed node, recording marks on the way down.

    The composer has bounded the expanded size (:class:`_SafeSpecLoader`); what it cannot
    see is nesting that grows only when aliases expand (an anchor holding an alias of the
    previous one), and aliases that refer to themselves: both are refused here."""
    where = ".".join(map(str, path))
    depth = limits.current().yaml_depth
    if len(path) > depth or id(node) in active:
        problem = "a YAML alias refers to itself" if id(node) in active else f"nested deeper than {depth} levels"
        raise SpecInputError([Issue(where, problem, file, *_line_col(node))])
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
                    for key, value in _construct(source, file, path, raw, active).items():
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
            out[key] = _construct(value_node, file, (*path, key), raw, active)
        return {**merged, **out}
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, file, (*path, i), raw, active) for i, item in enumerate(node.value)]
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


class _TooLarge(ValueError):
    """Raised inside the composer; :func:`parse_yaml` turns it into a located issue (a
    ValueError, so an override value over the limits is reported like any bad value)."""

    def __init__(self, message: str, mark: yaml.Mark, hint: str | None) -> None:
        super().__init__(message)
        self.message, self.mark, self.hint = message, mark, hint


class _SafeSpecLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 would keep a string), and
    refuses text over the nesting and node limits before composing it (:func:`_check_limits`)."""

    def __init__(self, stream: str) -> None:
        _check_limits(stream)
        super().__init__(stream)


def _check_limits(text: str) -> None:
    """Raise :class:`_TooLarge` past ``yaml_depth`` nesting levels or ``yaml_nodes`` nodes.

    One pass over the parser's events, an alias counting as the nodes its anchor expands
    to, so it stops early and never expands anything. libyaml makes the pass (the
    pure-Python composer manages some 20k nodes a second, too slow to be the guard); where
    it finds a syntax error, or is not installed, the pure-Python parser counts again and
    raises the syntax error in the words the composer would use."""
    if yaml.__with_libyaml__:
        try:
            return _count_events(yaml.CSafeLoader(text))
        except yaml.YAMLError:
            pass
    _count_events(yaml.SafeLoader(text))


def _count_events(parser: Any) -> None:
    most = limits.current()
    nodes, weights, open_ = 0, {}, []  # open_: (anchor, nodes before) of each open collection
    try:
        while not isinstance(event := parser.get_event(), yaml.StreamEndEvent):
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                anchor, before = open_.pop()
                if anchor is not None:
                    weights[anchor] = nodes - before
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue
            grown = weights.get(event.anchor, 1) if isinstance(event, yaml.AliasEvent) else 1
            if isinstance(event, yaml.CollectionStartEvent):
                open_.append((event.anchor, nodes))
                if len(open_) > most.yaml_depth:
                    raise _TooLarge(f"the YAML is nested deeper than {most.yaml_depth} levels", event.start_mark,
                                    "a spec needs a few levels; flatten it")
            elif isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
                weights[event.anchor] = 1
            nodes += grown
            if nodes > most.yaml_nodes:
                raise _TooLarge(f"the YAML has more than {most.yaml_nodes:,} nodes (aliases counted as expanded)",
                                event.start_mark, f"a spec has a few hundred; {RAISE_HINT}")
    finally:
        parser.dispose()


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
    size, most = len(text.encode("utf-8", "surrogatepass")), limits.current().spec_bytes
    if size > most:
        raise SpecInputError([Issue("", f"the spec is {size:,} bytes, over the limit of {most:,}", file,
                                    hint=RAISE_HINT)])
    try:
        node = yaml.compose(text, Loader=_SafeSpecLoader)
    except _TooLarge as err:
        raise SpecInputError([Issue("", err.message, file, err.mark.line + 1, err.mark.column + 1,
                                    hint=err.hint)]) from None
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
    if node is None:
        raise SpecError([Issue("", "the spec is empty", file, 1, 1, hint="start with 'nlc: 1'")])
    data = _construct(node, file, (), raw)
    if not isinstance(data, dict):
        raise SpecError([Issue("", "a spec is a mapping of keys (nlc, levels, model, ...)", file,
                               *_line_col(node))])
    raw.data = data
    return raw


def deep_merge(base: RawSpec, child: RawSpec) -> RawSpec:
    """``child`` over ``base``: maps merge key by key, everything else (lists too) replaces; a
    level of ``base`` that ``child`` sets to null is removed (``levels: {mem_k: null}``)."""

    def merge(b: Any, c: Any, path: PathKey) -> Any:
        if isinstance(b, dict) and isinstance(c, dict):
            out = dict(b)
            for key, value in c.items():
                if path == ("levels",) and value is None and key in b:
                    del out[key]
                    drop_marks(out_raw, (*path, key))
                    continue
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


EXTENDS_FILES = 64  # files one load may read through `extends` (a repeated list fans out)
EXTENDS_DEPTH = 32  # the longest chain of `extends`


def read_spec(source: str | Path, *, name: str | None = None, bundled_dir: Path | None = None,
              _seen: tuple = (), _reads: list[int] | None = None) -> RawSpec:
    """Read a spec file (a :class:`Path`) or YAML text (a ``str``), resolving ``extends`` (a
    path relative to the file, or the name of a bundled spec). Cycles in ``extends`` are
    reported. ``name`` is the file name messages show (default: the path as given); which
    of file, bundled spec or text a user meant is :func:`nlc.spec.load.spec_source`'s call.
    One load reads at most :data:`EXTENDS_FILES` files along chains of at most
    :data:`EXTENDS_DEPTH` (``_reads`` counts them across the recursion)."""
    _reads = [0] if _reads is None else _reads
    if isinstance(source, Path):
        path, name = source, name or str(source)
        resolved = path.resolve()
        if resolved in _seen:
            chain = " -> ".join(str(p.name) for p in (*_seen, resolved))
            raise SpecError([Issue("extends", f"'extends' forms a cycle: {chain}", name, 1, 1)])
        _seen = (*_seen, resolved)
        _reads[0] += 1
        if _reads[0] > EXTENDS_FILES or len(_seen) > EXTENDS_DEPTH:
            what = f"more than {EXTENDS_FILES} files" if _reads[0] > EXTENDS_FILES else \
                f"a chain longer than {EXTENDS_DEPTH}"
            raise SpecInputError([Issue("extends", f"'extends' reaches {what}", name, 1, 1,
                                        hint="extend each file once, from a shallower hierarchy")])
        text = _read_file(path, name)
    else:
        path, text, name = None, source, name or "<text>"
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
        loaded = read_spec(target, bundled_dir=bundled_dir, _seen=_seen, _reads=_reads)
        base = loaded if base is None else deep_merge(base, loaded)
    drop_marks(raw, ("extends",))
    return deep_merge(base, raw) if base is not None else raw


def _read_file(path: Path, name: str) -> str:
    """The text of a spec file. A file over ``spec_bytes`` is refused before it is read (and
    never more than that is read, in case it grows), and anything but a regular file (a
    directory, a FIFO that would block, a device) before it is opened."""
    most = limits.current().spec_bytes
    try:
        if path.exists() and not path.is_file():
            problem = "is a directory, not a spec file" if path.is_dir() else "is not a regular file"
            raise SpecInputError([Issue("", f"{name} {problem}", name, hint="give a .yaml file")])
        size = path.stat().st_size
        if size <= most:
            with path.open("rb") as stream:
                data = stream.read(most + 1)
            size = len(data)
        if size > most:
            raise SpecInputError([Issue("", f"the spec file is {size:,} bytes, over the limit of {most:,}", name,
                                        hint=RAISE_HINT)])
        return data.decode("utf-8")
    except FileNotFoundError:
        problem, hint = f"no such spec file: {name}", "nlc ls lists the bundled specs"
    except IsADirectoryError:
        problem, hint = f"{name} is a directory, not a spec file", "give a .yaml file"
    except PermissionError:
        problem, hint = f"no permission to read {name}", None
    except UnicodeDecodeError:
        problem, hint = "the spec is not UTF-8 text", None
    except (OSError, ValueError) as err:  # ValueError: a NUL in the name
        problem, hint = f"cannot read {name}: {getattr(err, 'strerror', None) or err}", None
    raise SpecInputError([Issue("", problem, name, hint=hint)])


def _resolve_extends(item: str, path: Path | None, bundled_dir: Path | None) -> Path | None:
    candidates = []
    if path is not None:
        candidates.append(path.parent / item)
    if bundled_dir is not None:
        candidates += [bundled_dir / item, bundled_dir / f"{item}.yaml"]
    found = next((c for c in candidates if c.is_file()), None)
    return Path(os.path.normpath(found)) if found is not None else None
