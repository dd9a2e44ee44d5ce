"""`stc stream` end to end on random:tiny models: files at --speed 0 and 1, a URL on a loopback server,
questions from --ask, a file and stdin, drop vs queue under a slow model, a live stream that drops and
reconnects, and what bad input says."""

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from stc_cli import models
from stc_cli.cli import app
from tests.live.clips import write_clip, write_ts
from tests.live.httpserve import FileServer

runner = CliRunner()
TINY = ["--model-path", "random:tiny", "--max-new-tokens", "3", "--no-stdin"]
SUMMARY_FIELDS = {
    "stream_seconds",
    "wall_seconds",
    "real_time_factor",
    "frames_in",
    "frames_encoded",
    "frames_dropped",
    "max_lag_s",
    "answer_latency_ms",
    "ms_per_frame",
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """2 s at 4 fps (8 frames)."""
    return write_clip(tmp_path_factory.mktemp("clips") / "two.mp4", frames=8, fps=4)


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def stream(*args, input=None):
    return runner.invoke(app, ["stream", *map(str, args)], input=input)


def test_a_file_at_speed_0_with_json_events(clip):
    result = stream(
        clip, *TINY, "--speed", "0", "--fps", "4", "--json", "--log-frames", "--ask", "1: What is it?"
    )
    assert result.exit_code == 0, result.output
    out = events(result.stdout)
    kinds = [e["event"] for e in out]
    assert kinds == ["frame"] * 5 + ["answer"] + ["frame"] * 3 + ["summary"]
    assert [e["t"] for e in out if e["event"] == "frame"] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    frame = out[0]
    assert frame["status"] == "encoded" and set(frame["ms"]) == {"vit", "compress", "prefill"}
    assert frame["visual_tokens_kept"] == 5 and frame["lag_s"] >= 0
    answer = out[5]
    assert (answer["t"], answer["question"], answer["frames_encoded"], answer["origin"]) == (
        1.0,
        "What is it?",
        5,
        "--ask",
    )
    assert isinstance(answer["answer"], str) and answer["latency_ms"] >= answer["answer_ms"] > 0
    summary = out[-1]
    assert SUMMARY_FIELDS <= set(summary)
    assert (summary["frames_in"], summary["frames_encoded"], summary["frames_dropped"]) == (8, 8, 0)
    assert (summary["stream_seconds"], summary["speed"], summary["live"], summary["ended"]) == (
        2.0,
        0.0,
        False,
        "end",
    )
    assert (summary["model"], summary["protocol"], summary["variant"], summary["fps"]) == (
        "rekv",
        "stc-online",
        "stc",
        4.0,
    )
    assert summary["answers"] == 1 and summary["answer_latency_ms"]["p50"] == answer["latency_ms"]
    # Both are rounded to 4 decimals: at speed 0 a 2 s stream takes some 0.04 s, where the rounding of the
    # wall time alone moves the ratio by 0.1 %.
    wall, half = summary["wall_seconds"], 5e-5
    lowest, highest = summary["stream_seconds"] / (wall + half), summary["stream_seconds"] / (wall - half)
    assert lowest - half <= summary["real_time_factor"] <= highest + half
    assert set(summary["ms_per_frame"]) == {"vit", "compress", "prefill"}
    assert summary["visual_tokens_per_frame"] == {"in": 16.0, "kept": 5.0}


def test_speed_1_plays_the_file_in_real_time(clip):
    started = time.monotonic()
    result = stream(clip, *TINY, "--json")
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    summary = events(result.stdout)[-1]
    assert summary["stream_seconds"] == 2.0 and summary["speed"] == 1.0 and summary["frames_in"] == 2  # 1 fps
    assert summary["wall_seconds"] >= 2.0 and elapsed >= 2.0


def test_duration_cuts_the_stream(clip):
    result = stream(clip, *TINY, "--speed", "0", "--fps", "4", "--duration", "1.2", "--json")
    summary = events(result.stdout)[-1]
    assert (summary["frames_in"], summary["stream_seconds"]) == (5, 1.2)
    assert (summary["ended"], summary["reason"]) == ("end", "--duration 1.2 s reached")


def test_no_stc_and_livecc(clip):
    result = stream(clip, *TINY, "--speed", "0", "--json", "--no-stc")
    summary = events(result.stdout)[-1]
    assert summary["variant"] == "base" and set(summary["ms_per_frame"]) == {"vit", "prefill"}
    assert summary["visual_tokens_per_frame"] == {"in": 16.0, "kept": 16.0}
    result = stream(clip, *TINY, "--model", "livecc", "--speed", "0", "--json", "--max-cache-tokens", "500")
    assert result.exit_code == 0, result.output
    summary = events(result.stdout)[-1]
    assert (summary["model"], summary["protocol"], summary["fps"]) == ("livecc", "livecc-stream", 2.0)
    assert (summary["frames_in"], summary["frames_encoded"], summary["frames_waiting"]) == (4, 4, 0)


def test_a_url_on_a_loopback_server(clip):
    with FileServer() as server:
        server.files["/two.mp4"] = clip.read_bytes()
        url = server.url("/two.mp4")
        result = stream(url, *TINY, "--speed", "0", "--fps", "2", "--json")
        assert result.exit_code == 0, result.output
        summary = events(result.stdout)[-1]
        assert (summary["source"], summary["frames_in"], summary["stream_seconds"]) == (url, 4, 2.0)
        assert server.requests and all(r == "GET /two.mp4" for r in server.requests)


def test_a_url_that_drops_ends_with_the_summary_and_exit_1(tmp_path):
    data = write_clip(tmp_path / "long.mp4", frames=40, fps=4, size=(96, 128)).read_bytes()
    with FileServer() as server:
        server.files["/long.mp4"] = data
        server.cut["/long.mp4"] = len(data) // 2
        args = ["--speed", "0", "--json", "--ask", "8: still there?", "--reconnect", "0"]
        result = stream(server.url("/long.mp4"), *TINY, *args)
    assert result.exit_code == 1
    summary = events(result.stdout)[-1]
    assert summary["ended"] == "broken" and 0 < summary["frames_encoded"] < 10 and summary["reconnects"] == 0
    assert "broke at" in summary["reason"] and "Input/output error" in summary["reason"]
    assert events(result.stdout)[-2]["note"].startswith("asked for 8 s; the stream ended at")
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: http://127.0.0.1:") and "/long.mp4 broke at" in line


def test_a_live_http_stream_plays_at_its_own_pace_until_it_stops(tmp_path):
    """An MPEG-TS stream with no length is live: frames are taken as they come, --speed does not apply,
    and the server closing it ends the stream as a network drop does (summary, reason, exit 1)."""
    data = write_ts(tmp_path / "live.ts", frames=30, fps=10).read_bytes()  # 3 s
    with FileServer() as server:
        server.live["/live.ts"] = (data, 1.0)
        result = stream(
            server.url("/live.ts"), *TINY, "--fps", "2", "--json", "--speed", "0", "--reconnect", "0"
        )
    assert result.exit_code == 1, result.output
    summary = events(result.stdout)[-1]
    assert (summary["live"], summary["speed"], summary["ended"]) == (True, None, "broken")
    assert "/live.ts broke at" in summary["reason"] and "Input/output error" in summary["reason"]
    assert summary["frames_in"] >= 3
    assert summary["frames_in"] == summary["frames_encoded"] + summary["frames_dropped"]
    assert "is live (it has no duration): it plays at its own pace, not --speed" in result.stderr


def test_a_live_stream_that_drops_once_reconnects_and_goes_on(tmp_path):
    """The server closes the stream after 2 s and serves it again: one reconnect event, then frames and
    an answer past the drop on the same timeline, until --duration."""
    data = write_ts(tmp_path / "live.ts", frames=20, fps=10).read_bytes()  # 2 s
    with FileServer() as server:
        server.live["/live.ts"] = (data, 1.0)
        server.down_after["/live.ts"] = 2
        url = server.url("/live.ts")
        args = ["--fps", "2", "--json", "--log-frames", "--reconnect-wait", "0.05", "--duration", "3"]
        result = stream(url, *TINY, *args, "--ask", "2.5: still there?")
        assert server.requests == ["GET /live.ts"] * 2
    assert result.exit_code == 0, result.output
    out = events(result.stdout)
    (reconnect,) = [e for e in out if e["event"] == "reconnect"]
    assert (reconnect["attempt"], reconnect["attempts"], reconnect["wait_s"]) == (1, 3, 0.05)
    assert reconnect["reason"] == f"{url} broke at {reconnect['t']:.1f} s: Input/output error"
    after = out[out.index(reconnect) + 1 :]  # reported when pulled: frames before the drop may follow
    assert max(e["t"] for e in after if e["event"] == "frame") > reconnect["t"]
    (answer,) = [e for e in out if e["event"] == "answer"]
    assert answer["t"] == 2.5 > reconnect["t"] and isinstance(answer["answer"], str) and answer in after
    summary = out[-1]
    assert (summary["ended"], summary["reason"]) == ("end", "--duration 3 s reached")
    assert (summary["stream_seconds"], summary["reconnects"]) == (3.0, 1) and summary["frames_missed"] >= 0
    assert summary["frames_in"] == summary["frames_encoded"] + summary["frames_dropped"]
    assert f"note: {reconnect['reason']}; reconnecting in 0.05 s (attempt 1 of 3)" in result.stderr
    assert "note: the source is back after " in result.stderr


@contextlib.contextmanager
def down_for_good(tmp_path):
    """A ``FileServer`` whose live MPEG-TS stream ``/live.ts`` (1 s, played at half speed) is down from
    its second request on."""
    data = write_ts(tmp_path / "live.ts", frames=10, fps=10).read_bytes()
    with FileServer() as server:
        server.live["/live.ts"] = (data, 0.5)
        server.down_after["/live.ts"] = 1
        yield server


def test_a_live_stream_that_stays_down_ends_after_its_attempts(tmp_path):
    with down_for_good(tmp_path) as server:
        url = server.url("/live.ts")
        result = stream(url, *TINY, "--fps", "2", "--json", "--reconnect", "2", "--reconnect-wait", "0.05")
        assert server.requests == ["GET /live.ts"] * 3
    assert result.exit_code == 1, result.output
    out = events(result.stdout)
    refused = f"cannot open {url}: Server returned 5XX Server Error reply"
    attempts = [(e["attempt"], e["wait_s"], e["reason"]) for e in out if e["event"] == "reconnect"]
    assert attempts[1] == (2, 0.1, refused) and attempts[0][:2] == (1, 0.05)
    summary = out[-1]
    assert (summary["ended"], summary["reconnects"]) == ("broken", 0)
    assert summary["reason"] == f"{attempts[0][2]}; not back after 2 reconnect attempts: {refused}"
    assert result.stderr.splitlines()[-1] == f"error: {summary['reason']}"


def test_stdin_lines_are_questions(clip):
    typed = "What is on screen?\nWhich? | A. dark | B. bright\nWhich? | B. x\n"
    result = stream(clip, *TINY[:-1], "--speed", "0", "--json", input=typed)
    assert result.exit_code == 0, result.output
    answers = [e for e in events(result.stdout) if e["event"] == "answer"]
    assert [(a["question"], a["options"], a["origin"]) for a in answers] == [
        ("What is on screen?", [], "stdin"),
        ("Which?", ["dark", "bright"], "stdin"),
    ]
    assert all(0 <= a["t"] <= 2.0 for a in answers)
    assert "note: stdin 'Which? | B. x': options must be lettered A in order" in result.stderr


def test_plain_lines_and_a_question_beyond_the_end(clip, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        '{"t": 40, "question": "What happened?"}\n{"t": 0.5, "question": "Which?", "options": ["a", "b"]}\n'
    )
    result = stream(clip, *TINY, "--speed", "0", "--questions", questions)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[0.5 s] Which? -> ")
    assert lines[1].startswith("[2.0 s] What happened? -> ")
    assert lines[1].endswith("note: asked for 40 s; the stream ended at 2.0 s: answered at the end")
    assert lines[2] == "ended: end of the source"
    assert lines[4] == "frames: 2 in, 2 encoded, 0 dropped; max lag " + lines[4].split("max lag ")[1]


class Slow:
    """random:tiny, sleeping ``seconds`` in every add_frames call: the model decides the lag."""

    def __init__(self, model, seconds):
        self.model, self.seconds = model, seconds

    def add_frames(self, frames, times):
        time.sleep(self.seconds)
        return self.model.add_frames(frames, times)

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_drop_vs_queue_under_a_slow_model(clip, monkeypatch):
    """8 frames at 4 fps, 0.4 s a frame: by the end of the second frame two more have arrived, so drop
    must drop; queue encodes all 8, the last no sooner than 8 x 0.4 s after the start, 1.75 s after
    it arrived."""
    build = models.build
    monkeypatch.setattr(models, "build", lambda *a: Slow(build(*a), 0.4))
    drop = events(stream(clip, *TINY, "--fps", "4", "--json").stdout)[-1]
    queue = events(stream(clip, *TINY, "--fps", "4", "--json", "--when-behind", "queue").stdout)[-1]
    assert drop["when_behind"] == "drop" and queue["when_behind"] == "queue"
    assert drop["frames_in"] == queue["frames_in"] == 8
    assert drop["frames_dropped"] >= 1 and drop["frames_encoded"] + drop["frames_dropped"] == 8
    assert (queue["frames_dropped"], queue["frames_encoded"]) == (0, 8)
    assert queue["max_lag_s"] >= 8 * 0.4 - 1.75 and queue["max_lag_s"] > drop["max_lag_s"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ask", "What is he holding?"], "error: --ask 'What is he holding?': expected seconds, a colon"),
        (
            ["--ask", "3: Which? | B. x"],
            "error: --ask '3: Which? | B. x': options must be lettered A in order",
        ),
        (["--speed", "-1"], "error: --speed must be 0 (as fast as possible) or a positive factor, got -1.0"),
        (["--when-behind", "skip"], "error: --when-behind must be drop or queue, got 'skip'"),
        (["--protocol", "livecc-ovo"], "error: unknown --protocol 'livecc-ovo' for --model rekv"),
        (["--model", "nope"], "error: unknown --model 'nope'"),
        (["--tokens-per-frame", "0"], "error: --tokens-per-frame must be >= 1, got 0"),
        (["--pruner-window", "0"], "error: --pruner-window must be >= 1, got 0"),
        (["--log-frames"], "error: --log-frames writes frame events among the --json events: add --json"),
        (["--duration", "0"], "error: --duration must be a positive number of seconds, got 0.0"),
        (["--reconnect", "-1"], "error: --reconnect must be 0 (off) or a number of attempts, got -1"),
        (["--reconnect-wait", "-0.5"], "error: --reconnect-wait must be a number of seconds >= 0, got -0.5"),
    ],
)
def test_bad_input_gets_one_line(clip, args, message):
    result = stream(clip, *TINY, *args)
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(message), line


