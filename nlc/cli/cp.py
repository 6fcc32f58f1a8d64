"""``nlc cp NAME DEST [--force]``: copy a bundled spec to start from."""
from __future__ import annotations

import shutil
from pathlib import Path

import typer

from ..spec.load import bundled_specs


def cp(
    name: str = typer.Argument(..., help="a bundled spec (see nlc ls), with or without .yaml"),
    dest: Path = typer.Argument(..., help="a file, or a directory to copy into"),
    force: bool = typer.Option(False, "--force", "-f", help="overwrite an existing file"),
) -> None:
    """Copy a bundled spec to DEST."""
    specs = bundled_specs()
    key = name[:-5] if name.endswith(".yaml") else name[:-4] if name.endswith(".yml") else name
    source = specs.get(key)
    if source is None:
        import difflib

        close = difflib.get_close_matches(key, list(specs), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (bundled: {', '.join(specs)})"
        typer.echo(f"error: no bundled spec '{name}'{hint}", err=True)
        raise typer.Exit(1)
    target = dest / source.name if dest.is_dir() else dest
    if target.exists() and not force:
        typer.echo(f"error: {target} exists; pass --force to overwrite it", err=True)
        raise typer.Exit(1)
    if not target.parent.is_dir():
        typer.echo(f"error: directory {target.parent} does not exist", err=True)
        raise typer.Exit(1)
    shutil.copyfile(source, target)
    typer.echo(f"copied {key} to {target}")
