"""``nlc validate SPEC... [OVERRIDES] [--json]``: every issue of every spec; exit 1 when a
spec is invalid, 2 when a file cannot be used at all (:mod:`nlc.status`)."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import List

import typer

from ..errors import one_line
from ..graph.build import ordered_levels
from ._common import print_issues, split_args, validate_path
from ..status import BAD_INPUT


# The end of `nlc validate --help` (app.py passes it as the epilog): commands that run as written.
EPILOG = ("Examples:\n"
          "  nlc validate specs/hope.yaml\n"
          "  nlc validate specs/*.yaml --json\n"
          "  nlc validate specs/hope.yaml model.width=64 train.seq_len=128")


def validate(
    args: List[str] = typer.Argument(..., metavar="SPEC_OR_OVERRIDE",
                                     help="spec files, then overrides applied to each of them"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON report on stdout"),
) -> None:
    """Check specs: schema, level names, cycles, frequencies, periods, dimensions.

    Prints each problem as file:line:col: path: message (hint); warnings never fail.
    Overrides (path=value, ~path) apply to every spec.
    """
    paths, overrides = split_args(args)
    if not paths:
        typer.echo("error: give at least one spec file", err=True)
        raise typer.Exit(BAD_INPUT)
    reports, worst = [], 0
    for path in paths:
        spec, issues, status = validate_path(path, overrides)
        worst = max(worst, status)
        reports.append({"file": path, "ok": spec is not None,
                        "name": spec.name if spec is not None else None,
                        "issues": [asdict(i) for i in issues]})
        if as_json:
            continue
        print_issues(issues)
        if spec is not None:
            warnings = len(issues)
            note = f", {warnings} warning{'s' if warnings != 1 else ''}" if warnings else ""
            typer.echo(f"OK {one_line(str(path))}: {one_line(spec.name or 'spec')}, {len(spec.levels)} levels in "
                       f"{len(ordered_levels(spec))} ordered levels{note}")
        else:
            errors = sum(i.severity == "error" for i in issues)
            typer.echo(f"FAILED {path}: {errors} error{'s' if errors != 1 else ''}", err=True)
    if as_json:
        typer.echo(json.dumps({"ok": not worst, "specs": reports}, indent=2))
    raise typer.Exit(worst)
