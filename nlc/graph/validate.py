"""Validate a spec end to end: pydantic -> the level graph's checks (:mod:`.checks`) ->
learning-rate warnings -> the model-size budget (``nlc.limits``, :mod:`.sizes`).

Every problem from every stage is collected, located at its YAML line, and raised together
as one :class:`~nlc.errors.SpecError`; warnings are returned by :func:`validate` and never
stop a load. Imports no torch.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from .. import limits
from ..errors import Issue, SpecError
from ..spec.levels import lr_warnings
from ..spec.load import load_raw, locate_issue
from ..spec.locate import issues_from_validation, sort_issues
from ..spec.model import Spec
from ..spec.source import RawSpec
from .checks import check_spec
from .sizes import check_model_bytes


def validate(source: str | Path | RawSpec, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Spec | None, list[Issue]]:
    """All issues of a spec (a file, a bundled name, YAML text: :func:`spec_source`; or a
    :class:`RawSpec`), errors and warnings, in file order; the spec if it has no error."""
    try:
        raw = source if isinstance(source, RawSpec) else load_raw(source, overrides)
    except SpecError as err:
        return None, err.issues
    try:
        spec = Spec.model_validate(raw.data)
    except ValidationError as err:
        return None, issues_from_validation(err, raw, Spec)
    found = check_spec(spec) + [w for name, level in spec.levels.items() for w in lr_warnings(name, level)]
    if not any(i.severity == "error" for i in found):  # sizes assume a sound graph
        found += check_model_bytes(spec, limits.current().model_bytes)
    issues = [locate_issue(issue, raw) for issue in found]
    spec.located_by(raw)
    errors = [i for i in issues if i.severity == "error"]
    return (None if errors else spec), sort_issues(issues)


def load_spec(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Load a valid spec or raise :class:`SpecError` listing every problem.

    ``source`` is a spec file, a bundled spec name (``"hope"``) or YAML text, told apart by
    :func:`spec_source`; ``overrides`` are ``a.b=v`` / ``~a.b`` strings applied after
    ``extends``. A spec that cannot be read at all raises the reader's
    :class:`~nlc.spec.source.SpecInputError` (exit status 2), not a plain :class:`SpecError`.
    """
    spec, issues = validate(load_raw(source, overrides))
    if spec is None:
        raise SpecError([i for i in issues if i.severity == "error"])
    return spec
