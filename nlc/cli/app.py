"""The ``nlc`` typer app: one verb per module, imported here, their heavy imports deferred.

The root callback takes the options every verb shares: the :mod:`nlc.limits` on untrusted
input. Exit statuses follow :mod:`nlc.status` (typer itself gives 2 for a wrong
command line and 130 for Ctrl-C).
"""
from __future__ import annotations

from typing import Optional

import typer

from .. import __version__, limits
from ..subnormals import flush_subnormals
from . import compile as compile_cmd, cp, graph, ls, schema, show, validate
from . import schedule as schedule_cmd
from . import search as search_cmd
from .data import data_app
from . import train as train_cmd, generate as generate_cmd, eval as eval_cmd, continual as continual_cmd
from .bench import bench_app
from . import export as export_cmd
from . import deploy as deploy_cmd
from .runs import runs_app

app = typer.Typer(
    name="nlc",
    help="Nested Learning Compiler: YAML specs of nested optimization levels -> PyTorch.",
    no_args_is_help=True,
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# the verbs that run models: they flush subnormal floats to zero (nlc.subnormals)
MODEL_VERBS = frozenset({"train", "generate", "eval", "continual", "deploy", "search", "bench", "export"})


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="print the nlc version and exit", is_eager=True),
    max_spec_bytes: Optional[int] = typer.Option(
        None, "--max-spec-bytes", metavar="N", min=1,
        help="largest spec file (or meta.json spec) read, in bytes (default 4 MiB); the YAML node limit "
             "grows in proportion"),
    max_model_bytes: Optional[int] = typer.Option(
        None, "--max-model-bytes", metavar="N", min=1,
        help="largest estimated fp32 size of a model plus its in-context state for one batch (default 8 GiB)"),
) -> None:
    """Nested Learning Compiler: YAML specs of nested optimization levels -> PyTorch."""
    set_input_limits(max_spec_bytes, max_model_bytes)
    if version:
        typer.echo(f"nlc {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
    elif ctx.invoked_subcommand in MODEL_VERBS:  # before torch's thread pool exists (nlc.subnormals)
        flush_subnormals()


def set_input_limits(spec_bytes: int | None, model_bytes: int | None) -> None:
    """Apply ``--max-spec-bytes`` / ``--max-model-bytes`` (:func:`nlc.limits.set_limits`).
    The node limit of a YAML document scales with the byte limit (default: 100,000 nodes
    per 4 MiB), so a larger file that is legitimately larger is not refused for its nodes."""
    changes = {}
    if spec_bytes is not None:
        default = limits.Limits()
        changes["spec_bytes"] = spec_bytes
        changes["yaml_nodes"] = max(default.yaml_nodes, default.yaml_nodes * spec_bytes // default.spec_bytes)
    if model_bytes is not None:
        changes["model_bytes"] = model_bytes
    if changes:
        limits.set_limits(**changes)


app.command("validate", epilog=validate.EPILOG)(validate.validate)
app.command("show", epilog=show.EPILOG)(show.show)
app.command("graph", epilog=graph.EPILOG)(graph.graph)
app.command("schedule", epilog=schedule_cmd.EPILOG)(schedule_cmd.schedule)
app.command("schema", epilog=schema.EPILOG)(schema.schema)
app.command("ls")(ls.ls)  # examples in the docstrings of ls and cp
app.command("cp")(cp.cp)
app.command("compile", epilog=compile_cmd.EPILOG)(compile_cmd.compile_verb)
app.add_typer(search_cmd.app, name="search")
app.add_typer(data_app, name="data")
app.command("train", epilog=train_cmd.EPILOG)(train_cmd.train_verb)
app.command("generate", epilog=generate_cmd.EPILOG)(generate_cmd.generate_verb)
app.command("eval", epilog=eval_cmd.EPILOG)(eval_cmd.eval_verb)
app.command("continual", epilog=continual_cmd.EPILOG)(continual_cmd.continual_verb)
app.command("deploy", epilog=deploy_cmd.EPILOG)(deploy_cmd.deploy_verb)
app.add_typer(bench_app, name="bench")
app.add_typer(runs_app, name="runs")
app.command("export", epilog=export_cmd.EPILOG)(export_cmd.export_verb)


def main() -> None:
    """Console entry point (``nlc`` / ``python -m nlc``)."""
    app(prog_name="nlc")
