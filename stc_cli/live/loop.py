"""The stream loop: frames into the model's memory as they arrive, questions answered from the memory as
it is when the stream reaches their time.

Each turn it pulls the frames that have arrived (``feed.py``) and does one thing:

- answer the first waiting question once the stream has reached its time and every frame up to that
  time is handled (a frame at exactly the question's time is seen);
- else encode the oldest waiting frame; under ``--when-behind drop`` the older waiting frames are
  dropped first (counted), keeping the newest one that comes before the next question;
- else wait for the next frame or question.

When the source ends, the questions still waiting are answered at the end (those whose time is beyond
the end with a note). Ctrl-C ends the loop at once; a source that broke ends it with its reason. A
network source that drops and is opened again (``reconnect.py``) tells each attempt and its return
among its frames: they are reported and counted as they are pulled.
Nothing here keeps anything per frame beyond the frames waiting (``stats.py``).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from stc_cli.live.feed import Arrival, Feed
from stc_cli.live.memory import held_bytes, peak_rss_bytes, rss_bytes
from stc_cli.live.questions import Question
from stc_cli.live.reconnect import Attempt, Resumed
from stc_cli.live.stats import Stats

WHEN_BEHIND = ("drop", "queue")
ENDINGS = ("end", "interrupted", "broken", "failed")  # the summary's "ended"


@dataclass(order=True)
class Pending:
    t: float  # stream seconds it is asked at
    number: int  # order of asking, for ties
    question: Question = field(compare=False)
    asked_at: float | None = field(default=None, compare=False)  # clock time; None until reached


class Sink:
    """Where the loop reports (``display.py``): every method may be left as it is."""

    def frame(self, event: dict) -> None: ...

    def answer(self, event: dict) -> None: ...

    def reconnect(self, event: dict) -> None: ...  # told as a note too

    def note(self, text: str) -> None: ...

    def tick(self, stats: Stats, stream_now: float) -> None: ...

    def summary(self, summary: dict) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None: ...


class StreamLoop:
    """``run()`` streams ``feed`` into ``model`` and returns the summary event (``stats.py``).
    ``make_query(question, number)`` gives the ``Query`` the model answers."""

    def __init__(
        self,
        model,
        feed: Feed,
        make_query: Callable,
        *,
        sink: Sink | None = None,
        questions: list[Question] = (),
        when_behind: str = "drop",
    ):
        if when_behind not in WHEN_BEHIND:
            raise ValueError(f"--when-behind must be drop or queue, got {when_behind!r}")
        self.model, self.feed, self.make_query, self.when_behind = model, feed, make_query, when_behind
        self.sink = sink or Sink()
        self.clock = feed.clock
        self.stats = Stats()
        self.waiting: deque[Arrival] = deque()
        self.handed: deque[float] = deque()  # arrival times of frames the model holds unencoded
        self.pending: list[Pending] = []
        self._asked = 0
        self._inbox: list[tuple[Question, float]] = []
        self._lock = threading.Lock()
        for question in questions:
            self._schedule(question, question.t, None)

    def ask(self, question: Question, at: float) -> None:
        """A question asked at clock time ``at`` (stdin, from any thread): it is put at the stream time
        of that moment."""
        with self._lock:
            self._inbox.append((question, at))

    def run(self) -> dict:
        clock, feed, stats = self.clock, self.feed, self.stats
        stats.held_start = held_bytes(self.model)
        started = clock.now()
        feed.start(started)
        ended, reason = "end", None
        try:
            while True:
                now = clock.now()
                self._take_inbox(now)
                arrived = feed.pull(now, want=not self.waiting)
                stats.frames_in += len(arrived)
                self.waiting.extend(arrived)
                for event in feed.take_events():
                    self._source_event(event)
                question = self._ready(now)
                if question is not None and (not self.waiting or self.waiting[0].frame.t > question.t):
                    self._answer(question)
                elif self.waiting:
                    self._drop(question.t if question is not None else math.inf)
                    self._encode(self.waiting.popleft())
                elif feed.finished and (feed.error or not self._playing(now)):
                    if feed.error is not None:
                        ended, reason = "broken", str(feed.error)
                    elif feed.mode == "live":  # a live stream has no end of its own: say when it stopped
                        reason = f"the live source ended at {feed.end or 0.0:.1f} s"
                    break
                else:
                    feed.idle(now, self._next_due())
                self.sink.tick(stats, feed.stream_now(clock.now()))
            for question in list(self.pending):  # the stream ended before their time
                self._answer(question)
        except KeyboardInterrupt:
            ended, reason = "interrupted", "interrupted (Ctrl-C)"
        except _ModelFailed as failure:
            ended, reason = "failed", str(failure)
        finally:
            feed.stop()
        stats.unanswered = len(self.pending) + len(self._inbox)
        end = clock.now()
        stream = feed.end if feed.finished and feed.end is not None else feed.stream_now(end)
        stream = max(stream if math.isfinite(stream) else (feed.latest_t or 0.0), 0.0)
        stats.rss_bytes = rss_bytes()
        stats.peak_rss_bytes = max(peak_rss_bytes(), stats.rss_bytes or 0)
        return stats.summary(stream_seconds=stream, wall_seconds=end - started, ended=ended, reason=reason)

    # -- questions ---------------------------------------------------------------------------------
    def _schedule(self, question: Question, t: float, asked_at: float | None) -> None:
        self._asked += 1
        bisect.insort(self.pending, Pending(t, self._asked, question, asked_at))

    def _take_inbox(self, now: float) -> None:
        with self._lock:
            inbox, self._inbox = self._inbox, []
        for question, at in inbox:
            at = max(at, self.feed.start_at)  # typed before the stream started: asked at its start
            t = self.feed.stream_now(at)
            self._schedule(question, t if math.isfinite(t) else (self.feed.latest_t or 0.0), at)

    def _ready(self, now: float) -> Pending | None:
        """The first waiting question, if the stream has reached its time."""
        if not self.pending:
            return None
        first, feed = self.pending[0], self.feed
        reached = feed.stream_now(now) >= first.t
        if not (reached or (feed.finished and not self._playing(now))):
            return None
        if first.asked_at is None:  # a scheduled question is asked when the stream reaches its time
            first.asked_at = feed.due(first.t) if feed.mode == "paced" and reached else now
        return first

    def _next_due(self) -> float | None:
        """The clock time the first waiting question comes (a paced file), for ``idle``."""
        if self.pending and self.feed.mode == "paced":
            return self.feed.due(self.pending[0].t)
        return None

    def _playing(self, now: float) -> bool:
        """A paced file plays to its end in real time, even after its last frame."""
        return self.feed.mode == "paced" and self.feed.end is not None and now < self.feed.due(self.feed.end)

    def _answer(self, pending: Pending) -> None:
        self.pending.remove(pending)
        question, clock = pending.question, self.clock
        end = self.feed.end if self.feed.finished else None
        late = end is not None and pending.t > end
        asked_at = pending.asked_at if pending.asked_at is not None else clock.now()
        event = {
            "event": "answer",
            "t": round(min(pending.t, end) if late else pending.t, 3),
            "question": question.text,
            "options": list(question.options),
            "origin": question.origin,
        }
        started = clock.now()
        try:
            answer = self.model.answer(self.make_query(question, pending.number))
        # a failed answer (CUDA out of memory, a query the protocol cannot put) is reported; the stream
        # goes on
        except (RuntimeError, ValueError) as error:
            self.stats.answer_errors += 1
            event.update(answer=None, error=f"{type(error).__name__}: {error}")
        else:
            event["answer"] = answer.text
        done = clock.now()
        self.stats.busy_s += done - started
        latency_ms = (done - asked_at) * 1000
        if "error" not in event:
            self.stats.latencies_ms.append(latency_ms)
            event["answer_ms"] = round(answer.timings_ms.get("answer", (done - started) * 1000), 1)
        event["latency_ms"] = round(latency_ms, 1)
        event["frames_encoded"] = self.stats.frames_encoded
        if late:
            event["asked_t"] = pending.t
            event["note"] = f"asked for {pending.t:g} s; the stream ended at {end:.1f} s: answered at the end"
        self.sink.answer(event)

    # -- frames ------------------------------------------------------------------------------------
    def _source_event(self, event: Attempt | Resumed) -> None:
        if isinstance(event, Attempt):
            self.sink.reconnect(event.event())
        else:
            self.stats.reconnects += 1
            self.stats.frames_missed += event.missed
        self.sink.note(event.line())

    def _drop(self, limit: float) -> None:
        """``drop``: every waiting frame but the newest one at or before ``limit``."""
        if self.when_behind != "drop":
            return
        keep = max((i for i, arrival in enumerate(self.waiting) if arrival.frame.t <= limit), default=0)
        for _ in range(keep):
            dropped = self.waiting.popleft()
            self.stats.frames_dropped += 1
            self.sink.frame({"event": "frame", "t": round(dropped.frame.t, 3), "status": "dropped"})

    def _encode(self, arrival: Arrival) -> None:
        import torch

        stats, clock = self.stats, self.clock
        pixels = torch.from_numpy(arrival.frame.pixels)[None]
        started = clock.now()
        try:
            step = self.model.add_frames(pixels, (arrival.frame.t,))
        except RuntimeError as error:
            raise _ModelFailed(
                f"the model failed on the frame at {arrival.frame.t:.1f} s: {error}"
            ) from error
        done = clock.now()
        stats.busy_s += done - started
        stats.frames_fed += 1
        self.handed.append(arrival.due)
        encoded = step.counts.get("frames_encoded", 0)  # LiveCC holds a frame until its pair comes
        lags = [done - self.handed.popleft() for _ in range(min(encoded, len(self.handed)))]
        stats.frames_encoded += encoded
        for lag in lags:
            stats.add_lag(lag)
        stats.add_step(step.timings_ms, step.counts)
        stats.held_bytes = held_bytes(self.model)
        self.sink.frame(
            {
                "event": "frame",
                "t": round(arrival.frame.t, 3),
                "status": "encoded" if encoded else "waiting",
                "lag_s": round(max(lags), 4) if lags else None,  # of the oldest frame now in the memory
                "ms": {stage: round(ms, 3) for stage, ms in step.timings_ms.items()},
                "visual_tokens_kept": step.counts.get("visual_tokens_kept"),
            }
        )


class _ModelFailed(Exception):
    pass
