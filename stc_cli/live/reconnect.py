"""A network source that survives a drop: when an ``http(s)://`` or ``rtsp://`` (or other network) source or
a camera breaks, it is opened again, up to ``attempts`` times, ``wait_s`` seconds before the first attempt
and twice as long before each next one (at most ``MAX_WAIT_S``, or the first wait if longer). A frame
from the new connection makes it whole again: the next drop has all its attempts again. Its frames go on
on the stream's timeline:

- a file served over HTTP (it has a duration) goes on where it broke, on its own timeline: read again
  from the keyframe before the last frame decoded, skipping the frames it already gave;
- a live source's times may start again at 0: its first new frame is put after the last one by the
  clock time that passed, so the time it was down counts as stream time, and the frames ``--fps`` would
  have taken meanwhile are counted as missed.

Each attempt (``Attempt``, before its wait) and each return (``Resumed``) goes to ``report``, which the
reader puts among the frames (``feed.py``); ``wait(seconds)`` sleeps and says whether the stream was
stopped meanwhile (Ctrl-C). When every attempt fails, the ``SourceError`` names the source, the drop,
the attempts and the last one's reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from stc_cli.live.source import EPS, AVSource, Source, SourceError

RECONNECTS = ("stream", "url", "camera")  # kinds opened again after a drop (a file on disk does not drop)
MAX_WAIT_S = 30.0  # the longest a wait doubles to


@dataclass(frozen=True)
class Attempt:
    t: float  # stream time of the last frame before the drop
    attempt: int  # 1 .. attempts
    attempts: int
    wait_s: float  # before this attempt
    reason: str  # why the source is down: the drop, then each failed attempt's

    def event(self) -> dict:
        """The ``reconnect`` event of ``--json``."""
        return {
            "event": "reconnect",
            "t": round(self.t, 3),
            "attempt": self.attempt,
            "attempts": self.attempts,
            "wait_s": self.wait_s,
            "reason": self.reason,
        }

    def line(self) -> str:
        return f"{self.reason}; reconnecting in {self.wait_s:g} s (attempt {self.attempt} of {self.attempts})"


@dataclass(frozen=True)
class Resumed:
    t: float  # stream time of the first frame after the drop
    down_s: float  # clock seconds from the drop to that frame
    missed: int  # frames at --fps the source had meanwhile (a live source)

    def line(self) -> str:
        missed = f", {self.missed} frames missed" if self.missed else ""
        return f"the source is back after {self.down_s:.1f} s: the stream goes on at {self.t:.1f} s{missed}"


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


class Reconnecting(Source):
    """``source`` (a network source or a camera, already open), opened again by ``reopen()`` when it
    breaks (see the module docstring). ``report`` and ``wait`` are set by whoever reads it."""

    def __init__(
        self,
        source: AVSource,
        reopen: Callable[[], AVSource],
        *,
        attempts: int,
        wait_s: float,
        now: Callable[[], float] = time.monotonic,
    ):
        self.source, self._reopen, self._now = source, reopen, now
        self.attempts, self.wait_s = attempts, wait_s
        self.name, self.kind, self.size = source.name, source.kind, source.size
        self.duration, self.live = source.duration, source.live
        self.end: float | None = None
        self.report: Callable[[Attempt | Resumed], object] = lambda event: None
        self.wait: Callable[[float], bool] = _sleep
        self._fps = math.inf  # missed frames are counted at the lower of --fps and the source's rate
        self._last: tuple[float, float] | None = None  # stream and clock time of the last frame decoded

    def frames(self, fps: float, until: float | None = None):
        self._fps = fps
        return super().frames(fps, until)

    def decoded(self):
        failed, drop, down_at = 0, None, None  # attempts since the last frame; the error that broke it
        while True:
            try:
                for t, frame in self.source.decoded():
                    if self._last is not None and t <= self._last[0] + EPS:
                        continue  # a file read again from the keyframe before where it broke
                    if failed:
                        self.report(self._resumed(t, down_at))
                        failed, drop = 0, None
                    self._last, self.end = (t, self._now()), self.source.end
                    yield t, frame
                return
            except SourceError as error:
                drop, reason = drop or error, str(error)
                down_at = down_at if failed else self._now()
            self.source.close()
            while True:
                failed += 1
                if failed > self.attempts:
                    raise SourceError(
                        f"{drop}; not back after {self.attempts} reconnect attempts: {reason}"
                    ) from drop
                wait_s = min(self.wait_s * 2 ** (failed - 1), max(self.wait_s, MAX_WAIT_S))
                t = self._last[0] if self._last else 0.0
                self.report(Attempt(t, failed, self.attempts, wait_s, reason))
                if self.wait(wait_s):
                    return  # the stream was stopped meanwhile
                try:
                    self.source = self._open_again()
                    break
                except SourceError as error:
                    reason = str(error)

    def _open_again(self) -> AVSource:
        asked_at = self._now()  # a live source sends from about now on (opening waits for its first frames)
        source = self._reopen()
        if self._last is None:  # it broke before its first frame: it starts again at 0
            return source
        t, at = self._last
        if self.live:  # the time it was down passed on the stream too (a frame's step at least)
            source.start = t + max(asked_at - at, 1 / source.rate)
        else:
            source.origin = self.source.origin
            source.seek(t)
        return source

    def _resumed(self, t: float, down_at: float) -> Resumed:
        rate = min(self._fps, self.source.rate)
        last = self._last[0] if self._last else t
        missed = max(0, math.floor(t * rate + EPS) - math.floor(last * rate + EPS) - 1)
        return Resumed(t, self._now() - down_at, missed)

    def close(self) -> None:
        self.source.close()
