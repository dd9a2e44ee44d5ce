"""What `stc stream` checks before it loads anything, and how it builds the model."""

import pytest

from stc_cli import protocols
from stc_cli.configs import EvalConfig, StreamConfig
from stc_cli.live import session
from stc_cli.live.reconnect import Reconnecting
from stc_cli.live.source import AVSource
from tests.live.clips import write_clip
from tests.live.httpserve import FileServer


def test_streaming_protocols():
    assert session.streams(protocols.resolve("rekv", "streamingbench"))
    assert session.streams(protocols.resolve("rekv", "streamingbench", "rekv-chat"))
    assert session.streams(protocols.resolve("livecc", "streamingbench"))
    assert not session.streams(protocols.resolve("livecc", "ovo"))  # livecc-ovo: one clip per question


def test_prepare_resolves_the_protocol_and_questions_without_loading():
    config = StreamConfig(
        source="cam.mp4",
        model=EvalConfig(model="livecc", model_path="random:tiny", fps=1.0),
        asks=("3: Where? | A. here | B. there",),
    )
    prepared = session.prepare(config)
    assert (prepared.protocol.name, prepared.protocol.fps, prepared.kind) == ("livecc-stream", 1.0, "file")
    assert prepared.model_config.bench == "streamingbench"
    assert [(q.text, q.options, q.t) for q in prepared.questions] == [("Where?", ("here", "there"), 3.0)]
    (note,) = prepared.notes
    assert note == "LiveCC keeps every chunk in its KV cache: memory grows with the stream; " + (
        "--max-cache-tokens N bounds it"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"source": ""}, "SOURCE is empty"),
        ({"timeout": 0.0}, "--timeout must be a positive number of seconds"),
        ({"speed": float("inf")}, "--speed must be 0 (as fast as possible) or a positive factor"),
        (
            {"source": "/dev/video0", "speed": 1.0},
            "--speed applies to files; /dev/video0 plays at its own pace",
        ),
        ({"model": EvalConfig(device="cuda:7")}, "--device cuda:7"),
        ({"model": EvalConfig(dtype="float8")}, "--dtype must be auto, float32, float16 or bfloat16"),
        ({"reconnect": -1}, "--reconnect must be 0 (off) or a number of attempts, got -1"),
        ({"reconnect_wait": float("nan")}, "--reconnect-wait must be a number of seconds >= 0, got nan"),
    ],
)
def test_prepare_refuses(changes, message):
    config = StreamConfig(**{"source": "a.mp4", **changes})
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        session.prepare(config)


def test_the_model_is_built_as_stc_eval_builds_it():
    prepared = session.prepare(
        StreamConfig(source="a.mp4", model=EvalConfig(model_path="random:tiny", stc=False))
    )
    model = session.build_model(prepared)
    described = model.describe()
    assert (described["model"], described["model_path"], described["dtype"]) == (
        "rekv",
        "random:tiny",
        "float32",
    )
    assert described["stc"]["cacher"] is False and described["stc"]["pruner"] is False
    assert model.protocol is prepared.protocol


def test_a_url_is_opened_again_after_a_drop_unless_reconnect_is_0(tmp_path):
    clip = write_clip(tmp_path / "a.mp4")
    with FileServer() as server:
        server.files["/a.mp4"] = clip.read_bytes()
        url = server.url("/a.mp4")
        for source, reconnect, kind in ((url, 3, Reconnecting), (url, 0, AVSource), (str(clip), 3, AVSource)):
            prepared = session.prepare(StreamConfig(source=source, reconnect=reconnect))
            opened = session.open_source(prepared)
            opened.close()
            assert type(opened) is kind, source
