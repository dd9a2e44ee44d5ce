"""``stc stream`` as a library call: a ``StreamConfig`` -> checked settings and questions -> the source
and the model -> the stream loop -> the summary.

Everything a user can get wrong is checked by ``prepare`` before minutes of model loading, and a file or
URL is opened before the model loads too (a live stream or camera after, so that it is read from the
moment it is opened). The model is built as ``stc eval`` builds it (``stc_cli.models.build`` under the
protocol ``protocol_of`` resolves, the same device and dtype rules), then warmed up on two blank frames
and reset, so that one-time start-up costs do not count as lag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from stc_cli import protocols
from stc_cli.configs import EvalConfig, StreamConfig
from stc_cli.live import questions as asking
from stc_cli.live.feed import AHEAD, Feed, Reader, SystemClock
from stc_cli.live.loop import WHEN_BEHIND, Sink, StreamLoop
from stc_cli.live.reconnect import RECONNECTS, Reconnecting
from stc_cli.live.source import AVSource, SourceError, kind_of

LIVE_BENCH = "streamingbench"  # protocols are keyed by benchmark: live mode takes a streaming one's
WARMUP_FRAMES = 2  # one LiveCC chunk


@dataclass
class Prepared:
    config: StreamConfig
    model_config: EvalConfig
    protocol: object  # stc_cli.protocols.Protocol
    questions: list[asking.Question]
    kind: str  # file, url, stream, camera
    notes: list[str]


def prepare(config: StreamConfig) -> Prepared:
    """The settings checked, the protocol resolved and the questions parsed; ValueError (one line)
    for anything wrong. Loads nothing."""
    from stc_cli.devices import resolve_device, resolve_dtype
    from stc_cli.evaluation.evaluate import protocol_of

    model_config = replace(config.model, bench=LIVE_BENCH)
    protocol = protocol_of(model_config)  # also checks every model and STC flag as stc eval does
    if not streams(protocol):
        others = [p.name for p in protocols.available(model_config.model, LIVE_BENCH) if streams(p)]
        fits = f"; streaming protocols of --model {model_config.model}: {', '.join(others)}" if others else ""
        clip = "picks each question's frames over its own clip"
        raise ValueError(f"--protocol {protocol.name} {clip}; it cannot stream{fits}")
    if config.speed is not None and not (config.speed >= 0 and math.isfinite(config.speed)):
        raise ValueError(f"--speed must be 0 (as fast as possible) or a positive factor, got {config.speed}")
    if config.when_behind not in WHEN_BEHIND:
        raise ValueError(f"--when-behind must be drop or queue, got {config.when_behind!r}")
    if config.duration is not None and not (config.duration > 0 and math.isfinite(config.duration)):
        raise ValueError(f"--duration must be a positive number of seconds, got {config.duration}")
    if not config.timeout > 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {config.timeout}")
    attempts, wait_s = config.reconnect, config.reconnect_wait
    if attempts < 0:
        raise ValueError(f"--reconnect must be 0 (off) or a number of attempts, got {attempts}")
    if not (wait_s >= 0 and math.isfinite(wait_s)):
        raise ValueError(f"--reconnect-wait must be a number of seconds >= 0, got {wait_s}")
    if not config.source:
        raise ValueError("SOURCE is empty: give a video file, an http(s):// or rtsp:// URL, or /dev/videoN")
    kind = kind_of(config.source)
    questions = [asking.parse_ask(text) for text in config.asks]
    if config.questions:
        questions += asking.load_file(config.questions)
    device = resolve_device(model_config.device)  # a bad --device or --dtype fails here, not after loading
    resolve_dtype(model_config.dtype, device)
    if config.speed is not None and kind in ("stream", "camera"):
        raise ValueError(f"--speed applies to files; {config.source} plays at its own pace")
    if config.log_frames and not config.json_lines:
        raise ValueError("--log-frames writes frame events among the --json events: add --json")
    notes = []
    if protocol.template == "livecc-turns" and model_config.max_cache_tokens is None:
        notes.append(
            "LiveCC keeps every chunk in its KV cache: memory grows with the stream; "
            "--max-cache-tokens N bounds it"
        )
    return Prepared(config, model_config, protocol, questions, kind, notes)


def streams(protocol) -> bool:
    """Whether ``protocol`` answers from a memory that grows frame by frame (frames taken at a rate, one
    pass), not from a clip cut per question."""
    return protocol.schedule != "clip" and protocol.sampling == "stride"


def open_source(prepared: Prepared) -> AVSource | Reconnecting:
    """The source, opened (``SourceError`` naming it and the reason); a network source or camera is
    opened again when it drops, unless ``--reconnect 0``."""
    config = prepared.config
    attempts, wait_s = config.reconnect, config.reconnect_wait

    def connect() -> AVSource:
        return AVSource(config.source, timeout_s=config.timeout)

    if attempts and prepared.kind in RECONNECTS:
        return Reconnecting(connect(), connect, attempts=attempts, wait_s=wait_s)
    return connect()


def build_model(prepared: Prepared):
    """The model as ``stc eval`` builds it (``evaluation.evaluate.load_model``)."""
    from stc_cli.evaluation.evaluate import load_model

    config = prepared.model_config
    model, _, _ = load_model(config, prepared.protocol)
    if getattr(model, "takes_whole_clip", False):
        raise ValueError(f"--model {config.model} under {prepared.protocol.name} takes a whole clip per call")
    return model


def warm_up(model, height: int = 64, width: int = 64) -> None:
    """Two blank frames through the model, then a reset: kernels, allocations and lazy set-up happen
    here, not in the first frames' lag."""
    import torch

    model.add_frames(torch.zeros((WARMUP_FRAMES, height, width, 3), dtype=torch.uint8), (0.0, 0.5))
    model.reset()


