"""The `stc` command: parses options, calls the library, prints with rich. Nothing else.

Heavy imports (torch, transformers) happen inside the commands, so `stc --help` starts fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stc_cli import __version__, tables
from stc_cli.configs import BenchConfig, EvalConfig

app = typer.Typer(
    help="Evaluate streaming video LLMs with STC token compression (STC-Cacher + STC-Pruner).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
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


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


_BENCH = BenchConfig()


@app.command()
def bench(
    vision: Annotated[
        str, typer.Option(help="Vision tower preset: siglip-so400m-384 or tiny.")
    ] = _BENCH.vision,
    llm: Annotated[str, typer.Option(help="LLM width preset: qwen2-7b, qwen2-0.5b or tiny.")] = _BENCH.llm,
    layers: Annotated[
        int | None, typer.Option(help="Cut both models to N layers. Default: full depth on CUDA, 2 on CPU.")
    ] = _BENCH.layers,
    llm_layers: Annotated[
        int | None, typer.Option(help="Cut the LLM to N layers instead (default: --layers).")
    ] = _BENCH.llm_layers,
    frames: Annotated[int, typer.Option(help="Timed frames per pass (even).")] = _BENCH.frames,
    warmup: Annotated[int, typer.Option(help="Untimed frames at the start of each pass.")] = _BENCH.warmup,
    repeats: Annotated[
        int, typer.Option(help="Passes per setting; the median is reported.")
    ] = _BENCH.repeats,
    update_ratio: Annotated[
        float, typer.Option(help="Cacher: share of tokens recomputed per layer.")
    ] = _BENCH.update_ratio,
    interval: Annotated[
        int, typer.Option(help="Cacher: a reference chunk every N chunks.")
    ] = _BENCH.interval,
    tokens_per_frame: Annotated[
        int, typer.Option(help="Pruner: tokens kept per frame.")
    ] = _BENCH.tokens_per_frame,
    memory_window: Annotated[
        int, typer.Option(help="Pruner memory window for the state check.")
    ] = _BENCH.memory_window,
    state_frames: Annotated[
        int, typer.Option(help="Chunks streamed for the state check (0 skips it).")
    ] = _BENCH.state_frames,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = _BENCH.device,
    dtype: Annotated[
        str, typer.Option(help="auto (float16 on CUDA, float32 on CPU), float32, float16 or bfloat16.")
    ] = _BENCH.dtype,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of the table.")
    ] = False,
) -> None:
    """Latency of STC on random-weight models at real sizes: STC on vs off, side by side, in one run."""
    from rich.console import Console

    from stc_cli.bench import run_bench

    config = BenchConfig(
        vision=vision,
        llm=llm,
        layers=layers,
        llm_layers=llm_layers,
        frames=frames,
        warmup=warmup,
        repeats=repeats,
        update_ratio=update_ratio,
        interval=interval,
        tokens_per_frame=tokens_per_frame,
        memory_window=memory_window,
        state_frames=state_frames,
        device=device,
        dtype=dtype,
    )
    console = Console(stderr=True)
    try:
        with console.status("stc bench") as status:
            result = run_bench(config, progress=lambda msg: status.update(f"stc bench: {msg}"))
    except ValueError as error:
        _fail(str(error))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        Console().print(tables.bench_table(result))


_EVAL = EvalConfig()


@app.command("eval")
def eval_(
    bench: Annotated[str, typer.Option(help="ovo, streamingbench, mlvu, egoschema, videomme or demo.")],
    model: Annotated[str, typer.Option(help="Base system: rekv.")] = _EVAL.model,
    model_path: Annotated[
        str | None,
        typer.Option(help="Hub id, checkpoint folder, or random:tiny / random:full (random weights)."),
    ] = _EVAL.model_path,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default: $STC_DATA_DIR, else ~/.cache/stc).")
    ] = None,
    tasks: Annotated[
        list[str] | None, typer.Option(help="Only these tasks (repeat the option or separate by commas).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N queries.")] = _EVAL.limit,
    fps: Annotated[float, typer.Option(help="Frames per second read from the videos.")] = _EVAL.fps,
    protocol: Annotated[
        str,
        typer.Option(help="stream (one pass per video), clip (one per query) or auto (stream where it can)."),
    ] = _EVAL.protocol,
    output: Annotated[
        Path | None, typer.Option(help="Run folder (default: runs/<model>-<bench>-<stc|cacher|pruner|base>).")
    ] = None,
    stc: Annotated[bool, typer.Option(help="STC on (default) or off (--no-stc, the baseline).")] = _EVAL.stc,
    cacher: Annotated[bool, typer.Option(help="STC-Cacher in the vision encoder.")] = _EVAL.cacher,
    pruner: Annotated[bool, typer.Option(help="STC-Pruner before the LLM prefill.")] = _EVAL.pruner,
    update_ratio: Annotated[
        float, typer.Option(help="Cacher: share of tokens recomputed per layer.")
    ] = _EVAL.update_ratio,
    cache_interval: Annotated[
        int, typer.Option(help="Cacher: a reference frame every N frames.")
    ] = _EVAL.cache_interval,
    tokens_per_frame: Annotated[
        int | None, typer.Option(help="Pruner: tokens kept per frame (default: 60 of 196, or that share).")
    ] = _EVAL.tokens_per_frame,
    n_local: Annotated[int, typer.Option(help="ReKV: sliding-window length in tokens.")] = _EVAL.n_local,
    topk: Annotated[int, typer.Option(help="ReKV: frames retrieved per question.")] = _EVAL.topk,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = _EVAL.max_new_tokens,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = _EVAL.device,
    dtype: Annotated[
        str, typer.Option(help="auto (float16 on CUDA, float32 on CPU), float32, float16 or bfloat16.")
    ] = _EVAL.dtype,
    overwrite: Annotated[
        bool, typer.Option(help="Start the run folder afresh instead of resuming it.")
    ] = _EVAL.overwrite,
) -> None:
    """Run a model with STC on (default) or off over a benchmark; resumable, one record per query."""
    from stc_cli.benchmarks.base import MetadataError
    from stc_cli.distributed import Shard
    from stc_cli.evaluate import evaluate, plan
    from stc_cli.progress import EvalProgress
    from stc_cli.runner import finished_ids

    config = EvalConfig(
        model=model,
        bench=bench,
        model_path=model_path,
        data_dir=str(data_dir) if data_dir else None,
        tasks=tuple(t.strip() for given in tasks or [] for t in given.split(",") if t.strip()),
        limit=limit,
        fps=fps,
        protocol=protocol,
        output=str(output) if output else None,
        stc=stc,
        cacher=cacher,
        pruner=pruner,
        update_ratio=update_ratio,
        cache_interval=cache_interval,
        tokens_per_frame=tokens_per_frame,
        n_local=n_local,
        topk=topk,
        max_new_tokens=max_new_tokens,
        device=device,
        dtype=dtype,
        overwrite=overwrite,
    )
    try:
        shard = Shard.from_env()
        the_plan = plan(config)
        if the_plan.note and shard.rank == 0:
            typer.echo(the_plan.note, err=True)
        done = set() if overwrite else finished_ids(shard.samples(the_plan.output))
        total = len(the_plan.queries) - len(done) if shard.world == 1 else None
        with EvalProgress(total) as progress:
            summary = evaluate(config, progress=progress, shard=shard)
    except (ValueError, MetadataError) as error:
        _fail(str(error))
    except KeyboardInterrupt:
        _fail("interrupted; run the same command again to continue where it stopped", code=130)
    failed = f", {summary.n_errors} failed (see their error field)" if summary.n_errors else ""
    typer.echo(
        f"{summary.n_written} samples written, {summary.n_skipped} already there{failed}: "
        f"{summary.output / 'samples.jsonl'}"
    )
    typer.echo(f"score it: stc score {summary.output}")


@app.command()
def download(
    benches: Annotated[
        list[str], typer.Argument(help="Benchmarks: ovo, streamingbench, mlvu, egoschema, videomme, demo.")
    ],
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default: $STC_DATA_DIR, else ~/.cache/stc).")
    ] = None,
    videos: Annotated[bool, typer.Option(help="Fetch the videos too, not only the metadata.")] = True,
    ovo_videos: Annotated[
        str,
        typer.Option(help="OVO-Bench: src (source videos, ~44 GB), chunked (pre-cut clips, ~144 GB), both."),
    ] = "src",
    revision: Annotated[str | None, typer.Option(help="Dataset revision (branch, tag or commit).")] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Hub token for gated datasets (default: $HF_TOKEN, else your hub login)."),
    ] = None,
    endpoint: Annotated[str | None, typer.Option(help="Hub endpoint, e.g. a mirror.")] = None,
    github_url: Annotated[
        str | None,
        typer.Option(help="Base URL for files published on GitHub (https://raw.githubusercontent.com)."),
    ] = None,
    keep_archives: Annotated[bool, typer.Option(help="Keep the archives after unpacking them.")] = False,
    dry_run: Annotated[
        bool, typer.Option(help="List what would be fetched, and its size; fetch nothing.")
    ] = False,
) -> None:
    """Bring benchmarks into the data directory, in the layout `stc check` and `stc eval` read.

    Resumable: running the same command again continues where it stopped, and is a no-op once complete.
    """
    from stc_cli import archives, hub
    from stc_cli.datadir import resolve_data_dir
    from stc_cli.download import DownloadError, fetch, install_demo, plan

    root = resolve_data_dir(data_dir)
    try:
        token = hub.resolve_token(token)
        for bench in benches:
            if bench == "demo":
                typer.echo(f"demo: copied from the stc package into {install_demo(root)}")
                continue
            todo = plan(
                bench,
                root,
                videos=videos,
                ovo_videos=ovo_videos,
                revision=revision,
                token=token,
                endpoint=endpoint,
            )
            if todo.note:
                typer.echo(f"{bench}: note: {todo.note}")
            if todo.complete:
                typer.echo(
                    f"{bench}: complete in {todo.folder} ({todo.repo_id}@{todo.revision[:8]}); nothing to do"
                )
                continue
            typer.echo(todo.summary())
            if dry_run:
                for item in todo.pending:
                    typer.echo(f"  {item.source.kind:9} {item.size / 1e6:10.1f} MB  {', '.join(item.paths)}")
                continue
            # One line per item; huggingface_hub draws each file's own progress bar under it.
            fetch(
                todo,
                token=token,
                endpoint=endpoint,
                keep_archives=keep_archives,
                github_url=github_url,
                progress=typer.echo,
            )
            typer.echo(f"{bench}: complete in {todo.folder}")
    except (DownloadError, hub.HubError, archives.ArchiveError) as error:
        _fail(str(error), code=1)


@app.command()
def check(
    bench: Annotated[
        str, typer.Option(help="Benchmark: ovo, streamingbench, mlvu, egoschema, videomme or demo.")
    ],
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default: $STC_DATA_DIR, else ~/.cache/stc).")
    ] = None,
    metadata_only: Annotated[bool, typer.Option(help="Check the metadata only, not the videos.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Validate a benchmark's data directory: metadata, per-task counts, missing or broken videos.

    Exit 0 when complete, 1 when something is missing, 2 when the metadata cannot be read.
    """
    from rich.console import Console
    from rich.progress import Progress

    from stc_cli.check import check as run_check
    from stc_cli.datadir import resolve_data_dir

    try:
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("opening videos", total=None)
            report = run_check(
                bench,
                resolve_data_dir(data_dir),
                metadata_only,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except ValueError as error:  # MetadataError is a ValueError; so is an unknown benchmark
        _fail(str(error))
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        Console().print(tables.check_table(report))
        typer.echo(report.summary())
    raise typer.Exit(0 if report.complete else 1)


@app.command()
def score(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="samples.jsonl, its run folder, or upstream result file(s); several side by side."
        ),
    ],
    bench: Annotated[
        str | None, typer.Option(help="Benchmark, when it cannot be told from the content.")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            help="official (the benchmark's own scorer) or robust. Default: robust for samples.jsonl, "
            "official for upstream files."
        ),
    ] = None,
    response_key: Annotated[
        str | None, typer.Option(help="StreamingBench: the key holding the model's answers.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (a list for several paths).")] = False,
) -> None:
    """Score results with the official rules or the robust extractor, per task and category; with
    several runs, their accuracy and timings side by side."""
    from rich.console import Console

    from stc_cli.scoring import Submission, read_results, score_results
    from stc_cli.timings import summarize

    reports, timings = [], []
    for path in paths:
        try:
            result = score_results(path, bench, mode, response_key)
            _bench, records, _source = read_results(path, bench, response_key)
        except ValueError as error:
            _fail(str(error))
        if isinstance(result, Submission):
            counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
            typer.echo(
                f"EgoSchema full set: answers are hidden, so no score. Wrote {result.path} ({counts})."
            )
            typer.echo(result.help)
            continue
        reports.append(result)
        timings.append(summarize(records))
    if not reports:
        return
    if as_json:
        pairs = zip(reports, timings, strict=True)
        rows = [{**report.to_json(), "timings": t.to_json() if t else None} for report, t in pairs]
        typer.echo(json.dumps(rows[0] if len(paths) == 1 else rows, indent=2))
        return
    if len(reports) == 1:
        Console().print(tables.score_table(reports[0]))
    else:
        Console().print(tables.compare_table([_run_name(p) for p in paths], reports, timings))
    if len(reports) == 1 and timings[0]:
        Console().print(tables.compare_table([_run_name(paths[0])], reports, timings, accuracy=False))
    for report in reports:
        for note in report.notes:
            typer.echo(f"note: {note}")


def _run_name(path: Path) -> str:
    return path.parent.name if path.name == "samples.jsonl" else path.name
