"""`stc check`: is a benchmark's data directory complete?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stc_cli import tables
from stc_cli.commands import fail


def check(
    bench: Annotated[
        str,
        typer.Option(
            metavar="NAME", help="Benchmark: ovo, streamingbench, mlvu, egoschema, videomme or demo."
        ),
    ],
    data_dir: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Data directory (default: $STC_DATA_DIR, else ~/.cache/stc)."),
    ] = None,
    metadata_only: Annotated[
        bool, typer.Option("--metadata-only", help="Check the metadata only, not the videos.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Validate a benchmark's data directory: metadata, per-task counts, missing or broken videos.

    Exit 0 when complete, 1 when something is missing, 2 when the metadata cannot be read.
    """
    from rich.console import Console
    from rich.progress import Progress

    from stc_cli.datasets.check import check as run_check
    from stc_cli.datasets.datadir import resolve_data_dir

    try:
        console = Console(stderr=True)
        with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("opening videos", total=None)
            report = run_check(
                bench,
                resolve_data_dir(data_dir),
                metadata_only,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except ValueError as error:  # MetadataError is a ValueError; so is an unknown benchmark
        fail(str(error))
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        Console().print(tables.check_table(report))
        typer.echo(report.summary())
    raise typer.Exit(0 if report.complete else 1)
