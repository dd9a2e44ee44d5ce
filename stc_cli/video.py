"""Frame decoding: a video's frames, picked by a sampling rule inside a time window, as a uint8 tensor.

Three rules, each the one a released harness uses (``docs/protocols.md``):

- ``stride`` (ReKV and STC, [STC]``model/video_qa/base_refactored.py:27-30``): every
  ``int(round(native_fps) / fps)``-th decoded frame from the first, so at 1 fps every 30th frame of a
  29.97 fps video and every 12th of a 12.5 fps one. A window ``(start, end)`` keeps the frames with
  ``start <= i / native_fps < end`` (a clip cut at ``end`` seconds holds nothing at ``end`` itself).
- ``uniform`` (LiveCC's OVO-Bench evaluation, [LiveCC]``evaluation/ovobench/
  distributed_evaluate_ovobench.py:26-59`` with qwen-vl-utils 0.0.11 ``smart_nframes``): the frames whose
  decoded *end* timestamp lies in ``[start, max(start + 1, end)]``, then an even number of them spread
  evenly (``linspace(...).round()``): ``fps`` per second of the clip, at least 4, at most ``max_frames``.
- ``dynamic_fps1`` (StreamForest's evaluation, [SF] ``llava/video_utils.py:102-169``): the middles of
  ``int(duration + 1)`` equal intervals of the clip (at least 4, at most ``max_frames``); ``fps`` is moot.
- ``uniform_index`` (SimpleStream's evaluation, qwen-vl-utils 0.0.14 ``vision_process.py:144-181,234-329``:
  ``fetch_video`` with its decord or torchcodec reader): the native frames from
  ``ceil(start * native_fps)`` to ``floor(end * native_fps)``, then an even number of them spread evenly
  over those *indices* (``linspace(...).round()``): ``fps`` per second of the clip, at least 4, at most
  ``max_frames``. Where ``uniform`` reads end timestamps, this rule reads frame starts: one frame apart.

A frame's time is its index over the native rate, whichever rule picked it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch  # before decord: decord's bundled libraries must load after torch's

RULES = ("stride", "uniform", "dynamic_fps1", "uniform_index")
UNIFORM_MIN_FRAMES = 4  # qwen-vl-utils FPS_MIN_FRAMES
FRAME_FACTOR = 2  # qwen-vl-utils: frame counts are even (one Qwen2-VL temporal patch is 2 frames)


def _decord():
    """decord, with ffmpeg's own messages silenced: a damaged frame would otherwise print lines such as
    ``[mpeg4 @ 0x...] ac-tex damaged`` over progress bars and logs; what matters reaches VideoError."""
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    return decord


# decord's own C++ log lines (``[12:00:00] .../video_reader.cc:83: ERROR opening: ...``) and ffmpeg's
# (``[mov,mp4,m4a,3gp,3g2,mj2 @ 0x...] moov atom not found``)
_DECORD_LINE = re.compile(rb"\.cc:\d+: |^\[[^\]]* @ 0x[0-9a-f]+\]")
_STDERR = threading.Lock()
# One decord call at a time in the process: the runner opens the next video in one worker while another
# decodes the current one, and decord (ffmpeg underneath) is not documented as safe across threads.
_DECORD = threading.Lock()


@contextlib.contextmanager
def _decord_lines_dropped():
    """Drop what decord writes to the process's stderr in the block, and pass every other line on.
    decord prints a file it cannot open whatever its log level; VideoError says the same in one line."""
    with _STDERR, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            others = [line for line in sink.read().splitlines(keepends=True) if not _DECORD_LINE.search(line)]
            if others:  # written meanwhile by someone else (another thread): not ours to drop
                os.write(2, b"".join(others))


class VideoError(ValueError):
    """A video that cannot be read: the message names the file and says what to do."""


@dataclass(frozen=True)
class Sampling:
    """Which frames a model is given: ``fps`` frames per second by ``rule`` (see the module docstring);
    ``max_frames`` caps the ``uniform`` (LiveCC: 480), ``uniform_index`` (SimpleStream: 768) and
    ``dynamic_fps1`` (StreamForest: 2048) rules."""

    fps: float
    rule: str = "stride"
    max_frames: int = 480

    def __post_init__(self):
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.rule not in RULES:
            raise ValueError(f"unknown frame sampling rule {self.rule!r}; known: {', '.join(RULES)}")
        if self.max_frames < FRAME_FACTOR:
            raise ValueError(f"max_frames must be >= {FRAME_FACTOR}, got {self.max_frames}")


@dataclass(frozen=True)
class Frames:
    """``pixels``: uint8 ``[N, H, W, 3]`` (RGB); ``times``: seconds from the video's start, one per frame."""

    pixels: torch.Tensor
    times: tuple[float, ...]
    native_fps: float


