"""LiveCC on a tiny random Qwen2-VL: the streamed cache against one stock pass, pruned positions, answers."""

from collections import Counter
from dataclasses import replace

import pytest
import torch

from stc_cli.accel import OpCensus
from stc_cli.benchmarks.base import Query
from stc_cli.compress import DifferentialTokenDrop, STCPruner
from stc_cli.models import qwen2vl
from stc_cli.models.base import STCSettings, Step
from stc_cli.models.livecc import CHUNK_TURN, QUESTION_TURN, SYSTEM_PROMPT, LiveCC, LiveCCSettings
from stc_cli.models.qwenvl_stream import truncate
from stc_cli.protocols import resolve

OFF = STCSettings(cacher=False, pruner=False)
STREAM = resolve("livecc", "demo")  # livecc-stream
SHORT = STREAM.override(max_new_tokens=4)
TIMES = (0.0, 0.5, 1.0, 1.5)


@pytest.fixture(scope="module")
def tiny():
    return qwen2vl.build_random("tiny")


def frames(count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 60, 80, 3), dtype=torch.uint8, generator=generator)


def query(options=("red", "blue")):
    return Query(
        id="q", bench="demo", task="t", category="c", video="v.mp4", window=(0.0, 2.0),
        prompt="Which colour? A. red B. blue", options=options, target="A", extra={},
    )  # fmt: skip


def streamed_logits(livecc, text):
    """The last-token logits of ``text`` appended to the model's memory, which is then cut back."""
    length, position, segments = livecc.cache.get_seq_length(), livecc.next_position, list(livecc.segments)
    logits = livecc.model.lm_head(livecc._append(livecc._token_ids(text))[0, -1])
    truncate(livecc.cache, length)
    livecc.next_position, livecc.segments = position, segments
    return logits


