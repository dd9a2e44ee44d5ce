"""StreamForest (stc_cli/models/streamforest*.py, stc_cli/protocols/streamforest.py) on the tiny random
model: position tables against their formulas, the prompt, the memory wiring with and without STC, greedy
decoding, protocols and frame choice, and checkpoints saved in the LLaVA-NeXT layout and read back."""

import json
import math
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from stc_cli.benchmarks.base import Query
from stc_cli.compress import STCPruner
from stc_cli.models.base import STCSettings
from stc_cli.models.streamforest import StreamForest
from stc_cli.models.streamforest_config import TINY_MEMORY, MemorySettings
from stc_cli.models.streamforest_inputs import (
    prompt,
    spatial_table,
    temporal_table,
    time_message,
)
from stc_cli.models.streamforest_load import build_random
from stc_cli.models.streamforest_memory import EventMemory
from stc_cli.protocols import resolve
from stc_cli.protocols.streamforest import StreamForestProtocol, streamforest_mcq

NO_STC = STCSettings(cacher=False, pruner=False)
PRUNER = STCSettings(cacher=False, pruner=True, tokens_per_frame=15)
QUERY = Query("demo/q", "demo", "color", "c", "v.mp4", (0.0, 12.0), "", ("red", "green"), "A", question="Q?")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: OpenMP hand-offs on two busy cores cost more than the work
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def net():
    return build_random("tiny")


