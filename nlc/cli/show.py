"""``nlc show SPEC [OVERRIDES]``: the fully resolved spec (extends, overrides, defaults)."""
from __future__ import annotations

from typing import List

import typer

from ._common import load_or_exit


# The end of `nlc show --help` (app.py passes it as the epilog): commands that run as written.
EPILOG = ("Examples:\n"
          "  nlc show specs/hope.yaml\n"
          "  nlc show specs/titans_mac.yaml model.width=64")


def show(
    args: List[str] = typer.Argument(..., metavar="SPEC_OR_OVERRIDE",
                                     help="one spec file, then overrides: path=value or ~path"),
) -> None:
    """Print the resolved spec as YAML, every default filled in."""
    from ..spec import spec_to_yaml

    typer.echo(spec_to_yaml(load_or_exit(args)), nl=False)
