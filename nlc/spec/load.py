"""Load and validate a spec: YAML -> extends -> overrides -> pydantic -> level graph.

Every problem from every stage is collected and raised together as one
:class:`~nlc.errors.SpecError`; warnings are returned by :func:`validate` and never
stop a load.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import Issue, SpecError
from .locate import issues_from_validation, sort_issues
from .model import Spec
from .overrides import apply_overrides, split_path
from .source import RawSpec, SpecDumper, read_spec

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"


def load_raw(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RawSpec:
    """Read a spec (file path or YAML text), resolve ``extends`` and apply overrides."""
    raw = read_spec(source, bundled_dir=BUNDLED_DIR)
    return apply_overrides(raw, list(overrides))


def validate(source: str | Path | RawSpec, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Spec | None, list[Issue]]:
    """All issues of a spec, errors and warnings, in file order; the spec if it has no error."""
    try:
        raw = source if isinstance(source, RawSpec) else load_raw(source, overrides)
    except SpecError as err:
        return None, err.issues
    try:
        spec = Spec.model_validate(raw.data)
    except ValidationError as err:
        return None, issues_from_validation(err, raw, Spec)
    from ..graph.checks import check_spec  # the graph package imports the spec package

    issues = [locate_issue(issue, raw) for issue in check_spec(spec)]
    spec._raw = raw
    errors = [i for i in issues if i.severity == "error"]
    return (None if errors else spec), sort_issues(issues)


def load_spec(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Load a valid spec or raise :class:`SpecError` listing every problem.

    ``source`` is a path to a YAML file or YAML text; ``overrides`` are ``a.b=v`` /
    ``~a.b`` strings applied after ``extends``.
    """
    spec, issues = validate(source, overrides)
    if spec is None:
        raise SpecError([i for i in issues if i.severity == "error"])
    return spec


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
    raw: RawSpec | None = getattr(spec, "_raw", None)
    mark = raw.mark(split_path(path)) if raw is not None else None
    return f"{mark.file}:{mark.line}" if mark else "<spec>"


def bundled_specs() -> dict[str, Path]:
    """``name -> path`` of every bundled spec (``invalid/`` holds error fixtures: skipped)."""
    found = {}
    for path in sorted(BUNDLED_DIR.rglob("*.y*ml")):
        rel = path.relative_to(BUNDLED_DIR)
        if rel.parts[0] == "invalid" or path.suffix not in (".yaml", ".yml"):
            continue
        found[rel.with_suffix("").as_posix()] = path
    return found


def bundled_models() -> dict[str, Path]:
    """The bundled specs that compile to a model: :func:`bundled_specs` without the bases
    (``base/``: fragments to extend, no blocks) and the search spaces (``search/``)."""
    return {name: path for name, path in bundled_specs().items() if not name.startswith(("base/", "search/"))}
