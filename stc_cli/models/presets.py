"""Architecture presets for random-weight models: real widths without downloading weights.

``tiny`` presets are for tests and demos; the others mirror the checkpoints ReKV + STC runs on
(``llava-hf/llava-onevision-qwen2-{7b,0.5b}-ov-hf``: SigLIP-so400m at 384 px, 26 layers in the HF
port; Qwen2-7B / Qwen2-0.5B language models) and LiveCC runs on (``chenjoya/LiveCC-7B-Instruct``: the
Qwen2-VL-7B vision tower), so latency measured on them is the real cost.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

VISION_PRESETS = {
    "siglip-so400m-384": dict(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=26,
        num_attention_heads=16,
        image_size=384,
        patch_size=14,
    ),  # 27 x 27 = 729 tokens per frame, no CLS
    "tiny": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    ),  # 16 tokens per frame
}

# Qwen2-VL vision towers (``Qwen2VLVisionConfig`` fields); ``random_vision_tower`` builds these too.
QWEN2VL_VISION_PRESETS = {
    "qwen2vl-7b": dict(
        depth=32,
        embed_dim=1280,
        hidden_size=3584,  # the merger's output: the LLM width
        num_heads=16,
        mlp_ratio=4,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        in_channels=3,
    ),
    "qwen2vl-tiny": dict(
        depth=2,
        embed_dim=32,
        hidden_size=64,
        num_heads=2,
        mlp_ratio=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        in_channels=3,
    ),
}
# The (H, W) a Qwen2-VL preset is fed: a video's frames all share one smart-resized size. 7B: LiveCC's demo
# (max_pixels 384 * 28 * 28), a 16:9 frame at 392 x 728 -> grid 28 x 52 = 1456 patches, 364 merged tokens.
QWEN2VL_FRAME_SIZES = {"qwen2vl-7b": (392, 728), "qwen2vl-tiny": (56, 84)}  # tiny: grid 4 x 6, 24 patches

LLM_PRESETS = {
    "qwen2-7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
    ),
    "qwen2-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    "demo": dict(  # the trained demo model's LLM (scripts/train_demo_model.py): small enough for 2 CPU cores
        hidden_size=96,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
}


def _pick(presets: dict, name: str, kind: str) -> dict:
    if name not in presets:
        raise ValueError(f"unknown {kind} preset {name!r}; choose one of: {', '.join(presets)}")
    return dict(presets[name])


def _depth(spec: dict, layers: int | None, key: str = "num_hidden_layers") -> dict:
    if layers is not None:
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        spec[key] = min(layers, spec[key])
    return spec


@contextmanager
def seeded(seed: int, device):
    """Build on ``device`` from ``seed`` without moving the caller's random state."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        torch.manual_seed(seed)
        yield


def random_vision_tower(name: str, layers: int | None = None, *, dtype=torch.float32, device="cpu", seed=0):
    """A vision tower with random weights at preset widths, cut to ``layers`` if given: a
    ``SiglipVisionModel`` for ``VISION_PRESETS``, a ``Qwen2VisionTransformerPretrainedModel`` (called as
    ``tower(pixel_values [N, 3 * 2 * 14 * 14], grid_thw=[[t, h, w]])``) for ``QWEN2VL_VISION_PRESETS``."""
    spec = _pick(VISION_PRESETS | QWEN2VL_VISION_PRESETS, name, "vision")
    if name in QWEN2VL_VISION_PRESETS:
        from transformers import Qwen2VLVisionConfig
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

        config = Qwen2VLVisionConfig(**_depth(spec, layers, key="depth"))
        tower = Qwen2VisionTransformerPretrainedModel
    else:
        from transformers import SiglipVisionConfig, SiglipVisionModel

        config = SiglipVisionConfig(**_depth(spec, layers))
        tower = SiglipVisionModel
    with seeded(seed, device):
        return tower(config).to(dtype).eval()


def random_language_model(
    name: str, layers: int | None = None, *, vocab_size=256, dtype=torch.float32, device="cpu", seed=0
):
    """A ``Qwen2Model`` (decoder stack, no LM head) with random weights at preset widths.

    ``vocab_size`` defaults small: callers that feed ``inputs_embeds`` need no 152k-row table.
    """
    from transformers import Qwen2Config, Qwen2Model

    config = Qwen2Config(vocab_size=vocab_size, **_depth(_pick(LLM_PRESETS, name, "LLM"), layers))
    with seeded(seed, device):
        return Qwen2Model(config).to(dtype).eval()
