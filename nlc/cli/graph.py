"""``nlc graph SPEC [OVERRIDES] --format table|mermaid|dot``: the level graph as text."""
from __future__ import annotations

from enum import Enum
from typing import List

import typer

from ..graph import draw
from ._common import load_or_exit


class Format(str, Enum):
    table = "table"
    mermaid = "mermaid"
    dot = "dot"


# The end of `nlc graph --help` (app.py passes it as the epilog): commands that run as written.
EPILOG = ("Examples:\n"
          "  nlc graph specs/hope.yaml\n"
          "  nlc graph specs/titans_mag.yaml --format mermaid\n"
          "  nlc graph specs/samba.yaml --format dot > samba.dot")


def graph(
    args: List[str] = typer.Argument(..., metavar="SPEC_OR_OVERRIDE",
                                     help="one spec file, then overrides: path=value or ~path"),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table, mermaid or dot"),
) -> None:
    """Show the levels: ordered by frequency, with sizes, or as a Mermaid / DOT graph."""
    spec = load_or_exit(args)

    if fmt is Format.mermaid:
        typer.echo(draw.to_mermaid(spec), nl=False)
    elif fmt is Format.dot:
        typer.echo(draw.to_dot(spec), nl=False)
    else:
        from rich.console import Console  # lazy: keeps CLI startup free of rich

        console = Console()
        if not console.is_terminal:  # piped or captured: do not squeeze columns to 80
            console = Console(width=240, highlight=False)
        console.print(draw.to_table(spec))
