"""`stc compare`: runs of one benchmark and protocol against a BASE run, as the paper's table and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stc_cli.commands import fail


def compare(
    base: Annotated[
        Path, typer.Argument(metavar="BASE", help="The run folder the others are measured against.")
    ],
    runs: Annotated[
        list[Path], typer.Argument(metavar="RUN...", help="Run folders (or their samples.jsonl) to compare.")
    ],
    out: Annotated[
        Path, typer.Option(metavar="DIR", help="Folder for compare.md, compare.json and compare.png.")
    ],
    mode: Annotated[
        str | None,
        typer.Option(metavar="official|robust|stc", help="Scoring, as for stc score. Default: robust."),
    ] = None,
) -> None:
    """Accuracy per category, retention, and ViT and prefill ms per frame against BASE: writes
    DIR/compare.md (the paper's layout), DIR/compare.json and DIR/compare.png. Runs that are incomplete
    or have errors are marked."""
    from stc_cli.compare import compare_runs, markdown, write

    try:
        result = compare_runs(base, runs, mode)
    except ValueError as error:
        fail(str(error))
    try:
        written = write(result, out)
    except OSError as error:
        fail(f"{out}: cannot write there ({error.strerror or error})")
    typer.echo(markdown(result))
    typer.echo(f"wrote {', '.join(map(str, written))}")
