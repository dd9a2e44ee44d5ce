"""`stc stream SOURCE`: live mode. Frames go into the model's memory as they arrive, questions are answered
from it as it is then, and the summary says whether the model kept up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stc_cli.commands import fail
from stc_cli.commands import model_options as options
from stc_cli.configs import EvalConfig, StreamConfig

_STREAM = StreamConfig()
_EVAL: EvalConfig = _STREAM.model


def stream(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE",
            help="A video file, an http(s):// or rtsp:// URL, or a camera (/dev/video0), read with PyAV.",
        ),
    ],
    ask: Annotated[
        list[str] | None,
        typer.Option(
            metavar='"T: QUESTION [| A. x | B. y]"',
            help='A question asked when the stream reaches T seconds (repeatable), e.g. "12.5: What is the '
            'man holding?" or "30: Which direction? | A. left | B. right".',
        ),
    ] = None,
    questions: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE.jsonl",
            help='Questions, one JSON object a line: {"t": 12.5, "question": "...", "options": [...]}.',
        ),
    ] = None,
    stdin: Annotated[
        bool,
        typer.Option(help="Lines typed on stdin are questions, asked at the current stream time."),
    ] = _STREAM.stdin,
    speed: Annotated[
        float | None,
        typer.Option(
            metavar="X",
            help="A file's pace: 1 real time (default), 2 twice as fast, 0 as fast as the model goes "
            "(benchmarks). Live sources play at their own pace.",
        ),
    ] = _STREAM.speed,
    when_behind: Annotated[
        str,
        typer.Option(
            metavar="drop|queue",
            help="When frames wait for the model: drop (skip the oldest, counted, to stay live) or queue "
            "(encode every frame; the lag grows).",
        ),
    ] = _STREAM.when_behind,
    duration: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS", help="Stop after this many stream seconds (default: the source's end)."
        ),
    ] = _STREAM.duration,
    json_lines: Annotated[
        bool,
        typer.Option(
            "--json",
            help="JSON-lines events on stdout: answer (t, question, answer, latency_ms) and a final summary.",
        ),
    ] = _STREAM.json_lines,
    log_frames: Annotated[
        bool, typer.Option("--log-frames", help="With --json: a frame event per frame (encoded or dropped).")
    ] = _STREAM.log_frames,
    timeout: Annotated[
        float,
        typer.Option(metavar="SECONDS", help="How long to wait to open, or for data from, a URL or camera."),
    ] = _STREAM.timeout,
    reconnect: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="When a network source or camera drops, open it again up to N times (0: end the stream).",
        ),
    ] = _STREAM.reconnect,
    reconnect_wait: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="Seconds before the first reconnect attempt; each next one waits twice as long.",
        ),
    ] = _STREAM.reconnect_wait,
    model: options.Model = _EVAL.model,
    model_path: options.ModelPath = _EVAL.model_path,
    protocol: options.Protocol = _EVAL.protocol,
    fps: options.Fps = _EVAL.fps,
    compress: options.Compress = _EVAL.compress,
    last_frames: options.LastFrames = _EVAL.last_frames,
    dtd_threshold: options.DtdThreshold = _EVAL.dtd_threshold,
    tome_r: options.TomeR = _EVAL.tome_r,
    stc: options.Stc = _EVAL.stc,
    cacher: options.Cacher = _EVAL.cacher,
    pruner: options.Pruner = _EVAL.pruner,
    update_ratio: options.UpdateRatio = _EVAL.update_ratio,
    cache_interval: options.CacheInterval = _EVAL.cache_interval,
    tokens_per_frame: options.TokensPerFrame = _EVAL.tokens_per_frame,
    pruner_window: options.PrunerWindow = _EVAL.pruner_window,
    n_local: options.NLocal = _EVAL.n_local,
    topk: options.Topk = _EVAL.topk,
    max_blocks: options.MaxBlocks = _EVAL.max_blocks,
    cuda_graphs: options.CudaGraphs = _EVAL.cuda_graphs,
    llm_graphs: options.LlmGraphs = _EVAL.llm_graphs,
    compile_layers: options.CompileLayers = _EVAL.compile,
    max_new_tokens: options.MaxNewTokens = _EVAL.max_new_tokens,
    answer_mode: options.AnswerMode = _EVAL.answer_mode,
    max_cache_tokens: options.MaxCacheTokens = _EVAL.max_cache_tokens,
    device: options.Device = _EVAL.device,
    dtype: options.Dtype = _EVAL.dtype,
) -> None:
    """Stream a video file, URL or camera into a model with STC on or off, answer questions as it plays,
    and measure whether it keeps up (lag, dropped frames, answer latency)."""
    import sys

    from stc_cli.live import display, session
    from stc_cli.live.source import SourceError

    model_config = EvalConfig(
        model=model,
        bench=_EVAL.bench,
        model_path=model_path,
        protocol=protocol,
        fps=fps,
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
        pruner_window=pruner_window,
        n_local=n_local,
        topk=topk,
        max_blocks=max_blocks,
        cuda_graphs=cuda_graphs,
        llm_graphs=llm_graphs,
        compile=compile_layers,
        max_new_tokens=max_new_tokens,
        answer_mode=answer_mode,
        max_cache_tokens=max_cache_tokens,
        device=device,
        dtype=dtype,
    )
    config = StreamConfig(
        source=source,
        model=model_config,
        speed=speed,
        when_behind=when_behind,
        asks=tuple(ask or ()),
        questions=str(questions) if questions else None,
        stdin=stdin,
        duration=duration,
        json_lines=json_lines,
        log_frames=log_frames,
        timeout=timeout,
        reconnect=reconnect,
        reconnect_wait=reconnect_wait,
    )

    def sink_for(prepared):
        if config.json_lines:
            return display.JsonLines(log_frames=config.log_frames)
        from rich.console import Console

        console = Console(stderr=True)
        if console.is_terminal:
            hint = "type a question and Enter; Ctrl-C ends" if config.stdin and sys.stdin.isatty() else ""
            return display.Panel(f"stc stream {source} · {model} · {model_config.variant}", console, hint)
        return display.PlainLines()

    def note(line: str) -> None:
        typer.echo(f"note: {line}", err=True)

    try:
        summary = session.run(config, sink_for, stdin=sys.stdin, notes=note)
    except (ValueError, SourceError, OSError) as error:
        fail(str(error))
    except RuntimeError as error:  # model loading; a model failing mid-stream ends in the summary
        if "out of memory" not in str(error):
            raise
        fail(f"out of memory while loading the model ({error}); try --dtype float16 or a smaller checkpoint")
    except KeyboardInterrupt:
        fail("interrupted before the stream started", code=130)
    if summary["ended"] in ("broken", "failed"):
        fail(summary["reason"], code=1)
