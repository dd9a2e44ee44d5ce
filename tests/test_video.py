import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stc_cli.video import (
    Sampling,
    VideoError,
    dynamic_fps1_indices,
    frame_indices,
    read_frames,
    uniform_index_indices,
    uniform_indices,
)
from tests.demo_small import DATA_DIR as DEMO_SMALL
from tests.videos import write_video

CLIP_0 = DEMO_SMALL / "demo" / "videos" / "clip_0.mp4"  # 12 frames at 2 fps: a red square moving right


@pytest.mark.parametrize(
    ("n", "native", "fps", "window", "want"),
    [
        (12, 2.0, 1.0, (0.0, math.inf), [0, 2, 4, 6, 8, 10]),  # stride int(2 / 1) = 2
        (12, 2.0, 2.0, (0.0, 1.0), [0, 1]),  # t = 0, 0.5; t = 1.0 is the clip's end, excluded
        (300, 30.0, 0.5, (0.0, math.inf), [0, 60, 120, 180, 240]),  # ReKV: every 60th frame at 30 fps
        # stride int(round(29.97) / 0.5) = 60: t = 2.002 and 4.004 s are inside [2, 6), 6.006 s is not
        (300, 29.97, 0.5, (2.0, 6.0), [60, 120]),
        (10, 2.0, 4.0, (0.0, math.inf), list(range(10))),  # asking above the native rate: every frame
        # The released stride int(round(native) / fps) at the common native rates, 1 fps (STC online):
        (60, 25.0, 1.0, (0.0, 2.0), [0, 25]),
        (60, 30.0, 1.0, (0.0, 2.0), [0, 30]),
        (91, 29.97, 1.0, (0.0, 3.01), [0, 30, 60, 90]),  # round(29.97) = 30: at 1.001, 2.002, 3.003 s
        (30, 12.5, 1.0, (0.0, math.inf), [0, 12, 24]),  # round(12.5) = 12 (half to even), not 13
        # ... and 0.5 fps (STC offline), where int(round(12.5) / 0.5) = 24 while round(12.5 / 0.5) = 25
        (50, 12.5, 0.5, (0.0, math.inf), [0, 24, 48]),
        (120, 25.0, 0.5, (0.0, math.inf), [0, 50, 100]),
        (31, 25.0, 2.0, (0.0, math.inf), [0, 12, 24]),  # LiveCC's stream at 2 fps: int(25 / 2) = 12
    ],
)
def test_frame_indices(n, native, fps, window, want):
    assert frame_indices(n, native, fps, window) == want


def test_read_frames_at_a_rate_inside_a_window():
    frames = read_frames(CLIP_0, Sampling(1.0), window=(0.0, 6.0))
    assert frames.pixels.shape == (6, 64, 64, 3) and frames.pixels.dtype == torch.uint8
    assert frames.times == (0.0, 1.0, 2.0, 3.0, 4.0, 5.0) and frames.native_fps == 2.0
    # Frame 10 (t = 5 s): the square's left edge is at x = 4 + round(40 * 10 / 11) = 40, rows 24-39.
    red, green, _ = frames.pixels[5, 32, 44].tolist()
    assert red > 180 and green < 80
    assert frames.pixels[5, 8, 8].tolist() == pytest.approx([128, 128, 128], abs=6)  # grey background


def test_empty_window_keeps_the_frame_size():
    frames = read_frames(CLIP_0, Sampling(2.0), window=(7.0, 9.0))
    assert frames.pixels.shape == (0, 64, 64, 3) and frames.times == ()


def test_missing_and_broken_videos(tmp_path):
    with pytest.raises(VideoError, match="no such video"):
        read_frames(tmp_path / "nope.mp4", Sampling(1.0))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(write_video(tmp_path / "ok.mp4").read_bytes()[:200])
    with pytest.raises(VideoError, match=f"{broken}: cannot be decoded"):
        read_frames(broken, Sampling(1.0))
    with pytest.raises(ValueError, match="fps must be positive"):
        frame_indices(10, 2.0, 0.0)


def ends(count: int, fps: float) -> list[float]:
    """End timestamps of ``count`` frames of a constant-rate video: frame i is shown until (i + 1) / fps."""
    return [(i + 1) / fps for i in range(count)]


