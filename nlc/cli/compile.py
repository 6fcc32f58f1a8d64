"""``nlc compile SPEC [OVERRIDES] [--emit FILE] [--check]``: lower a spec to PyTorch.

``--emit`` writes the generated module (imports only torch and nlc.runtime);
``--check`` captures the model's ``run`` (one pass over a segment) with
``torch._dynamo.explain`` on a short batch and reports graph breaks (exit 1 on any). Without options it prints the
parameter count per level.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import NLCError
from ._common import load_or_exit


# The end of `nlc compile --help` (app.py passes it as the epilog): commands that run as written.
EPILOG = ("Examples:\n"
          "  nlc compile specs/hope.yaml\n"
          "  nlc compile specs/transformer.yaml --emit transformer.py\n"
          "  nlc compile specs/deltanet.yaml --check --tokens 32")


def compile_verb(
    args: List[str] = typer.Argument(..., metavar="SPEC_OR_OVERRIDE",
                                     help="one spec file, then overrides: path=value or ~path"),
    emit: Optional[Path] = typer.Option(None, "--emit", help="write the generated module to FILE"),
    check: bool = typer.Option(False, "--check", help="fullgraph capture; exit 1 on any graph break"),
    tokens: int = typer.Option(64, "--tokens", help="sequence length used by --check"),
) -> None:
    """Compile a spec into a PyTorch module (and optionally write its source)."""
    spec = load_or_exit(args)
    from ..compiler import compile_spec  # lazy: keeps CLI startup free of torch

    try:
        model = compile_spec(spec)
    except NLCError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(1) from None
    if emit is not None:
        emit.parent.mkdir(parents=True, exist_ok=True)
        emit.write_text(model.source, encoding="utf-8")
        typer.echo(f"wrote {emit}")
    if check:
        raise typer.Exit(_check(model, tokens))
    if emit is None:
        for level, count in sorted(model.parameter_counts().items()):
            typer.echo(f"{level or '(embedding, norms, head)'}: {count:,} parameters")


def _check(model, tokens: int) -> int:
    """Graph breaks of the forward under torch.compile's capture (0 = fullgraph)."""
    import torch  # lazy: keeps CLI startup free of torch
    import torch._dynamo

    torch._dynamo.reset()
    batch = torch.randint(0, model.vocab, (2, tokens))
    explanation = torch._dynamo.explain(model.run)(batch, model.init_state(2))
    breaks = explanation.graph_break_count
    typer.echo(f"{model.name}: {explanation.graph_count} graph(s), {breaks} graph break(s)")
    for reason in explanation.break_reasons:
        typer.echo(f"  break: {reason.reason}", err=True)
    return 1 if breaks else 0
