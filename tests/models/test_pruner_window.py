"""--pruner-window: STC-Pruner's temporal memory holds the last N chunk means at most, in ReKV (a chunk per
frame) and LiveCC (a chunk per temporal patch), and the setting reaches the models from EvalConfig."""

import pytest
import torch

from stc_cli.configs import EvalConfig
from stc_cli.models import llava_ov, qwen2vl
from stc_cli.models.base import STCSettings
from stc_cli.models.livecc import LiveCC
from stc_cli.models.rekv import ReKV


def frames(count, height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, height, width, 3), dtype=torch.uint8, generator=generator)


def held_history(model, chunks, frames_per_chunk):
    """Stream ``chunks`` chunks of frames into ``model``; the pruner's history length after each, and the
    history at the end."""
    video = frames(chunks * frames_per_chunk, 60, 80)
    sizes = []
    for start in range(0, len(video), frames_per_chunk):
        times = tuple(float(t) for t in range(start, start + frames_per_chunk))
        model.add_frames(video[start : start + frames_per_chunk], times)
        sizes.append(len(model.pruner.history))
    return sizes, list(model.pruner.history)


@torch.inference_mode()
def test_rekv_holds_the_last_window_frames_of_a_longer_stream():
    tiny = llava_ov.build_random("tiny")
    built = {
        window: ReKV(tiny, STCSettings(cacher=False, tokens_per_frame=5, pruner_window=window))
        for window in (3, None)
    }
    windowed, history = held_history(built[3], 7, 1)
    unbounded, every = held_history(built[None], 7, 1)
    assert windowed == [1, 2, 3, 3, 3, 3, 3] and unbounded == [1, 2, 3, 4, 5, 6, 7]  # grows by default
    assert all(torch.equal(a, b) for a, b in zip(history, every[-3:], strict=True))  # the newest three
    assert built[3].describe()["stc"]["pruner_window"] == 3  # in run.json: a resume with another is refused


@torch.inference_mode()
def test_livecc_holds_the_last_window_temporal_patches_of_a_longer_stream():
    tiny = qwen2vl.build_random("tiny")
    built = {
        window: LiveCC(tiny, STCSettings(cacher=False, tokens_per_frame=30, pruner_window=window))
        for window in (2, None)
    }
    windowed, history = held_history(built[2], 5, 2)  # 2 frames a temporal patch, one chunk mean each
    unbounded, every = held_history(built[None], 5, 2)
    assert windowed == [1, 2, 2, 2, 2] and unbounded == [1, 2, 3, 4, 5]
    assert all(torch.equal(a, b) for a, b in zip(history, every[-2:], strict=True))
    assert built[2].describe()["stc"]["pruner_window"] == 2


@pytest.mark.parametrize("window", [None, 4])
def test_from_config_carries_the_window(window):
    assert STCSettings.from_config(EvalConfig(pruner_window=window), 60).pruner_window == window
