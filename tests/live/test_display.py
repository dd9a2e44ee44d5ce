"""What stc stream shows: JSON lines, plain lines and the rich panel."""

import io
import json

from rich.console import Console

from stc_cli.live.display import JsonLines, Panel, PlainLines, answer_line, summary_lines
from stc_cli.live.stats import Stats

ANSWER = {
    "event": "answer",
    "t": 12.5,
    "question": "What?",
    "options": [],
    "answer": "a cup",
    "latency_ms": 231.4,
}
SUMMARY = Stats(frames_in=3, frames_fed=3, frames_encoded=3, stage_ms={"vit": 30.0}).summary(
    stream_seconds=3.0, wall_seconds=3.1, ended="end", reason=None
)


def test_answer_lines():
    assert answer_line(ANSWER) == "[12.5 s] What? -> a cup (latency 231 ms)"
    late = {**ANSWER, "t": 10.0, "note": "asked for 40 s; the stream ended at 10.0 s: answered at the end"}
    assert answer_line(late).endswith(
        "(latency 231 ms) note: asked for 40 s; the stream ended at 10.0 s: answered at the end"
    )
    failed = {**ANSWER, "answer": None, "error": "RuntimeError: CUDA out of memory"}
    assert (
        answer_line(failed) == "[12.5 s] What? -> (failed: RuntimeError: CUDA out of memory) (latency 231 ms)"
    )


def test_json_lines_write_frames_only_when_asked():
    out, err = io.StringIO(), io.StringIO()
    sink = JsonLines(out, err, log_frames=False)
    sink.frame({"event": "frame", "t": 0.0})
    sink.answer(ANSWER)
    sink.reconnect({"event": "reconnect", "t": 1.0, "attempt": 1})
    sink.note("hello")
    sink.summary(SUMMARY)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["answer", "reconnect", "summary"]
    assert err.getvalue() == "note: hello\n"
    out = io.StringIO()
    JsonLines(out, err, log_frames=True).frame({"event": "frame", "t": 0.0})
    assert json.loads(out.getvalue()) == {"event": "frame", "t": 0.0}


def test_plain_lines_answers_on_stdout_progress_on_stderr():
    out, err = io.StringIO(), io.StringIO()
    with PlainLines(out, err, every_s=0.0) as sink:
        sink.answer(ANSWER)
        sink.tick(Stats(frames_in=4, frames_encoded=3, frames_dropped=1), 4.0)
        sink.summary(SUMMARY)
    lines = out.getvalue().splitlines()
    assert lines[0] == answer_line(ANSWER) and lines[1:] == summary_lines(SUMMARY)
    assert err.getvalue().startswith(
        "stream 4.0 s: 4 frames in, 3 encoded, 1 dropped; lag 0.00 s (max 0.00);"
    )


def test_summary_lines():
    lines = summary_lines(SUMMARY)
    assert lines[0] == "ended: end of the source"
    assert lines[1] == "stream 3.0 s in 3.1 s wall: real-time factor 0.97"
    assert lines[2] == "frames: 3 in, 3 encoded, 0 dropped; max lag 0.00 s"
    assert lines[3] == "answers: 0, latency p50 n/a, p95 n/a"
    assert lines[4] == "per frame: vit 10.0 ms"
    assert not any(line.startswith("reconnects") for line in lines)
    again = summary_lines({**SUMMARY, "reconnects": 2, "frames_missed": 7})
    assert again[5] == "reconnects: 2; 7 frames missed while the source was down"


def test_the_panel_shows_the_stream_state():
    console = Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None)
    panel = Panel("stc stream a.mp4 · rekv · stc", console, hint="type a question")
    stats = Stats(frames_in=10, frames_encoded=8, frames_dropped=2, max_lag_s=0.5, stage_ms={"vit": 80.0})
    stats.tokens_in, stats.tokens_kept, stats.latencies_ms, stats.held_bytes = (
        128,
        40,
        [100.0, 200.0],
        3_400_000,
    )
    panel.tick(stats, 10.0)
    console.print(panel._render())
    text = console.file.getvalue()
    for part in (
        "stc stream a.mp4 · rekv · stc",
        "10 in · 8 encoded · 2 dropped",
        "max 0.50 s",
        "vit 10.0",
        "5.0 kept of 16.0 per frame",
        "model 3.4 MB",
        "2 · latency p50 150 ms · p95 195 ms",
        "type a question",
    ):
        assert part in text
