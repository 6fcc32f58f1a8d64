"""``nlc search SPEC [OVERRIDES] [--dry-run N] [--trials N] [--workers N] [--storage URL] [--out DIR]``
and ``nlc search report STUDY_DIR_OR_URL``: architecture search over a spec's ``search:`` block.

``nlc search SPEC`` is short for ``nlc search run SPEC``. Running the same command again
resumes the study (a killed worker's trial is retried, finished ones are kept).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from ._common import print_issues, split_args


class _RunByDefault(TyperGroup):
    """``nlc search SPEC ...`` means ``nlc search run SPEC ...``."""

    def parse_args(self, ctx, args):  # noqa: ANN001 - click's signature
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_RunByDefault, no_args_is_help=True, add_completion=False,
                  help="Architecture search over a spec's search: block (Optuna). "
                  "nlc search SPEC [OVERRIDES] [OPTIONS] is short for nlc search run SPEC ...")


@app.command("run")
def run(
    args: List[str] = typer.Argument(..., metavar="SPEC_OR_OVERRIDE",
                                     help="a spec with a search: block, then overrides: path=value or ~path"),
    dry_run: int = typer.Option(0, "--dry-run", metavar="N", help="print N sampled trial specs and exit"),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="finished trials wanted (default: search.trials)"),
    workers: int = typer.Option(1, "--workers", min=1, help="worker processes on this machine"),
    storage: Optional[str] = typer.Option(None, "--storage", metavar="URL",
                                          help="RDB URL (postgresql://...) or .journal file; default: OUT/study.journal"),
    out: Optional[Path] = typer.Option(None, "--out", help="run folder (default: runs/search-SPEC_NAME)"),
    study: Optional[str] = typer.Option(None, "--study", help="study name (default: the spec's name)"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="training steps per trial (default: train.steps)"),
    worker_index: int = typer.Option(0, "--worker-index", min=0,
                                     help="index of the first worker here (give each machine its own range)"),
) -> None:
    """Search: sample trial specs, train each, keep the study in OUT (or --storage)."""
    from ..errors import NLCError, SpecError
    from ..search.worker import SearchRun, dry_run as sample_specs, run_workers

    paths, overrides = split_args(args)
    if len(paths) != 1:
        typer.echo(f"error: give exactly one spec file (got {len(paths)})", err=True)
        raise typer.Exit(2)
    out = out or Path("runs") / f"search-{Path(paths[0]).stem}"
    search = SearchRun(spec=paths[0], out=out, overrides=tuple(overrides), storage=storage, trials=trials,
                       study=study, steps=steps, echo=typer.echo)
    try:
        space = search.space()
        if dry_run:
            for index, sampled in enumerate(sample_specs(space, dry_run, seed=space.spec.train.seed)):
                typer.echo(f"--- # sample {index}: {sampled.values}"
                           + (f"; dropped levels {list(sampled.dropped)}" if sampled.dropped else ""))
                if not sampled.valid:
                    typer.echo("# invalid: " + sampled.error.replace("\n", "\n# "))
                typer.echo(sampled.yaml(), nl=False)
            return
        target = search.target(space)
        where = storage or str(out)
        typer.echo(f"search {search.study_name(space)}: {target} trials, {workers} worker(s), study in {where}")
        run_workers(search, workers, first=worker_index)
        _report(storage or out, search.study_name(space), out / "report")
    except SpecError as err:
        print_issues(err.issues)
        raise typer.Exit(1) from None
    except NLCError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


@app.command("report")
def report(
    target: str = typer.Argument(..., metavar="STUDY_DIR_OR_URL", help="a search's --out folder, .journal file or RDB URL"),
    study: Optional[str] = typer.Option(None, "--study", help="study name (needed when the storage has several)"),
    out: Optional[Path] = typer.Option(None, "--out", help="report folder (default: STUDY_DIR/report or ./search-report)"),
) -> None:
    """Table of trials, best spec as YAML, PNG plots and report.json."""
    from ..errors import NLCError
    from ..search.study import is_url

    if out is None and is_url(target):
        out = Path("search-report")
    elif out is None:
        out = (Path(target).parent if target.endswith(".journal") else Path(target)) / "report"
    try:
        _report(target, study, out)
    except NLCError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


def _report(target: str | Path, study_name: str | None, folder: Path) -> None:
    from rich.console import Console

    from ..search.report import render_table, write_report
    from ..search.study import load_study

    written = write_report(load_study(target, study_name), folder)
    Console().print(render_table(written))
    for name, path in written["files"].items():
        typer.echo(f"{name}: {path}")
