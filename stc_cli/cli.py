"""The `stc` command: parses options, calls the library, prints with rich. Nothing else.

Heavy imports (torch, transformers) happen inside the commands, so `stc --help` starts fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from stc_cli import __version__
from stc_cli.commands import bench, check, compare, download, evaluate, score, stream

app = typer.Typer(
    help="Evaluate streaming video LLMs with STC token compression (STC-Cacher + STC-Pruner).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode=None,  # click's help: never cut at the terminal's width (rich's table truncates)
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stc {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Evaluate streaming video LLMs with STC token compression."""


app.command()(bench.bench)
app.command("eval")(evaluate.eval_)
app.command()(download.download)
app.command()(check.check)
app.command()(score.score)
app.command()(compare.compare)
app.command()(stream.stream)
