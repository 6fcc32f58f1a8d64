"""``nlc bench paper [--quick | --smoke] [--models A,B] [--seeds N] [--runs DIR] [--docs DIR]``.

Reproduces the Nested Learning comparison at CPU scale (issue 6): every model of
:data:`nlc.bench.plan.MODELS` matched in parameters, trained on the same tokens with one
learning-rate grid, evaluated on validation bpb, passkey / NIAH, MQAR, selective copying and
continual LM; writes ``DOCS/results.md``, ``DOCS/results/paper.json`` and the figures.
``--quick`` is the CI size (minutes, one seed), ``--smoke`` the test size (seconds, two
models); the default is the full run (three seeds, an hour or more on 2 cores).
``--seeds N`` runs seeds 0..N-1 instead of the mode's; ``--jobs N`` trains N models side by
side. Every finished model is saved under ``--runs``: the same command with the same
``--runs`` folder resumes a killed run. ``benchmarks/paper.py`` runs the same command.
"""
from __future__ import annotations

import shlex
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from ..bench.plan import plan_for
from ..errors import NLCError
from ._common import fail
from ..status import BAD_INPUT

# The end of the --help pages: commands that run as written.
EPILOG = ("Examples:\n"
          "  nlc bench paper --smoke --runs runs/bench-smoke --docs /tmp/nlc-docs\n"
          "  nlc bench paper --quick --jobs 2\n"
          "  nlc bench paper --models hope,transformer --seeds 1")

bench_app = typer.Typer(help="Benchmarks that train models.", no_args_is_help=True, epilog=EPILOG)


@bench_app.command("paper", epilog=EPILOG)
def paper(
    quick: bool = typer.Option(False, "--quick", help="CI size: tiny widths and steps, one seed (minutes)"),
    smoke: bool = typer.Option(False, "--smoke", help="test size: two models, a few steps (seconds)"),
    models: Optional[str] = typer.Option(None, "--models", help="comma-separated model labels (default: all "
                                                                 "of the mode; see nlc.bench.plan.MODELS)"),
    runs: Optional[Path] = typer.Option(None, "--runs", help="folder of the training runs "
                                                             "(default: runs/bench/paper-<mode>-<time>); "
                                                             "an existing one resumes"),
    docs: Path = typer.Option(Path("docs"), "--docs", help="writes DOCS/results.md and DOCS/results/"),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="seeds 0..N-1 (default: the mode's: "
                                                                     "3 full, 1 quick and smoke)"),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads per job (1: fastest for these sizes)"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="models trained side by side in worker processes "
                                                      "(at most the free cores)"),
) -> None:
    """The paper's comparison table, measured: HOPE vs Titans vs Samba vs Transformer."""
    from ..bench.run import run_and_report  # lazy: keeps CLI startup free of torch

    if quick and smoke:
        typer.echo("error: choose one of --quick and --smoke", err=True)
        raise typer.Exit(BAD_INPUT)
    mode = "smoke" if smoke else "quick" if quick else "full"
    chosen = tuple(m.strip() for m in models.split(",") if m.strip()) if models else None
    runs = runs or Path("runs") / "bench" / f"paper-{mode}-{datetime.now():%Y%m%d-%H%M%S}"
    args = [f"--{mode}"] if mode != "full" else []
    args += [f"--models={models}"] if models else []
    args += [f"--seeds={seeds}"] if seeds is not None else []
    args += [f"--threads={threads}"] if threads != 1 else []
    args += [f"--jobs={jobs}"] if jobs != 1 else []
    command = shlex.join(["nlc", "bench", "paper", *args])
    try:
        written = run_and_report(plan_for(mode, chosen, seeds), runs, docs, command, threads, jobs,
                                 log=lambda line: typer.echo(line, err=True))
    except NLCError as err:
        fail(err)
    for name, path in written.items():
        typer.echo(f"wrote {name}: {path}")
