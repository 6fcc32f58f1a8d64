"""Command-line overrides: ``a.b=v`` sets, ``~a.b`` deletes.

Paths are dotted; levels are addressed by name (``levels.memory.update.lr=0.01``) and
list items by index (``model.blocks.0.repeat=4``). Values are parsed with the same safe
YAML loader as spec files (``x=[1, 2]`` is a list, ``x=null`` is null), so an override
can never run code either.
"""
from __future__ import annotations

from typing import Any

import yaml

from ..errors import Issue, SpecError
from .source import Mark, RawSpec, drop_marks, _SafeSpecLoader


def split_path(text: str) -> tuple:
    return tuple(int(p) if p.lstrip("-").isdigit() else p for p in text.split("."))


def apply_overrides(raw: RawSpec, overrides: list[str] | tuple[str, ...]) -> RawSpec:
    """Apply overrides in order; every malformed or dangling one is reported."""
    issues: list[Issue] = []
    for index, text in enumerate(overrides):
        origin = f"<override {index + 1}: {text}>"
        try:
            if text.startswith("~"):
                _delete(raw, split_path(text[1:]))
            elif "=" in text:
                key, value = text.split("=", 1)
                path = split_path(key.strip())
                _set(raw, path, yaml.load(value, Loader=_SafeSpecLoader) if value.strip() else None, origin)
            else:
                raise LookupError("an override is 'path=value' or '~path'")
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as err:
            issues.append(Issue(text.split("=", 1)[0], f"cannot parse the value: {err}", origin,
                                hint="values are YAML; quote a string"))
        except LookupError as err:
            issues.append(Issue(text.lstrip("~").split("=", 1)[0], str(err.args[0]), origin,
                                hint="nlc show SPEC prints every path"))
    if issues:
        raise SpecError(issues)
    raw.overrides = (*raw.overrides, *overrides)
    return raw


def _walk(data: Any, path: tuple) -> Any:
    node = data
    for depth, part in enumerate(path):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and str(part) in node:
            node = node[str(part)]
        elif isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
            node = node[part]
        else:
            shown = ".".join(map(str, path[: depth + 1]))
            raise LookupError(f"no such path '{shown}'")
    return node


def _set(raw: RawSpec, path: tuple, value: Any, origin: str) -> None:
    parent = _walk(raw.data, path[:-1])
    last = path[-1]
    if isinstance(parent, list):
        if not isinstance(last, int):
            raise LookupError(f"'{last}' is not a list index (the list has {len(parent)} items)")
        if not -len(parent) <= last < len(parent):
            raise LookupError(f"index {last} is out of range (the list has {len(parent)} items)")
        parent[last] = value
    elif isinstance(parent, dict):
        parent[str(last)] = value
    else:
        raise LookupError(f"'{'.'.join(map(str, path[:-1]))}' is a value, not a mapping")
    drop_marks(raw, path)
    mark = Mark(origin, 1, 1)
    raw.key_marks[path] = raw.value_marks[path] = mark


def _delete(raw: RawSpec, path: tuple) -> None:
    parent = _walk(raw.data, path[:-1])
    last = path[-1]
    if isinstance(parent, dict) and str(last) in parent:
        del parent[str(last)]
    elif isinstance(parent, list) and isinstance(last, int) and -len(parent) <= last < len(parent):
        del parent[last]
    else:
        raise LookupError(f"no such path '{'.'.join(map(str, path))}' to delete")
    drop_marks(raw, path)
