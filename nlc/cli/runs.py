"""``nlc runs ls DIR...`` and ``nlc runs plot DIR... --out FILE.png``: compare training runs.

``ls`` tables every run found in or below the folders given (:func:`nlc.runs.find_runs`):
its path, spec name, steps done / planned, final train loss, final validation bpb, median
tokens/s and status (complete, stopped, diverged, running-or-killed, or ``unreadable:
<reason>`` for a damaged folder, which never stops the listing); ``--json`` prints the same
rows as a JSON list. ``plot`` overlays the runs' validation bpb and train loss in one PNG.
A folder that does not exist, or (for ``plot``) holds no run with curves, exits with
status 2 (:data:`nlc.status.BAD_INPUT`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

from ..runs import DEPTH, find_runs, plot_runs, read_run
from ..status import BAD_INPUT

LS_EXAMPLES = ("Examples:\n"
               "  nlc runs ls runs\n"
               "  nlc runs ls runs/hope runs/transformer --json\n"
               "  nlc runs ls runs/hope_cms/trials")
PLOT_EXAMPLES = ("Examples:\n"
                 "  nlc runs plot runs/hope runs/transformer --out compare.png\n"
                 "  nlc runs plot runs/hope_cms/trials --out trials.png")

EPILOG = "\n".join(LS_EXAMPLES.splitlines()[:3] + PLOT_EXAMPLES.splitlines()[1:2])  # `nlc runs --help`: one of each

runs_app = typer.Typer(help="Compare training runs: a table of their status and metrics, their curves in one plot.",
                       epilog=EPILOG, no_args_is_help=True, add_completion=False)

DirsArgument = typer.Argument(..., metavar="DIR", help=f"run folders, or folders with runs up to {DEPTH} levels below")


@runs_app.command("ls", epilog=LS_EXAMPLES)
def ls(dirs: List[Path] = DirsArgument,
       as_json: bool = typer.Option(False, "--json", help="print the rows as one JSON list")) -> None:
    """Table the runs in or below DIR: spec, steps, final loss and bpb, tokens/s, status."""
    runs = [read_run(path) for path in _run_paths(dirs)]
    if as_json:
        typer.echo(json.dumps([run.as_json() for run in runs], indent=1))
        return
    if not runs:
        typer.echo(f"no runs under {', '.join(map(str, dirs))} (a run folder holds metrics.jsonl or checkpoint/)",
                   err=True)
        return
    from rich.console import Console  # lazy: keeps CLI startup free of rich
    from rich.table import Table
    from rich.text import Text

    table = Table("RUN", "SPEC", "STEPS", "TRAIN LOSS", "VAL BPB", "TOKENS/S", "STATUS", box=None, pad_edge=False)
    for run in runs:
        cells = (str(run.path), run.spec or "?", f"{_text(run.step)}/{_text(run.steps)}", _text(run.train_loss, ".4f"),
                 _text(run.val_bpb, ".4f"), _text(run.tokens_per_s, ",.0f"), run.status)
        table.add_row(*(Text(_printable(cell)) for cell in cells),  # Text: no rich markup from names
                      style="red" if run.status.startswith(("unreadable", "diverged")) else None)
    Console(soft_wrap=False).print(table)


@runs_app.command("plot", epilog=PLOT_EXAMPLES)
def plot(dirs: List[Path] = DirsArgument,
         out: Path = typer.Option(..., "--out", "-o", help="the PNG to write")) -> None:
    """Overlay the validation bpb and train loss curves of the runs in or below DIR in one PNG."""
    runs = []
    for run in map(read_run, _run_paths(dirs)):
        if not any(r.get("kind") in ("train", "val") for r in run.records):
            why = run.status if run.status.startswith("unreadable") else "no train or val records"
            typer.echo(f"warning: {run.path}: left out ({why})", err=True)
        else:
            runs.append(run)
    if not runs:
        typer.echo(f"error: no run with curves under {', '.join(map(str, dirs))}", err=True)
        raise typer.Exit(BAD_INPUT)
    plot_runs(runs, out)
    typer.echo(f"wrote {out} ({len(runs)} run{'s' * (len(runs) != 1)})")


def _run_paths(dirs: list[Path]) -> list[Path]:
    """The runs in or below each folder, in order, each once; exit 2 for a folder that is not there."""
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        typer.echo(f"error: not a folder: {', '.join(missing)}", err=True)
        raise typer.Exit(BAD_INPUT)
    return list(dict.fromkeys(path for d in dirs for path in find_runs(d)))


def _printable(text: str) -> str:
    """``text``, with control characters (from a file or spec name) escaped, not sent to the terminal."""
    return text if text.isprintable() else ascii(text)[1:-1]


def _text(value: float | int | None, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)
