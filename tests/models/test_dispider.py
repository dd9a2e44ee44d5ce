"""Dispider's glue (stc_cli/models/dispider_glue.py) against the spec's parity tests that need no weights
(../shared/docs/upstream-dispider.md section 9), every expectation worked by hand; and its protocols."""

from dataclasses import replace

import pytest
import torch

from stc_cli.models.dispider_glue import (
    clip_count,
    clip_text,
    decision_layout,
    mix_2x2,
    offline_clip_count,
    pool_inputs,
    reaction_prompt,
    retrieve,
    row_roles,
    sample_indices,
    segments,
)
from stc_cli.protocols import available, resolve
from stc_cli.protocols.dispider import DispiderProtocol


def test_2x2_mixing_puts_each_neighbourhood_side_by_side_in_raster_order():
    # a 4 x 4 grid whose one channel is the token's index: neighbourhood (0, 0) is tokens 0, 1, 4, 5
    grid = torch.arange(16.0).reshape(1, 16, 1)
    mixed = mix_2x2(grid)
    assert mixed.shape == (1, 4, 4)
    assert mixed[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    # two channels: each token's channels stay together
    two = torch.stack([torch.arange(16.0), -torch.arange(16.0)], dim=-1)[None]
    assert mix_2x2(two)[0, 1].tolist() == [2, -2, 3, -3, 6, -6, 7, -7]
    with pytest.raises(ValueError, match="even square"):
        mix_2x2(torch.zeros(1, 9, 2))


def test_the_pool_inputs_are_the_tokens_then_per_frame_block_means_then_the_clip_mean():
    # 2 frames of a 4 x 4 grid (resolution 16), pool_num 4: blocks of 2 x 2
    frame = torch.arange(16.0)
    tokens = torch.cat([frame, frame + 100])[:, None]  # [32, 1]
    out = pool_inputs(tokens, resolution=16, pool_num=4)
    assert out.shape == (32 + 2 * 4 + 1, 1)
    assert torch.equal(out[:32], tokens)
    # block means: top-left (0+1+4+5)/4 = 2.5, top-right 4.5, bottom-left 10.5, bottom-right 12.5
    assert out[32:40, 0].tolist() == [2.5, 4.5, 10.5, 12.5, 102.5, 104.5, 110.5, 112.5]
    assert out[40, 0].item() == pytest.approx(57.5)  # the mean of all 32 tokens
    # pool_num 1: one slot per frame, its mean
    assert pool_inputs(tokens, 16, 1)[32:, 0].tolist() == [7.5, 107.5, 57.5]
    with pytest.raises(ValueError, match="square"):
        pool_inputs(tokens, 16, 2)


def test_row_roles_mark_the_slots_and_the_last_token():
    # 5 text tokens, 2 frames of 4 tokens, pool_num 1: slots at 13-14, time at 15
    roles = row_roles(5, 2, 4, 1)
    assert len(roles) == 16
    assert [i for i, r in enumerate(roles) if r == 100] == [13, 14]
    assert [i for i, r in enumerate(roles) if r == 200] == [15]
    assert set(roles[:13]) == {2}


@pytest.mark.parametrize(
    "triggers, expected",
    [
        ((), ["ANS", "Q", "M0", "M1", "M2", "M3", "M4", "M5", "Q", "TODO"]),
        ((2,), ["ANS", "Q", "S0", "ANS", "M2", "M3", "M4", "M5", "Q", "TODO"]),
        ((2, 5), ["ANS", "Q", "S0", "ANS", "S1", "ANS", "M5", "Q", "TODO"]),
    ],
)
def test_the_decision_sequence_follows_the_trigger_history(triggers, expected):
    layout = decision_layout(6, triggers)
    assert [name + ("" if index is None else str(index)) for name, index in layout] == expected


def test_segments_span_the_clips_between_answers():
    assert segments((2, 5)) == [range(0, 2), range(2, 5)]
    assert segments(()) == []


def test_retrieval_takes_the_top_4_by_cosine_and_sorts_them_by_time():
    query = torch.tensor([1.0, 0.0])
    # cosines with the query: clip 0: -1, 1: 0.8, 2: 0, 3: 1, 4: 0.6, 5: 0.28; lengths do not matter
    times = torch.tensor([[-1.0, 0.0], [0.8, 0.6], [0.0, 2.0], [3.0, 0.0], [0.6, 0.8], [0.28, 0.96]])
    assert retrieve(query, times) == [1, 3, 4, 5]
    assert retrieve(query, times[:3]) == [0, 1, 2]  # fewer than 4 clips: all of them
    assert retrieve(query, times, top=2) == [1, 3]


def test_the_offline_branch_counts_cosines_above_0_2_between_4_and_28():
    assert offline_clip_count(torch.tensor([0.1, 0.3, 0.5])) == 4
    assert offline_clip_count(torch.full((40,), 0.21)) == 28
    assert offline_clip_count(torch.tensor([0.3] * 6 + [0.2] * 3)) == 6  # 0.2 itself is not above


def test_the_frame_sampler_takes_round_duration_over_16_clips_at_segment_middles():
    assert [clip_count(d) for d in (3, 8, 9, 24, 40, 56, 10_000)] == [1, 1, 1, 2, 2, 4, 100]  # half to even
    assert clip_count(100, max_clips=5) == 5
    assert clip_count(10, frames_per_clip=4) == 2
    # 10 frames, 4 wanted: segment 2.25; ends (0, 2), (2, 4.5 -> 4), (4, 6.75 -> 7), (7, 9): middles
    # 1, 3, 5, 8; 100 of 16: segment 6.1875, ends 0 6 12 19 25 31 37 43 50 (49.5 to even) 56 62 68 74 80 87
    # 93 99
    assert sample_indices(10, 4) == [1, 3, 5, 8]
    assert sample_indices(100, 16) == [3, 9, 15, 22, 28, 34, 40, 46, 53, 59, 65, 71, 77, 83, 90, 96]
    assert sample_indices(5, 8) == [0, 0, 1, 2, 2, 2, 3, 4]  # fewer frames than wanted: repeats


def test_the_texts_of_a_clip_row_and_of_the_reaction_prompt():
    assert clip_text(0.4, 15.5) == "This contains a clip sampled in 0 to 16 seconds"
    assert clip_text(16.0, 2.5) == "This contains a clip sampled in 16 to 2 seconds"
    before, after = reaction_prompt("What now?")
    assert before == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
        "helpful, detailed, and polite answers to the user's questions. USER: "
    )
    assert after == "\nWhat now? ASSISTANT:"


