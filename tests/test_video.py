import math

import pytest
import torch

from stc_cli.benchmarks import demo
from stc_cli.video import VideoError, frame_indices, read_frames
from tests.videos import write_video

CLIP_0 = demo.PACKAGED / "videos" / "clip_0.mp4"  # 12 frames at 2 fps: a red square moving right


@pytest.mark.parametrize(
    ("n", "native", "fps", "window", "want"),
    [
        (12, 2.0, 1.0, (0.0, math.inf), [0, 2, 4, 6, 8, 10]),  # stride round(2 / 1) = 2
        (12, 2.0, 2.0, (0.0, 1.0), [0, 1]),  # t = 0, 0.5; t = 1.0 is the clip's end, excluded
        (300, 30.0, 0.5, (0.0, math.inf), [0, 60, 120, 180, 240]),  # ReKV: every 60th frame at 30 fps
        # stride round(59.94) = 60: t = 2.002 and 4.004 s are inside [2, 6), 6.006 s is not
        (300, 29.97, 0.5, (2.0, 6.0), [60, 120]),
        (10, 2.0, 4.0, (0.0, math.inf), list(range(10))),  # asking above the native rate: every frame
    ],
)
def test_frame_indices(n, native, fps, window, want):
    assert frame_indices(n, native, fps, window) == want


def test_read_frames_at_a_rate_inside_a_window():
    frames = read_frames(CLIP_0, fps=1.0, window=(0.0, 6.0))
    assert frames.pixels.shape == (6, 64, 64, 3) and frames.pixels.dtype == torch.uint8
    assert frames.times == (0.0, 1.0, 2.0, 3.0, 4.0, 5.0) and frames.native_fps == 2.0
    # Frame 10 (t = 5 s): the square's left edge is at x = 4 + round(40 * 10 / 11) = 40, rows 24-39.
    red, green, _ = frames.pixels[5, 32, 44].tolist()
    assert red > 180 and green < 80
    assert frames.pixels[5, 8, 8].tolist() == pytest.approx([128, 128, 128], abs=6)  # grey background


def test_empty_window_keeps_the_frame_size():
    frames = read_frames(CLIP_0, fps=2.0, window=(7.0, 9.0))
    assert frames.pixels.shape == (0, 64, 64, 3) and frames.times == ()


def test_missing_and_broken_videos(tmp_path):
    with pytest.raises(VideoError, match="no such video"):
        read_frames(tmp_path / "nope.mp4", fps=1.0)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(write_video(tmp_path / "ok.mp4").read_bytes()[:200])
    with pytest.raises(VideoError, match=f"{broken}: cannot be decoded"):
        read_frames(broken, fps=1.0)
    with pytest.raises(ValueError, match="fps must be positive"):
        frame_indices(10, 2.0, 0.0)
