"""What ``stc stream`` shows: JSON-lines events (``--json``), a live rich panel where stderr is a
terminal, or plain lines elsewhere (logs, pipes, CI).

- ``JsonLines``: on stdout, one object a line: ``frame`` (with ``--log-frames``), ``answer``,
  ``reconnect`` (``reconnect.py``) and the final ``summary`` (``stats.py`` defines the fields); notes go
  to stderr.
- ``PlainLines``: each answer as a line on stdout; a progress line on stderr every ``every_s``
  seconds; the summary as lines on stdout.
- ``Panel``: a rich panel on stderr, redrawn a few times a second (stream time, frames in / encoded /
  dropped, lag, real-time factor, ms per frame per stage, visual tokens kept, memory held, answers);
  answers are printed above it.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from stc_cli.live.loop import Sink
from stc_cli.live.memory import rss_bytes, size
from stc_cli.live.stats import Stats, percentile

PROGRESS_EVERY_S = 10.0


def answer_line(event: dict) -> str:
    """``[12.5 s] What is he holding? -> a cup (latency 231 ms)``, with the note or error if any."""
    answer = event["answer"] if event.get("error") is None else f"(failed: {event['error']})"
    line = f"[{event['t']:.1f} s] {event['question']} -> {answer} (latency {event['latency_ms']:.0f} ms)"
    return line + (f" note: {event['note']}" if event.get("note") else "")


def progress_line(stats: Stats, stream_now: float, wall: float) -> str:
    factor = f"{stream_now / wall:.2f}" if wall > 0 else "n/a"
    return (
        f"stream {stream_now:.1f} s: {stats.frames_in} frames in, {stats.frames_encoded} encoded, "
        f"{stats.frames_dropped} dropped; lag {stats.lag_s:.2f} s (max {stats.max_lag_s:.2f}); "
        f"real-time factor {factor}; {len(stats.latencies_ms)} answers"
    )


def summary_lines(summary: dict) -> list[str]:
    """The summary event for people."""

    def ms(value) -> str:
        return "n/a" if value is None else f"{value:.1f} ms"

    latency = summary["answer_latency_ms"]
    stages = ", ".join(f"{stage} {ms(value)}" for stage, value in summary["ms_per_frame"].items()) or "n/a"
    tokens = summary["visual_tokens_per_frame"]
    memory = summary["memory"]
    growth = memory["held_growth_bytes_per_stream_hour"]
    factor = summary["real_time_factor"]
    lines = [
        f"ended: {summary['reason'] or 'end of the source'}",
        f"stream {summary['stream_seconds']:.1f} s in {summary['wall_seconds']:.1f} s wall: real-time factor "
        + ("n/a" if factor is None else f"{factor:.2f}"),
        f"frames: {summary['frames_in']} in, {summary['frames_encoded']} encoded, "
        f"{summary['frames_dropped']} dropped"
        + (f", {summary['frames_waiting']} waiting for a pair" if summary["frames_waiting"] else "")
        + f"; max lag {summary['max_lag_s']:.2f} s",
        f"answers: {summary['answers']}, latency p50 {ms(latency['p50'])}, p95 {ms(latency['p95'])}"
        + (f"; {summary['answer_errors']} failed" if summary["answer_errors"] else "")
        + (f"; {summary['unanswered']} not answered" if summary["unanswered"] else ""),
        f"per frame: {stages}",
    ]
    if summary["reconnects"] or summary["frames_missed"]:
        missed = summary["frames_missed"]
        lines.append(f"reconnects: {summary['reconnects']}; {missed} frames missed while the source was down")
    if tokens["in"] is not None:
        lines.append(f"visual tokens per frame: {tokens['kept']:g} kept of {tokens['in']:g}")
    lines.append(
        f"memory: model holds {size(memory['held_bytes'])}"
        + (f" (+{size(growth)} per stream hour)" if growth else "")
        + f", process {size(memory['rss_bytes'])} resident (peak {size(memory['peak_rss_bytes'])})"
    )
    return lines


class JsonLines(Sink):
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, log_frames: bool = False):
        self.out, self.err, self.log_frames = out or sys.stdout, err or sys.stderr, log_frames

    def _write(self, event: dict) -> None:
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()

    def frame(self, event: dict) -> None:
        if self.log_frames:
            self._write(event)

    def answer(self, event: dict) -> None:
        self._write(event)

    def reconnect(self, event: dict) -> None:
        self._write(event)

    def note(self, text: str) -> None:
        print(f"note: {text}", file=self.err, flush=True)

    def summary(self, summary: dict) -> None:
        self._write(summary)


class PlainLines(Sink):
    def __init__(
        self, out: TextIO | None = None, err: TextIO | None = None, every_s: float = PROGRESS_EVERY_S
    ):
        self.out, self.err, self.every_s = out or sys.stdout, err or sys.stderr, every_s
        self.started = self.last = time.monotonic()

    def __enter__(self) -> PlainLines:
        self.started = self.last = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        pass

    def answer(self, event: dict) -> None:
        print(answer_line(event), file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(f"note: {text}", file=self.err, flush=True)

    def tick(self, stats: Stats, stream_now: float) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            print(progress_line(stats, stream_now, now - self.started), file=self.err, flush=True)

    def summary(self, summary: dict) -> None:
        for line in summary_lines(summary):
            print(line, file=self.out, flush=True)


class Panel(Sink):
    """The rich panel; ``title`` names the source and the model."""

    def __init__(self, title: str, console=None, hint: str = ""):
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console(stderr=True)
        self.title, self.hint = title, hint
        self.stats, self.stream_now = Stats(), 0.0
        self.started = time.monotonic()
        self._rss = rss_bytes()
        # printed to stdout; when stdout is this terminal, rich puts those lines above the panel
        self.live = Live(
            get_renderable=self._render,
            console=self.console,
            refresh_per_second=4,
            redirect_stdout=sys.stdout.isatty(),
            redirect_stderr=False,
        )

    def __enter__(self) -> Panel:
        self.started = time.monotonic()
        self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        self.live.stop()

    def answer(self, event: dict) -> None:
        print(answer_line(event), file=sys.stdout, flush=True)

    def note(self, text: str) -> None:
        self.live.console.print(f"note: {text}", markup=False, highlight=False)

    def tick(self, stats: Stats, stream_now: float) -> None:
        self.stats, self.stream_now = stats, stream_now

    def summary(self, summary: dict) -> None:
        self.live.stop()
        for line in summary_lines(summary):
            print(line, file=sys.stdout, flush=True)

    def _render(self):
        from rich.panel import Panel as RichPanel
        from rich.table import Table

        stats, wall = self.stats, time.monotonic() - self.started
        if int(wall * 4) % 4 == 0:  # resident memory about once a second
            self._rss = rss_bytes()
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        factor = f"{self.stream_now / wall:.2f}" if wall > 0 else "n/a"
        frames = f"{stats.frames_in} in · {stats.frames_encoded} encoded · {stats.frames_dropped} dropped"
        stages = " · ".join(
            f"{stage} {ms:.1f}" for stage, ms in stats.ms_per_frame().items() if ms is not None
        )
        kept = f"{stats.tokens_kept / stats.frames_encoded:.1f} kept of " if stats.frames_encoded else ""
        tokens_in = f"{stats.tokens_in / stats.frames_encoded:.1f}" if stats.frames_encoded else "n/a"
        p50, p95 = percentile(stats.latencies_ms, 50), percentile(stats.latencies_ms, 95)
        latency = f" · latency p50 {p50:.0f} ms · p95 {p95:.0f} ms" if p50 is not None else ""
        rows = [
            ("stream", f"{self.stream_now:.1f} s · wall {wall:.1f} s · real-time factor {factor}"),
            ("frames", frames),
            ("lag", f"{stats.lag_s:.2f} s · max {stats.max_lag_s:.2f} s"),
            ("ms / frame", stages or "n/a"),
            ("visual tokens", f"{kept}{tokens_in} per frame"),
            ("memory", f"model {size(stats.held_bytes)} · process {size(self._rss)} resident"),
            ("answers", f"{len(stats.latencies_ms)}{latency}"),
        ]
        for name, value in rows:
            table.add_row(name, value)
        return RichPanel(table, title=self.title, subtitle=self.hint or None, expand=False)