def test_the_protocols_of_dispider():
    assert [p.name for p in available("dispider", "ovo")] == [
        "dispider-parity",
        "dispider-stream",
        "dispider-proactive",
    ]
    parity = resolve("dispider", "ovo")
    assert (parity.clips, parity.schedule, parity.max_clips, parity.max_new_tokens) == (
        "question",
        "clip",
        100,
        1024,
    )
    assert (parity.template, parity.stop, parity.fps, parity.sampling) == (
        "dispider",
        "eos+im_end",
        1.0,
        "stride",
    )
    stream = resolve("dispider", "demo", "dispider-stream")
    assert (stream.clips, stream.schedule) == ("video", "auto")
    assert "not comparable" in stream.comparable
    assert {name: value for name, value, _ in parity.rows()}["max_clips"] == "100"
    proactive = resolve("dispider", "ovo", "dispider-proactive")
    assert (proactive.proactive, proactive.clips, proactive.schedule) == (True, "video", "stream")
    assert proactive.settings()["proactive"] and "proactive" not in stream.settings()  # older runs resume
    assert ("proactive", "True") in [row[:2] for row in proactive.rows()]
    with pytest.raises(ValueError, match="the proactive loop needs the clip store"):
        proactive.override(schedule="clip")
    with pytest.raises(ValueError, match="the proactive loop needs the clip store"):
        replace(proactive, clips="question")
    with pytest.raises(ValueError, match="clips must be one of"):
        DispiderProtocol(
            name="x", model="dispider", bench="demo", summary="", comparable="", fps=1, clips="all"
        )
    with pytest.raises(ValueError, match="max_clips"):
        DispiderProtocol(
            name="x", model="dispider", bench="demo", summary="", comparable="", fps=1, max_clips=0
        )
