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


@options.with_model_options
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
    model_options: dict | None = None,  # with_model_options puts every model option here
) -> None:
    """Stream a video file, URL or camera into a model with STC on or off, answer questions as it plays,
    and measure whether it keeps up (lag, dropped frames, answer latency)."""
    import sys

    from stc_cli.live import display, session
    from stc_cli.live.source import SourceError

    model_config = EvalConfig(
        **model_options,
        bench=_EVAL.bench,
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
            title = f"stc stream {source} · {model_config.model} · {model_config.variant}"
            return display.Panel(title, console, hint)
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