def stream(
    prepared: Prepared,
    model,
    source,
    sink: Sink | None = None,
    *,
    stdin=None,
    clock=SystemClock,
) -> dict:
    """Play ``source`` (an ``AVSource`` or anything with ``live``, ``end``, ``frames(fps, until)`` and
    ``close()``) into ``model``; questions from ``prepared`` and, when given, lines of ``stdin``.
    Returns the summary event, the settings included."""
    config, protocol = prepared.config, prepared.protocol
    speed = 1.0 if config.speed is None else config.speed
    mode = "live" if source.live else ("free" if speed == 0 else "paced")
    reader = Reader(
        source.frames(protocol.fps, config.duration),
        bound=None if mode == "live" else AHEAD,
        stamp=clock.now,
        end=lambda: source.end,
        close=source.close,
    )
    if isinstance(source, Reconnecting):  # its drops are told among its frames; Ctrl-C ends its waits
        source.report, source.wait = reader.send, reader.wait
    feed = Feed(reader, mode, speed=speed if mode == "paced" else 1.0, clock=clock)
    sink = sink or Sink()

    def make_query(question: asking.Question, number: int):
        return asking.to_query(question, number, config.source, protocol)

    loop = StreamLoop(
        model, feed, make_query, sink=sink, questions=prepared.questions, when_behind=config.when_behind
    )
    if stdin is not None:
        asking.StdinQuestions(stdin, loop.ask, sink.note, clock.now).start()
    if source.live and config.speed is not None:
        sink.note(f"{config.source} is live (it has no duration): it plays at its own pace, not --speed")
    summary = loop.run()
    if (
        config.duration is not None
        and summary["ended"] == "end"
        and summary["stream_seconds"] >= config.duration
    ):
        summary["reason"] = f"--duration {config.duration:g} s reached"
    return {**summary, **settings(prepared, model, mode, speed)}


def settings(prepared: Prepared, model, mode: str, speed: float) -> dict:
    """What the summary records about the run besides its numbers."""
    config, protocol = prepared.config, prepared.protocol
    described = model.describe() if hasattr(model, "describe") else {}
    return {
        "source": config.source,
        "live": mode == "live",
        "speed": speed if mode != "live" else None,
        "when_behind": config.when_behind,
        "fps": protocol.fps,
        "model": prepared.model_config.model,
        "model_path": described.get("model_path", prepared.model_config.model_path),
        "protocol": protocol.name,
        "variant": prepared.model_config.variant,
        "dtype": described.get("dtype"),
    }


def run(config: StreamConfig, sink_for=None, *, stdin=None, notes=print, clock=SystemClock) -> dict:
    """The whole of ``stc stream``: prepare, open, build, warm up, stream. ``sink_for(prepared)`` makes
    the display (None: nothing shown); ``stdin``: where typed questions come from (with
    ``config.stdin``); ``notes`` gets each note line. Raises ValueError or ``SourceError`` for what
    cannot start; the summary says how the stream ended."""
    prepared = prepare(config)
    for note in prepared.notes:
        notes(note)
    source = open_source(prepared) if prepared.kind in ("file", "url") else None
    try:
        model = build_model(prepared)
        warm_up(model, *(getattr(source, "size", None) or (64, 64)))
        if source is None:
            source = open_source(prepared)
    except BaseException:
        if source is not None:
            source.close()
        raise
    sink = sink_for(prepared) if sink_for is not None else Sink()
    with sink:
        summary = stream(prepared, model, source, sink, stdin=stdin if config.stdin else None, clock=clock)
        sink.summary(summary)
    return summary


__all__ = ["Prepared", "SourceError", "build_model", "open_source", "prepare", "run", "stream", "warm_up"]
