"""``nlc schedule SPEC [OVERRIDES] --tokens N --steps K [--plot PNG] [--json]``: the update
schedule of a spec (:class:`nlc.schedule.UpdateSchedule`), level by level, as a timeline."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..figures import new_figure, save_figure
from ..ir.resolve import resolve
from ..schedule import UpdateSchedule
from ._common import load_or_exit

EPILOG = ("Examples:\n"
          "  nlc schedule specs/hope.yaml --tokens 256 --steps 8\n"
          "  nlc schedule specs/hope_continual.yaml --tokens 1024 --plot schedule.png\n"
          "  nlc schedule specs/cms_nested.yaml --json")

BAR = 64  # characters of a timeline bar


def _bar(ticks: list[int], start: int, length: int) -> str:
    """One character per ``ceil(length / BAR)`` clock units: ``|`` where the level fires."""
    per = -(-length // BAR) if length > BAR else 1
    marks = {(t - start) // per for t in ticks}
    return "".join("|" if i in marks else "." for i in range(-(-length // per)))


def _ticks_text(ticks: list[int]) -> str:
    if len(ticks) <= 6:
        return ", ".join(map(str, ticks)) or "none"
    return f"{', '.join(map(str, ticks[:4]))}, ..., {ticks[-1]} ({len(ticks)})"


def render(rows: list[dict], tokens: int, steps: int) -> str:
    """The timeline as text: one line per level, its clock, period, ticks and a bar."""
    name_width = max([len(r["level"]) for r in rows] + [5])
    lines = [f"{'level':<{name_width}}  clock   period  fires after                   timeline",
             f"{'':<{name_width}}  (tokens 0..{tokens - 1}, optimizer steps 1..{steps})"]
    for row in rows:
        start, length = (0, tokens) if row["clock"] == "tokens" else (1, steps)
        notes = []
        if row.get("teach"):
            notes.append("learns from the task loss")
        if row.get("reset_by"):
            notes.append(f"re-initialised from {row['reset_by']} when {row['reset_by']} fires")
        if row.get("trains"):
            notes.append(f"steps {', '.join(row['trains'])}")
        lines.append(f"{row['level']:<{name_width}}  {row['clock']:<6}  {row['period']:>6}  "
                     f"{_ticks_text(row['ticks']):<29} {_bar(row['ticks'], start, length)}"
                     + (f"  ({'; '.join(notes)})" if notes else ""))
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], tokens: int, steps: int, path: Path, title: str) -> Path:
    """Two panels (token clock, optimizer-step clock): a tick mark where each level fires."""
    from matplotlib.ticker import MaxNLocator  # lazy: keeps CLI startup free of matplotlib

    panels = [(clock, [r for r in rows if r["clock"] == clock]) for clock in ("tokens", "steps")]
    panels = [(c, rs) for c, rs in panels if rs]
    figure = new_figure(9, 1.2 + 0.45 * len(rows), layout="constrained")
    axes = figure.subplots(len(panels), 1, squeeze=False,
                           height_ratios=[len(rs) for _, rs in panels])[:, 0]
    for ax, (clock, level_rows) in zip(axes, panels):
        ax.eventplot([r["ticks"] for r in level_rows], lineoffsets=range(len(level_rows)),
                     linelengths=0.7, linewidths=1.0, colors="tab:blue")
        ax.set_yticks(range(len(level_rows)), [f"{r['level']} ({r['period']})" for r in level_rows])
        ax.set_xlim(-0.5, tokens - 0.5) if clock == "tokens" else ax.set_xlim(0.5, steps + 0.5)
        ax.set_ylim(-0.6, len(level_rows) - 0.4)
        ax.set_xlabel("token (0-based, from the start of the stream)" if clock == "tokens"
                      else "optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_title(title)
    return save_figure(figure, path)


def schedule(
    args: List[str] = typer.Argument(..., metavar="SPEC_OR_OVERRIDE",
                                     help="one spec file, then overrides: path=value or ~path"),
    tokens: int = typer.Option(256, "--tokens", min=1, max=1_000_000, help="tokens of the timeline"),
    steps: int = typer.Option(8, "--steps", min=1, max=100_000, help="optimizer steps of the timeline"),
    plot_path: Optional[Path] = typer.Option(None, "--plot", help="also write the timeline as a PNG here"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON instead of text"),
) -> None:
    """When each level fires: the token clock of in-context levels, the step clock of optimizer levels."""
    spec = load_or_exit(args)

    ir = resolve(spec)
    rows = UpdateSchedule.from_ir(ir).timeline(tokens, steps)
    if as_json:
        typer.echo(json.dumps({"spec": ir.name, "tokens": tokens, "steps": steps, "levels": rows}, indent=1))
    else:
        typer.echo(render(rows, tokens, steps), nl=False)
    if plot_path is not None:
        written = plot(rows, tokens, steps, plot_path, f"update schedule of {ir.name}")
        typer.echo(f"wrote {written}", err=as_json)
