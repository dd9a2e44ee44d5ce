"""Sources: which frames are taken at --fps by presentation time, and what a source that cannot be read
says."""

import av
import pytest

from stc_cli.live.source import AVSource, SourceError, kind_of, pick
from tests.live.clips import write_clip
from tests.live.httpserve import FileServer


def times(ts, fps, until=None):
    return [t for t, _ in pick(((t, None) for t in ts), fps, until)]


def test_pick_takes_the_first_frame_at_or_after_each_step():
    native = [i / 30 for i in range(91)]  # 30 fps, 3 s
    assert times(native, 1.0) == [0.0, 1.0, 2.0, 3.0]
    assert times(native, 2.0) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    ntsc = [i / 29.97 for i in range(91)]  # frame 30 is at 1.001 s: the first at or after 1 s
    assert times(ntsc, 1.0) == [0.0, 30 / 29.97, 60 / 29.97, 90 / 29.97]


def test_pick_gives_each_frame_once_when_the_source_is_slower_and_stops_at_until():
    assert times([0.0, 1.0, 2.0, 3.0], 4.0) == [0.0, 1.0, 2.0, 3.0]
    assert times([0.0, 0.4, 0.9, 1.3, 2.05], 1.0, until=2.0) == [0.0, 1.3]
    with pytest.raises(ValueError, match="--fps must be > 0"):
        list(pick([], 0))


def test_kind_of():
    assert [
        kind_of(s) for s in ("a.mp4", "/dev/video0", "http://h/a.mp4", "RTSP://cam/1", "file:///a.mp4")
    ] == [
        "file",
        "camera",
        "url",
        "stream",
        "file",
    ]
    with pytest.raises(ValueError, match=r"unknown scheme ftp://"):
        kind_of("ftp://host/a.mp4")


def test_a_file_gives_its_frames_at_fps_with_their_times_and_its_end(tmp_path):
    clip = write_clip(tmp_path / "a.mp4", frames=12, fps=4)
    source = AVSource(str(clip))
    frames = list(source.frames(2.0))
    assert [f.t for f in frames] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    brightness = [float(f.pixels.mean()) for f in frames]  # frame i is 30 * i % 256, i = 4 t (lossy mpeg4)
    assert brightness == pytest.approx([0, 60, 120, 180, 240, 44], abs=4)
    assert frames[0].pixels.shape == (48, 64, 3) and frames[0].pixels.dtype.name == "uint8"
    assert (source.live, source.duration, source.end, source.size) == (False, 3.0, 3.0, (48, 64))
    source.close()


def test_until_cuts_the_stream(tmp_path):
    source = AVSource(str(write_clip(tmp_path / "a.mp4", frames=12, fps=4)))
    assert [f.t for f in source.frames(1.0, until=1.5)] == [0.0, 1.0]
    assert source.end == 1.5


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.mp4", "cannot open {}: no such file"),
        (lambda p: p, "cannot open {}: a folder, not a video"),
        (
            lambda p: (p / "junk.mp4").write_bytes(b"0" * 100) and p / "junk.mp4",
            "cannot open {}: Invalid data",
        ),
    ],
)
def test_a_file_that_cannot_be_opened_names_itself_and_the_reason(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(SourceError) as caught:
        AVSource(str(path))
    assert str(caught.value).startswith(message.format(path))


def test_an_unreachable_url_and_a_missing_camera_name_the_reason():
    with FileServer() as server:
        with pytest.raises(SourceError, match=r"^cannot open http://127\.0\.0\.1:\d+/nothing\.mp4: .*404"):
            AVSource(server.url("/nothing.mp4"), timeout_s=2)
    with pytest.raises(SourceError, match=r"^cannot open /dev/video97: "):
        AVSource("/dev/video97", timeout_s=2)


def test_a_url_is_read_like_a_file(tmp_path):
    data = write_clip(tmp_path / "a.mp4", frames=8, fps=4).read_bytes()
    with FileServer() as server:
        server.files["/a.mp4"] = data
        source = AVSource(server.url("/a.mp4"), timeout_s=5)
        assert (source.kind, source.live, source.duration) == ("url", False, 2.0)
        assert [f.t for f in source.frames(1.0)] == [0.0, 1.0]
        source.close()


def test_a_connection_cut_mid_file_breaks_the_source_with_the_time_and_reason(tmp_path):
    data = write_clip(tmp_path / "a.mp4", frames=40, fps=4, size=(96, 128)).read_bytes()
    with FileServer() as server:
        server.files["/a.mp4"] = data
        server.cut["/a.mp4"] = len(data) // 2
        source = AVSource(server.url("/a.mp4"), timeout_s=5)
        seen = []
        with pytest.raises(SourceError, match=r"/a\.mp4 broke at \d+\.\d s: "):
            seen.extend(f.t for f in source.frames(1.0))
        assert 0 < len(seen) < 10  # some frames, then the break


def test_a_file_that_ends_early_is_broken(tmp_path):
    source = AVSource(str(write_clip(tmp_path / "a.mp4", frames=8, fps=4)))
    source.duration = 10.0  # as a container whose stream stops at 2 s of the 10 s it announces
    with pytest.raises(SourceError, match=r"broke: it ended at 2\.0 s of 10\.0 s"):
        list(source.frames(1.0))


def test_av_is_the_reader():
    assert tuple(int(p) for p in av.__version__.split(".")[:2]) >= (12, 0)
