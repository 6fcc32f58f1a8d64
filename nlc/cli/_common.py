"""Helpers shared by the verbs: splitting spec paths from overrides, printing issues, and
ending with the exit status of :mod:`nlc.status` that fits the error."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, NoReturn

import typer

from ..errors import Issue, NLCError, SpecError
from ..graph.validate import validate
from ..spec.load import load_raw
from ..status import BAD_INPUT, FAILED

if TYPE_CHECKING:  # pragma: no cover
    from ..errors import Issue
    from ..spec import Spec


def exit_status(err: BaseException) -> int:
    """The exit status for an error a verb reports: the error's ``exit_status`` (bad input,
    e.g. :class:`nlc.training.checkpoint.CheckpointError`, says 2), else FAILED (1)."""
    return getattr(err, "exit_status", FAILED)


def fail(err: BaseException) -> NoReturn:
    """Print ``error: <err>`` and exit with :func:`exit_status`: the end of every verb's
    ``except NLCError``."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(exit_status(err)) from None


def is_override(arg: str) -> bool:
    """``a.b=v`` sets a value, ``~a.b`` deletes one; anything else is a spec path."""
    return "=" in arg or arg.startswith("~")


def split_args(args: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(spec paths, overrides)`` from positional arguments, in their given order."""
    specs, overrides = [], []
    for arg in args:
        (overrides if is_override(arg) else specs).append(arg)
    return specs, overrides


def print_issues(issues: Iterable["Issue"]) -> None:
    for issue in issues:
        typer.echo(issue.format(), err=True)


def validate_path(path: str, overrides: list[str]) -> tuple["Spec | None", list["Issue"], int]:
    """Like :func:`nlc.validate`, for a spec named on the command line: a file or a
    bundled spec name, never YAML text (:func:`nlc.spec.load.spec_source` decides, as for
    the Python API), with the exit status its issues call for: BAD_INPUT when the spec
    cannot be used at all (missing, a directory, unreadable, over the limits), FAILED when
    it is invalid, else 0."""
    try:
        raw = load_raw(path, overrides, allow_text=False)
    except SpecError as err:
        return None, err.issues, exit_status(err)
    except OSError as err:  # unreadable file (permissions, ...)
        return None, [Issue("", f"cannot read the spec: {err.strerror or err}", path)], BAD_INPUT
    spec, issues = validate(raw)
    return spec, issues, 0 if spec is not None else FAILED


def load_or_exit(args: list[str]) -> "Spec":
    """The one spec named in ``args`` (plus overrides), or print its issues and exit 1 (2
    when the file cannot be used, or not exactly one spec is given)."""
    paths, overrides = split_args(args)
    if len(paths) != 1:
        typer.echo(f"error: give exactly one spec file or bundled name (got {len(paths)}: "
                   f"{' '.join(paths) or 'none'})",
                   err=True)
        raise typer.Exit(BAD_INPUT)
    spec, issues, status = validate_path(paths[0], overrides)
    print_issues(issues)
    if spec is None:
        raise typer.Exit(status)
    return spec


def load_checkpoint_or_exit(checkpoint: Path):
    """``(model, meta)`` from a checkpoint (``nlc.training.load_checkpoint``), or print the
    one-line reason and exit 2: a checkpoint that cannot be used is bad input, whatever
    failed in it (a file, the stored spec, the model it builds)."""
    from ..training import load_checkpoint  # lazy: keeps CLI startup free of torch

    try:
        return load_checkpoint(checkpoint)
    except NLCError as err:
        typer.echo(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", err=True)
        raise typer.Exit(getattr(err, "exit_status", BAD_INPUT)) from None
