"""Turn pydantic validation errors into :class:`Issue` objects that point into the YAML.

Pydantic reports a location tuple such as ``('levels', 'mem', 'memory', 'update', 'lr')``
in which discriminated-union tags (``'memory'`` here, the level's ``type``) are mixed
with real keys. We walk the loaded data along the tuple to drop the tags, look up the
file/line/column of the remaining dotted path, and for an unknown key suggest the
closest valid one (``did you mean 'update'?``).
"""
from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import FieldError, Issue
from .overrides import split_path
from .source import RawSpec


def clean_path(root: type[BaseModel], loc: tuple) -> tuple:
    """Drop the union tags from pydantic's ``loc``, leaving the path of keys in the data.

    The model types are walked alongside: where the type at a position is a union,
    pydantic has inserted the chosen member's tag, which is not a key in the YAML.
    """
    path: list = []
    types: list[Any] = [root]
    for part in loc:
        members = _expand(types)
        tagged = [m for m in members if _is_model(m) and _tag_of(m) == part]
        if len(members) > 1 and tagged:
            types = tagged  # a union tag: choose the member, stay at the same data path
            continue
        path.append(part)
        types = _step(members, part)
    return tuple(path)


def issues_from_validation(err: ValidationError, raw: RawSpec, root: type[BaseModel]) -> list[Issue]:
    issues = []
    for item in err.errors(include_url=False):
        loc = tuple(item["loc"])
        at_path: tuple | None = None  # where to point, when not at path itself
        at_key = item["type"] in ("extra_forbidden", "missing") or loc[-1:] == ("[key]",)
        loc = loc[:-1] if loc[-1:] == ("[key]",) else loc
        path = clean_path(root, loc)
        message, hint = _message(item), None
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, FieldError):
            path, hint = (*path, *split_path(cause.field)), cause.hint
        elif item["type"] == "extra_forbidden":
            hint = _did_you_mean(str(path[-1]) if path else "", _allowed_keys(root, loc[:-1]))
            message = f"unknown key '{path[-1]}'" if path else "unknown key"
        elif item["type"] == "missing":
            message, hint = "required field is missing", _MISSING_HINTS.get(path[-1] if path else "",
                                                                          f"add '{path[-1]}: ...'" if path else None)
        elif item["type"] == "union_tag_invalid":
            field = item["ctx"]["discriminator"].strip("'")
            tags = [t.strip(" '") for t in item["ctx"]["expected_tags"].split(",")]
            path = (*path, field)
            message = f"unknown {field} {item['ctx']['tag']!r}"
            hint = _did_you_mean(str(item["ctx"]["tag"]), tags)
        elif item["type"] == "union_tag_not_found":
            field = item["ctx"]["discriminator"].strip("'")
            given = item["input"] if isinstance(item["input"], dict) else {}
            typo = difflib.get_close_matches(field, [str(k) for k in given], n=1, cutoff=0.6)
            path, at_key = (*path, field), True
            message = "required field is missing"
            hint = (f"is '{typo[0]}' a misspelt '{field}'?" if typo
                    else _MISSING_HINTS.get(field, f"add '{field}: ...'"))
            if typo:  # point at the misspelt key itself
                at_path = (*path[:-1], typo[0])
        elif item["type"] == "layer_kind" and isinstance(item["input"], dict):
            hint = _did_you_mean(next(iter(item["input"]), ""), ["level", "parallel", "context"])
        mark = raw.mark(at_path or path, key=at_key)
        issues.append(Issue(
            ".".join(map(str, path)), message,
            mark.file if mark else raw.file, mark.line if mark else None,
            mark.column if mark else None, hint,
        ))
    return sort_issues(issues)


_MISSING_HINTS = {
    "nlc": "add 'nlc: 1', the spec language version",
    "type": "add 'type: attention|memory|mlp|persistent|optimizer'",
    "model": "add a 'model:' section with 'blocks:'",
    "levels": "add a 'levels:' section",
}

def sort_issues(issues: list[Issue]) -> list[Issue]:
    """File order, then path; duplicates (same place and text) removed."""
    unique = {(i.file, i.line, i.column, i.path, i.message): i for i in issues}
    return sorted(unique.values(), key=lambda i: (i.file or "", i.line or 0, i.column or 0, i.path))


def _message(item: dict) -> str:
    msg = item["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    given = item.get("input")
    if item["type"] == "literal_error" and "expected" in item.get("ctx", {}):
        return f"got {given!r}; expected {item['ctx']['expected']}"
    expected = _EXPECTED.get(item["type"])
    if expected is not None:
        return f"got {given!r}; expected {expected}"
    if item["type"].startswith(("greater_than", "less_than")) and not isinstance(given, (dict, list)):
        return f"got {given!r}; {msg[0].lower()}{msg[1:]}"
    return msg


_EXPECTED = {
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "a whole number",
    "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
    "bool_type": "true or false", "string_type": "a string", "dict_type": "a mapping",
    "model_type": "a mapping", "list_type": "a list", "tuple_type": "a list",
    "finite_number": "a finite number",
}


def _did_you_mean(word: str, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"valid keys: {', '.join(sorted(choices))}" if choices else None


def _allowed_keys(root: type[BaseModel], loc: tuple) -> list[str]:
    """The keys a model accepts at ``loc`` (which still contains union tags)."""
    types: list[Any] = [root]
    for part in loc:
        members = _expand(types)
        tagged = [m for m in members if _is_model(m) and _tag_of(m) == part]
        types = tagged if len(members) > 1 and tagged else _step(members, part)
    keys: set[str] = set()
    for tp in _expand(types):
        if _is_model(tp):
            keys |= {f.alias or name for name, f in tp.model_fields.items()}
    return sorted(keys)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _step(members: list[Any], part: Any) -> list[Any]:
    """The types one key or index below ``members``."""
    nxt: list[Any] = []
    for tp in members:
        if _is_model(tp):
            field = _field(tp, part)
            if field is not None:
                nxt.append(field.annotation)
            continue
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is dict and args:
            nxt.append(args[1])
        elif origin in (list, tuple) and args:
            nxt.append(args[0])
    return nxt


def _expand(types: list[Any]) -> list[Any]:
    out: list[Any] = []
    for tp in types:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            out += _expand([typing.get_args(tp)[0]])
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            out += _expand(list(typing.get_args(tp)))
        else:
            out.append(tp)
    return out


def _field(model: type[BaseModel], name: Any) -> Any:
    for field_name, field in model.model_fields.items():
        if name in (field_name, field.alias):
            return field
    return None


def _tag_of(model: type[BaseModel]) -> str | None:
    for key in ("type", "kind"):
        field = model.model_fields.get(key)
        if field is not None and typing.get_origin(field.annotation) is typing.Literal:
            args = typing.get_args(field.annotation)
            if len(args) == 1:
                return args[0]
    return _LAYER_TAGS.get(model.__name__)


_LAYER_TAGS = {"LevelLayer": "level", "ParallelLayer": "parallel", "ContextLayer": "context"}
