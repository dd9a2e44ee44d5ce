"""When frames arrive: a reader thread decodes the source, and the feed says which frames have arrived
by a given clock time.

Three ways a frame arrives:

- ``paced`` (a file at ``--speed S > 0``): at ``start + t / S``, whenever it was decoded. The reader
  decodes at most ``AHEAD`` picked frames ahead, so that a long file is never held in memory; a frame
  that is due but not decoded yet is waited for (decoding slower than real time shows up as lag).
- ``free`` (a file at ``--speed 0``): when the model is ready for it, one at a time; nothing waits, so
  nothing is dropped, and a frame's lag is the model's time on it.
- ``live`` (a network stream or a camera): when the reader got it from the source. The reader never
  waits for the model: frames that arrive while the model works wait in the feed (``--when-behind``
  says what becomes of them).

``clock`` is anything with ``now()`` and ``sleep(seconds)`` (``SystemClock``; tests advance a fake
one), used for every time the feed reports.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from stc_cli.live.source import Frame, SourceError

AHEAD = 4  # picked frames a file's reader decodes ahead of the model
POLL_S = 0.05  # the longest the loop waits before it looks at new questions again
MODES = ("paced", "free", "live")


class SystemClock:
    @staticmethod
    def now() -> float:
        return time.monotonic()

    @staticmethod
    def sleep(seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@dataclass(frozen=True)
class Arrival:
    frame: Frame
    due: float  # clock time the frame arrived


@dataclass(frozen=True)
class _End:
    end: float | None  # the stream's end in seconds
    error: SourceError | None


@dataclass(frozen=True)
class _Told:
    event: object  # what the source reports among its frames (a reconnection, ``reconnect.py``)


class Reader:
    """``frames`` read in a daemon thread into a queue (``bound`` items at most; None: unbounded, for a
    live source, which must be read at its own pace). Each item is ``(frame, clock time read)``; the
    last one is an ``_End``. ``end()`` gives the stream's end once the frames are exhausted; ``close``
    is called in the thread when it is done."""

    def __init__(
        self,
        frames: Iterator[Frame],
        *,
        bound: int | None,
        stamp: Callable[[], float],
        end: Callable[[], float | None] = lambda: None,
        close: Callable[[], None] = lambda: None,
    ):
        self._frames, self._stamp, self._end, self._close = frames, stamp, end, close
        self._queue: queue.Queue = queue.Queue(maxsize=bound or 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="stc-stream-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def get(self, block: bool = True, timeout: float | None = None):
        """The next item; ``queue.Empty`` when there is none (within ``timeout`` seconds)."""
        return self._queue.get(block, timeout)

    def stop(self) -> None:
        self._stop.set()

    def send(self, event) -> None:
        """``event`` queued among the frames (from the reading thread), for ``Feed.take_events``."""
        self._put(_Told(event))

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` in the reading thread; True when the stream was stopped meanwhile."""
        return self._stop.wait(seconds)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        error = None
        try:
            for frame in self._frames:
                if not self._put((frame, self._stamp())):
                    return
        except SourceError as caught:
            error = caught
        except Exception as caught:  # noqa: BLE001 - whatever breaks a source ends the stream with its reason
            error = SourceError(f"the source broke: {type(caught).__name__}: {caught}")
        finally:
            try:
                self._close()
            except Exception:  # noqa: BLE001 - closing a broken source may fail too
                pass
        self._put(_End(self._end(), error))


class Feed:
    """The frames of ``reader`` as they arrive under ``mode`` (see the module docstring)."""

    def __init__(self, reader: Reader, mode: str, *, speed: float = 1.0, clock=SystemClock):
        if mode not in MODES:
            raise ValueError(f"feed mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "paced" and not speed > 0:
            raise ValueError(f"a paced feed needs --speed > 0, got {speed}")
        self.reader, self.mode, self.speed, self.clock = reader, mode, speed, clock
        self.start_at = 0.0
        self.latest_t: float | None = None  # stream time of the last frame pulled
        self.finished = False
        self.end: float | None = None  # the stream's end, once finished
        self.error: SourceError | None = None
        self._next = None  # an item taken from the reader, not pulled yet
        self._events: list = []  # what the source told among its frames, not taken yet

    def start(self, now: float) -> None:
        self.start_at = now
        self.reader.start()

    def stop(self) -> None:
        self.reader.stop()

    def due(self, t: float) -> float:
        """The clock time stream time ``t`` comes (paced only)."""
        return self.start_at + t / self.speed

    def stream_now(self, now: float) -> float:
        """How far the stream has got at clock time ``now``: a paced file by the clock (up to its end),
        other sources by their last frame; infinite once a source other than a paced file is done."""
        if self.mode == "paced":
            reached = (now - self.start_at) * self.speed
            return min(reached, self.end) if self.finished and self.end is not None else reached
        if self.finished:
            return math.inf
        return self.latest_t if self.latest_t is not None else 0.0

    def pull(self, now: float, want: bool) -> list[Arrival]:
        """The frames that have arrived by ``now`` and were not pulled yet. ``free``: one frame (waiting
        for it) when ``want``, else none."""
        if self.mode == "paced":
            arrived = []
            while (item := self._peek(block=True)) is not None and self.due(item[0].t) <= now:
                self._next = None
                arrived.append(Arrival(item[0], self.due(item[0].t)))
        elif self.mode == "free":
            item = self._peek(block=True, timeout=POLL_S) if want else None
            if item is not None:
                self._next = None
            arrived = [Arrival(item[0], self.clock.now())] if item is not None else []
        else:
            arrived = []
            while (item := self._peek(block=False)) is not None:
                self._next = None
                arrived.append(Arrival(item[0], item[1]))
        if arrived:
            self.latest_t = arrived[-1].frame.t
        return arrived

    def take_events(self) -> list:
        """What the source told (``Reader.send``) up to the frames read so far, once each."""
        events, self._events = self._events, []
        return events

    def next_due(self) -> float | None:
        """Paced: the clock time the next frame arrives (the stream's end once all frames are in; None
        without a known end). Others: None."""
        if self.mode != "paced":
            return None
        item = self._peek(block=True)
        if item is not None:
            return self.due(item[0].t)
        return self.due(self.end) if self.end is not None else None

    def idle(self, now: float, until: float | None = None) -> None:
        """Wait for something to happen: the next frame, ``until`` (a question's time), at most
        ``POLL_S`` (new questions may come from stdin meanwhile)."""
        if self.mode == "paced":
            times = [t for t in (self.next_due(), until) if t is not None]
            wait = min([POLL_S, *(t - now for t in times)])
            self.clock.sleep(max(wait, 0.0))
        elif not self.finished:
            self._peek(block=True, timeout=POLL_S)
        else:
            self.clock.sleep(POLL_S)

    def _peek(self, block: bool, timeout: float | None = None):
        """The next ``(frame, stamp)`` without pulling it, None at the end (or none within ``timeout``)."""
        while self._next is None and not self.finished:
            try:
                item = self.reader.get(block, timeout)
            except queue.Empty:
                return None
            if isinstance(item, _End):
                self.finished, self.end, self.error = True, item.end, item.error
                if self.end is None and self.latest_t is not None:
                    self.end = self.latest_t
                return None
            if isinstance(item, _Told):
                self._events.append(item.event)
            else:
                self._next = item
        return self._next
