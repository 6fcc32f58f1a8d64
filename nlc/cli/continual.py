"""``nlc continual SPEC [OVERRIDES] --stream a,b,c [--tokens-per-stage N] [--out DIR]``.

Trains SPEC on the domains of ``--stream`` in sequence (equal token budgets), scores every
domain's validation bits per byte after each stage (the matrix R), and with
``--baselines`` (default) runs the Transformer fine-tuned naively and joint training on
the union of the domains. ``--genres`` runs class-incremental genre classification on the
Brown corpus instead (``--groups`` groups of genres). Prints R and ACC / BWT / forgetting,
and writes ``DIR/continual.json``, ``DIR/R.png`` and one training run per stage under
``DIR/stages/``. See :mod:`nlc.continual` for the protocol.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import NLCError
from ._common import fail, load_or_exit, split_args


# The end of `nlc continual --help` (app.py passes it as the epilog): commands that run as written.
EPILOG = ("Examples:\n"
          "  nlc continual specs/hope.yaml --stream shakespeare,sympy --tokens-per-stage 20000 --out runs/cl\n"
          "  nlc continual specs/transformer.yaml --no-baselines --out runs/cl-t\n"
          "  nlc continual specs/hope.yaml --genres --groups 3 --out runs/genres")


def continual_verb(
    args: List[str] = typer.Argument(..., metavar="SPEC_OR_OVERRIDE",
                                     help="one spec file, then overrides: path=value or ~path"),
    stream: str = typer.Option("shakespeare,pydocs,sympy,licences", "--stream",
                               help="comma-separated corpora, trained in this order"),
    tokens_per_stage: Optional[int] = typer.Option(None, "--tokens-per-stage",
                                                   help="training tokens per stage "
                                                        "(default: train.steps x batch x seq_len)"),
    out: Path = typer.Option(Path("runs/continual"), "--out", help="output folder"),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines",
                                   help="also run naive fine-tuning and joint training"),
    genres: bool = typer.Option(False, "--genres", help="Brown class-incremental genres instead"),
    groups: int = typer.Option(5, "--groups", help="--genres: groups of genres (stages)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="default: the spec's train.seed"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="training progress bars"),
) -> None:
    """Continual learning of SPEC on a stream of domains (or Brown genres)."""
    spec = load_or_exit(args)
    paths, overrides = split_args(args)
    from rich.console import Console  # lazy: keeps CLI startup free of rich and torch

    from ..continual import matrix_table, run_continual, run_genres, save_runs, summary_table

    domains = [name.strip() for name in stream.split(",") if name.strip()]
    common = dict(tokens_per_stage=tokens_per_stage, out=out, overrides=overrides, seed=seed,
                  baselines=baselines, progress=progress)
    try:
        if genres:
            runs = run_genres(paths[0], groups=groups, **common)
        else:
            runs = run_continual(paths[0], stream=domains, **common)
    except NLCError as err:
        fail(err)
    settings = {"spec": spec.name, "overrides": overrides, "experiment": "genres" if genres else "stream",
                "stream": None if genres else domains, "groups": groups if genres else None,
                "tokens_per_stage": tokens_per_stage, "seed": seed}
    json_path, png = save_runs(runs, out, settings)
    console = Console()
    for run in runs:
        console.print(matrix_table(run))
    console.print(summary_table(runs))
    typer.echo(f"wrote {json_path} and {png}")
