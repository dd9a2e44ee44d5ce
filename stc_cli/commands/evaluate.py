"""`stc eval`: a model with STC on or off over a benchmark, into a resumable run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stc_cli.commands import fail
from stc_cli.commands import model_options as options
from stc_cli.configs import EvalConfig

_EVAL = EvalConfig()


@options.with_model_options
def eval_(
    bench: Annotated[
        str, typer.Option(metavar="NAME", help="ovo, streamingbench, mlvu, egoschema, videomme or demo.")
    ],
    model_options: dict | None = None,  # with_model_options puts every model option here
    data_dir: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Data directory (default: $STC_DATA_DIR, else ~/.cache/stc)."),
    ] = None,
    tasks: Annotated[
        list[str] | None,
        typer.Option(
            metavar="TASK[,TASK]", help="Only these tasks (repeat the option or separate by commas)."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(metavar="N", help="Only the first N queries.")] = _EVAL.limit,
    show_protocol: Annotated[
        bool,
        typer.Option(
            "--show-protocol", help="Print the resolved protocol with its upstream sources and exit."
        ),
    ] = False,
    schedule: Annotated[
        str | None,
        typer.Option(
            metavar="stream|clip|auto",
            help="stream (one pass per video), clip (one per query) or auto (stream where it can).",
        ),
    ] = _EVAL.schedule,
    output: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Run folder (default: runs/MODEL-BENCH-VARIANT, VARIANT one of stc, cacher, pruner, base).",
        ),
    ] = None,
    pruner_memory: Annotated[
        str,
        typer.Option(
            metavar="video|process",
            help="Pruner: video (memory starts afresh per video) or process (kept for the whole run, as "
            "released: order-dependent).",
        ),
    ] = _EVAL.pruner_memory,
    encode_chunk: Annotated[
        int,
        typer.Option(
            metavar="F",
            help="ReKV: frames per vision-tower call and prefill (throughput; changes the cacher's "
            "reference schedule and the pruner's memory to per chunk; docs/protocols.md).",
        ),
    ] = _EVAL.encode_chunk,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start the run folder afresh instead of resuming it.")
    ] = _EVAL.overwrite,
    max_consecutive_errors: Annotated[
        int, typer.Option(metavar="N", help="Stop the run after N failed samples in a row (0: never).")
    ] = _EVAL.max_consecutive_errors,
) -> None:
    """Run a model with STC on (default) or off over a benchmark; resumable, one record per query."""
    from stc_cli.benchmarks.base import MetadataError
    from stc_cli.evaluation.distributed import Shard
    from stc_cli.evaluation.evaluate import evaluate, plan, protocol_of
    from stc_cli.evaluation.runner import RunFailed
    from stc_cli.progress import EvalProgress

    config = EvalConfig(
        **model_options,
        bench=bench,
        data_dir=str(data_dir) if data_dir else None,
        tasks=tuple(t.strip() for given in tasks or [] for t in given.split(",") if t.strip()),
        limit=limit,
        schedule=schedule,
        output=str(output) if output else None,
        pruner_memory=pruner_memory,
        encode_chunk=encode_chunk,
        overwrite=overwrite,
        max_consecutive_errors=max_consecutive_errors,
    )
    if show_protocol:
        _show(config, protocol_of)
        return
    try:
        shard = Shard.from_env()
        the_plan = plan(config)
        for note in the_plan.notes if shard.rank == 0 else ():
            typer.echo(f"note: {note}", err=True)
        with EvalProgress() as progress:
            summary = evaluate(config, the_plan, progress=progress, on_start=progress.start, shard=shard)
    except (ValueError, MetadataError, TimeoutError, OSError) as error:
        fail(str(error))
    except RunFailed as error:
        fail(str(error), code=1)
    except RuntimeError as error:  # per-sample failures are recorded by the runner; this is model loading
        if "out of memory" not in str(error):
            raise
        fail(f"out of memory while loading the model ({error}); try --dtype float16 or a smaller checkpoint")
    except KeyboardInterrupt:
        fail("interrupted; run the same command again to continue where it stopped", code=130)
    _report(summary, shard)


def _report(summary, shard) -> None:
    """The run's summary (rank 0; the other ranks say what their shard wrote), and exit 1 if every sample
    this launch wrote failed."""
    retried = f" ({summary.n_retried} of them retried)" if summary.n_retried else ""
    failed = f", {summary.n_errors} failed (see their error field)" if summary.n_errors else ""
    counts = f"{summary.n_written} samples written{retried}, {summary.n_skipped} already there{failed}"
    if shard.rank == 0:
        typer.echo(f"{counts}: {summary.output / 'samples.jsonl'}")
        typer.echo(f"score it: stc score {summary.output}")
    else:
        typer.echo(
            f"rank {shard.rank} of {shard.world}: {counts} ({shard.samples(summary.output)})", err=True
        )
    if summary.n_written and summary.n_errors == summary.n_written:
        fail(f"every sample failed; the first: {summary.first_error}", code=1)


def _show(config: EvalConfig, protocol_of) -> None:
    """``--show-protocol``: the resolved settings, each beside the upstream source it reproduces."""
    from rich.console import Console

    from stc_cli import protocols, tables

    try:
        protocol = protocol_of(config)
    except ValueError as error:
        fail(str(error))
    others = [p.name for p in protocols.available(config.model, config.bench) if p.name != protocol.name]
    Console().print(tables.protocol_table(protocol, others))
