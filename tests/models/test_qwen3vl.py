"""Qwen3-VL (and, where the code is shared, Qwen2.5-VL) on tiny random models: the streamed cache against the
stock model's one pass (deepstack included), SimpleStream's prompt, positions and decoding against stock
transformers, frames against the hub image processor, loading and saving."""

import json
import re
from dataclasses import replace

import pytest
import torch

from stc_cli.benchmarks.base import Query
from stc_cli.compress import STCPruner
from stc_cli.models import checkpoints, qwen3vl, qwen25vl
from stc_cli.models.base import STCSettings, Step
from stc_cli.models.qwen2vl_frames import qwen_vl_utils_size
from stc_cli.models.qwenvl_build import StreamSettings
from stc_cli.models.qwenvl_recent import RecentFrames, pruner_budget
from stc_cli.models.qwenvl_stream import truncate
from stc_cli.protocols import resolve
from stc_cli.protocols.qwenvl import simplestream_text, simplestream_window

OFF = STCSettings(cacher=False, pruner=False)
MODULES = {"qwen3vl": (qwen3vl, qwen3vl.Qwen3VLStream), "qwen25vl": (qwen25vl, qwen25vl.Qwen25VLStream)}
TIMES = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: on two busy shared cores, OpenMP hand-offs cost many times the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=list(MODULES))
def tiny(request):
    """(--model name, the tiny random model, its stream class)."""
    module, stream = MODULES[request.param]
    return request.param, module.load("random:tiny"), stream


@pytest.fixture(scope="module")
def tiny3():
    return qwen3vl.load("random:tiny")


def frames(count, seed=0, size=(84, 112)):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, *size, 3), dtype=torch.uint8, generator=generator)


def query(options=("red", "blue"), bench="demo"):
    return Query(
        id="q", bench=bench, task="t", category="c", video="v.mp4", window=(0.0, 3.0), extra={},
        prompt="Which colour?\nA. red\nB. blue", options=options, target="A", question="Which colour?",
    )  # fmt: skip


def small(stream):
    """4 to 16 merged tokens per temporal patch: an 84 x 112 frame stays 84 x 112 at factor 28 and becomes
    96 x 128 at 32, 3 x 4 merged tokens (6 x 8 patches) in both."""
    unit = stream.FACTOR**2
    return StreamSettings(4 * unit, 16 * unit)


def stream_of(tiny, stc=OFF, **overrides):
    name, qwen, stream = tiny
    protocol = resolve(name, "demo", "qwenvl-stream").override(**overrides)
    return stream(qwen, stc, small(stream), protocol)


def streamed_logits(model, text):
    """The last-token logits of ``text`` appended to the stream's memory, which is then cut back."""
    length, position, segments = model.cache.get_seq_length(), model.next_position, list(model.segments)
    logits = model.model.lm_head(model._append(model._token_ids(text))[0, -1])
    truncate(model.cache, length)
    model.next_position, model.segments = position, segments
    return logits


def chunks_of(stream, qwen, video):
    transform = replace(qwen.frames, min_pixels=stream.frames.min_pixels, max_pixels=stream.frames.max_pixels)
    size = transform.size_for(video.shape[1], video.shape[2])
    return [transform(video[i : i + 2], size) for i in range(0, len(video), 2)]


