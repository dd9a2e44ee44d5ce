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


# Qwen2.5-VL and Qwen3-VL towers at the same tiny widths (patch 14, so video_chunks feeds them too; Qwen3-VL's
# real patch is 16, which changes nothing inside the blocks). initializer_range 0.1, not 0.02, so that
# attention is far from uniform and a query that looks outside its window shows in the outputs.
TINY_INIT = 0.1


def tiny_qwen25vl(seed=0, dtype=torch.float32, window_size=56):
    """3 blocks (windowed, full, windowed), width 32, 2 heads. ``window_size`` 56 px: windows of 2x2 merge
    units (16 tokens), so a 4 x 6 grid has windows of 16 and 8 tokens, a 4 x 8 grid two of 16, a 4 x 4 grid
    one that is the whole temporal patch."""
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    config = Qwen2_5_VLVisionConfig(
        depth=3,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        window_size=window_size,
        fullatt_block_indexes=[1],
        initializer_range=TINY_INIT,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Qwen2_5_VisionTransformerPretrainedModel(config).to(dtype).eval()


def tiny_qwen3vl(seed=0, dtype=torch.float32):
    """3 blocks, width 32, 2 heads, deepstack features after blocks 0 and 1, an 8 x 8 learned position
    grid."""
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

    config = Qwen3VLVisionConfig(
        depth=3,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        patch_size=PATCH,
        deepstack_visual_indexes=[0, 1],
        num_position_embeddings=64,
        initializer_range=TINY_INIT,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Qwen3VLVisionModel(config).to(dtype).eval()
