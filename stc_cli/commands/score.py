"""`stc score`: official or robust numbers, one run or several side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stc_cli import tables
from stc_cli.commands import fail


def score(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH...",
            help="samples.jsonl, its run folder, or upstream result file(s); several side by side.",
        ),
    ],
    bench: Annotated[
        str | None, typer.Option(metavar="NAME", help="Benchmark, when it cannot be told from the content.")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            metavar="official|robust|stc",
            help="official (the benchmark's own scorer) or robust. Default: robust for samples.jsonl, "
            "official for upstream files.",
        ),
    ] = None,
    response_key: Annotated[
        str | None, typer.Option(metavar="KEY", help="StreamingBench: the key holding the model's answers.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (a list for several paths).")] = False,
) -> None:
    """Score results with the official rules or the robust extractor, per task and category; with
    several runs, their accuracy and timings side by side."""
    from rich.console import Console

    from stc_cli import benchmarks
    from stc_cli.scoring import Submission, finite, read_results, run_status, score_records
    from stc_cli.timings import summarize

    if bench is not None:
        try:
            benchmarks.get(bench)  # before reading any file: the same error and exit code as stc eval's
        except ValueError as error:
            fail(str(error))
    reports, timings, runs = [], [], []
    side_by_side = len(paths) > 1
    for path in paths:
        try:
            name, records, source, notes = read_results(path, bench, response_key)
            result = score_records(path, name, records, source, mode, notes)
        except ValueError as error:
            fail(str(error))
        if isinstance(result, Submission):
            counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
            typer.echo(
                f"EgoSchema full set: answers are hidden, so no score. Wrote {result.path} ({counts})."
            )
            typer.echo(result.help)
            continue
        reports.append(result)
        timings.append(summarize(records))
        if side_by_side:  # reads the benchmark's metadata to count its queries: only where it is shown
            runs.append(run_status(path, records))
    if not reports:
        return
    if as_json:
        pairs = zip(reports, timings, strict=True)
        rows = [{**report.to_json(), "timings": t.to_json() if t else None} for report, t in pairs]
        if side_by_side:
            rows = [{**row, "run": run} for row, run in zip(rows, runs, strict=True)]
        typer.echo(json.dumps(finite(rows[0] if len(paths) == 1 else rows), indent=2, allow_nan=False))
        return
    if len(reports) == 1:
        Console().print(tables.score_table(reports[0]))
    else:
        Console().print(tables.compare_table([_run_name(p) for p in paths], reports, timings, runs=runs))
    if len(reports) == 1 and timings[0]:
        Console().print(tables.compare_table([_run_name(paths[0])], reports, timings, accuracy=False))
    for note in dict.fromkeys(note for report in reports for note in report.notes):
        typer.echo(f"note: {note}")


def _run_name(path: Path) -> str:
    return path.parent.name if path.name == "samples.jsonl" else path.name
