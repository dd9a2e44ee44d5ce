"""Small synthetic videos for tests, written with PyAV (the `dev` extra)."""

from pathlib import Path

import numpy as np


def write_video(path: Path, frames: int = 8, fps: int = 4, size: tuple[int, int] = (48, 64)) -> Path:
    """An mp4 of ``frames`` frames whose brightness steps by 30 per frame (frame i is all ``30 * i``)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.full((height, width, 3), (30 * i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
