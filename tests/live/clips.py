"""Small synthetic videos for the live-mode tests, written with PyAV. ``faststart`` puts the index (moov)
first, as streamed files have it, so that a file cut short still opens and breaks while it is read."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_clip(
    path: Path, frames: int = 8, fps: int = 4, size: tuple[int, int] = (48, 64), faststart: bool = True
) -> Path:
    """An mp4 of ``frames`` frames at ``fps`` whose brightness steps by 30 per frame (frame i is all
    ``30 * i % 256``): ``frames / fps`` seconds long."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = size
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.full((height, width, 3), (30 * i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_ts(path: Path, frames: int = 30, fps: int = 10, size: tuple[int, int] = (48, 64)) -> Path:
    """An MPEG-TS stream (MPEG-2 video): what a live HTTP source sends, with no duration once streamed."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = size
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.full((height, width, 3), (8 * i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