def frame_indices(n_frames: int, native_fps: float, fps: float, window=(0.0, math.inf)) -> list[int]:
    """The ``stride`` rule: indices of the frames sampled at ``fps`` inside ``window`` (seconds), from
    ``n_frames`` decoded frames at ``native_fps``. Upstream's stride ``int(round(native) / fps)`` is 0
    (and its ``range`` fails) below one native frame per sampled frame: here it is at least 1."""
    if fps <= 0 or native_fps <= 0:
        raise ValueError(f"fps must be positive, got {fps} (video: {native_fps})")
    stride = max(1, int(round(native_fps) / fps))
    start, end = window
    return [i for i in range(0, n_frames, stride) if start <= i / native_fps < end]


def uniform_indices(
    end_times: Sequence[float],
    native_fps: float,
    window=(0.0, math.inf),
    fps: float = 2.0,
    max_frames: int = 480,
) -> list[int]:
    """The ``uniform`` rule: indices of the frames LiveCC's OVO-Bench loader picks, from the decoded
    frames' end timestamps (seconds, ascending). A start of 0 means the first frame and an end of 0 or
    infinity the last, as upstream's ``if not video_start`` reads them; both are clamped into the video."""
    import numpy as np

    if not len(end_times):
        return []
    first, last = float(end_times[0]), float(end_times[-1])
    start, end = window
    start = first if not start else start
    end = last if not end or math.isinf(end) else end
    start, end = min(max(first, start), last), min(max(first, end), last)
    end = max(start + 1, end)  # a clip holds at least one second
    clip = [i for i, t in enumerate(end_times) if start <= t <= end]
    if not clip:
        return []
    # smart_nframes sees at least 2 frames, and a video below `fps` as if it had been resampled to it
    total, rate = max(len(clip), FRAME_FACTOR), native_fps
    if native_fps < fps:
        total, rate = int(len(clip) * fps / native_fps), fps
    least = math.ceil(UNIFORM_MIN_FRAMES / FRAME_FACTOR) * FRAME_FACTOR
    most = math.floor(min(max_frames, total) / FRAME_FACTOR) * FRAME_FACTOR
    count = min(max(total / rate * fps, least), most, total)
    count = math.floor(count / FRAME_FACTOR) * FRAME_FACTOR
    picks = np.linspace(0, len(clip) - 1, count).round().astype(int)  # numpy rounds half to even
    return [clip[i] for i in picks.tolist()]


def uniform_index_indices(
    n_frames: int, native_fps: float, window=(0.0, math.inf), fps: float = 1.0, max_frames: int = 768
) -> list[int]:
    """The ``uniform_index`` rule: indices of the frames qwen-vl-utils 0.0.14 ``fetch_video`` reads with
    decord or torchcodec, ``window`` being its ``(video_start, video_end)`` in seconds (an infinite end:
    none given). Empty where upstream raises (``vision_process.py:180,281``): the question fails there."""
    duration = n_frames / native_fps
    start, end = (min(max(0.0, t), duration) for t in window)  # calculate_video_frame_range, :263-285
    first = math.ceil(start * native_fps)
    last = n_frames - 1 if math.isinf(window[1]) else min(math.floor(end * native_fps), n_frames - 1)
    if first >= last:  # a single frame too: smart_nframes would ask for none
        return []
    total = last - first + 1
    # smart_nframes (:144-181): `fps` per second, at least 4, at most min(max_frames, total), even
    least = math.ceil(UNIFORM_MIN_FRAMES / FRAME_FACTOR) * FRAME_FACTOR
    most = math.floor(min(max_frames, total) / FRAME_FACTOR) * FRAME_FACTOR
    count = math.floor(min(max(total / native_fps * fps, least), most, total) / FRAME_FACTOR) * FRAME_FACTOR
    # torch's float32 linspace and round-half-to-even, as upstream calls them (:317)
    return torch.linspace(first, last, count).round().long().tolist()


