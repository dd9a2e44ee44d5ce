"""Where frames come from: a video file, an ``http(s)://`` URL, an ``rtsp://`` (or other network) stream
or a camera (``/dev/video0``), read with PyAV; and which of its frames the model gets.

A frame's time is its presentation time in seconds from the stream's first frame. ``pick`` takes the
frames at ``fps`` by those times: the first frame at or after each multiple of ``1 / fps``, each frame at
most once (a source slower than ``fps`` gives every frame). A source is *live* when it is a network
stream, a camera, or has no duration (a live HTTP stream): it plays at its own pace; anything else is
played at ``--speed`` (``feed.py``). A network source that drops is opened again by ``reconnect.py``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

EPS = 1e-6  # seconds: a frame this close before a sampling point counts as on it
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "rtp", "srt", "udp", "tcp")  # live by nature
URL_SCHEMES = ("http", "https")  # a file served over HTTP, unless it has no duration
CAMERA = re.compile(r"/dev/video\d+")
T = TypeVar("T")


class SourceError(Exception):
    """A source that cannot be opened, or that broke while it was read: the message names the source
    and the reason in one line."""


@dataclass(frozen=True)
class Frame:
    t: float  # presentation time, seconds from the stream's first frame
    pixels: np.ndarray  # uint8 [H, W, 3], RGB


def kind_of(source: str) -> str:
    """``camera``, ``stream`` (rtsp:// and other live network protocols), ``url`` (http, https) or
    ``file``; ValueError for a scheme PyAV is not asked to read here."""
    if CAMERA.fullmatch(source):
        return "camera"
    if "://" in source:
        scheme = source.split("://", 1)[0].lower()
        if scheme in STREAM_SCHEMES:
            return "stream"
        if scheme in URL_SCHEMES:
            return "url"
        if scheme != "file":
            known = ", ".join(f"{s}://" for s in (*URL_SCHEMES, *STREAM_SCHEMES))
            raise ValueError(f"{source}: unknown scheme {scheme}://; a file, /dev/videoN or one of {known}")
    return "file"


def pick(
    frames: Iterable[tuple[float, T]], fps: float, until: float | None = None
) -> Iterator[tuple[float, T]]:
    """The ``(time, frame)`` pairs taken at ``fps`` (see the module docstring), up to ``until`` seconds
    (excluded)."""
    if not fps > 0:
        raise ValueError(f"--fps must be > 0, got {fps}")
    next_at = 0.0
    for t, frame in frames:
        if until is not None and t >= until:
            return
        if t + EPS >= next_at:
            yield t, frame
            next_at = (math.floor(t * fps + EPS) + 1) / fps


def reason(error: BaseException) -> str:
    """An FFmpeg error's own words, without the path PyAV appends."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


class Source:
    """``frames(fps)`` yields the frames of ``decoded()`` picked at ``fps`` as ``Frame``s (converting only
    the picked ones to RGB); ``end`` is the stream's end in seconds once read to the end."""

    end: float | None = None

    def decoded(self) -> Iterator[tuple[float, object]]:
        """Every decoded frame as ``(time, av.VideoFrame)``; sets ``end`` as it goes."""
        raise NotImplementedError

    def frames(self, fps: float, until: float | None = None) -> Iterator[Frame]:
        for t, frame in pick(self.decoded(), fps, until):
            yield Frame(t, frame.to_ndarray(format="rgb24"))
        if until is not None and (self.end is None or self.end > until):
            self.end = until


class AVSource(Source):
    """One source opened with PyAV (``Source``: decoding every frame). Raises ``SourceError`` when the
    source cannot be opened or breaks."""

    def __init__(self, source: str, timeout_s: float = 10.0):
        import av

        self.name, self.kind = source, kind_of(source)
        path = source.removeprefix("file://")
        if self.kind == "file" and not Path(path).is_file():
            what = "a folder, not a video" if Path(path).is_dir() else "no such file"
            raise SourceError(f"cannot open {source}: {what}")
        options = {"rtsp_transport": "tcp"} if source.lower().startswith("rtsp") else {}
        network = self.kind in ("stream", "url", "camera")
        try:
            self._container = av.open(
                path,
                format="v4l2" if self.kind == "camera" else None,
                options=options,
                timeout=(timeout_s, timeout_s) if network else None,
            )
        except av.error.FFmpegError as error:
            raise SourceError(f"cannot open {source}: {reason(error)}") from error
        except OSError as error:  # a device node that is not a camera, a permission
            raise SourceError(f"cannot open {source}: {reason(error)}") from error
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"cannot open {source}: it holds no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self.size = (self._stream.height, self._stream.width) if self._stream.height else None
        duration = self._container.duration
        self.duration = duration / 1_000_000 if duration and duration > 0 else None  # AV_TIME_BASE
        self.live = self.kind in ("stream", "camera") or self.duration is None
        self.rate = float(self._stream.average_rate or self._stream.guessed_rate or 25)  # native fps
        self.end: float | None = None
        # where a source opened again goes on (``reconnect.py``): a file on its old timeline (``origin``,
        # the presentation time that is stream time 0), a live source from ``start`` (its first frame's
        # stream time)
        self.origin: float | None = None
        self.start = 0.0

    def decoded(self):
        import av

        previous = last = None
        try:
            for frame in self._container.decode(self._stream):
                t = frame.time
                if t is None:  # no presentation time: the native rate after the previous frame
                    t = previous + 1 / self.rate if previous is not None else 0.0
                self.origin = t - self.start if self.origin is None else self.origin
                previous, last = t, t - self.origin
                ticks = getattr(frame, "duration", None)  # PyAV >= 13; else the native rate
                step = ticks * frame.time_base if ticks and frame.time_base else None
                self.end = last + (float(step) if step else 1 / self.rate)
                yield last, frame
        except av.error.FFmpegError as error:
            at = f" at {last:.1f} s" if last is not None else ""
            raise SourceError(f"{self.name} broke{at}: {reason(error)}") from error
        if self.end is None:
            raise SourceError(f"{self.name}: no frame could be decoded")
        if not self.live and self.duration and self.end < self.duration - max(0.5, 2 / self.rate):
            raise SourceError(f"{self.name} broke: it ended at {self.end:.1f} s of {self.duration:.1f} s")

    def seek(self, t: float) -> None:
        """Read from the keyframe at or before stream time ``t`` (needs ``origin``); where the server
        cannot seek, from where it is (the caller skips the frames it has had)."""
        import av

        try:
            self._container.seek(round((self.origin + t) / self._stream.time_base), stream=self._stream)
        except av.error.FFmpegError:
            pass

    def close(self) -> None:
        self._container.close()
