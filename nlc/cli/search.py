"""``nlc search SPEC [OVERRIDES] [--dry-run N] [--trials N] [--workers N] [--storage URL] [--out DIR]``
and ``nlc search report STUDY_DIR_OR_URL``: architecture search over a spec's ``search:`` block.

``nlc search SPEC`` is short for ``nlc search run SPEC``. Running the same command again
resumes the study (a killed worker's trial is retried, finished ones are kept); a resume
whose steps, spec or search space differ from the study's is refused (exit 2) unless
``--allow-changes`` (nlc.search.budget). The run exits 1 when a worker process or any trial
failed (nlc.status), after the report.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from ..errors import NLCError, SpecError
from ._common import exit_status, fail, print_issues, split_args
from ..status import BAD_INPUT, FAILED


class _RunByDefault(TyperGroup):
    """``nlc search SPEC ...`` means ``nlc search run SPEC ...``."""

    def parse_args(self, ctx, args):  # noqa: ANN001 - click's signature
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


# click's help joins single newlines: paragraphs ("\n\n") keep one example per line
def _examples(*lines: str) -> str:
    return "Examples:\n\n" + "\n\n".join(lines)


RUN_EXAMPLES = _examples("nlc search specs/search/hope_cms.yaml --dry-run 3",
                         "nlc search specs/search/hope_cms.yaml --workers 2 --out runs/hope_cms",
                         "nlc search specs/search/hope_cms.yaml --out runs/hope_cms --trials 30")
REPORT_EXAMPLES = _examples("nlc search report runs/hope_cms",
                            "nlc train runs/hope_cms/report/best.yaml --out runs/hope_best",
                            "nlc search report sqlite:///search.db --study hope_cms --out report")

app = typer.Typer(cls=_RunByDefault, no_args_is_help=True, add_completion=False,
                  help="Architecture search over a spec's search: block (Optuna). "
                  "nlc search SPEC [OVERRIDES] [OPTIONS] is short for nlc search run SPEC ...",
                  epilog=_examples("nlc search specs/search/hope_cms.yaml --dry-run 3",
                                   "nlc search specs/search/hope_cms.yaml --workers 2 --out runs/hope_cms",
                                   "nlc search report runs/hope_cms"))


@app.command("run", epilog=RUN_EXAMPLES)
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
    allow_changes: bool = typer.Option(False, "--allow-changes",
                                       help="resume even though --steps, the spec or the search space changed "
                                       "(the changes are printed and kept in report.json)"),
) -> None:
    """Search: sample trial specs, train each, keep the study in OUT (or --storage)."""
    from ..search.worker import (  # lazy: keeps CLI startup free of optuna
        SearchRun, dry_run as sample_specs, run_workers)

    paths, overrides = split_args(args)
    if len(paths) != 1:
        typer.echo(f"error: give exactly one spec file (got {len(paths)})", err=True)
        raise typer.Exit(BAD_INPUT)
    out = out or Path("runs") / f"search-{Path(paths[0]).stem}"
    search = SearchRun(spec=Path(paths[0]), out=out,  # a Path: a file or a bundled name, never YAML text
                       overrides=tuple(overrides), storage=storage, trials=trials,
                       study=study, steps=steps, allow_changes=allow_changes, echo=typer.echo)
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
        lost = run_workers(search, workers, first=worker_index)
        finished = _report(storage or out, search.study_name(space), out / "report")
    except SpecError as err:
        print_issues(err.issues)
        raise typer.Exit(exit_status(err)) from None
    except NLCError as err:
        fail(err)
    _exit_on_failures(finished, lost)


def _exit_on_failures(study, lost: list[str]) -> None:
    """Exit 1, saying how many, when trials failed or worker processes died."""
    from ..search.report import failure_counts, reported_trials  # lazy: keeps CLI startup free of optuna

    counts = failure_counts(study)
    failed = sum(counts.values())
    if failed:
        causes = ", ".join(f"{n} {'training error' if cause == 'error' else 'invalid spec'}{'s' if n != 1 else ''}"
                           for cause, n in counts.items() if n)
        typer.echo(f"error: {failed} of {len(reported_trials(study))} trials failed ({causes}); "
                   "their notes are in the report", err=True)
    if lost:
        typer.echo(f"error: {len(lost)} worker process(es) exited with an error", err=True)
    if failed or lost:
        raise typer.Exit(FAILED)


@app.command("report", epilog=REPORT_EXAMPLES)
def report(
    target: str = typer.Argument(..., metavar="STUDY_DIR_OR_URL", help="a search's --out folder, .journal file or RDB URL"),
    study: Optional[str] = typer.Option(None, "--study", help="study name (needed when the storage has several)"),
    out: Optional[Path] = typer.Option(None, "--out", help="report folder (default: STUDY_DIR/report or ./search-report)"),
) -> None:
    """Table of trials, best spec as YAML, PNG plots and report.json."""
    from ..search.study import is_url  # lazy: keeps CLI startup free of optuna

    if out is None and is_url(target):
        out = Path("search-report")
    elif out is None:
        out = (Path(target).parent if target.endswith(".journal") else Path(target)) / "report"
    try:
        _report(target, study, out)
    except NLCError as err:
        fail(err)


def _report(target: str | Path, study_name: str | None, folder: Path):
    """Write and print the report of a study; the study."""
    from rich.console import Console  # lazy: keeps CLI startup free of rich and optuna

    from ..search.report import render_table, write_report
    from ..search.study import load_study

    study = load_study(target, study_name)
    written = write_report(study, folder)
    Console().print(render_table(written))
    for name, path in written["files"].items():
        typer.echo(f"{name}: {path}")
    return study
