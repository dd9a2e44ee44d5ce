"""`stc eval`: a model with STC on or off over a benchmark, into a resumable run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stc_cli.commands import fail
from stc_cli.configs import EvalConfig

_EVAL = EvalConfig()


def eval_(
    bench: Annotated[
        str, typer.Option(metavar="NAME", help="ovo, streamingbench, mlvu, egoschema, videomme or demo.")
    ],
    model: Annotated[
        str,
        typer.Option(
            metavar="NAME",
            help="Base system: rekv (LLaVA-OneVision), livecc (Qwen2-VL) or streamforest (StreamForest).",
        ),
    ] = _EVAL.model,
    model_path: Annotated[
        str | None,
        typer.Option(
            metavar="ID|DIR",
            help="Hub id, checkpoint folder, or random:tiny / random:full (random weights). Default: the "
            "model's released checkpoint, llava-hf/llava-onevision-qwen2-7b-ov-hf (rekv), "
            "chenjoya/LiveCC-7B-Instruct (livecc) or MCG-NJU/StreamForest-Qwen2-7B (streamforest).",
        ),
    ] = _EVAL.model_path,
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
    protocol: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Named evaluation protocol (default: the one that reproduces the published numbers; "
            "--show-protocol lists them).",
        ),
    ] = _EVAL.protocol,
    show_protocol: Annotated[
        bool,
        typer.Option(
            "--show-protocol", help="Print the resolved protocol with its upstream sources and exit."
        ),
    ] = False,
    fps: Annotated[
        float | None,
        typer.Option(metavar="FPS", help="Frames per second read from the videos (default: the protocol's)."),
    ] = _EVAL.fps,
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
    compress: Annotated[
        str,
        typer.Option(
            metavar="stc|none|tome|vidcom2|visionzip|dtd|lastn",
            help="stc (the parts --cacher and --pruner say), none (as --no-stc), or a baseline at STC's "
            "budget: tome (ToMe in the vision tower, unmerged at its output), vidcom2, visionzip or dtd "
            "(in the pruner's place, keeping --tokens-per-frame; dtd: or by --dtd-threshold), lastn "
            "(every token, but answers see only the last --last-frames frames). docs/protocols.md.",
        ),
    ] = _EVAL.compress,
    last_frames: Annotated[
        int, typer.Option(metavar="N", help="--compress lastn: the frames an answer sees.")
    ] = _EVAL.last_frames,
    dtd_threshold: Annotated[
        float | None,
        typer.Option(
            metavar="COS",
            help="--compress dtd: drop tokens whose cosine to the previous frame is above COS "
            "(TimeChat-Online's default: 0.5); unset: keep --tokens-per-frame per frame.",
        ),
    ] = _EVAL.dtd_threshold,
    tome_r: Annotated[
        int | None,
        typer.Option(
            metavar="R",
            help="--compress tome: tokens merged in every layer (default: a schedule that leaves STC's "
            "share of the patches, 223 of 729 for 60 of 196).",
        ),
    ] = _EVAL.tome_r,
    stc: Annotated[bool, typer.Option(help="STC on (default) or off (--no-stc, the baseline).")] = _EVAL.stc,
    cacher: Annotated[bool, typer.Option(help="STC-Cacher in the vision encoder.")] = _EVAL.cacher,
    pruner: Annotated[bool, typer.Option(help="STC-Pruner before the LLM prefill.")] = _EVAL.pruner,
    update_ratio: Annotated[
        float, typer.Option(metavar="R", help="Cacher: share of tokens recomputed per layer.")
    ] = _EVAL.update_ratio,
    cache_interval: Annotated[
        int, typer.Option(metavar="N", help="Cacher: a reference frame every N frames.")
    ] = _EVAL.cache_interval,
    tokens_per_frame: Annotated[
        int | None,
        typer.Option(metavar="K", help="Pruner: tokens kept per frame (default: 60 of 196, or that share)."),
    ] = _EVAL.tokens_per_frame,
    pruner_memory: Annotated[
        str,
        typer.Option(
            metavar="video|process",
            help="Pruner: video (memory starts afresh per video) or process (kept for the whole run, as "
            "released: order-dependent).",
        ),
    ] = _EVAL.pruner_memory,
    n_local: Annotated[
        int, typer.Option(metavar="TOKENS", help="ReKV: sliding-window length in tokens.")
    ] = _EVAL.n_local,
    topk: Annotated[int, typer.Option(metavar="N", help="ReKV: frames retrieved per question.")] = _EVAL.topk,
    encode_chunk: Annotated[
        int,
        typer.Option(
            metavar="F",
            help="ReKV: frames per vision-tower call and prefill (throughput; changes the cacher's "
            "reference schedule and the pruner's memory to per chunk; docs/protocols.md).",
        ),
    ] = _EVAL.encode_chunk,
    max_new_tokens: Annotated[
        int | None, typer.Option(metavar="N", help="Longest answer in tokens (default: the protocol's).")
    ] = _EVAL.max_new_tokens,
    answer_mode: Annotated[
        str | None,
        typer.Option(
            metavar="generate|logits",
            help="livecc: generate, or logits (the candidate with the largest logit).",
        ),
    ] = _EVAL.answer_mode,
    max_cache_tokens: Annotated[
        int | None,
        typer.Option(
            metavar="TOKENS",
            help="livecc: bound the KV cache, evicting the oldest chunks (upstream: unbounded).",
        ),
    ] = _EVAL.max_cache_tokens,
    device: Annotated[
        str, typer.Option(metavar="auto|cpu|cuda[:N]", help="auto, cpu, cuda or cuda:N.")
    ] = _EVAL.device,
    dtype: Annotated[
        str,
        typer.Option(
            metavar="auto|float32|float16|bfloat16",
            help="auto (float16 on CUDA, float32 on CPU), float32, float16 or bfloat16.",
        ),
    ] = _EVAL.dtype,
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
        compress=compress,
        last_frames=last_frames,
        dtd_threshold=dtd_threshold,
        tome_r=tome_r,
        stc=stc,
        cacher=cacher,
        pruner=pruner,
        update_ratio=update_ratio,
        cache_interval=cache_interval,
        tokens_per_frame=tokens_per_frame,
        pruner_memory=pruner_memory,
        n_local=n_local,
        topk=topk,
        encode_chunk=encode_chunk,
        max_new_tokens=max_new_tokens,
        answer_mode=answer_mode,
        max_cache_tokens=max_cache_tokens,
        device=device,
        dtype=dtype,
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