def one_pass(qwen, video, text, keep=None):
    """The stock model over [system ; chunk turns ; text] in one call, positions from one get_rope_index
    over the whole sequence; ``keep`` (per chunk, merged-token indices) drops the other video tokens."""
    settings = LiveCCSettings()
    transform = replace(qwen.frames, min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)
    size = transform.size_for(video.shape[1], video.shape[2])
    device = qwen.model.device
    chunks = [transform(video[i : i + 2].to(device), size) for i in range(0, len(video), 2)]
    merged = [int(grid.prod()) // 4 for _, grid in chunks]
    turns = [
        CHUNK_TURN.format(start=TIMES[i], end=TIMES[i] + 1.0, video="<|video_pad|>" * merged[i // 2])
        for i in range(0, len(video), 2)
    ]
    tokenizer, model = qwen.tokenizer, qwen.model
    text_ids = tokenizer(SYSTEM_PROMPT + "".join(turns) + text, add_special_tokens=False).input_ids
    ids = torch.tensor([text_ids], device=device)
    pad = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    types = (ids == pad).int() * 2
    grids = torch.cat([grid for _, grid in chunks])
    features = model.model.visual(torch.cat([p for p, _ in chunks]), grid_thw=grids).pooler_output
    positions, _ = model.model.get_rope_index(ids, types, video_grid_thw=grids)
    embeds = model.model.language_model.embed_tokens(ids)
    embeds[0, ids[0] == pad] = features
    mask = torch.ones(ids.shape[1], dtype=torch.bool, device=device)
    if keep is not None:
        video_mask = torch.zeros(len(features), dtype=torch.bool, device=device)
        offsets = [0, *torch.tensor(merged).cumsum(0).tolist()]
        for chunk, kept in enumerate(keep):
            video_mask[offsets[chunk] + kept] = True
        mask[ids[0] == pad] = video_mask
    hidden = model.model.language_model(inputs_embeds=embeds[:, mask], position_ids=positions[:, :, mask])
    return model.lm_head(hidden.last_hidden_state[0, -1]), features, merged


@torch.inference_mode()
def test_the_streamed_cache_gives_the_logits_of_one_full_pass(tiny):
    livecc = LiveCC(tiny, OFF)
    video = frames(4)
    livecc.add_frames(video[:3], TIMES[:3])  # the third frame waits for its partner
    livecc.add_frames(video[3:], TIMES[3:])
    text = QUESTION_TURN.format(prompt=query().prompt)
    expected, _, _ = one_pass(tiny, video, text)
    torch.testing.assert_close(streamed_logits(livecc, text), expected, rtol=1e-4, atol=1e-5)


@torch.inference_mode()
def test_pruned_tokens_keep_their_full_grid_positions(tiny):
    livecc = LiveCC(tiny, STCSettings(cacher=False, tokens_per_frame=30))
    video = frames(4)
    step = livecc.add_frames(video, TIMES)
    text = QUESTION_TURN.format(prompt=query().prompt)
    _, features, merged = one_pass(tiny, video, text)
    pruner = STCPruner(30)  # the same pruner, run here on the same merged tokens chunk by chunk
    keep = [pruner.compress(chunk[None])[1][0] for chunk in features.split(merged)]
    expected, _, _ = one_pass(tiny, video, text, keep)
    torch.testing.assert_close(streamed_logits(livecc, text), expected, rtol=1e-4, atol=1e-5)
    assert step.counts == {"frames_encoded": 4, "visual_tokens_in": sum(merged), "visual_tokens_kept": 60}
    assert livecc.next_position == livecc_positions_without_pruning(tiny, video)


@torch.inference_mode()
@pytest.mark.parametrize("threshold", [None, 0.5])
def test_dtd_drops_against_the_previous_temporal_patch_and_keeps_positions(tiny, threshold):
    """--compress dtd on LiveCC: the first temporal patch whole, then DTD's choice (30 per patch, or by
    the threshold), each kept token at its full-grid position."""
    dtd = STCSettings(cacher=False, tokens_per_frame=30, pruner_method="dtd", dtd_threshold=threshold)
    livecc = LiveCC(tiny, dtd)
    video = frames(6)
    step = livecc.add_frames(video, (*TIMES, 2.0, 2.5))
    features = tiny.model.model.visual(*_patches(tiny, video)).pooler_output  # 3 patches, one call
    patches = torch.stack(features.split(features.shape[0] // 3))
    chosen = DifferentialTokenDrop(threshold, keep=None if threshold is not None else 30).select(patches)
    assert len(chosen[0]) == patches.shape[1] and (threshold or [len(c) for c in chosen[1:]] == [30, 30])
    assert step.counts["visual_tokens_kept"] == sum(len(c) for c in chosen)
    assert livecc.next_position == livecc_positions_without_pruning(tiny, video, (*TIMES, 2.0, 2.5))


def _patches(qwen, video):
    """``(pixels, grid_thw)`` of ``video``'s temporal patches at LiveCC's stream size, one call's worth."""
    settings = LiveCCSettings()
    transform = replace(qwen.frames, min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)
    size = transform.size_for(video.shape[1], video.shape[2])
    chunks = [transform(video[i : i + 2], size) for i in range(0, len(video), 2)]
    return torch.cat([p for p, _ in chunks]), torch.cat([g for _, g in chunks])


def livecc_positions_without_pruning(qwen, video, times=TIMES):
    livecc = LiveCC(qwen, OFF)
    livecc.add_frames(video, times)
    return livecc.next_position


@torch.inference_mode()
def test_answers_leave_the_memory_as_it_was(tiny):
    livecc = LiveCC(tiny, STCSettings(cacher=False, tokens_per_frame=20), protocol=SHORT)
    livecc.add_frames(frames(4), TIMES)
    before = (livecc.cache.get_seq_length(), livecc.next_position, list(livecc.segments))
    first, second = livecc.answer(query()), livecc.answer(query())
    assert first.text == second.text and 1 <= first.counts["new_tokens"] <= 4
    assert (livecc.cache.get_seq_length(), livecc.next_position, livecc.segments) == before


@torch.inference_mode()
def test_text_segments_and_generated_tokens_wait_only_for_their_ids(tiny):
    """A text segment's positions follow on from the last: known on the host, so a question and each
    generated token wait for nothing but the copy of their ids to the device."""
    livecc = LiveCC(tiny, STCSettings(cacher=False, tokens_per_frame=20), protocol=SHORT)
    livecc.add_frames(frames(2), TIMES[:2])
    position = livecc.next_position
    question = livecc._token_ids("Which colour?")
    with OpCensus() as census:
        hidden = livecc._append(question)
        livecc._append([5])
    assert census.total_launches > 0 and census.host_syncs == {"lift_fresh.default": 2}
    assert hidden.shape[1] == len(question) and livecc.next_position == position + len(question) + 1
    assert livecc.segments[-2:] == [len(question), 1]


@torch.inference_mode()
def test_a_video_chunk_waits_for_its_ids_and_its_last_position_beyond_get_rope_index(tiny):
    """Where the placeholders are and which tokens the pruner kept are known on the host: a chunk's segment
    waits only for its ids, the end of its positions, and what transformers' ``get_rope_index`` reads."""
    livecc = LiveCC(tiny, STCSettings(cacher=False, tokens_per_frame=20), protocol=SHORT)
    patch = livecc._encode_patch(frames(2), livecc.frames.size_for(60, 80), Step())
    video = "<|video_pad|>" * len(patch.features)
    ids = livecc._token_ids(CHUNK_TURN.format(start=0.0, end=1.0, video=video))
    tokens = torch.tensor([ids])
    types = (tokens == livecc.video_pad).int() * 2
    with OpCensus() as rope:
        livecc.model.model.get_rope_index(tokens, types, video_grid_thw=patch.grid)
    with OpCensus() as census:
        livecc._append(ids, patch.grid, patch.features, patch.kept)
    ours = Counter({"lift_fresh.default": 1, "_local_scalar_dense.default": 1})  # torch.tensor(ids), max
    assert census.host_syncs == rope.host_syncs + ours
    assert livecc.segments[-1] == len(ids) - len(patch.features) + 20


@torch.inference_mode()
def test_logits_mode_answers_with_an_option_letter_or_a_candidate(tiny):
    livecc = LiveCC(tiny, OFF, protocol=STREAM.override(decoding="option-logits"))
    livecc.add_frames(frames(2), TIMES[:2])
    answer = livecc.answer(query())
    assert answer.text in ("A", "B") and answer.model_input.endswith("assistant\nThe answer is:\n")
    assert livecc.answer(query(options=())).text in ("No", "Yes", *"0123456789")


@torch.inference_mode()
def test_a_cache_bound_evicts_the_oldest_chunks_but_not_the_system_prompt(tiny):
    free = LiveCC(tiny, OFF)
    free.add_frames(frames(6), (0.0, 0.5, 1.0, 1.5, 2.0, 2.5))
    system, chunk = free.segments[0], free.segments[1]
    bounded = LiveCC(tiny, OFF, LiveCCSettings(max_cache_tokens=system + 2 * chunk))
    bounded.add_frames(frames(6), (0.0, 0.5, 1.0, 1.5, 2.0, 2.5))
    assert bounded.segments == [system, chunk, chunk] and bounded.cache.get_seq_length() == system + 2 * chunk
    # an answer neither evicts nor keeps anything, and names the frames the memory holds
    answer = bounded.answer(query())
    assert bounded.segments == [system, chunk, chunk] and bounded.cache.get_seq_length() == system + 2 * chunk
    assert answer.frame_times == (1.0, 1.5, 2.0, 2.5)
    keys, bound_keys = free.cache.layers[0].keys, bounded.cache.layers[0].keys
    torch.testing.assert_close(bound_keys[..., :system, :], keys[..., :system, :], rtol=0, atol=0)
    torch.testing.assert_close(bound_keys[..., system:, :], keys[..., system + chunk :, :], rtol=0, atol=0)


def test_a_saved_checkpoint_folder_loads_back(tiny, tmp_path):
    qwen2vl.save(tiny, tmp_path)
    loaded = qwen2vl.load(str(tmp_path))
    assert loaded.frames == tiny.frames
    answers = []
    for qwen in (tiny, loaded):
        livecc = LiveCC(qwen, OFF, protocol=SHORT)
        livecc.add_frames(frames(2), TIMES[:2])
        answers.append(livecc.answer(query()).text)
    assert answers[0] == answers[1]


def test_a_protocol_for_another_layout_is_refused(tiny):
    with pytest.raises(ValueError, match="protocol livecc-ovo \\(livecc\\) does not fit LiveCC"):
        LiveCC(tiny, OFF, protocol=resolve("livecc", "ovo"))


@torch.inference_mode()
def test_the_cacher_alternates_reference_and_selective_temporal_patches(tiny):
    livecc = LiveCC(tiny, STCSettings(pruner=False, update_ratio=0.5, cache_interval=2))
    livecc.add_frames(frames(2), TIMES[:2])  # chunk 0: a reference, every block stock
    assert all(selected is None for selected in livecc.cacher.selected)
    livecc.add_frames(frames(2, seed=1), TIMES[2:])  # chunk 1: selective, half of each block's tokens
    patches = int(livecc.frames.size_for(60, 80)[0] / 14 * livecc.frames.size_for(60, 80)[1] / 14)
    assert [tuple(s.shape) for s in livecc.cacher.selected] == [(1, patches // 2)] * 2
    livecc.reset()  # a new video starts with a reference again
    livecc.add_frames(frames(2), TIMES[:2])
    assert all(selected is None for selected in livecc.cacher.selected)
    livecc.cacher.detach()


@pytest.mark.gpu
@torch.inference_mode()
def test_on_cuda_the_streamed_cache_gives_the_logits_of_one_full_pass():
    qwen = qwen2vl.build_random("tiny", device="cuda")
    livecc = LiveCC(qwen, OFF)
    video = frames(4)
    livecc.add_frames(video, TIMES)
    text = QUESTION_TURN.format(prompt=query().prompt)
    expected, _, _ = one_pass(qwen, video, text)
    torch.testing.assert_close(streamed_logits(livecc, text), expected, rtol=1e-4, atol=1e-4)