@pytest.mark.parametrize(
    ("end_times", "native", "window", "want"),
    [
        # 10 s of a 30 fps clip: frames 0-299 end inside [1/30, 10]; 10 s at 2 fps is 20 frames, spread
        # as linspace(0, 299, 20).round(): steps of 299 / 19 = 15.74
        (ends(1800, 30), 30.0, (0.0, 10.0), [round(k * 299 / 19) for k in range(20)]),
        # OVO CRR from ask_time 28 s: [28, max(29, 28)]; frame 839 (shown from 27.967 s) ends at 28.0.
        # 31 frames for 1 s -> 2 frames, raised to the minimum of 4: linspace(0, 30, 4) = 0, 10, 20, 30
        (ends(1800, 30), 30.0, (28.0, 28.0), [839, 849, 859, 869]),
        # a 0.03 s window still holds one second, so 4 frames (frames 300-329 end inside [10, 11])
        (ends(1800, 30), 30.0, (10.0, 10.03), [299, 309, 319, 329]),
        # 20 min at 25 fps: 2400 frames at 2 fps are capped at 480, spread over all 30000
        (ends(30000, 25), 25.0, (0.0, math.inf), [round(k * 29999 / 479) for k in range(480)]),
        # below 2 fps the video counts as resampled to 2 fps: 10 frames at 1 fps -> 20 picks, repeating
        (ends(10, 1), 1.0, (0.0, 10.0), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9]),
        # an end past the video is clamped to its last frame
        (ends(8, 4), 4.0, (0.0, 99.0), [0, 2, 5, 7]),
    ],
)
def test_uniform_indices_reproduce_livecc_ovo_sampling(end_times, native, window, want):
    assert uniform_indices(end_times, native, window) == want


def test_uniform_rule_reads_the_decoded_timestamps():
    # clip_0: 12 frames at 2 fps ending at 0.5, 1.0, ..., 6.0; [0.5, 3] holds frames 0-5 -> 6 s at 2 fps
    frames = read_frames(CLIP_0, Sampling(2.0, "uniform"), window=(0.0, 3.0))
    assert frames.times == (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)


QWEN_VL_UTILS = json.loads((Path(__file__).parent / "fixtures" / "qwen_vl_utils_frames.json").read_text())


@pytest.mark.parametrize(
    "case", QWEN_VL_UTILS["cases"], ids=lambda c: f"{c['n_frames']}@{c['native_fps']:.2f}"
)
def test_uniform_index_reproduces_qwen_vl_utils(case):
    """Against qwen-vl-utils 0.0.14's own functions (fixtures/qwen_vl_utils_frames.json; none where
    upstream raises); no video_start / video_end is the whole video."""
    start, end = case["video_start"] or 0.0, case["video_end"] or math.inf
    picks = uniform_index_indices(case["n_frames"], case["native_fps"], (start, end), 1.0, 768)
    assert picks == (case["indices"] or [])


def test_uniform_index_reads_frame_starts_where_uniform_reads_ends():
    # a pre-cut clip read inside its own window: as read whole (upstream passes no window for OVO-Bench)
    whole = uniform_index_indices(300, 30.0)
    assert uniform_index_indices(300, 30.0, (0.0, 10.0)) == whole == [round(k * 299 / 9) for k in range(10)]
    # StreamingBench at 95 s: frames 2730-2850 start in [91, 95.0001]; uniform takes 2729-2849 (their ends):
    # every pick one native frame earlier
    assert uniform_index_indices(3000, 30.0, (91.0, 95.0001)) == [2730, 2770, 2810, 2850]
    assert uniform_indices(ends(3000, 30), 30.0, (91.0, 95.0001), 1.0, 768) == [2729, 2769, 2809, 2849]
    # clip_0: 12 frames at 2 fps, 6 s -> 6 frames at linspace(0, 11, 6).round()
    frames = read_frames(CLIP_0, Sampling(1.0, "uniform_index", 768), window=(0.0, 6.0))
    assert frames.times == (0.0, 1.0, 2.0, 3.5, 4.5, 5.5)