def test_a_source_that_cannot_be_opened(tmp_path):
    for source, message in (
        (tmp_path / "missing.mp4", f"error: cannot open {tmp_path / 'missing.mp4'}: no such file"),
        ("/dev/video97", "error: cannot open /dev/video97: "),
        ("rtsp://127.0.0.1:9/cam", "error: cannot open rtsp://127.0.0.1:9/cam: Connection refused"),
        ("ftp://host/a.mp4", "error: ftp://host/a.mp4: unknown scheme ftp://"),
    ):
        result = stream(source, *TINY, "--timeout", "2")
        assert result.exit_code == 2, (source, result.output)
        assert result.stderr.splitlines()[-1].startswith(message), result.stderr
    result = stream("rtsp://127.0.0.1:9/cam", *TINY, "--speed", "0")
    assert result.stderr == "error: --speed applies to files; rtsp://127.0.0.1:9/cam plays at its own pace\n"


def _start(command: list[str], stdin) -> subprocess.Popen:
    """``stc stream`` as a real process that Ctrl-C reaches: a shell runs a background job (``&``) with
    SIGINT ignored, and a child inherits that, so a suite started that way would wait on it forever."""
    return subprocess.Popen(
        command,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _lines(proc, deadline):
    """stdout lines of ``proc`` as they come, until ``deadline`` (monotonic)."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if selector.select(timeout=max(0.0, deadline - time.monotonic())):
            line = proc.stdout.readline()
            if not line:
                return
            yield json.loads(line)


def test_a_typed_question_is_asked_at_the_current_time_and_ctrl_c_ends_with_the_summary(tmp_path):
    """A real process, as a person runs it: a question typed once the stream has passed 1 s is
    answered from that time on; Ctrl-C then ends the stream with its summary, exit 0."""
    clip = write_clip(tmp_path / "long.mp4", frames=480, fps=4)  # 120 s: Ctrl-C comes long before the end
    command = [sys.executable, "-m", "stc_cli", "stream", str(clip), *TINY[:-1], "--json", "--log-frames"]
    proc = _start(command, stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240  # generous: a loaded machine answers slowly
        seen = []
        for event in _lines(proc, deadline):
            seen.append(event)
            if event["event"] == "frame" and event["t"] >= 1.0 and not any(e.get("origin") for e in seen):
                proc.stdin.write("What is on screen?\n")
                proc.stdin.flush()
            if event["event"] == "answer":
                proc.send_signal(signal.SIGINT)
                break
        rest = list(_lines(proc, time.monotonic() + 60))  # the summary after Ctrl-C, with its own time
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    answer = seen[-1]
    assert (
        answer["event"] == "answer"
        and answer["question"] == "What is on screen?"
        and answer["origin"] == "stdin"
    )
    assert answer["t"] >= 1.0 and answer["frames_encoded"] >= 2
    summary = rest[-1]
    assert summary["event"] == "summary" and summary["ended"] == "interrupted" and summary["answers"] == 1
    assert 1.0 <= summary["stream_seconds"] < 120.0 and proc.returncode == 0


def test_ctrl_c_during_a_reconnect_wait_ends_with_the_summary(tmp_path):
    with down_for_good(tmp_path) as server:
        url = server.url("/live.ts")
        command = [sys.executable, "-m", "stc_cli", "stream", url, *TINY, "--json", "--reconnect-wait", "60"]
        proc = _start(command, stdin=subprocess.DEVNULL)
        try:
            seen = []
            for event in _lines(proc, time.monotonic() + 240):
                seen.append(event)
                if event["event"] == "reconnect":
                    proc.send_signal(signal.SIGINT)
                    break
            rest = list(_lines(proc, time.monotonic() + 60))  # well before the 60 s wait is over
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert (seen[-1]["event"], seen[-1]["attempt"], seen[-1]["wait_s"]) == ("reconnect", 1, 60.0)
    summary = rest[-1]
    assert (summary["event"], summary["ended"], summary["reconnects"]) == ("summary", "interrupted", 0)
    assert proc.returncode == 0
