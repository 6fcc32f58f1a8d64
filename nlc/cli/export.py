"""``nlc export RUN --out DIR``: a trained model as a self-contained folder.

The folder (:mod:`nlc.export`) holds the generated ``model.py``, the weights
(``model.safetensors``), the resolved ``spec.yaml`` and a README.md with the few lines of
Python that load it with torch and nlc's runtime alone. A checkpoint that cannot be used,
or an existing ``--out`` without ``--force``, exits with status 2 (:data:`nlc.status.BAD_INPUT`).
"""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import NLCError
from ..export import FILES, export
from ._common import fail

# The end of `nlc export --help` (app.py passes it as the epilog): commands that run as written.
EPILOG = ("Examples:\n"
          "  nlc export runs/hope --out exported/hope\n"
          "  nlc export runs/hope/checkpoint-200 --out exported/hope-200\n"
          "  nlc export runs/hope --out exported/hope --force")


def export_verb(
    run: Path = typer.Argument(..., help="a run folder written by nlc train, or one of its checkpoint folders"),
    out: Path = typer.Option(..., "--out", "-o", help="the folder to write (must not exist, unless --force)"),
    force: bool = typer.Option(False, "--force", help="replace OUT if it exists"),
) -> None:
    """Write RUN's model as a folder that loads without nlc's compiler: model.py, weights, spec, README."""
    try:
        export(run, out, force=force)
    except NLCError as err:  # a bad checkpoint or target: exit 2 (nlc.status)
        fail(err)
    typer.echo(f"wrote {out}: {', '.join(FILES)}")
