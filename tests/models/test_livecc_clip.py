"""LiveCC's OVO-Bench evaluation layout (``livecc-ovo``): one turn per clip, answers from candidate logits."""

import pytest
import torch

from stc_cli.benchmarks.base import Query
from stc_cli.models import qwen2vl
from stc_cli.models.base import STCSettings
from stc_cli.models.livecc import SYSTEM_PROMPT
from stc_cli.models.livecc_clip import CANDIDATES, QUESTION_END, VIDEO_TURN, LiveCCClip, clip_size
from stc_cli.protocols import resolve
from tests.models.test_livecc import frames

OFF = STCSettings(cacher=False, pruner=False)
OVO = resolve("livecc", "ovo")  # livecc-ovo
TIMES = (0.0, 0.5, 1.0, 1.5)


@pytest.fixture(scope="module")
def tiny():
    return qwen2vl.build_random("tiny")


def query():
    return Query(
        id="ovo/1", bench="ovo", task="EPM", category="backward", video="v.mp4", window=(0.0, 2.0),
        prompt="Did I close the fridge?\nA. Yes\nB. No\nPlease select the correct answer.",
        options=("Yes", "No"), target="A", extra={}, question="Did I close the fridge?",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("size", "count", "want"),
    [
        # 10 s at 2 fps: 10 patches share 24576 tokens, but a patch holds at most 768; 360x640 rounds
        # to 364x644 (13 x 23 = 299 tokens), inside [100, 768]
        ((360, 640), 20, (364, 644)),
        # 480 frames: 240 patches, 24576 * 784 / 480 * 2 = 80282 px, raised to the floor of
        # 1.05 * 100 tokens = 82320 px; 364x644 is above it: scaled by sqrt(360 * 640 / 82320) = 1.673
        # and floored to 196x364 (91 tokens, under the 100-token minimum, as upstream's smart_resize)
        ((360, 640), 480, (196, 364)),
        # small frames are scaled up to 100 tokens: sqrt(78400 / 4800) = 4.04 -> ceil to 252x336
        ((60, 80), 4, (252, 336)),
    ],
)
def test_clip_size_spreads_livecc_s_visual_budget(size, count, want):
    assert clip_size(*size, count, 24576) == want


def one_pass(qwen, video, prompt):
    """The stock model over LiveCC's sequence for one clip, the clip through the tower in one call."""
    model, tokenizer = qwen.model, qwen.tokenizer
    pixels, grid = qwen.frames(video, clip_size(60, 80, len(video), 24576))
    merged = int(grid.prod()) // 4
    text = (
        SYSTEM_PROMPT + VIDEO_TURN.format(video="<|video_pad|>" * merged) + QUESTION_END.format(prompt=prompt)
    )
    ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])
    pad = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    features = model.model.visual(pixels, grid_thw=grid).pooler_output
    positions, _ = model.model.get_rope_index(ids, (ids == pad).int() * 2, video_grid_thw=grid)
    embeds = model.model.language_model.embed_tokens(ids)
    embeds[0, ids[0] == pad] = features
    hidden = model.model.language_model(inputs_embeds=embeds, position_ids=positions).last_hidden_state
    return model.lm_head(hidden[0, -1])


@torch.inference_mode()
def test_the_clip_turn_gives_the_logits_of_livecc_s_one_pass(tiny):
    clip = LiveCCClip(tiny, OFF, protocol=OVO)
    video = frames(4)
    step = clip.add_frames(video, TIMES)
    assert step.counts == {"frames_encoded": 4, "visual_tokens_in": 2 * 108, "visual_tokens_kept": 2 * 108}
    logits = clip.model.lm_head(clip._append(clip._token_ids(clip.question_text(query())))[0, -1])
    torch.testing.assert_close(logits, one_pass(tiny, video, query().prompt), rtol=1e-4, atol=1e-5)


@torch.inference_mode()
def test_the_answer_is_the_best_of_the_17_candidates_each_after_a_newline(tiny):
    clip = LiveCCClip(tiny, OFF, protocol=OVO)
    clip.add_frames(frames(4), TIMES)
    logits = clip.model.lm_head(clip._append(clip._token_ids(clip.question_text(query())))[0, -1])
    clip.reset()
    clip.add_frames(frames(4), TIMES)
    answer = clip.answer(query())
    ids = [clip._ids("\n" + name)[0, -1].item() for name in CANDIDATES]
    assert answer.text == CANDIDATES[int(logits[ids].argmax())]
    assert answer.model_input == query().prompt + "<|im_end|>\n<|im_start|>assistant\nThe answer is:\n"
    assert answer.frame_times == TIMES


@torch.inference_mode()
def test_pruned_clip_tokens_keep_their_positions_and_the_clip_comes_in_one_call(tiny):
    pruned = LiveCCClip(tiny, STCSettings(cacher=False, tokens_per_frame=30), protocol=OVO)
    step = pruned.add_frames(frames(4), TIMES)
    full = LiveCCClip(tiny, OFF, protocol=OVO)
    full.add_frames(frames(4), TIMES)
    assert step.counts["visual_tokens_kept"] == 60  # 30 of 108 per temporal patch
    assert pruned.segments[-1] == full.segments[-1] - 2 * (108 - 30)
    assert pruned.next_position == full.next_position
    with pytest.raises(ValueError, match="livecc-ovo takes a clip's frames in one call after reset"):
        pruned.add_frames(frames(2), TIMES[:2])


def test_the_stream_protocol_does_not_fit_the_clip_layout(tiny):
    with pytest.raises(ValueError, match="protocol livecc-stream \\(livecc\\) does not fit LiveCCClip"):
        LiveCCClip(tiny, OFF, protocol=resolve("livecc", "ovo", "livecc-stream"))
