"""`stc eval`: a model with STC on or off over a benchmark, into a resumable run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stc_cli.commands import fail
from stc_cli.configs import EvalConfig

_EVAL = EvalConfig()


def eval_(
    bench: Annotated[str, typer.Option(help="ovo, streamingbench, mlvu, egoschema, videomme or demo.")],
    model: Annotated[
        str, typer.Option(help="Base system: rekv (LLaVA-OneVision) or livecc (Qwen2-VL).")
    ] = _EVAL.model,
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
    protocol: Annotated[
        str | None,
        typer.Option(
            help="Named evaluation protocol (default: the one that reproduces the published numbers; "
            "--show-protocol lists them)."
        ),
    ] = _EVAL.protocol,
    show_protocol: Annotated[
        bool, typer.Option(help="Print the resolved protocol with its upstream sources and exit.")
    ] = False,
    fps: Annotated[
        float | None, typer.Option(help="Frames per second read from the videos (default: the protocol's).")
    ] = _EVAL.fps,
    schedule: Annotated[
        str | None,
        typer.Option(help="stream (one pass per video), clip (one per query) or auto (stream where it can)."),
    ] = _EVAL.schedule,
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
    pruner_memory: Annotated[
        str,
        typer.Option(
            help="Pruner: video (memory starts afresh per video) or process (kept for the whole run, as "
            "released: order-dependent)."
        ),
    ] = _EVAL.pruner_memory,
    n_local: Annotated[int, typer.Option(help="ReKV: sliding-window length in tokens.")] = _EVAL.n_local,
    topk: Annotated[int, typer.Option(help="ReKV: frames retrieved per question.")] = _EVAL.topk,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Longest answer in tokens (default: the protocol's).")
    ] = _EVAL.max_new_tokens,
    answer_mode: Annotated[
        str | None, typer.Option(help="livecc: generate, or logits (the candidate with the largest logit).")
    ] = _EVAL.answer_mode,
    max_cache_tokens: Annotated[
        int | None,
        typer.Option(help="livecc: bound the KV cache, evicting the oldest chunks (upstream: unbounded)."),
    ] = _EVAL.max_cache_tokens,
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
    from stc_cli.evaluate import evaluate, plan, protocol_of
    from stc_cli.progress import EvalProgress

    config = EvalConfig(
        model=model,
        bench=bench,
        model_path=model_path,
        data_dir=str(data_dir) if data_dir else None,
        tasks=tuple(t.strip() for given in tasks or [] for t in given.split(",") if t.strip()),
        limit=limit,
        protocol=protocol,
        fps=fps,
        schedule=schedule,
        output=str(output) if output else None,
        stc=stc,
        cacher=cacher,
        pruner=pruner,
        update_ratio=update_ratio,
        cache_interval=cache_interval,
        tokens_per_frame=tokens_per_frame,
        pruner_memory=pruner_memory,
        n_local=n_local,
        topk=topk,
        max_new_tokens=max_new_tokens,
        answer_mode=answer_mode,
        max_cache_tokens=max_cache_tokens,
        device=device,
        dtype=dtype,
        overwrite=overwrite,
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
    except RuntimeError as error:  # per-sample failures are recorded by the runner; this is model loading
        if "out of memory" not in str(error):
            raise
        fail(f"out of memory while loading the model ({error}); try --dtype float16 or a smaller checkpoint")
    except KeyboardInterrupt:
        fail("interrupted; run the same command again to continue where it stopped", code=130)
    failed = f", {summary.n_errors} failed (see their error field)" if summary.n_errors else ""
    typer.echo(
        f"{summary.n_written} samples written, {summary.n_skipped} already there{failed}: "
        f"{summary.output / 'samples.jsonl'}"
    )
    typer.echo(f"score it: stc score {summary.output}")


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
