"""Small synthetic videos for tests, written with PyAV."""

from pathlib import Path

import numpy as np


def write_video(
    path: Path,
    frames: int = 8,
    fps: int = 4,
    size: tuple[int, int] = (48, 64),
    *,
    faststart: bool = False,
    step: int = 30,
    container_format: str | None = None,
    codec: str = "mpeg4",
) -> Path:
    """A video of ``frames`` frames whose brightness steps by ``step`` per frame (frame i is all
    ``step * i % 256``): an mp4 by default; ``faststart`` puts its index first, as streamed files have it."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = size
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=container_format, options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.full((height, width, 3), (step * i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
