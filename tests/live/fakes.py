"""Stand-ins for the live-mode tests: a clock that only moves when told, a model that takes a set time
per frame on that clock, and sources that are lists of frame times."""

from __future__ import annotations

import time

import numpy as np

from stc_cli.live.source import Frame, SourceError, pick
from stc_cli.models.base import Answer, Step


class FakeClock:
    """``now()`` moves only by ``sleep`` (the feed's waits) and ``advance`` (the fake model's work)."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        self.t += seconds


class TimedModel:
    """A ``VideoModel`` that takes ``frame_s`` of ``clock`` per frame and ``answer_s`` per answer; it
    answers with the times of the frames it holds. ``pairs``: encode frames two at a time, as LiveCC."""

    def __init__(self, clock, frame_s: float = 0.0, answer_s: float = 0.0, pairs: bool = False, sleep=None):
        self.clock, self.frame_s, self.answer_s, self.pairs = clock, frame_s, answer_s, pairs
        self.sleep = sleep or clock.advance
        self.times: list[float] = []
        self.pending: list[float] = []
        self.queries = []

    def reset(self) -> None:
        self.times, self.pending = [], []

    def add_frames(self, frames, times) -> Step:
        assert frames.dtype.is_floating_point is False and frames.shape[0] == len(times)
        self.sleep(self.frame_s * len(times))
        self.pending += list(times)
        encoded = len(self.pending) - len(self.pending) % 2 if self.pairs else len(self.pending)
        self.times += self.pending[:encoded]
        self.pending = self.pending[encoded:]
        timings = {"vit": 1000 * self.frame_s * len(times), "prefill": 1.0}
        counts = {
            "frames_encoded": encoded,
            "visual_tokens_in": 16 * encoded,
            "visual_tokens_kept": 5 * encoded,
        }
        return Step(timings_ms=timings, counts=counts)

    def answer(self, query) -> Answer:
        self.queries.append(query)
        self.sleep(self.answer_s)
        return Answer(
            text=",".join(f"{t:g}" for t in self.times), timings_ms={"answer": 1000 * self.answer_s}
        )

    def describe(self) -> dict:
        return {"model": "timed", "model_path": "fake", "dtype": "uint8"}


class ListSource:
    """Frames at ``times`` (tiny, black), ending at ``end``; ``live`` as a network source; ``gap_s`` of
    real time before each frame (a live source's pace); ``fail_at``: raise SourceError at that frame."""

    def __init__(
        self, times, end: float, live: bool = False, gap_s: float = 0.0, fail_at: float | None = None
    ):
        self.times, self.live, self.gap_s, self.fail_at = list(times), live, gap_s, fail_at
        self._end = end
        self.end: float | None = None
        self.closed = False

    def frames(self, fps: float, until: float | None = None):
        pixels = np.zeros((2, 2, 3), np.uint8)
        for t, _ in pick(((t, None) for t in self.times), fps, until):
            if self.gap_s:
                time.sleep(self.gap_s)
            if self.fail_at is not None and t >= self.fail_at:
                raise SourceError(f"fake broke at {t:.1f} s: Input/output error")
            self.end = t
            yield Frame(t, pixels)
        self.end = self._end if until is None else min(self._end, until)

    def close(self) -> None:
        self.closed = True


class SyntheticSource:
    """``n`` frames at ``fps`` of ``size`` pixels, each a fresh array (a loop that kept frames would
    grow by ``size`` x 3 bytes a frame), as a file played at ``--speed``."""

    live = False

    def __init__(self, n: int, fps: float, size: tuple[int, int] = (48, 64)):
        self.n, self.fps, self.size = n, fps, size
        self.end: float | None = None

    def frames(self, fps: float, until: float | None = None):
        for i in range(self.n):
            yield Frame(i / self.fps, np.full((*self.size, 3), i % 256, np.uint8))
        self.end = self.n / self.fps

    def close(self) -> None:
        pass
