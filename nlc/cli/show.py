"""``nlc show SPEC [OVERRIDES] [--expand | --init-stats]``: the fully resolved spec (extends,
overrides, defaults); ``--expand`` also writes every optimizer preset out as its gradient
memories (:func:`nlc.spec.presets.expand`); ``--init-stats`` compiles the spec and prints each
level's output scale at initialisation (:mod:`nlc.runtime.init_scale`) instead, ending with
status 3 (non-finite) when a level starts outside the band."""
from __future__ import annotations

from typing import List

import typer

from ..spec import spec_to_yaml
from ..spec.optimizers import OptimizerLevel
from ..spec.presets import expand as written_out
from ..status import NON_FINITE
from ._common import load_or_exit


# The end of `nlc show --help` (app.py passes it as the epilog): commands that run as written.
EPILOG = ("Examples:\n"
          "  nlc show specs/hope.yaml\n"
          "  nlc show specs/transformer_m3.yaml --expand\n"
          "  nlc show specs/hope.yaml --init-stats")


def show(
    args: List[str] = typer.Argument(..., metavar="SPEC_OR_OVERRIDE",
                                     help="one spec file, then overrides: path=value or ~path"),
    expand: bool = typer.Option(False, "--expand", help="write optimizer presets out as gradient memories"),
    init_stats: bool = typer.Option(False, "--init-stats", help="print each level's output scale at "
                                    "initialisation (one batch of 2 random sequences of train.seq_len)"),
) -> None:
    """Print the resolved spec as YAML, every default filled in."""
    spec = load_or_exit(args)
    if init_stats:
        _print_init_stats(spec)
        return
    if expand:
        levels = {n: written_out(lv) if isinstance(lv, OptimizerLevel) else lv for n, lv in spec.levels.items()}
        spec = spec.model_copy(update={"levels": levels})
    typer.echo(spec_to_yaml(spec), nl=False)


def _print_init_stats(spec) -> None:
    """The :func:`~nlc.runtime.init_scale.init_scales` table of ``spec`` (seeded by train.seed)."""
    import torch  # lazy: keeps the spec-only uses of `nlc show` free of torch

    from ..compiler import compile_spec
    from ..runtime.init_scale import BAND, format_scales, init_scales

    torch.manual_seed(spec.train.seed)
    model = compile_spec(spec)
    scales, loss = init_scales(model, 2, spec.train.seq_len, seed=spec.train.seed)
    typer.echo(format_scales(scales, loss, model.embed.num_embeddings), nl=False)
    outside = [s.level for s in scales if not s.in_band]
    if outside:
        typer.echo(f"error: {len(outside)} level(s) start outside the gain band [{BAND[0]:g}, {BAND[1]:g}] or "
                   f"non-finite: {', '.join(dict.fromkeys(outside))}; lower their lr / init scale, or normalise "
                   "their keys", err=True)
        raise typer.Exit(NON_FINITE)
