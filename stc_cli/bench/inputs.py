"""What the stages are fed: a synthetic video cut into the towers' chunks, the token counts of each
preset's grid, and the tower's output turned into the LLM's ``[1, P, width]`` tokens per frame (SigLIP)
or per temporal patch (Qwen2-VL)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stc_cli.configs import BenchConfig
from stc_cli.models.presets import (
    QWEN2VL_FRAME_SIZES,
    QWEN2VL_VISION_PRESETS,
    QWEN3VL_VISION_PRESETS,
    QWEN25VL_VISION_PRESETS,
    QWENVL_FRAME_SIZES,
    VISION_PRESETS,
)

# Qwen2-VL, Qwen2.5-VL and Qwen3-VL towers: packed temporal patches, a 2x2 patch merger into the LLM width
QWENVL_PRESETS = QWEN2VL_VISION_PRESETS | QWEN25VL_VISION_PRESETS | QWEN3VL_VISION_PRESETS
QWENVL_SIZES = QWEN2VL_FRAME_SIZES | QWENVL_FRAME_SIZES


def is_qwen2vl(vision_preset: str) -> bool:
    """A Qwen-VL tower (Qwen2-VL, Qwen2.5-VL or Qwen3-VL): a chunk holds temporal patches of 2 frames."""
    return vision_preset in QWENVL_PRESETS


def merged_width(vision_preset: str) -> int:
    """The width of a Qwen-VL tower's merged tokens, which go to the LLM as they are."""
    spec = QWENVL_PRESETS[vision_preset]
    return spec.get("out_hidden_size") or spec["hidden_size"]  # Qwen2-VL calls the merger's width hidden_size


def tiny_of(vision_preset: str) -> str:
    """The tiny preset of the same tower family (the same cacher family)."""
    for family, tiny in (
        ("qwen25vl", "qwen25vl-tiny"),
        ("qwen3vl", "qwen3vl-tiny"),
        ("qwen2vl", "qwen2vl-tiny"),
    ):
        if vision_preset.startswith(family):
            return tiny
    return "tiny"


def frames_per_chunk(config: BenchConfig) -> int:
    """Frames per ViT call: as given, else one frame (SigLIP) or one temporal patch of two (Qwen2-VL)."""
    return config.frames_per_chunk or (2 if is_qwen2vl(config.vision) else 1)


def units_per_chunk(config: BenchConfig) -> int:
    """The LLM's units per ViT chunk: frames (SigLIP) or temporal patches of two frames (Qwen2-VL)."""
    return frames_per_chunk(config) // (2 if is_qwen2vl(config.vision) else 1)


