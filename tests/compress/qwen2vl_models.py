"""A tiny random-weight Qwen2-VL vision tower and packed video chunks for the cacher tests (no downloads)."""

import torch

from stc_cli.models.presets import random_vision_tower
from tests.compress.models import moving_frames

PATCH, TEMPORAL, MERGE = 14, 2, 2


def tiny_qwen2vl(seed=0, dtype=torch.float32):
    return random_vision_tower("qwen2vl-tiny", seed=seed, dtype=dtype)  # 2 blocks, width 32, 2 heads


def patchify(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[2 * S, 3, H, W]`` -> (pixel_values ``[S * gh * gw, 3 * 2 * 14 * 14]``, grid_thw ``[[S, gh, gw]]``),
    the 5.24 video processor's flat order: temporal patch, 2x2 merge windows in raster order, then the
    window's patches in raster order."""
    n, c, h, w = frames.shape
    s, gh, gw = n // TEMPORAL, h // PATCH, w // PATCH
    x = frames.view(1, s, TEMPORAL, c, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9).reshape(s * gh * gw, c * TEMPORAL * PATCH * PATCH)
    return x.contiguous(), torch.tensor([[s, gh, gw]])


def video_chunks(patches_per_chunk, n_chunks, grid=(4, 6), seed=0):
    """``n_chunks`` of ``patches_per_chunk`` temporal patches each on a ``grid`` of patches: a bright square
    moving over a fixed noisy scene. Each chunk is ``(pixel_values, grid_thw [[S, gh, gw]])``."""
    h, w = grid[0] * PATCH, grid[1] * PATCH
    frames = moving_frames(TEMPORAL * patches_per_chunk * n_chunks, size=max(h, w), seed=seed)[..., :h, :w]
    return [patchify(chunk) for chunk in frames.split(TEMPORAL * patches_per_chunk)]


def as_rows(grid_thw: torch.Tensor) -> torch.Tensor:
    """``[[S, gh, gw]]`` -> ``S`` rows ``[1, gh, gw]``: the same packed sequence, one grid row per patch."""
    ((s, gh, gw),) = grid_thw.tolist()
    return torch.tensor([[1, gh, gw]] * s)
