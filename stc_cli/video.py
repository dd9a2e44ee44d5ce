"""Frame decoding: a video's frames at a given rate, inside a time window, as a uint8 tensor.

Frames are taken the way ReKV's loader takes them: every ``round(native_fps / fps)``-th decoded frame
from the first one, so at 0.5 fps from a 30 fps video, frames 0, 60, 120, ... A frame's time is its
index over the native rate; a window ``(start, end)`` keeps the frames with ``start <= t < end``
(a clip cut at ``end`` seconds holds nothing at ``end`` itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch  # before decord: decord's bundled libraries must load after torch's


class VideoError(ValueError):
    """A video that cannot be read: the message names the file and says what to do."""


@dataclass(frozen=True)
class Frames:
    """``pixels``: uint8 ``[N, H, W, 3]`` (RGB); ``times``: seconds from the video's start, one per frame."""

    pixels: torch.Tensor
    times: tuple[float, ...]
    native_fps: float


def frame_indices(n_frames: int, native_fps: float, fps: float, window=(0.0, math.inf)) -> list[int]:
    """Indices of the frames sampled at ``fps`` inside ``window`` (seconds), from ``n_frames`` decoded
    frames at ``native_fps``."""
    if fps <= 0 or native_fps <= 0:
        raise ValueError(f"fps must be positive, got {fps} (video: {native_fps})")
    stride = max(1, round(native_fps / fps))
    start, end = window
    return [i for i in range(0, n_frames, stride) if start <= i / native_fps < end]


def read_frames(path: Path | str, fps: float, window=(0.0, math.inf)) -> Frames:
    """Decode ``path`` at ``fps`` inside ``window``; no frame in the window gives an empty ``[0, H, W, 3]``.

    Raises:
        VideoError: the file is missing or cannot be decoded.
    """
    import decord

    path = Path(path)
    if not path.is_file():
        raise VideoError(
            f"{path}: no such video; `stc check` lists what is missing and `stc download` fetches it"
        )
    try:
        reader = decord.VideoReader(str(path), num_threads=1)
        native = float(reader.get_avg_fps())
        indices = frame_indices(len(reader), native, fps, window)
        height, width = reader[0].shape[:2]
        pixels = reader.get_batch(indices).asnumpy() if indices else None
    except (decord.DECORDError, RuntimeError) as error:  # decord raises either for a broken file
        raise VideoError(f"{path}: cannot be decoded ({error}); delete it and download it again") from error
    frames = (
        torch.from_numpy(pixels)
        if pixels is not None
        else torch.empty(0, height, width, 3, dtype=torch.uint8)
    )
    return Frames(frames, tuple(i / native for i in indices), native)
