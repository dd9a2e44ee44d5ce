"""Small synthetic videos for the live-mode tests (``tests/videos.py``). ``faststart`` puts the index (moov)
first, as streamed files have it, so that a file cut short still opens and breaks while it is read."""

from __future__ import annotations

from pathlib import Path

from tests.videos import write_video


def write_clip(
    path: Path, frames: int = 8, fps: int = 4, size: tuple[int, int] = (48, 64), faststart: bool = True
) -> Path:
    """An mp4 of ``frames`` frames at ``fps`` whose brightness steps by 30 per frame (frame i is all
    ``30 * i % 256``): ``frames / fps`` seconds long."""
    return write_video(path, frames, fps, size, faststart=faststart)


def write_ts(path: Path, frames: int = 30, fps: int = 10, size: tuple[int, int] = (48, 64)) -> Path:
    """An MPEG-TS stream (MPEG-2 video): what a live HTTP source sends, with no duration once streamed."""
    return write_video(path, frames, fps, size, step=8, container_format="mpegts", codec="mpeg2video")