def test_dynamic_fps1_picks_interval_middles():
    # 10 s at 30 fps: int(10 + 1) = 11 intervals of 300 / 11 frames, bounds 0 27 54 81 109 ... 300
    assert dynamic_fps1_indices(300, 30.0) == [13, 40, 67, 94, 122, 149, 176, 203, 231, 258, 285]
    # 0.4 s: at least 4 frames, bounds 0 2 5 7 10
    assert dynamic_fps1_indices(10, 25.0) == [0, 3, 5, 8]
    # 2 frames: 3 wanted, each frame once, then the last again
    assert dynamic_fps1_indices(2, 1.0) == [0, 1, 1]
    # clip (5, 30) of a 20 s video: ends at 19.9 s, int(14.9 * 30) = 446 frames from frame 150, 15 picks
    clip = dynamic_fps1_indices(600, 30.0, clip=(5.0, 30.0))
    assert len(clip) == 15 and clip[:2] == [150 + 14, 150 + 43] and clip[-1] == 150 + 430
    capped = dynamic_fps1_indices(3000, 1.0)
    assert len(capped) == 2048 and capped[:3] == [0, 1, 2] and capped[-2:] == [2997, 2998]


def test_dynamic_fps1_rule_reads_interval_middles_of_the_clip():
    # clip_0: 12 frames at 2 fps (6 s). The whole video: int(6 + 1) = 7 intervals of 12 / 7 frames, bounds
    # 0 1 3 5 6 8 10 12 -> middles 0 1 3 5 6 8 10 (floor((a + b - 1) / 2))
    whole = read_frames(CLIP_0, Sampling(1.0, "dynamic_fps1", 2048))
    assert whole.times == (0.0, 0.5, 1.5, 2.5, 3.0, 4.0, 5.0)
    # clip (0, 3): int(3 * 2) = 6 frames, int(3 + 1) = 4 intervals, bounds 0 1 3 4 6 -> 0 1 3 4
    assert read_frames(CLIP_0, Sampling(1.0, "dynamic_fps1", 2048), window=(0.0, 3.0)).times == (
        0.0,
        0.5,
        1.5,
        2.0,
    )


def test_unknown_sampling_rule():
    with pytest.raises(
        ValueError,
        match="unknown frame sampling rule 'every'; known: stride, uniform, dynamic_fps1, uniform_index",
    ):
        Sampling(1.0, "every")


def damaged_video(path):
    """An mp4 whose first frames carry a run of 0xff bytes: it opens and decodes, and ffmpeg complains."""
    data = bytearray(write_video(path, frames=8, size=(64, 96)).read_bytes())
    start = data.index(b"mdat") + 200
    data[start : start + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    return path


def run_python(code: str, *args) -> subprocess.CompletedProcess:
    # A fresh process: decord's log level is process-wide, and ffmpeg writes to file descriptor 2 itself.
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_ffmpeg_messages_from_decord_do_not_reach_the_terminal(tmp_path):
    video = damaged_video(tmp_path / "damaged.mp4")
    plain = run_python("import sys, decord; decord.VideoReader(sys.argv[1]).get_batch(range(8))", video)
    if " @ 0x" not in plain.stderr:  # the check below would prove nothing
        pytest.skip("this decord/ffmpeg prints nothing for the damaged video")
    quiet = run_python(
        "import sys\n"
        "from stc_cli.video import Sampling, read_frames\n"
        "print(tuple(read_frames(sys.argv[1], Sampling(4.0)).pixels.shape))",
        video,
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "(8, 64, 96, 3)" and quiet.stderr == ""


def test_a_video_decord_cannot_open_is_one_error_and_nothing_on_the_terminal(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    plain = run_python(
        "import sys, decord\ntry: decord.VideoReader(sys.argv[1])\nexcept Exception: pass", broken
    )
    assert "ERROR opening" in plain.stderr  # what decord prints whatever its log level
    quiet = run_python(
        "import sys\n"
        "from stc_cli.video import Sampling, VideoError, read_frames\n"
        "print('before', file=sys.stderr, flush=True)\n"
        "try:\n    read_frames(sys.argv[1], Sampling(1.0))\nexcept VideoError as error:\n    print(error)",
        broken,
    )
    assert quiet.stdout.startswith(f"{broken}: cannot be decoded (") and quiet.stderr == "before\n"
