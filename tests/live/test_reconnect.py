"""A network source opened again after a drop, on fake connections and a fake clock: where its frames go on
the stream's timeline, the frames missed, the attempts and their backoff, and what it says when they all
fail; then a real file over HTTP read again where it broke."""

import numpy as np
import pytest

from stc_cli.live.reconnect import Attempt, Reconnecting, Resumed
from stc_cli.live.source import AVSource, SourceError
from tests.live.clips import write_clip
from tests.live.fakes import FakeClock
from tests.live.httpserve import FileServer

NAME = "http://cam/live.ts"


class Pixels:
    def to_ndarray(self, format):
        return np.zeros((2, 2, 3), np.uint8)


class Connection:
    """An ``AVSource`` stand-in: frames at presentation times ``pts`` (keyframes every 0.5 s), then a
    drop unless ``ends``; ``live`` as a live stream, else a file served over HTTP (10 s long)."""

    kind, size = "url", None

    def __init__(self, pts, live=True, ends=False, rate=10.0):
        self.pts, self.live, self.ends, self.rate = list(pts), live, ends, rate
        self.name, self.duration = NAME, None if live else 10.0
        self.origin, self.start, self.end, self.seeked, self.closed = None, 0.0, None, None, False

    def decoded(self):
        last = None
        for pts in self.pts:
            self.origin = pts - self.start if self.origin is None else self.origin
            t = pts - self.origin
            if self.seeked is not None and t < self.seeked // 0.5 * 0.5:
                continue  # before the keyframe it seeked to
            last, self.end = t, t + 1 / self.rate
            yield t, Pixels()
        if not self.ends:
            at = f" at {last:.1f} s" if last is not None else ""
            raise SourceError(f"{NAME} broke{at}: Input/output error")

    def seek(self, t):
        self.seeked = t

    def close(self):
        self.closed = True


def tenths(start, stop):
    return [round(start + i / 10, 1) for i in range(round((stop - start) * 10))]


def reconnecting(first, again, clock, attempts=3, wait_s=1.0):
    """``first`` opened again from ``again`` (a list of connections, or of SourceErrors to raise)."""

    def reopen():
        item = again.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    source = Reconnecting(first, reopen, attempts=attempts, wait_s=wait_s, now=clock.now)
    source.events, source.waits = [], []
    source.report = source.events.append

    def wait(seconds):
        source.waits.append(seconds)
        clock.sleep(seconds)
        return False

    source.wait = wait
    return source


def test_a_live_source_goes_on_after_the_time_it_was_down_with_the_frames_missed_counted():
    clock = FakeClock()
    first = Connection([5.0 + t for t in tenths(0, 1)])  # its own times start at 5 s: stream time 0
    again = Connection(tenths(0, 1), ends=True)  # the new connection's times start again at 0
    source = reconnecting(first, [again], clock, wait_s=2.0)
    times = [f.t for f in source.frames(2.0)]
    assert times == pytest.approx([0.0, 0.5, 2.9, 3.0, 3.5])  # down 2 s after 0.9: back at 2.9
    assert first.closed and source.waits == [2.0]
    attempt, resumed = source.events
    assert attempt == Attempt(pytest.approx(0.9), 1, 3, 2.0, f"{NAME} broke at 0.9 s: Input/output error")
    assert attempt.event() == {
        "event": "reconnect",
        "t": 0.9,
        "attempt": 1,
        "attempts": 3,
        "wait_s": 2.0,
        "reason": f"{NAME} broke at 0.9 s: Input/output error",
    }
    assert resumed == Resumed(pytest.approx(2.9), 2.0, 3)  # 1.0, 1.5 and 2.0 at 2 fps
    assert resumed.line() == "the source is back after 2.0 s: the stream goes on at 2.9 s, 3 frames missed"
    assert source.end == pytest.approx(3.9)


