"""The ``nlc`` typer app: one verb per module, imported here, their heavy imports deferred."""
from __future__ import annotations

import typer

from . import compile as compile_cmd, cp, graph, ls, schema, show, validate
from . import search as search_cmd
from .data import data_app
from .train import train_verb
from .generate import generate_verb
from .eval import eval_verb
from .continual import continual_verb
from .bench import bench_app

app = typer.Typer(
    name="nlc",
    help="Nested Learning Compiler: YAML specs of nested optimization levels -> PyTorch.",
    no_args_is_help=True,
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="print the nlc version and exit", is_eager=True),
) -> None:
    """Nested Learning Compiler: YAML specs of nested optimization levels -> PyTorch."""
    if version:
        from .. import __version__

        typer.echo(f"nlc {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


app.command("validate")(validate.validate)
app.command("show")(show.show)
app.command("graph")(graph.graph)
app.command("schema")(schema.schema)
app.command("ls")(ls.ls)
app.command("cp")(cp.cp)
app.command("compile")(compile_cmd.compile_verb)
app.add_typer(search_cmd.app, name="search")
app.add_typer(data_app, name="data")
app.command("train")(train_verb)
app.command("generate")(generate_verb)
app.command("eval")(eval_verb)
app.command("continual")(continual_verb)
app.add_typer(bench_app, name="bench")


def main() -> None:
    """Console entry point (``nlc`` / ``python -m nlc``)."""
    app(prog_name="nlc")
