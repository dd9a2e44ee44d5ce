"""TimeChat-Online's differential token drop (``stc_cli/compress/dtd.py``) on hand-made frames whose
cosines to the previous frame are worked out by hand."""

import math

import pytest
import torch

from stc_cli.compress import DifferentialTokenDrop

# 3 frames of 4 tokens in 2 channels. Cosine of each token to the same position one frame earlier:
#   frame 1 vs 0: (1,0)|(1,0) = 1; (1,0)|(0,1) = 0; (-1,-1)|(1,1) = -1; (1,1)|(1,0) = 1/sqrt(2)
#   frame 2 vs 1 (the whole frame 1, not what was kept of it): (0,1)|(1,0) = 0; (2,0)|(1,0) = 1;
#   (-1,-1)|(-1,-1) = 1; (1,1)|(1,1) = 1
FRAMES = torch.tensor(
    [
        [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]],
        [[1.0, 0.0], [1.0, 0.0], [-1.0, -1.0], [1.0, 1.0]],
        [[0.0, 1.0], [2.0, 0.0], [-1.0, -1.0], [1.0, 1.0]],
    ]
)


def kept(dtd, frames):
    return [idx.tolist() for idx in dtd.select(frames)]


def test_absolute_mode_drops_what_is_more_similar_than_the_threshold_and_keeps_the_first_frame():
    assert kept(DifferentialTokenDrop(0.5), FRAMES) == [[0, 1, 2, 3], [1, 2], [0]]
    assert 1 / math.sqrt(2) < 0.75  # so at 0.75 frame 1 keeps position 3 (cosine 0.71) too
    assert kept(DifferentialTokenDrop(0.75), FRAMES) == [[0, 1, 2, 3], [1, 2, 3], [0]]
    assert kept(DifferentialTokenDrop(0.0), FRAMES) == [[0, 1, 2, 3], [1, 2], [0]]  # cos == 0 is kept
    assert kept(DifferentialTokenDrop(1.0), FRAMES) == [[0, 1, 2, 3]] * 3  # nothing is above 1


def test_relative_mode_keeps_the_least_similar_tokens_in_their_order():
    # frame 1: cosines (1, 0, -1, 0.71) -> the two least similar are positions 2 and 1, kept as [1, 2];
    # frame 2: cosines (0, 1, 1, 1) -> position 0, then a tie of three at 1: any one of them
    chosen = kept(DifferentialTokenDrop(None, keep=2), FRAMES)
    assert chosen[:2] == [[0, 1, 2, 3], [1, 2]]
    assert chosen[2][0] == 0 and len(chosen[2]) == 2 and chosen[2][1] in (1, 2, 3)


def test_the_previous_frame_is_carried_across_calls_until_reset():
    dtd = DifferentialTokenDrop(0.5)
    assert kept(dtd, FRAMES[:1]) + kept(dtd, FRAMES[1:]) == [[0, 1, 2, 3], [1, 2], [0]]
    dtd.reset()
    assert kept(dtd, FRAMES[2:]) == [[0, 1, 2, 3]]  # a new video's first frame is kept whole


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": None}, "either threshold .absolute. or keep .relative."),
        ({"threshold": 0.5, "keep": 3}, "either threshold"),
        ({"threshold": 1.5}, r"a cosine in \[-1, 1\], got 1.5"),
        ({"threshold": None, "keep": 0}, "at least 1 token per frame, got 0"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DifferentialTokenDrop(**kwargs)


def test_frames_that_do_not_line_up_are_refused():
    dtd = DifferentialTokenDrop(None, keep=5)
    with pytest.raises(ValueError, match="keeps 5 tokens, but a frame has 4"):
        dtd.select(FRAMES)
    dtd = DifferentialTokenDrop(0.5)
    dtd.select(FRAMES)
    with pytest.raises(ValueError, match=r"frames of \(3, 2\) tokens follow frames of \(4, 2\); reset"):
        dtd.select(FRAMES[:, :3])