def dynamic_fps1_indices(
    n_frames: int, native_fps: float, clip: tuple[float, float] | None = None, max_frames: int = 2048
) -> list[int]:
    """Indices of the frames StreamForest reads (``sample='dynamic_fps1'``, ``min_num_frames=4``,
    ``local_num_frames=1``): ``int(duration + 1)`` frames, at most ``max_frames``, at least 4, each the middle
    of one of as many equal intervals of the clip; a clip of fewer frames than that gives each of its frames
    and repeats the last. ``clip`` is ``(start, end)`` in seconds, ending at most 0.1 s before the video
    does ([SF] ``llava/video_utils.py:102-169,254-300``)."""
    import numpy as np

    start_index = 0
    if clip:
        start, end = max(0.0, clip[0]), min(n_frames / native_fps - 0.1, clip[1])
        n_frames, start_index = int((end - start) * native_fps), int(start * native_fps)
    least = min(4, n_frames)
    wanted = min(max(int(n_frames / native_fps + 1), 1), max_frames)
    total = max(least, wanted)
    taken = min(total, n_frames)
    bounds = np.linspace(0, n_frames, taken + 1).astype(int)
    picks = [(int(a) + int(b) - 1) // 2 for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    picks += picks[-1:] * (total - len(picks))
    return [index + start_index for index in picks]


class VideoFrames:
    """The frames ``sampling`` picks from one video inside a window, decoded on demand: ``times`` are
    known once the video is opened, ``pixels(start, stop)`` decodes only those frames, so that a long
    video is never held whole at native resolution (an hour of 1080p at 1 fps is 22 GB)."""

    def __init__(self, path: Path, sampling: Sampling, window) -> None:
        decord = _decord()
        self.path = path
        if not path.is_file():
            raise VideoError(
                f"{path}: no such video; `stc check` lists what is missing and `stc download` fetches it"
            )
        try:
            with _DECORD:
                self._open(decord, path, sampling, window)
        except (decord.DECORDError, RuntimeError) as error:  # decord raises either for a broken file
            raise self._broken(error) from error
        self.times = tuple(i / self.native_fps for i in self._indices)
        self._ahead: tuple[int, torch.Tensor] | None = None  # (first frame, frames) decoded in advance

    def _open(self, decord, path: Path, sampling: Sampling, window) -> None:
        """The reader, the native rate, the picked frames' indices and the frame size."""
        with _decord_lines_dropped():
            self._reader = decord.VideoReader(str(path), num_threads=1)
        self.native_fps = float(self._reader.get_avg_fps())
        if sampling.rule == "uniform":
            ends = self._reader.get_frame_timestamp(range(len(self._reader)))[:, 1].tolist()
            self._indices = uniform_indices(ends, self.native_fps, window, sampling.fps, sampling.max_frames)
        elif sampling.rule == "uniform_index":
            self._indices = uniform_index_indices(
                len(self._reader), self.native_fps, window, sampling.fps, sampling.max_frames
            )
        elif sampling.rule == "dynamic_fps1":
            clip = None if tuple(window) == (0.0, math.inf) else window  # upstream clips only when asked
            self._indices = dynamic_fps1_indices(
                len(self._reader), self.native_fps, clip, sampling.max_frames
            )
        else:
            self._indices = frame_indices(len(self._reader), self.native_fps, sampling.fps, window)
        self.size = tuple(self._reader[0].shape[:2])

    def __len__(self) -> int:
        return len(self._indices)

    def decode_ahead(self, count: int) -> None:
        """Decode the first ``count`` frames now (in a worker, before the model asks): ``pixels`` then
        serves any span inside them without decoding."""
        self._ahead = (0, self.pixels(0, count))

    def pixels(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """uint8 ``[n, H, W, 3]`` (RGB) of frames ``start`` to ``stop`` (exclusive) of ``times``."""
        decord = _decord()

        stop = len(self._indices) if stop is None else stop
        if self._ahead is not None:
            first, frames = self._ahead
            if first <= start and stop <= first + len(frames):
                return frames[start - first : stop - first]
            self._ahead = None  # the model has moved past it
        indices = self._indices[start:stop]
        if not indices:
            return torch.empty(0, *self.size, 3, dtype=torch.uint8)
        try:
            with _DECORD:
                return torch.from_numpy(self._reader.get_batch(indices).asnumpy())
        except (decord.DECORDError, RuntimeError) as error:
            raise self._broken(error) from error

    def _broken(self, error: Exception) -> VideoError:
        return VideoError(f"{self.path}: cannot be decoded ({error}); delete it and download it again")


def read_frames(path: Path | str, sampling: Sampling, window=(0.0, math.inf)) -> Frames:
    """Decode, all at once, the frames of ``path`` that ``sampling`` picks inside ``window``; none gives an
    empty ``[0, H, W, 3]``.

    Raises:
        VideoError: the file is missing or cannot be decoded.
    """
    video = VideoFrames(Path(path), sampling, window)
    return Frames(video.pixels(), video.times, video.native_fps)