def per_call(units: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    """``n`` consecutive ``[1, P, C]`` units as one ``[1, n * P, C]`` LLM input each: a ViT chunk's tokens
    prefilled in one call, as ``stc eval --encode-chunk n`` does."""
    return [torch.cat(units[i : i + n], dim=1) for i in range(0, len(units), n)]


def _grid(vision_preset: str) -> tuple[int, int]:
    """Patches per side of a chunk: 27 x 27 for SigLIP at 384 px, 28 x 52 for Qwen2-VL at 392 x 728."""
    if is_qwen2vl(vision_preset):
        height, width = QWENVL_SIZES[vision_preset]
        patch = QWENVL_PRESETS[vision_preset]["patch_size"]
        return height // patch, width // patch
    spec = VISION_PRESETS[vision_preset]
    return (spec["image_size"] // spec["patch_size"],) * 2


def vit_tokens(vision_preset: str) -> int:
    """Tokens per chunk in the ViT layers: 729 for SigLIP at 384 px, 1456 for Qwen2-VL at 392 x 728."""
    height, width = _grid(vision_preset)
    return height * width


def pooled_tokens(vision_preset: str) -> int:
    """Tokens per chunk that reach the LLM: after the 2x bilinear pool, 27 x 27 -> 14 x 14 = 196 for
    SigLIP at 384 px; after Qwen2-VL's 2x2 patch merger, 28 x 52 -> 14 x 26 = 364."""
    height, width = _grid(vision_preset)
    return -(-height // 2) * -(-width // 2)


def synthetic_video(n: int, size: int | tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``[n, 3, H, W]`` normalised pixels (``size``: S for S x S, or (H, W)): a fixed random scene, a
    square drifting right, noise."""
    height, width = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    scene = torch.randn(3, height, width, generator=g)
    frames = scene.repeat(n, 1, 1, 1) + 0.05 * torch.randn(n, 3, height, width, generator=g)
    side = min(height, width) // 4
    for t in range(n):
        left = (t * width // 16) % (width - side)
        frames[t, :, side : 2 * side, left : left + side] += 2.0
    return frames


def vision_chunks(
    vision_preset: str, n: int, seed: int = 0, frames: int | None = None
) -> list[dict[str, torch.Tensor]]:
    """``n`` chunks of ``frames`` frames of a synthetic video (default: 1 for SigLIP, 2 for Qwen2-VL),
    each the keyword arguments of one call of the preset's tower: ``pixel_values [F, 3, S, S]``
    (SigLIP); or F / 2 temporal patches of two frames, packed as ``hidden_states [F / 2 * gh * gw,
    3 * 2 * p * p]`` with ``grid_thw [[F / 2, gh, gw]]`` (Qwen2-VL)."""
    if not is_qwen2vl(vision_preset):
        video = synthetic_video(n * (frames or 1), VISION_PRESETS[vision_preset]["image_size"], seed)
        return [{"pixel_values": chunk} for chunk in video.split(frames or 1)]
    spec = QWENVL_PRESETS[vision_preset]
    tp, p, m = spec["temporal_patch_size"], spec["patch_size"], spec["spatial_merge_size"]
    per_chunk = (frames or tp) // tp  # temporal patches per call
    n *= per_chunk
    video = synthetic_video(tp * n, QWENVL_SIZES[vision_preset], seed)
    gh, gw = video.shape[2] // p, video.shape[3] // p
    # The 5.24 video processor's order: 2x2 merge windows in raster order, each window's patches in raster
    # order; per patch the channel, the frame within the temporal patch, the pixel row and column.
    patches = video.view(n, tp, 3, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    patches = patches.reshape(n // per_chunk, per_chunk * gh * gw, 3 * tp * p * p)  # patch after patch
    grid = torch.tensor([[per_chunk, gh, gw]])
    return [{"hidden_states": chunk, "grid_thw": grid} for chunk in patches]


def to_device(chunk: dict[str, torch.Tensor], device, dtype) -> dict[str, torch.Tensor]:
    """Pixels to ``dtype`` on ``device``; integer grids stay integers."""
    return {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in chunk.items()}


def llm_inputs(out, qwen2vl: bool, merged: int) -> tuple[torch.Tensor, ...]:
    """A chunk's tower output as ``[1, P, C]`` per frame (SigLIP) or per temporal patch (Qwen2-VL's
    merged tokens, ``merged`` per patch)."""
    if not qwen2vl:
        return out.last_hidden_state.split(1)
    return out.pooler_output.view(-1, merged, out.pooler_output.shape[-1]).split(1)


def project_and_pool(features: list[torch.Tensor], llm, seed: int) -> list[torch.Tensor]:
    """LLaVA-OneVision's path to the LLM: a (random) projector to the LLM width, then a bilinear 2x
    downsample of the token grid (27 x 27 -> 14 x 14 = 196). Returns ``[1, P, width]`` per frame."""
    first, width = features[0], llm.config.hidden_size
    g = torch.Generator(device=first.device).manual_seed(seed)
    proj = torch.randn(first.shape[-1], width, generator=g, device=first.device).to(first.dtype)
    proj /= first.shape[-1] ** 0.5
    with torch.inference_mode():
        return [pool_grid(feats @ proj) for feats in features]


def pool_grid(tokens: torch.Tensor) -> torch.Tensor:
    """LLaVA-OneVision's 2x bilinear downsample of a square grid ``[F, S * S, C]`` (27 x 27 -> 14 x 14)."""
    frames, count, channels = tokens.shape
    side = int(count**0.5)
    grid = tokens.view(frames, side, side, channels).permute(0, 3, 1, 2)
    pooled = F.interpolate(grid, size=(-(-side // 2),) * 2, mode="bilinear")
    return pooled.flatten(2).transpose(1, 2).contiguous()
