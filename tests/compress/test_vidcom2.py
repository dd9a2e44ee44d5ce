"""VidCom² (``stc_cli/compress/vidcom2.py``) against the released function's choices on seeded inputs,
and its frame budgets worked out by hand."""

import json
from pathlib import Path

import pytest
import torch

from stc_cli.compress.vidcom2 import VidCom2

# Written by running [VC2] vidcom2.py (xuyang-liu16/VidCom2 944a17d, CPU float32) on the inputs below.
REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "vidcom2_reference.json").read_text())


def inputs(seed: int, frames: int, tokens: int, channels: int) -> torch.Tensor:
    """Seeded features whose frames differ and hold a few outlier tokens, so that budgets and choices vary
    (the same recipe the reference was made with)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, tokens, channels, generator=g)
    x += torch.randn(frames, 1, channels, generator=g) * torch.linspace(0.2, 2.0, frames)[:, None, None]
    x[:, :: max(tokens // 7, 1)] += 3.0 * torch.randn(1, 1, channels, generator=g)
    return x


@pytest.mark.parametrize("case", REFERENCE["cases"], ids=lambda case: f"seed{case['seed']}-{case['model']}")
def test_the_released_function_s_choices_are_reproduced(case):
    x = inputs(case["seed"], case["frames"], case["tokens"], case["channels"])
    assert float(x.double().sum()) == pytest.approx(case["input_sum"], abs=1e-6)  # the same inputs
    chosen = VidCom2(base_scale=case["base_scale"]).select(x)
    assert [idx.tolist() for idx in chosen] == case["indices"]
    assert all(idx.dtype == torch.int64 and bool((idx.diff() > 0).all()) for idx in chosen)


def test_frames_less_like_the_video_keep_more_tokens_rounded_half_to_even():
    vidcom2 = VidCom2(base_scale=0.25)
    assert vidcom2.budgets(torch.tensor([0.0, 0.0]), 196) == [49, 49]  # 0.25 x 196
    assert vidcom2.budgets(torch.tensor([0.0, 0.0]), 10) == [2, 2]  # 2.5 rounds to 2
    # softmax at 0.01 puts all the weight on the distinct frame: 0.25 x (1 + 1 - 0.5) and 0.25 x (1 - 0.5)
    assert vidcom2.budgets(torch.tensor([1.0, 0.0]), 196) == [74, 24]  # 73.5 -> 74, 24.5 -> 24
    assert VidCom2(base_scale=1.0).budgets(torch.tensor([1.0, 0.0]), 196) == [196, 98]  # capped at all
    assert VidCom2(base_scale=0.01).budgets(torch.tensor([0.0, 0.0]), 20) == [1, 1]  # at least one


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="base_scale must be in"):
        VidCom2(base_scale=0)
    with pytest.raises(ValueError, match=r"features must be a non-empty float tensor \[frames, tokens"):
        VidCom2().select(torch.zeros(196, 64))
