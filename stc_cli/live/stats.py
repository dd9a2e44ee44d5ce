"""What the stream loop counts as it goes (running totals only: a stream of hours keeps nothing per
frame), and the ``summary`` event it ends with.

Definitions (``docs``: live mode): ``frames_in`` are the frames taken at ``--fps`` that arrived;
each was encoded, dropped (``--when-behind drop``), or is still waiting in the model for the partner
of its chunk (LiveCC encodes frames in pairs). ``frames_missed`` never arrived: those ``--fps`` would
have taken while a live source was down, before it came back (``reconnects`` counts its returns). A
frame's *lag* is the time from its arrival (a file's frame arrives when its time comes at ``--speed``)
to the end of the model work that put it in the memory. ``real_time_factor`` is stream seconds per
wall-clock second; at ``--speed 1`` the pacing caps it near 1, so there ``frames_dropped`` and
``max_lag_s`` say whether the model keeps up, and ``--speed 0`` measures the headroom. An answer's
latency runs from the moment its question was asked (a scheduled question: when the stream reached its
time) to the answer, waiting for the frames before it included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

STAGES = ("vit", "compress", "prefill")  # model work per frame, as ``Step.timings_ms`` names it


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile, linearly interpolated between the closest ranks (numpy's default);
    None for no value."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Stats:
    frames_in: int = 0
    frames_fed: int = 0  # handed to the model
    frames_encoded: int = 0  # what the model reports it encoded
    frames_dropped: int = 0
    frames_missed: int = 0  # at --fps, while a live source was down (``reconnect.py``)
    reconnects: int = 0  # drops the source came back from
    lag_s: float = 0.0  # of the last frame encoded
    max_lag_s: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_kept: int = 0
    busy_s: float = 0.0  # wall time inside the model (frames and answers)
    latencies_ms: list[float] = field(default_factory=list)  # one per answer
    answer_errors: int = 0
    unanswered: int = 0
    held_start: int | None = None  # bytes the model held before the first frame
    held_bytes: int | None = None  # ... after the last frame
    rss_bytes: int | None = None
    peak_rss_bytes: int | None = None

    def add_step(self, timings_ms: dict[str, float], counts: dict[str, int]) -> None:
        for stage in STAGES:
            if stage in timings_ms:
                self.stage_ms[stage] = self.stage_ms.get(stage, 0.0) + timings_ms[stage]
        self.tokens_in += counts.get("visual_tokens_in", 0)
        self.tokens_kept += counts.get("visual_tokens_kept", 0)

    def add_lag(self, lag_s: float) -> None:
        self.lag_s = lag_s
        self.max_lag_s = max(self.max_lag_s, lag_s)

    def ms_per_frame(self) -> dict[str, float | None]:
        return {
            stage: (ms / self.frames_encoded if self.frames_encoded else None)
            for stage, ms in self.stage_ms.items()
        }

    def summary(self, *, stream_seconds: float, wall_seconds: float, ended: str, reason: str | None) -> dict:
        """The ``summary`` event (without the setting fields the session adds)."""
        per_hour = None
        if self.held_bytes is not None and self.held_start is not None and stream_seconds > 0:
            per_hour = round((self.held_bytes - self.held_start) / stream_seconds * 3600)
        frames = self.frames_encoded
        return {
            "event": "summary",
            "ended": ended,
            "reason": reason,
            "stream_seconds": _round(stream_seconds),
            "wall_seconds": _round(wall_seconds),
            "real_time_factor": _round(stream_seconds / wall_seconds) if wall_seconds > 0 else None,
            "frames_in": self.frames_in,
            "frames_encoded": frames,
            "frames_dropped": self.frames_dropped,
            "frames_waiting": self.frames_fed - frames,
            "frames_missed": self.frames_missed,
            "reconnects": self.reconnects,
            "max_lag_s": _round(self.max_lag_s),
            "busy_seconds": _round(self.busy_s),
            "answers": len(self.latencies_ms),
            "answer_errors": self.answer_errors,
            "unanswered": self.unanswered,
            "answer_latency_ms": {
                "p50": _round(percentile(self.latencies_ms, 50), 1),
                "p95": _round(percentile(self.latencies_ms, 95), 1),
            },
            "ms_per_frame": {stage: _round(ms, 3) for stage, ms in self.ms_per_frame().items()},
            "visual_tokens_per_frame": {
                "in": _round(self.tokens_in / frames, 2) if frames else None,
                "kept": _round(self.tokens_kept / frames, 2) if frames else None,
            },
            "memory": {
                "held_bytes": self.held_bytes,
                "held_growth_bytes_per_stream_hour": per_hour,
                "rss_bytes": self.rss_bytes,
                "peak_rss_bytes": self.peak_rss_bytes,
            },
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
