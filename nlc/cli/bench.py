"""``nlc bench paper [--smoke | --quick | --full] [--out DIR] [--report FILE] [--device cpu|cuda] ...``.

Reproduces the Nested Learning comparison at CPU scale: every model of
:data:`nlc.bench.plan.MODELS` matched in parameters, trained on the same tokens with a
learning rate chosen per model on a held-apart split, evaluated on validation bpb, passkey /
NIAH, MQAR, selective copying and continual LM.

Output: everything goes into the run folder ``--out`` (default ``runs/paper``): the training
runs, one result file per unit of work (``results/<unit>.json``), and the report
(``results.md``, with ``results/paper.json`` and the figures). ``--report FILE`` writes the
report elsewhere instead (``--report docs/results.md``: the documented run), its JSON and
figures in ``results/`` beside it; nothing goes to ``docs/`` unless asked. The same command
with the same ``--out`` resumes: finished units are loaded when their settings are unchanged,
and an interrupted training run continues from its last checkpoint.

Sizes: ``--smoke`` the test size (seconds, two models), ``--quick`` the CI size (minutes, one
seed), ``--full`` (the default) the documented run (three seeds, 1M tokens per LM run). Before
it starts the run prints its expected wall time (from the measured rates of
:data:`nlc.bench.plan.RATES`); ``--dry-run`` prints only that. ``--device cuda`` runs the full
mode at its GPU size. ``--seeds N`` runs seeds 0..N-1 instead of the mode's; ``--jobs N``
trains N units side by side. ``benchmarks/paper.py`` runs the same command.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from ..bench.budget import describe_plan
from ..bench.plan import plan_for
from ..errors import NLCError
from ..status import BAD_INPUT
from ._common import fail

DEFAULT_OUT = Path("runs") / "paper"

# The end of the --help pages: commands that run as written.
EPILOG = ("Examples:\n"
          "  nlc bench paper --smoke --out /tmp/nlc-smoke\n"
          "  nlc bench paper --full --jobs 2 --dry-run\n"
          "  nlc bench paper --full --jobs 2 --report docs/results.md")

bench_app = typer.Typer(help="Benchmarks that train models.", no_args_is_help=True, epilog=EPILOG)


def _bad_input(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(BAD_INPUT)


def _command(mode: str, models: str | None, seeds: int | None, out: Path, report: Path | None, device: str,
             threads: int, jobs: int) -> str:
    """The command line that reruns (and resumes) this run, as the report prints it."""
    args = [f"--{mode}"]
    args += [f"--models={models}"] if models else []
    args += [f"--seeds={seeds}"] if seeds is not None else []
    args += [f"--out={out}"] if out != DEFAULT_OUT else []
    args += [f"--report={report}"] if report is not None else []
    args += [f"--device={device}"] if device != "cpu" else []
    args += [f"--threads={threads}"] if threads != 1 else []
    args += [f"--jobs={jobs}"] if jobs != 1 else []
    return shlex.join(["nlc", "bench", "paper", *args])


@bench_app.command("paper", epilog=EPILOG)
def paper(
    smoke: bool = typer.Option(False, "--smoke", help="test size: two models, a few steps (seconds)"),
    quick: bool = typer.Option(False, "--quick", help="CI size: tiny widths and steps, one seed (minutes)"),
    full: bool = typer.Option(False, "--full", help="the documented run (the default): three seeds, 1M tokens "
                                                    "per LM run (hours on 2 cores)"),
    models: Optional[str] = typer.Option(None, "--models", help="comma-separated model labels (default: all "
                                                                 "of the mode; see nlc.bench.plan.MODELS)"),
    out: Path = typer.Option(DEFAULT_OUT, "--out", "--runs", help="the run folder: training runs, unit results "
                                                                  "and the report; an existing one resumes"),
    report: Optional[Path] = typer.Option(None, "--report", help="write the report here instead of "
                                                                 "OUT/results.md (e.g. docs/results.md); its "
                                                                 "JSON and figures go to results/ beside it"),
    docs: Optional[Path] = typer.Option(None, "--docs", hidden=True),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda: the full mode sized up for one GPU"),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="seeds 0..N-1 (default: the mode's: "
                                                                     "3 full, 1 quick and smoke)"),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads per job (1: fastest for these sizes)"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="units trained side by side in worker processes "
                                                      "(at most the free cores)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan and its expected wall time; run nothing"),
) -> None:
    """The paper's comparison table, measured: HOPE vs Titans vs Samba vs Transformer."""
    if docs is not None:
        _bad_input(f"--docs was replaced: the run writes into --out (default {DEFAULT_OUT}); give --report "
                   f"{docs / 'results.md'} to write the report there")
    if smoke + quick + full > 1:
        _bad_input("choose one of --smoke, --quick and --full")
    mode = "smoke" if smoke else "quick" if quick else "full"
    chosen = tuple(m.strip() for m in models.split(",") if m.strip()) if models else None
    log = lambda line: typer.echo(line, err=True)  # noqa: E731
    try:
        plan = plan_for(mode, chosen, seeds, device)
        for line in describe_plan(plan, jobs):
            log(line)
        if dry_run:
            return
        from ..bench.run import run_and_report  # lazy: keeps CLI startup free of torch

        command = _command(mode, models, seeds, out, report, device, threads, jobs)
        written = run_and_report(plan, out, report, command, threads, jobs, log=log)
    except NLCError as err:
        fail(err)
    for name, path in written.items():
        typer.echo(f"wrote {name}: {path}")
