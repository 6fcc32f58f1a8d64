"""Error types shared by every stage of the pipeline (no torch import).

A :class:`SpecError` carries *all* problems found in one pass, each an
:class:`Issue` that knows the file, line, column and dotted path it refers to,
so the CLI can print ``file:line:col: path: message (did you mean 'x'?)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Issue:
    """One problem in a spec: where it is and what to do about it."""

    path: str
    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    hint: str | None = None
    severity: str = "error"  # "error" | "warning"

    def format(self) -> str:
        where = self.file or "<spec>"
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        text = f"{where}: {self.path or '<root>'}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        if self.severity != "error":
            text = f"{text} [{self.severity}]"
        return text

    def __str__(self) -> str:  # pragma: no cover - convenience
        return self.format()


class FieldError(ValueError):
    """Raised inside a model validator to blame one field of the model, with a fix.

    The locator appends ``field`` to the model's path and shows ``hint``.
    """

    def __init__(self, field: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.field, self.hint = field, hint


class NLCError(Exception):
    """Base class of every error nlc raises on purpose."""


@dataclass
class SpecError(NLCError):
    """A spec is invalid. ``issues`` lists every problem found, in file order."""

    issues: list[Issue] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(issue.format() for issue in self.issues)

    def __str__(self) -> str:
        return self.render()
