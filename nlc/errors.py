"""Error types shared by every stage of the pipeline (no torch import).

A :class:`SpecError` carries *all* problems found in one pass, each an
:class:`Issue` that knows the file, line, column and dotted path it refers to,
so the CLI can print ``file:line:col: path: message (did you mean 'x'?)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .status import FAILED, NON_FINITE


def one_line(text: str) -> str:
    """``text`` with every unprintable character (newlines, NUL, line separators) escaped as
    in a Python literal: a file name or level name from a user cannot break a message line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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
        where = one_line(self.file or "<spec>")
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        text = f"{where}: {one_line(self.path) or '<root>'}: {self.message}"
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
    """Base class of every error nlc raises on purpose; ``exit_status`` is the CLI's exit
    status for it (:mod:`nlc.status`)."""

    exit_status = FAILED


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


class NonFiniteError(NLCError):
    """A run met a NaN or infinite value and stopped there (training, evaluation, decoding).

    ``level``: the spec level whose output, state, parameters or gradients went non-finite
    first (``""``: the embedding, final norm or head; None: not located); ``step``: the
    optimizer step (training) or batch (evaluation); ``position``: the token index along T
    where it first appeared (None when it is not a token's value); ``hint``: the spec fields
    that bound it.
    """

    exit_status = NON_FINITE

    def __init__(self, message: str, *, level: str | None = None, step: int | None = None,
                 position: int | None = None, hint: str | None = None) -> None:
        self.message, self.level, self.step, self.position, self.hint = message, level, step, position, hint
        super().__init__(self.render())

    def render(self) -> str:
        return f"{self.message} Try: {self.hint}" if self.hint else self.message

    def __str__(self) -> str:
        return self.render()

    def reworded(self, prefix: str = "", suffix: str = "") -> "NonFiniteError":
        """The same error with context added around its message (by a caller that knows it)."""
        return NonFiniteError(prefix + self.message + suffix, level=self.level, step=self.step,
                              position=self.position, hint=self.hint)