def test_a_file_over_http_goes_on_where_it_broke():
    clock = FakeClock()
    first = Connection(tenths(0, 1.3), live=False)  # breaks after 1.2 s of its 10
    again = Connection(tenths(0, 2), live=False, ends=True)
    source = reconnecting(first, [again], clock, wait_s=0.5)
    assert [t for t, _ in source.decoded()] == pytest.approx(tenths(0, 2))  # each frame once, in order
    assert (again.origin, again.seeked) == (0.0, pytest.approx(1.2))  # from the keyframe at 1.0
    assert source.events[1] == Resumed(pytest.approx(1.3), 0.5, 0)


def test_every_attempt_is_told_waiting_twice_as_long_each_time_then_the_source_breaks():
    clock = FakeClock()
    refused = SourceError(f"cannot open {NAME}: Connection refused")
    source = reconnecting(Connection(tenths(0, 1)), [refused] * 3, clock, wait_s=1.0)
    with pytest.raises(SourceError) as caught:
        list(source.frames(1.0))
    assert str(caught.value) == (
        f"{NAME} broke at 0.9 s: Input/output error; not back after 3 reconnect attempts: "
        f"cannot open {NAME}: Connection refused"
    )
    assert source.waits == [1.0, 2.0, 4.0]
    assert [(e.attempt, e.reason) for e in source.events] == [
        (1, f"{NAME} broke at 0.9 s: Input/output error"),
        (2, str(refused)),
        (3, str(refused)),
    ]
    assert source.events[-1].line() == f"{refused}; reconnecting in 4 s (attempt 3 of 3)"


def test_a_connection_that_breaks_before_a_frame_is_a_failed_attempt_and_a_frame_restores_them_all():
    clock = FakeClock()
    dead = Connection([])
    back = Connection(tenths(0, 0.5))  # a frame: the next drop has both attempts again
    last = Connection(tenths(0, 0.5), ends=True)
    source = reconnecting(
        Connection(tenths(0, 0.5)), [dead, back, dead, last], clock, attempts=2, wait_s=20.0
    )
    list(source.frames(1.0))
    assert [type(e).__name__ for e in source.events] == ["Attempt", "Attempt", "Resumed"] * 2
    assert [e.attempt for e in source.events if isinstance(e, Attempt)] == [1, 2, 1, 2]
    assert source.events[1].reason == f"{NAME} broke: Input/output error"
    assert source.waits == [20.0, 30.0, 20.0, 30.0]  # capped at MAX_WAIT_S


def test_a_stream_stopped_during_a_wait_ends_there():
    clock = FakeClock()
    source = reconnecting(Connection(tenths(0, 1)), [], clock)
    source.wait = lambda seconds: True  # Ctrl-C: the reader stopped
    assert len(list(source.frames(1.0))) == 1 and len(source.events) == 1


def test_a_real_file_over_http_read_again_from_where_it_broke(tmp_path):
    """PyAV and a loopback server: the connection is cut halfway once; the file goes on from the frame
    after the last one read (frame i is brightness 30 i), each frame once."""
    data = write_clip(tmp_path / "a.mp4", frames=40, fps=4, size=(96, 128)).read_bytes()
    with FileServer() as server:
        server.files["/a.mp4"] = data
        server.cut["/a.mp4"] = len(data) // 2
        url = server.url("/a.mp4")

        def connect():
            return AVSource(url, timeout_s=5)

        source = Reconnecting(connect(), connect, attempts=1, wait_s=0.0)
        events = []
        source.report = lambda event: events.append(event) or server.cut.clear()  # the server is back
        frames = list(source.frames(4.0))
        source.close()
    assert [f.t for f in frames] == [i / 4 for i in range(40)] and source.end == 10.0
    assert [float(f.pixels.mean()) for f in frames] == pytest.approx([30 * i % 256 for i in range(40)], abs=6)
    attempt, resumed = events
    assert 0 < attempt.t < 9 and resumed == Resumed(attempt.t + 0.25, pytest.approx(0, abs=5), 0)
