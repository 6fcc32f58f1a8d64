"""``nlc cp NAME DEST [--force]``: copy a bundled spec to start from (exit 2 on a bad name or DEST).

The copy must validate where it lands, so what a bundled file finds *beside it* is
rewritten: a relative ``extends`` (``../hope.yaml``, ``base/small.yaml``) becomes the
bundled name it points at (``hope``, ``base/small``), which resolves from anywhere, and the
editor's ``# yaml-language-server: $schema=...`` comment points at the same schema file
from the new place (or goes, when the installed package has no schema file). Only those
spans of text change: comments, order and layout stay as written.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import typer
import yaml

from ..spec.load import bundled_specs, closest_bundled
from ..status import BAD_INPUT

SCHEMA_LINE = re.compile(r"^(#\s*yaml-language-server:\s*\$schema=)(\S+)(.*)\n?", re.MULTILINE)
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")


def cp(
    name: str = typer.Argument(..., help="a bundled spec (see nlc ls), with or without .yaml"),
    dest: Path = typer.Argument(..., help="a file, or a directory to copy into"),
    force: bool = typer.Option(False, "--force", "-f", help="overwrite an existing file"),
) -> None:
    """Copy a bundled spec to DEST, its relative extends rewritten to bundled names.

    Examples:

    \b
      nlc cp hope my_hope.yaml && nlc validate my_hope.yaml
      nlc cp search/hope_cms runs/      (extends: ../hope.yaml -> hope)
      nlc cp transformer base.yaml --force
    """
    specs = bundled_specs()
    key = name[:-5] if name.endswith(".yaml") else name[:-4] if name.endswith(".yml") else name
    source = specs.get(key)
    if source is None:
        close = closest_bundled(key)
        hint = f" (did you mean '{close}'?)" if close else f" (bundled: {', '.join(specs)})"
        typer.echo(f"error: no bundled spec '{name}'{hint}", err=True)
        raise typer.Exit(BAD_INPUT)
    target = dest / source.name if dest.is_dir() else dest
    if target.exists() and not force:
        typer.echo(f"error: {target} exists; pass --force to overwrite it", err=True)
        raise typer.Exit(BAD_INPUT)
    if not target.parent.is_dir():
        typer.echo(f"error: directory {target.parent} does not exist", err=True)
        raise typer.Exit(BAD_INPUT)
    text = portable_text(source, target)
    with target.open("w", encoding="utf-8", newline="") as stream:
        stream.write(text)
    typer.echo(f"copied {key} to {target}")


def portable_text(source: Path, target: Path) -> str:
    """The text of the bundled spec ``source`` as it must read at ``target``."""
    text = source.read_text(encoding="utf-8")
    return _rewrite_schema(_rewrite_extends(text, source), source, target)


def _rewrite_extends(text: str, source: Path) -> str:
    """Each ``extends`` entry that names a bundled spec relative to ``source`` replaced by
    that spec's bundled name, located by the YAML parser's marks (any quoting or list form)."""
    names = {path: name for name, path in bundled_specs().items()}
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    pairs = root.value if isinstance(root, yaml.MappingNode) else []
    value = next((v for k, v in pairs if getattr(k, "value", None) == "extends"), None)
    items = value.value if isinstance(value, yaml.SequenceNode) else [value] if value is not None else []
    spans = []
    for node in items:
        if not isinstance(node, yaml.ScalarNode):
            continue
        relative = source.parent / node.value
        name = names.get(relative.resolve()) if relative.is_file() else None
        if name is not None and name != node.value:
            spans.append((node.start_mark.index, node.end_mark.index,
                          name if PLAIN_NAME.fullmatch(name) else json.dumps(name)))
    for start, end, name in sorted(spans, reverse=True):
        text = text[:start] + name + text[end:]
    return text


def _rewrite_schema(text: str, source: Path, target: Path) -> str:
    """A relative ``$schema`` path made relative to ``target`` (dropped if it names no file)."""

    def moved(match: re.Match) -> str:
        ref = match.group(2)
        if "://" in ref or os.path.isabs(ref):
            return match.group(0)
        schema = (source.parent / ref).resolve()
        if not schema.is_file():
            return ""
        here = target.parent.resolve()
        try:  # relative within one project, absolute across (no ../../.. to the root)
            shared = Path(os.path.commonpath([schema, here]))
            new = os.path.relpath(schema, here) if shared != Path(shared.anchor) else str(schema)
        except ValueError:  # another drive (Windows)
            new = str(schema)
        return f"{match.group(1)}{Path(new).as_posix()}{match.group(3)}\n"

    return SCHEMA_LINE.sub(moved, text)
