"""Read a spec: where it comes from (a file, a bundled name, YAML text), YAML -> extends ->
overrides (:func:`load_raw`), positions of its fields for messages, and the resolved spec
written back as data or YAML. Validation past pydantic (the level graph, the size budget)
is :mod:`nlc.graph.validate`, the next stage of the pipeline.
"""
from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Any

import yaml

from ..errors import Issue, one_line
from .model import Spec
from .overrides import apply_overrides, split_path
from .source import RawSpec, SpecDumper, SpecInputError, read_spec

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"


def spec_source(source: str | Path, *, allow_text: bool = True) -> tuple[Path | str, str]:
    """Where a spec comes from, as ``(file or YAML text, name for messages)``: the one rule
    of every API function and verb that takes a spec.

    1. A :class:`Path` (any name), or a one-line string, naming an existing regular file:
       that file. A file in the working directory named like a bundled spec (``hope``)
       wins over it.
    2. Else a name in :func:`bundled_specs` (``hope``, ``search/hope_cms``; one line, no
       ``:``): that bundled file, named by its real path (so its relative ``extends`` and
       every message point at the file that is read). A *directory* of that name (a run
       folder ``hope/``) does not hide the bundled spec.
    3. Else, where ``allow_text`` (the Python API; never on the command line), a blank
       string or one with a newline or a ``:``, unless it is one line ending in
       ``.yaml``/``.yml``: YAML text, named ``<text>``. A :class:`Path` is never text.
    4. Else :class:`SpecInputError` (exit 2): ``no such file or bundled spec 'x' (nlc ls
       lists them; did you mean 'y'?)``, or ``no such spec file`` for a ``.yaml`` name.
    """
    text = source.as_posix() if isinstance(source, Path) else source
    name_like = "\x00" not in text and text.strip() != "" and (isinstance(source, Path) or "\n" not in text)
    if name_like and _is_file_or_odd(Path(text)) and not (text in bundled_specs() and Path(text).is_dir()):
        return Path(text), str(source)
    if name_like and ":" not in text and text in bundled_specs():
        path = bundled_specs()[text]
        return path, str(path)
    file_name = name_like and text.endswith((".yaml", ".yml"))
    if allow_text and not isinstance(source, Path) and not file_name and (
            not text.strip() or "\n" in text or ":" in text):
        return text, "<text>"
    shown = one_line(text)
    if file_name:
        bundled = text.rsplit(".", 1)[0]
        hint = "nlc ls lists the bundled specs" + (
            f"; did you mean the bundled spec '{bundled}'?" if bundled in bundled_specs() else "")
        raise SpecInputError([Issue("", f"no such spec file: {shown}", shown, hint=hint)])
    close = closest_bundled(text)
    raise SpecInputError([Issue("", f"no such file or bundled spec '{shown}'", shown,
                                hint="nlc ls lists them" + (f"; did you mean '{close}'?" if close else ""))])


def _is_file_or_odd(path: Path) -> bool:
    """True when ``path`` exists as anything (reading it says what is wrong with a
    directory or a FIFO); False when it is missing or cannot be a name (too long, ...)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def closest_bundled(name: str) -> str | None:
    """The bundled spec name closest to ``name`` (``.yaml`` ignored), if any is close."""
    key = name.rsplit(".", 1)[0] if name.endswith((".yaml", ".yml")) else name
    close = difflib.get_close_matches(key, list(bundled_specs()), n=1)
    return close[0] if close else None


def load_raw(source: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
             allow_text: bool = True) -> RawSpec:
    """Read a spec (see :func:`spec_source`), resolve ``extends`` and apply overrides."""
    found, name = spec_source(source, allow_text=allow_text)
    raw = read_spec(found, name=name, bundled_dir=BUNDLED_DIR)
    return apply_overrides(raw, list(overrides))


def locate_issue(issue: Issue, raw: RawSpec) -> Issue:
    """Fill in file/line/column of an issue from its dotted path."""
    if issue.line is not None:
        return issue
    mark = raw.mark(split_path(issue.path)) if issue.path else None
    return Issue(issue.path, issue.message, mark.file if mark else raw.file,
                 mark.line if mark else None, mark.column if mark else None,
                 issue.hint, issue.severity)


def spec_to_data(spec: Spec) -> dict[str, Any]:
    """The resolved spec as plain data (short forms, defaults included)."""
    return spec.model_dump(mode="json", by_alias=True)


def spec_to_yaml(spec: Spec) -> str:
    return yaml.dump(spec_to_data(spec), Dumper=SpecDumper, sort_keys=False, default_flow_style=None,
                     width=100)


def source_line(spec: Spec, path: str) -> str:
    """``file:line`` of a dotted path in the spec's YAML (for messages from later stages)."""
    raw: RawSpec | None = spec.raw
    mark = raw.mark(split_path(path)) if raw is not None else None
    return f"{mark.file}:{mark.line}" if mark else "<spec>"


@functools.lru_cache(maxsize=1)
def _bundled() -> tuple[tuple[str, Path], ...]:
    found = []
    for path in sorted(BUNDLED_DIR.rglob("*.y*ml")):
        rel = path.relative_to(BUNDLED_DIR)
        if rel.parts[0] != "invalid" and path.suffix in (".yaml", ".yml"):
            found.append((rel.with_suffix("").as_posix(), path.resolve()))
    return tuple(found)


def bundled_specs() -> dict[str, Path]:
    """``name -> real path`` of every bundled spec, the names ``nlc ls`` lists and every spec
    argument accepts (``invalid/`` holds the error fixtures of the tests: skipped). Read
    once per process: the bundled folder is part of the installed package."""
    return dict(_bundled())


def bundled_models() -> dict[str, Path]:
    """The bundled specs that compile to a model: :func:`bundled_specs` without the bases
    (``base/``: fragments to extend, no blocks) and the search spaces (``search/``)."""
    return {name: path for name, path in bundled_specs().items() if not name.startswith(("base/", "search/"))}
