"""``nlc show SPEC [OVERRIDES] [--expand]``: the fully resolved spec (extends, overrides,
defaults); ``--expand`` also writes every optimizer preset out as its gradient memories
(:func:`nlc.spec.presets.expand`)."""
from __future__ import annotations

from typing import List

import typer

from ._common import load_or_exit


# The end of `nlc show --help` (app.py passes it as the epilog): commands that run as written.
EPILOG = ("Examples:\n"
          "  nlc show specs/hope.yaml\n"
          "  nlc show specs/titans_mac.yaml model.width=64\n"
          "  nlc show specs/transformer_m3.yaml --expand")


def show(
    args: List[str] = typer.Argument(..., metavar="SPEC_OR_OVERRIDE",
                                     help="one spec file, then overrides: path=value or ~path"),
    expand: bool = typer.Option(False, "--expand", help="write optimizer presets out as gradient memories"),
) -> None:
    """Print the resolved spec as YAML, every default filled in."""
    from ..spec import spec_to_yaml
    from ..spec.optimizers import OptimizerLevel
    from ..spec.presets import expand as written_out

    spec = load_or_exit(args)
    if expand:
        levels = {n: written_out(lv) if isinstance(lv, OptimizerLevel) else lv for n, lv in spec.levels.items()}
        spec = spec.model_copy(update={"levels": levels})
    typer.echo(spec_to_yaml(spec), nl=False)