def full_sequence(stream, video, text, times=TIMES):
    """``(ids [1, L], pixels, grids)``: the system turn, every chunk's turn and ``text`` in one sequence."""
    chunks = chunks_of(stream, stream.qwen, video)
    turns = []
    for i, (_, grid) in enumerate(chunks):
        start, end = times[2 * i], times[2 * i + 1]
        video_text = "<|video_pad|>" * (int(grid.prod()) // 4)
        turns.append(
            stream.CHUNK_TURN.format(
                start=start, end=2 * end - start, middle=(start + end) / 2, video=video_text
            )
        )
    ids = stream._ids(stream.SYSTEM_PROMPT + "".join(turns) + text)
    return ids, torch.cat([p for p, _ in chunks]), torch.cat([g for _, g in chunks])


@torch.inference_mode()
def test_the_streamed_cache_gives_the_logits_of_the_stock_model_s_one_pass(tiny):
    """Every chunk appended on the cache at its own explicit positions (and, for Qwen3-VL, with its
    deepstack features) gives the logits of the stock model run once over the whole sequence, the video
    through its own placement, M-RoPE and deepstack code."""
    stream = stream_of(tiny)
    video = frames(6)
    stream.add_frames(video[:3], TIMES[:3])  # the third frame waits for its partner
    stream.add_frames(video[3:], TIMES[3:])
    text = stream.question_text(query())
    ids, pixels, grids = full_sequence(stream, video, text)
    types = (ids == stream.video_pad).int() * 2
    stock = stream.model(
        input_ids=ids, pixel_values_videos=pixels, video_grid_thw=grids, mm_token_type_ids=types
    ).logits[0, -1]
    torch.testing.assert_close(streamed_logits(stream, text), stock, rtol=1e-4, atol=1e-5)
    assert stream.segments[0] == (0 if tiny[0] == "qwen3vl" else len(stream._ids(stream.SYSTEM_PROMPT)[0]))


@torch.inference_mode()
def test_qwen3vl_chunks_carry_their_timestamp_and_without_deepstack_the_logits_differ(tiny3):
    stream = stream_of(("qwen3vl", tiny3, qwen3vl.Qwen3VLStream))
    video = frames(4)
    stream.add_frames(video, TIMES[:4])
    text = stream.question_text(query())
    ids, pixels, grids = full_sequence(stream, video, text)
    decoded = stream.qwen.tokenizer.decode(ids[0])
    assert "<|im_start|>user\n<0.2 seconds><|vision_start|>" in decoded and "<1.2 seconds>" in decoded
    flat = stream_of(("qwen3vl", tiny3, qwen3vl.Qwen3VLStream))
    flat.protocol = replace(flat.protocol, deepstack=False)
    flat.add_frames(video, TIMES[:4])
    with_deepstack, without = streamed_logits(stream, text), streamed_logits(flat, text)
    assert (with_deepstack - without).abs().max() > 1e-3  # the tiny model's deepstack layers matter


@torch.inference_mode()
def test_pruned_tokens_keep_their_full_grid_positions_and_deepstack_rows(tiny):
    name, qwen, stream_cls = tiny
    stream = stream_of(tiny, STCSettings(cacher=False, tokens_per_frame=5))
    video = frames(4)
    step = stream.add_frames(video, TIMES[:4])
    text = stream.question_text(query())
    ids, pixels, grids = full_sequence(stream, video, text)
    model = qwen.model
    out = model.model.visual(pixels, grid_thw=grids)
    features, deepstack = out.pooler_output, getattr(out, "deepstack_features", None)
    merged = [int(g.prod()) // 4 for g in grids]
    pruner = STCPruner(5)  # the same pruner, run here on the same merged tokens patch by patch
    kept = [pruner.compress(patch[None])[1][0] for patch in features.split(merged)]
    pad = stream.video_pad
    is_video = ids[0] == pad
    positions, _ = model.model.get_rope_index(ids, is_video[None].int() * 2, video_grid_thw=grids)
    embeds = model.model.language_model.embed_tokens(ids)
    embeds[0, is_video] = features
    video_mask = torch.zeros(len(features), dtype=torch.bool)
    for i, rows in enumerate(kept):
        video_mask[sum(merged[:i]) + rows] = True
    mask = torch.ones(ids.shape[1], dtype=torch.bool)
    mask[is_video] = video_mask
    extra = {}
    if deepstack:
        extra = dict(
            visual_pos_masks=is_video[mask][None], deepstack_visual_embeds=[d[video_mask] for d in deepstack]
        )
    hidden = model.model.language_model(
        inputs_embeds=embeds[:, mask], position_ids=positions[:, :, mask], **extra
    )
    expected = model.lm_head(hidden.last_hidden_state[0, -1])
    torch.testing.assert_close(streamed_logits(stream, text), expected, rtol=1e-4, atol=1e-5)
    assert step.counts == {"frames_encoded": 4, "visual_tokens_in": sum(merged), "visual_tokens_kept": 10}
    full = stream_of(tiny)
    full.add_frames(video, TIMES[:4])
    assert stream.next_position == full.next_position


@torch.inference_mode()
def test_the_stream_s_default_budget_is_stc_s_share_and_answers_leave_the_memory_as_it_was(tiny):
    stream = stream_of(tiny, STCSettings(cacher=False, tokens_per_frame=0), max_new_tokens=4)
    step = stream.add_frames(frames(4), TIMES[:4])
    assert step.counts["visual_tokens_in"] == 24 and step.counts["visual_tokens_kept"] == 2 * 4  # 12 -> 4
    before = (stream.cache.get_seq_length(), stream.next_position, list(stream.segments))
    first, second = stream.answer(query()), stream.answer(query())
    assert first.text == second.text and 1 <= first.counts["new_tokens"] <= 4
    assert (stream.cache.get_seq_length(), stream.next_position, stream.segments) == before
    assert first.frame_times == TIMES[:4]
    assert [pruner_budget(STCSettings(tokens_per_frame=0), n) for n in (12, 196, 390, 510)] == [
        4,
        60,
        119,
        156,
    ]
    assert pruner_budget(STCSettings(tokens_per_frame=30), 12) == 12


@torch.inference_mode()
def test_the_cacher_alternates_reference_and_selective_temporal_patches_on_the_tower(tiny):
    stream = stream_of(tiny, STCSettings(pruner=False, update_ratio=0.5, cache_interval=2))
    try:
        stream.add_frames(frames(2), TIMES[:2])  # chunk 0: a reference, every block stock
        assert all(selected is None for selected in stream.cacher.selected)
        stream.add_frames(frames(2, seed=1), TIMES[2:4])  # chunk 1: selective, half of each block's tokens
        assert [tuple(s.shape) for s in stream.cacher.selected] == [(1, 24)] * 2  # of 6 x 8 patches
        stream.reset()  # a new video starts with a reference again
        stream.add_frames(frames(2), TIMES[:2])
        assert all(selected is None for selected in stream.cacher.selected)
    finally:
        stream.cacher.detach()


def test_a_protocol_for_another_layout_is_refused(tiny):
    name, qwen, stream = tiny
    with pytest.raises(
        ValueError, match=f"protocol simplestream \\({name}\\) does not fit {stream.__name__}"
    ):
        stream(qwen, OFF, small(stream), resolve(name, "demo", "simplestream"))
    with pytest.raises(ValueError, match=f"protocol qwenvl-stream \\({name}\\) does not fit RecentFrames"):
        RecentFrames(qwen, OFF, resolve(name, "demo", "qwenvl-stream"), name)


# -- SimpleStream ----------------------------------------------------------------------------------------


def recent_of(tiny, stc=OFF, protocol="simplestream", **overrides):
    name, qwen, _ = tiny
    return RecentFrames(qwen, stc, resolve(name, "demo", protocol).override(**overrides), name)


def test_the_last_n_chunks_are_kept_with_every_frame_of_them(tiny):
    recent = recent_of(tiny)
    video = frames(7, size=(30, 40))
    # chunks int(t): 0, 1, 2, 2 (two frames), 3, 5 (4 has none), 6
    recent.add_frames(video[:3], (0.0, 1.2, 2.0))
    recent.add_frames(video[3:], (2.9, 3.4, 5.0, 6.1))
    assert sorted(recent.chunks) == [2, 3, 5, 6] and recent.received == 7
    held = [t for chunk in sorted(recent.chunks) for _, t in recent.chunks[chunk]]
    assert held == [2.0, 2.9, 3.4, 5.0, 6.1]
    answer = recent.answer(query())
    assert answer.frame_times == (2.0, 2.9, 3.4, 5.0, 6.1) and answer.counts["frames_encoded"] == 5
    recent.reset()
    assert recent.chunks == {} and recent.received == 0
    with pytest.raises(ValueError, match="no frames in the question's clip"):
        recent.answer(query())


def test_qwen_vl_utils_sizes_a_clip_s_frames_by_their_count():
    # 128 to 768 merged tokens at factor 28 per frame, and at most 2 / nframes of 128000 * 784 * 0.9 px
    assert qwen_vl_utils_size(480, 854, 4) == (476, 840)  # 399840 px, under 602112: only rounded
    # shrunk to 602112 px: beta = sqrt(1080 * 1920 / 602112) = 1.8558 -> floor(20.78) x floor(36.95) * 28
    assert qwen_vl_utils_size(1080, 1920, 100) == (560, 1008)
    # 768 frames: at most 235200 px; beta = 2.9692 -> floor(12.99) x floor(23.09) * 28
    assert qwen_vl_utils_size(1080, 1920, 768) == (336, 644)
    assert qwen_vl_utils_size(30, 40, 4) == (280, 392)  # enlarged to 100352 px: ceil(9.80) x ceil(13.06)
    assert qwen_vl_utils_size(14, 14, 2) == (336, 336)  # a side is at least 28 before scaling up
    with pytest.raises(ValueError, match="absolute aspect ratio must be smaller than 200"):
        qwen_vl_utils_size(10, 2010, 4)


@torch.inference_mode()
def test_simplestream_prompts_are_built_piece_by_piece_as_upstream_builds_them(tiny):
    name, qwen, _ = tiny
    one = recent_of(tiny, protocol="simplestream")
    assert one.protocol.layout == "one-block" and one.protocol.positions == "sequential"
    ids, is_image = one._prompt("Q?", [2, 3])
    encode = lambda text: qwen.tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    t = qwen.tokenizer.convert_tokens_to_ids
    tail = [
        *encode("\n"),
        *encode("Q?"),
        t("<|im_end|>"),
        *encode("\n"),
        t("<|im_start|>"),
        *encode("assistant\n"),
    ]
    head = [t("<|im_start|>"), *encode("user\n")]
    block = lambda n: [t("<|vision_start|>"), *[t("<|image_pad|>")] * n, t("<|vision_end|>")]  # noqa: E731
    assert ids[0].tolist() == head + block(5) + tail and int(is_image.sum()) == 5
    frame_blocks = recent_of(tiny, protocol="simplestream-mrope")
    assert frame_blocks._prompt("Q?", [2, 3])[0][0].tolist() == head + block(2) + block(3) + tail


@torch.inference_mode()
@pytest.mark.filterwarnings("ignore:Passing `repetition_penalty` with `inputs_embeds`")
def test_simplestream_answers_as_upstream_s_generate_call_from_inputs_embeds(tiny):
    """Upstream scatters the frames' merged tokens into the prompt's embeddings and calls ``generate``
    with ``inputs_embeds`` only: 1-D positions, no deepstack, the checkpoint's repetition penalty on the
    generated tokens. Stock transformers does exactly that here too."""
    name, qwen, _ = tiny
    saved = dict(qwen.generation)
    qwen.generation.update(eos_token_id=[qwen.tokenizer.eos_token_id], repetition_penalty=1.3)
    try:
        recent = recent_of(tiny, max_new_tokens=12)
        video = frames(4, size=(30, 40))
        recent.add_frames(video, (0.0, 1.0, 2.0, 3.0))
        answer = recent.answer(query())
        features, grids, _, _ = recent._encode(video, Step())
        ids, is_image = recent._prompt(query().prompt, [int(g[1] * g[2]) // 4 for g in grids.tolist()])
        embeds = qwen.model.get_input_embeddings()(ids)
        embeds[0, is_image] = features
        out = qwen.model.generate(
            inputs_embeds=embeds, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
            repetition_penalty=1.3, eos_token_id=[qwen.tokenizer.eos_token_id], pad_token_id=0,
        )  # fmt: skip
    finally:
        qwen.generation.clear()
        qwen.generation.update(saved)
    assert answer.text == qwen.tokenizer.decode(out[0], skip_special_tokens=True).strip()
    assert answer.counts["new_tokens"] == len(out[0]) - int(out[0, -1] == qwen.tokenizer.eos_token_id)
    assert answer.model_input == f"\n{query().prompt}<|im_end|>\n<|im_start|>assistant\n"
    # frames of 30 x 40 are enlarged to 280 x 392 by qwen-vl-utils; Qwen3-VL's processor rounds to 288 x 384
    per_frame = 10 * 14 if name == "qwen25vl" else 9 * 12
    assert answer.counts["visual_tokens_in"] == 4 * per_frame == answer.counts["visual_tokens_kept"]


@torch.inference_mode()
def test_simplestream_mrope_gives_the_stock_model_s_logits_for_the_frames_as_images(tiny):
    """``simplestream-mrope``: the frames as the model's processor lays out images (a vision block each, 3-D
    positions, deepstack features for Qwen3-VL): the stock forward over ``pixel_values``."""
    name, qwen, _ = tiny
    recent = recent_of(tiny, protocol="simplestream-mrope")
    video = frames(3, size=(30, 40))
    recent.add_frames(video, (0.0, 1.0, 2.0))
    step_logits = {}
    lm_forward = recent.lm.forward

    def spy(*args, **kwargs):  # the prefill's last logits
        out = lm_forward(*args, **kwargs)
        step_logits.setdefault("first", qwen.model.lm_head(out.last_hidden_state[0, -1]))
        return out

    recent.lm.forward = spy
    try:
        recent.answer(query())
    finally:
        del recent.lm.forward
    images = recent._images(video)
    pixels, grids = zip(*(qwen.frames(image.expand(2, -1, -1, -1)) for image in images), strict=True)
    grids = torch.cat(grids)
    ids, is_image = recent._prompt(query().prompt, [int(g[1] * g[2]) // 4 for g in grids.tolist()])
    stock = qwen.model(
        input_ids=ids,
        pixel_values=torch.cat(pixels),
        image_grid_thw=grids,
        mm_token_type_ids=is_image[None].int(),
    ).logits[0, -1]
    torch.testing.assert_close(step_logits["first"], stock, rtol=1e-4, atol=1e-5)


@torch.inference_mode()
def test_simplestream_pruning_keeps_stc_s_share_per_frame_at_unpruned_positions(tiny):
    recent = recent_of(tiny, STCSettings(cacher=False, tokens_per_frame=0), max_new_tokens=3)
    video = frames(4, size=(30, 40))
    recent.add_frames(video, (0.0, 1.0, 2.0, 3.0))
    answer = recent.answer(query())
    per_frame = answer.counts["visual_tokens_in"] // 4
    assert answer.counts["visual_tokens_kept"] == 4 * round(per_frame * 60 / 196)
    # the same pruner (one per question, frame after frame) on the same features
    features, grids, kept, _ = recent._encode(video, Step())
    pruner = STCPruner(round(per_frame * 60 / 196))
    want = torch.cat(
        [pruner.compress(f[None])[1][0] + i * per_frame for i, f in enumerate(features.split(per_frame))]
    )
    assert torch.equal(kept, want)


@torch.inference_mode()
def test_simplestream_starts_the_cacher_afresh_for_every_question(tiny):
    recent = recent_of(tiny, STCSettings(pruner=False, update_ratio=0.5), max_new_tokens=2)
    try:
        video = frames(4, size=(30, 40))
        recent.add_frames(video, (0.0, 1.0, 2.0, 3.0))
        first = recent.answer(query())
        # frame 3 was a selective chunk (chunks 0 and 2 are references): half of its patches recomputed
        assert [tuple(s.shape)[0] for s in recent.cacher.selected] == [1, 1]
        again = recent.answer(query())
        assert first.text == again.text
    finally:
        recent.cacher.detach()


def test_simplestream_texts_and_windows():
    ovo = dict(bench="ovo", category="c", video="v", window=(0.0, 30.0), target="A")
    mcq = Query(id="o", task="EPM", prompt="", options=("a cup", "a pen"), question="What did I hold?", **ovo)
    assert simplestream_text(mcq) == (
        "What did I hold?\nOptions: A. a cup; B. a pen;\nOnly give the best option's letter directly."
    )
    rec = Query(id="r", task="REC", prompt="", options=(), question="", extra={"activity": "jump"}, **ovo)
    assert simplestream_text(rec) == "How many times did they jump?\nOnly give a number as answer."
    ssr = Query(id="s", task="SSR", prompt="", options=(), question="Cut the onion.", **ovo)
    assert simplestream_text(ssr) == (
        "Is this person performing the tutorial step: Cut the onion.\nAnswer Yes or No only."
    )
    crr = Query(id="c", task="CRR", prompt="", options=(), question="Is it raining?", **ovo)
    assert simplestream_text(crr) == (
        "Is it raining?\nIs there enough information in the provided video to answer the question? Answer "
        "Yes or No only."
    )
    sb = Query(
        id="b", bench="streamingbench", task="t", category="c", video="v", window=(0.0, 95.0), prompt="",
        options=("A. red", "B. blue", "C. green", "D. grey"), target="A", question="Which colour?",
    )  # fmt: skip
    text = simplestream_text(sb)
    assert text.startswith(
        "You are an advanced video question-answering AI assistant. You have been provided"
    )
    assert (
        "Question: Which colour?\n\nOptions:\nA. red\nB. blue\nC. green\nD. grey\n\nOnly give the best"
        in text
    )
    assert "A. red\nB. blue" in simplestream_text(query())  # letters added where the options have none
    assert simplestream_window(sb, 4.0, 1.0) == (91.0, 95.0 + 1e-4)
    assert simplestream_window(replace(sb, window=(0.0, 2.0)), 4.0, 1.0) == (0.0, 2.0 + 1e-4)
    protocol = resolve("qwen3vl", "streamingbench")
    prepared = protocol.prepare(sb)
    assert prepared.window == (91.0, 95.0 + 1e-4) and prepared.prompt == text
    assert resolve("qwen3vl", "ovo").prepare(mcq).window == (0.0, 30.0)


def test_default_protocols_and_their_settings():
    for model in ("qwen3vl", "qwen25vl"):
        for bench in ("ovo", "streamingbench", "demo"):
            protocol = resolve(model, bench)
            assert (protocol.name, protocol.fps, protocol.sampling, protocol.max_frames) == (
                "simplestream", 1.0, "uniform_index", 768
            )  # fmt: skip
            assert (protocol.schedule, protocol.max_new_tokens, protocol.recent_frames) == ("clip", 256, 4)
            assert (protocol.positions, protocol.deepstack) == ("sequential", False)
        assert resolve(model, "mlvu").name == "qwenvl-stream"
    assert resolve("qwen3vl", "ovo").layout == "frame-blocks"  # Qwen3-VL's OVO-Bench builder
    assert resolve("qwen25vl", "ovo").layout == resolve("qwen3vl", "streamingbench").layout == "one-block"
    with pytest.raises(ValueError, match="layout must be one of one-block, frame-blocks, got 'x'"):
        replace(resolve("qwen3vl", "ovo"), layout="x")
    with pytest.raises(ValueError, match="--last-frames must be >= 1, got 0"):
        resolve("qwen3vl", "ovo").override(recent_frames=0)


# -- frames, loading -------------------------------------------------------------------------------------


def test_qwen3vl_frames_equal_the_pil_image_processor_without_resize():
    pytest.importorskip("PIL")
    from transformers import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(
        patch_size=16, image_mean=[0.5] * 3, image_std=[0.5] * 3, min_pixels=65536, max_pixels=16777216
    )
    for seed in range(2):
        frame = frames(1, seed, size=(256, 320))  # multiples of 32, within the bounds: no resize
        want = processor(images=[frame[0].numpy()], input_data_format="channels_last", return_tensors="pt")
        got, grid = qwen3vl.FRAMES(frame.expand(2, -1, -1, -1))
        assert torch.equal(grid, want["image_grid_thw"]) and grid.tolist() == [[1, 16, 20]]
        torch.testing.assert_close(got, want["pixel_values"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(280, 392), (476, 840), (100, 140)])
def test_qwen3vl_frames_are_close_to_the_pil_image_processor_with_resize(shape):
    pytest.importorskip("PIL")
    from transformers import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(
        patch_size=16, image_mean=[0.5] * 3, image_std=[0.5] * 3, min_pixels=65536, max_pixels=16777216
    )
    for seed in range(2):
        frame = frames(1, seed, size=shape)
        want = processor(images=[frame[0].numpy()], input_data_format="channels_last", return_tensors="pt")
        got, grid = qwen3vl.FRAMES(frame.expand(2, -1, -1, -1))
        assert torch.equal(grid, want["image_grid_thw"])
        # PIL's bicubic against torch's uint8 kernel (torchvision's, as the hub's fast processor): at most 2
        # levels apart, as for Qwen2-VL (tests/models/test_qwen2vl_frames.py)
        assert (got - want["pixel_values"]).abs().max() * 255 * 0.5 <= 2.01


@pytest.mark.parametrize("module", [qwen3vl, qwen25vl])
def test_frames_match_the_hub_torchvision_image_processor_exactly(module):
    pytest.importorskip("torchvision")  # the processor Qwen3-VL's checkpoints name (and 5.x's default)
    from transformers import Qwen2VLImageProcessor

    ours = module.FRAMES
    processor = Qwen2VLImageProcessor(
        patch_size=ours.patch_size, image_mean=list(ours.mean), image_std=list(ours.std),
        min_pixels=ours.min_pixels, max_pixels=ours.max_pixels,
    )  # fmt: skip
    frame = frames(1, size=(280, 392))
    want = processor(images=[frame[0]], return_tensors="pt")
    got, grid = ours(frame.expand(2, -1, -1, -1))
    assert torch.equal(grid, want["image_grid_thw"]) and torch.equal(got, want["pixel_values"])


def test_a_saved_checkpoint_folder_loads_back_and_answers_the_same(tiny, tmp_path):
    from stc_cli.models import qwen2vl

    name, qwen, stream = tiny
    module = MODULES[name][0]
    eos = [qwen.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    assert qwen.generation == {"eos_token_id": eos}  # as the instruct checkpoints' generation_config.json
    qwen2vl.save(qwen, tmp_path)
    loaded = module.load(str(tmp_path))
    assert loaded.frames == qwen.frames == module.FRAMES and loaded.generation == qwen.generation
    answers = []
    for model in (qwen, loaded):
        recent = RecentFrames(model, OFF, resolve(name, "demo").override(max_new_tokens=3), name)
        recent.add_frames(frames(2, size=(30, 40)), (0.0, 1.0))
        answers.append(recent.answer(query()).text)
    assert answers[0] == answers[1]
    config = json.loads((tmp_path / "generation_config.json").read_text())
    (tmp_path / "generation_config.json").write_text(json.dumps({**config, "repetition_penalty": 1.05}))
    assert module.load(str(tmp_path)).generation == {"eos_token_id": eos, "repetition_penalty": 1.05}


ARCHITECTURES = {
    "qwen3vl": ("Qwen3-VL", "qwen3_vl", "Qwen3VLForConditionalGeneration"),
    "qwen25vl": ("Qwen2.5-VL", "qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration"),
    "livecc": ("Qwen2-VL", "qwen2_vl", "Qwen2VLForConditionalGeneration"),
}


def test_a_qwen_checkpoint_given_to_another_model_names_the_architecture_it_found(tiny, tmp_path):
    from stc_cli.models import qwen2vl

    name, qwen, _ = tiny
    qwen2vl.save(qwen, tmp_path)
    found, model_type, cls = ARCHITECTURES[name]
    other = "qwen25vl" if name == "qwen3vl" else "qwen3vl"
    for model, load in ((other, MODULES[other][0].load), ("livecc", qwen2vl.load)):
        with pytest.raises(checkpoints.CheckpointError) as error:
            load(str(tmp_path))
        runs, runs_type, _ = ARCHITECTURES[model]
        assert str(error.value) == (
            f"{tmp_path / 'config.json'}: a {found} checkpoint (model_type {model_type!r}, {cls}), but "
            f"--model {model} runs {runs} ({runs_type!r}) checkpoints; run this one with --model {name}"
        )


def test_a_preprocessor_config_of_another_tower_is_refused(tmp_path, tiny3):
    from stc_cli.models import qwen2vl

    qwen2vl.save(tiny3, tmp_path)
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "patch_size": 14}))
    with pytest.raises(checkpoints.CheckpointError, match=re.escape(f"{path}: patches of 14 px, 2 frames")):
        qwen3vl.load(str(tmp_path))


def test_build_refuses_a_last_frames_its_protocol_does_not_hold(tiny3):
    from stc_cli.configs import EvalConfig
    from stc_cli.models.qwenvl_build import build

    protocol = resolve("qwen3vl", "demo")
    assert isinstance(build(tiny3, qwen3vl.Qwen3VLStream, EvalConfig(stc=False), protocol), RecentFrames)
    with pytest.raises(
        ValueError, match="--last-frames 2: the simplestream protocol answers from the last 4 "
    ):
        build(tiny3, qwen3vl.Qwen3VLStream, EvalConfig(last_frames=2, stc=False), protocol)
    eight = build(
        tiny3, qwen3vl.Qwen3VLStream, EvalConfig(last_frames=8, stc=False), protocol.override(recent_frames=8)
    )
    assert eight.describe()["recent"]["recent_frames"] == 8


@pytest.mark.gpu
@torch.inference_mode()
def test_on_cuda_the_streamed_cache_gives_the_logits_of_the_stock_model_s_one_pass():
    qwen = qwen3vl.load("random:tiny", device="cuda")
    stream = stream_of(("qwen3vl", qwen, qwen3vl.Qwen3VLStream))
    video = frames(6)
    stream.add_frames(video, TIMES)
    text = stream.question_text(query())
    ids, pixels, grids = full_sequence(stream, video, text)
    types = (ids == stream.video_pad).int() * 2
    stock = stream.model(
        input_ids=ids,
        pixel_values_videos=pixels.to(ids.device),
        video_grid_thw=grids.to(ids.device),
        mm_token_type_ids=types,
    ).logits[0, -1]
    torch.testing.assert_close(streamed_logits(stream, text), stock, rtol=1e-4, atol=1e-4)


@torch.inference_mode()
def test_dtd_in_the_pruner_s_place_keeps_the_first_patch_whole_in_both_layouts(tiny):
    """``--compress dtd``: TimeChat-Online's differential token drop where STC-Pruner acts: every temporal
    patch of a stream against the previous one, every frame of a question against the previous frame."""
    dtd = STCSettings(cacher=False, tokens_per_frame=5, pruner_method="dtd")
    stream = stream_of(tiny, dtd)
    step = stream.add_frames(frames(6), TIMES)
    assert step.counts["visual_tokens_kept"] == 12 + 5 + 5  # 12 merged tokens per patch, the first whole
    recent = recent_of(tiny, dtd, max_new_tokens=2)
    recent.add_frames(frames(3, size=(30, 40)), (0.0, 1.0, 2.0))
    counts = recent.answer(query()).counts
    assert counts["visual_tokens_kept"] == counts["visual_tokens_in"] // 3 + 5 + 5