@pytest.fixture(scope="module")
def frames():
    return torch.randint(
        0, 256, (12, 40, 60, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


@pytest.fixture
def make(net):
    """StreamForest on the shared tiny net; cachers are detached after the test."""
    made = []

    def build(stc=NO_STC, protocol="streamforest-parity"):
        model = StreamForest(net, stc, resolve("streamforest", "demo", protocol))
        made.append(model)
        return model

    yield build
    for model in made:
        if model.cacher:
            model.cacher.detach()


def times(n):
    return tuple(float(t) for t in range(n))


def reference_features(net, frames):
    """The tower's last layer (stock, no STC) plus the tables, frame i at temporal index i."""
    pixels = net.transform(frames)
    states = net.vision(pixels, output_hidden_states=True).hidden_states[-1]
    return states + spatial_table(32, 7)[None] + temporal_table(32)[: len(frames), None]


# --- inputs ------------------------------------------------------------------------------------------


def test_position_tables_follow_their_formulas():
    """Spatial: zeros in channels 0-7, then sin/cos of the column (6 frequencies each) in 8-19, of the row
    in 20-31; temporal: sin/cos of the frame index in 0-7, zeros after. Frequencies 10000 ** (-k / n)."""
    spatial, temporal = spatial_table(32, 7), temporal_table(32)
    assert spatial.shape == (49, 32) and temporal.shape == (512, 32)
    for token in range(49):
        row, col = divmod(token, 7)
        for channel in range(32):
            if channel < 8:
                expected = 0.0
            else:
                j = channel - 8
                value, k = (col, j) if j < 12 else (row, j - 12)
                expected = (
                    math.sin(value / 10000 ** (k / 6)) if k < 6 else math.cos(value / 10000 ** ((k - 6) / 6))
                )
            assert spatial[token, channel].item() == pytest.approx(expected, abs=2e-6), (token, channel)
    for t in (0, 1, 5, 511):
        for channel in range(32):
            k = channel
            expected = (
                0.0
                if k >= 8
                else math.sin(t / 10000 ** (k / 4))
                if k < 4
                else math.cos(t / 10000 ** ((k - 4) / 4))
            )
            assert temporal[t, channel].item() == pytest.approx(expected, abs=1e-4), (t, channel)
    # so400m's width: 288 channels of time, then 432 of column and 432 of row, 216 frequencies each
    big, time = spatial_table(1152, 27), temporal_table(1152)
    assert big[:, :288].abs().sum() == 0 and time[:, 288:].abs().sum() == 0
    token = 3 * 27 + 20  # row 3, column 20
    assert big[token, 288].item() == pytest.approx(math.sin(20)) and big[token, 504].item() == pytest.approx(
        math.cos(20)
    )
    assert big[token, 720].item() == pytest.approx(math.sin(3)) and big[token, 936].item() == pytest.approx(
        math.cos(3)
    )
    assert time[7, 0].item() == pytest.approx(math.sin(7)) and time[7, 144].item() == pytest.approx(
        math.cos(7)
    )


def test_a_frame_is_the_last_layer_before_the_post_layernorm_plus_the_tables(net, frames, make):
    """hidden_states[-1] of the 26 (here 3) layers, not last_hidden_state; frame 512 reuses index 0's
    temporal row (the 512-frame window repeats)."""
    model = make()
    pixels = net.transform(frames[:1])
    hidden = net.vision.embeddings(pixels)
    for layer in net.vision.encoder.layers:
        hidden = layer(hidden, None)
    expected = hidden + spatial_table(32, 7) + temporal_table(32)[0]
    torch.testing.assert_close(model.encode(frames[:1]), expected)
    assert not torch.allclose(net.vision(pixels).last_hidden_state, hidden)
    model.times = [0.0] * 512
    torch.testing.assert_close(model.encode(frames[:1]), expected, atol=0, rtol=0)
    model.times = [0.0] * 513
    assert not torch.allclose(model.encode(frames[:1]), expected)


def test_frames_are_squashed_to_the_tower_input_and_scaled_to_minus_one_one(net):
    frame = torch.full((1, 40, 60, 3), 51, dtype=torch.uint8)
    frame[..., 1], frame[..., 2] = 0, 255
    pixels = net.transform(frame)
    assert pixels.shape == (1, 3, 56, 56)
    assert [pixels[0, c].unique().tolist() for c in range(3)] == [[pytest.approx(-0.6)], [-1.0], [1.0]]


def test_the_prompt_is_chatml_with_streamforest_s_time_message():
    assert prompt((0.0, 0.5, 1.04, 12.96), "Q?\nA. red\nAnswer.") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n\n"
        "The video contains 4 frames sampled from the past 13.0 seconds ago (0.0s of the entire video) up to "
        "the present moment (13.0s of the entire video). Q?\nA. red\nAnswer.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # each time is rounded to 0.1 s before the span is taken: 1.06 - 0.04 would print 1.0
    assert "past 1.1 seconds ago (0.0s of the entire video) up to the present moment (1.1s" in time_message(
        (0.04, 1.06)
    )


def test_the_multiple_choice_text_is_streamforest_s():
    assert (
        streamforest_mcq(QUERY)
        == "Q?\nA. red\nB. green\nAnswer with the option's letter from the given choices directly."
    )
    labelled = Query(
        "sb/1", "streamingbench", "t", "c", "v", (0.0, 1.0), "", ("A. x", "B. y"), "A", question="Q"
    )
    assert streamforest_mcq(labelled).startswith("Q\nA. x\nB. y\nAnswer")  # stc's own labels not repeated
    forward = Query("ovo/1/0", "ovo", "REC", "forward", "v", (0.0, 1.0), "OVO's own text", (), "3")
    assert streamforest_mcq(forward) == "OVO's own text"


# --- protocols ---------------------------------------------------------------------------------------


def test_the_protocols_of_streamforest():
    parity = resolve("streamforest", "ovo")
    assert isinstance(parity, StreamForestProtocol)
    assert (parity.name, parity.memory, parity.template, parity.user_text) == (
        "streamforest-parity", "question", "streamforest", "streamforest-mcq"
    )  # fmt: skip
    assert (parity.fps, parity.max_new_tokens, parity.stop, parity.decoding, parity.scorer) == (
        1.0, 16, "eos+im_end", "greedy", "robust"
    )  # fmt: skip
    assert resolve("streamforest", "streamingbench").name == "streamforest-parity"
    stream = resolve("streamforest", "demo", "streamforest-stream")
    assert stream.memory == "video" and "not comparable" in stream.comparable
    changed = parity.override(max_new_tokens=4)
    assert isinstance(changed, StreamForestProtocol) and changed.changed == ("max_new_tokens",)
    assert changed.settings()["memory"] == "question"
    assert ("memory", "question") == next(row for row in parity.rows() if row[0] == "memory")[:2]
    assert parity.prepare(QUERY).prompt == streamforest_mcq(QUERY)
    with pytest.raises(ValueError, match="memory must be one of question, video, got .clip."):
        StreamForestProtocol("x", "streamforest", "demo", "", "", 1.0, memory="clip")
    with pytest.raises(ValueError, match="--scorer must be one of"):  # the shared checks still apply
        StreamForestProtocol("x", "streamforest", "demo", "", "", 1.0, template="streamforest", scorer="x")


# --- the memory, with and without STC ----------------------------------------------------------------


def test_parity_reads_a_fresh_memory_over_the_encoded_frames(net, frames, make):
    model = make()
    model.add_frames(frames, times(12))
    memory = EventMemory(32, 4, **asdict(TINY_MEMORY))
    for feature in reference_features(net, frames):
        memory.update(feature)
    expected = memory.tokens()
    torch.testing.assert_close(model.memory_tokens(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.memory_tokens(), expected, atol=1e-6, rtol=0)  # built afresh again


def test_the_stream_memory_is_read_after_every_frame_and_differs_from_parity(net, frames, make):
    model = make(protocol="streamforest-stream")
    model.add_frames(frames, times(12))
    memory = EventMemory(32, 4, **asdict(TINY_MEMORY))
    for feature in reference_features(net, frames):
        memory.update(feature)
        memory.tokens()
    streamed = model.memory_tokens()
    torch.testing.assert_close(streamed, memory.tokens(), atol=1e-6, rtol=0)
    parity = make()
    parity.add_frames(frames, times(12))
    once = parity.memory_tokens()
    assert streamed.shape == once.shape and not torch.allclose(streamed, once)  # spec section 3.6


def test_short_videos_need_no_event_split(frames, make):
    """Fewer frames than the windows: the now frame and the short window only, 49 + 16 per older frame,
    or with the pruner at 15 tokens 15 + 15 per older frame."""
    for stc, sizes in ((NO_STC, (49, 81)), (PRUNER, (15, 45))):
        model = make(stc)
        model.add_frames(frames[:1], times(1))
        one = len(model.memory_tokens())
        model.add_frames(frames[1:3], times(3)[1:])
        assert (one, len(model.memory_tokens())) == sizes


def test_the_pruner_keeps_k_tokens_per_frame_and_cuts_compare_the_frames_before_pruning(net, frames, make):
    model = make(PRUNER)
    step = model.add_frames(frames[:6], times(6))
    assert step.counts == {"frames_encoded": 6, "visual_tokens_in": 6 * 49, "visual_tokens_kept": 6 * 15}
    assert asdict(model.memory_settings) == {
        **asdict(TINY_MEMORY),
        "tokens": (15, 15),
        "long_tokens_per_frame": 7,
    }
    features = reference_features(net, frames[:6])
    pruner = STCPruner(15)
    for i, (kept, similarity) in enumerate(model.frames):
        torch.testing.assert_close(kept, pruner.compress(features[i : i + 1])[0][0], atol=1e-6, rtol=0)
        if i == 0:
            assert similarity is None
        else:
            expected = F.cosine_similarity(features[i - 1].reshape(-1), features[i].reshape(-1), dim=0)
            assert similarity.item() == pytest.approx(expected.item(), abs=1e-6)


def test_memory_budgets_shrink_to_what_the_pruner_keeps():
    upstream = MemorySettings()
    assert (upstream.pruned_to(223).tokens, upstream.pruned_to(223).long_tokens_per_frame) == ((223, 128), 64)
    assert (upstream.pruned_to(100).tokens, upstream.pruned_to(100).long_tokens_per_frame) == ((100, 100), 50)
    assert (upstream.pruned_to(3).tokens, upstream.pruned_to(3).long_tokens_per_frame) == ((3, 3), 1)
    with pytest.raises(ValueError, match="at least 2"):
        upstream.pruned_to(1)


def test_the_cacher_works_one_frame_per_chunk_and_starts_afresh_per_video(net, frames, make):
    """interval 2: frames 0 and 2 are reference chunks (stock), 1 and 3 selective; reset starts over."""
    stock = reference_features(net, frames[:4])
    model = make(STCSettings(cacher=True, pruner=False, update_ratio=0.25, cache_interval=2))
    for _ in range(2):
        model.reset()
        model.add_frames(frames[:4], times(4))
        cached = [kept for kept, _ in model.frames]
        for i in (0, 2):
            torch.testing.assert_close(cached[i], stock[i], atol=1e-5, rtol=0)
        for i in (1, 3):
            assert not torch.allclose(cached[i], stock[i], atol=1e-3)


# --- answering ---------------------------------------------------------------------------------------


def test_answers_decode_greedily_as_full_forwards_do(net, frames, make, monkeypatch):
    model = make(PRUNER)
    model.add_frames(frames[:4], times(4))
    decoded = []
    monkeypatch.setattr(net.tokenizer, "decode", lambda ids, **_: decoded.append(list(ids)) or "x")
    answer = model.answer(QUERY)
    assert answer.counts == {"memory_tokens": 15 + 3 * 15, "new_tokens": 16} and len(decoded[0]) == 16
    assert set(answer.timings_ms) == {"answer", "memory", "prefill"}
    before, after = answer.model_input.split("<image>")
    assert after.startswith("\n\nThe video contains 4 frames sampled from the past 3.0 seconds ago")
    embed = net.llm.model.embed_tokens
    ids = lambda text: torch.tensor(net.tokenizer(text, add_special_tokens=False).input_ids)  # noqa: E731
    sequence = torch.cat([embed(ids(before)), net.projector(model.memory_tokens()), embed(ids(after))])
    expected = []
    for _ in range(16):
        logits = net.llm(inputs_embeds=sequence[None]).logits[0, -1, : net.vocab]
        expected.append(int(logits.argmax()))
        sequence = torch.cat([sequence, embed(torch.tensor(expected[-1:]))])
    assert decoded[0] == expected
    short = StreamForest(net, NO_STC, resolve("streamforest", "demo").override(max_new_tokens=3))
    short.add_frames(frames[:2], times(2))
    assert short.answer(QUERY).counts["new_tokens"] == 3


def test_what_the_model_refuses(net, make):
    model = make()
    with pytest.raises(ValueError, match="no frames in its window"):
        model.answer(QUERY)
    for stc, message in (
        (STCSettings(pruner_method="dtd"), "--compress dtd does not run with --model streamforest"),
        (STCSettings(cacher=False, tokens_per_frame=1), "--tokens-per-frame must be between 2 and 49, got 1"),
        (STCSettings(cacher=False, tokens_per_frame=50), "between 2 and 49, got 50"),
    ):
        with pytest.raises(ValueError, match=message):
            StreamForest(net, stc, resolve("streamforest", "demo"))
    with pytest.raises(ValueError, match="does not fit StreamForest"):
        StreamForest(net, NO_STC, resolve("rekv", "demo"))


def test_describe_records_the_memory_sizes_and_stc(make):
    described = make(PRUNER).describe()
    assert described["model"] == "streamforest" and described["model_path"] == "random:tiny"
    assert (described["tokens_per_frame"], described["memory"]["tokens"], described["vocab"]) == (
        15,
        (15, 15),
        259,
    )
    assert described["frame_size"] == [56, 56] and described["stc"]["pruner"] is True
    json.dumps(described)
