"""Helpers shared by the verbs: splitting spec paths from overrides, printing issues."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import typer

if TYPE_CHECKING:  # pragma: no cover
    from ..errors import Issue
    from ..spec import Spec


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


def check_file(path: str) -> "Issue | None":
    """An issue when ``path`` is a directory or unreadable (the loader expects a file)."""
    from ..errors import Issue

    p = Path(path)
    if p.is_dir():
        return Issue("", "is a directory, not a spec file", path, hint="give a .yaml file")
    if p.exists() and not p.is_file():
        return Issue("", "is not a regular file", path)
    return None


def validate_path(path: str, overrides: list[str]) -> tuple["Spec | None", list["Issue"]]:
    """Like :func:`nlc.spec.validate`, for a path given on the command line."""
    from ..errors import Issue, SpecError
    from ..spec import validate

    bad = check_file(path)
    if bad is not None:
        return None, [bad]
    try:
        return validate(Path(path), overrides)
    except SpecError as err:
        return None, err.issues
    except OSError as err:  # unreadable file (permissions, ...)
        return None, [Issue("", f"cannot read the spec: {err.strerror or err}", path)]


def load_or_exit(args: list[str]) -> "Spec":
    """The one spec named in ``args`` (plus overrides), or print its issues and exit 1."""
    paths, overrides = split_args(args)
    if len(paths) != 1:
        typer.echo(f"error: give exactly one spec file (got {len(paths)}: {' '.join(paths) or 'none'})",
                   err=True)
        raise typer.Exit(2)
    spec, issues = validate_path(paths[0], overrides)
    print_issues(issues)
    if spec is None:
        raise typer.Exit(1)
    return spec


def load_checkpoint_or_exit(checkpoint: Path):
    """``(model, meta)`` from a checkpoint (``nlc.train.load_checkpoint``), or print the
    reason and exit 1."""
    from ..errors import NLCError
    from ..train import load_checkpoint

    try:
        return load_checkpoint(checkpoint)
    except NLCError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
