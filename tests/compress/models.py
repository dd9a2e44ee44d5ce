"""Tiny random-weight vision towers for the cacher tests (no downloads)."""

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from stc_cli.models.presets import VISION_PRESETS, random_vision_tower


def tiny_siglip(seed=0, dtype=torch.float32):
    return random_vision_tower("tiny", seed=seed, dtype=dtype)  # 16 tokens, no CLS, 3 layers


def tiny_clip(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return CLIPVisionModel(CLIPVisionConfig(**VISION_PRESETS["tiny"])).eval().to(dtype)  # 16 patches + CLS


def moving_frames(n, size=32, seed=0):
    """n frames [n, 3, size, size]: a fixed random scene, a bright square that moves, sensor noise."""
    g = torch.Generator().manual_seed(seed)
    scene = torch.randn(3, size, size, generator=g)
    frames = []
    for t in range(n):
        frame = scene + 0.05 * torch.randn(3, size, size, generator=g)
        frame[:, 4 + 2 * t : 12 + 2 * t, 6:14] += 2.0
        frames.append(frame)
    return torch.stack(frames)
