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
    # Qwen3-VL-8B's LLM widths as a Qwen2 decoder, for `stc bench` timing (Qwen3 adds q/k norms per head)
    "qwen3-8b": dict(
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        rope_parameters={"rope_type": "default", "rope_theta": 5e6},
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
    ``tower(pixel_values [N, 3 * 2 * 14 * 14], grid_thw=[[t, h, w]])``) for ``QWEN2VL_VISION_PRESETS``, and
    ``random_qwenvl_tower``'s for the Qwen2.5-VL and Qwen3-VL presets."""
    if name in QWEN25VL_VISION_PRESETS | QWEN3VL_VISION_PRESETS:
        return random_qwenvl_tower(name, layers, dtype=dtype, device=device, seed=seed)
    spec = _pick(
        VISION_PRESETS | QWEN2VL_VISION_PRESETS | QWEN25VL_VISION_PRESETS | QWEN3VL_VISION_PRESETS,
        name,
        "vision",
    )
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


# Qwen2.5-VL and Qwen3-VL vision towers (``Qwen2_5_VLVisionConfig`` / ``Qwen3VLVisionConfig`` fields): the
# random models of ``--model qwen25vl`` / ``qwen3vl`` and ``random_qwenvl_tower`` build these. The full ones
# are the towers of Qwen/Qwen2.5-VL-7B-Instruct and Qwen/Qwen3-VL-8B-Instruct (config.json, vision_config).
QWEN25VL_VISION_PRESETS = {
    "qwen25vl-7b": dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        out_hidden_size=3584,  # the merger's output: the LLM width
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,  # 4 x 4 merge units per attention window
        fullatt_block_indexes=[7, 15, 23, 31],
        tokens_per_second=2,
        hidden_act="silu",
        in_channels=3,
    ),
    "qwen25vl-tiny": dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=56,  # 2 x 2 merge units: a 4 x 6 grid has windows of 16 and 8 tokens
        fullatt_block_indexes=[1],
        tokens_per_second=2,
        hidden_act="silu",
        in_channels=3,
    ),
}
QWEN3VL_VISION_PRESETS = {
    "qwen3vl-8b": dict(
        depth=27,
        hidden_size=1152,
        intermediate_size=4304,
        num_heads=16,
        out_hidden_size=4096,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        num_position_embeddings=2304,  # a 48 x 48 learned grid, resampled to each frame's
        deepstack_visual_indexes=[8, 16, 24],
        hidden_act="gelu_pytorch_tanh",
        in_channels=3,
    ),
    "qwen3vl-tiny": dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        num_position_embeddings=64,
        deepstack_visual_indexes=[0, 1],
        hidden_act="gelu_pytorch_tanh",
        in_channels=3,
    ),
}
# The (H, W) these towers are fed under SimpleStream's protocol: a 16:9 frame (480 x 854) resized by
# qwen-vl-utils to 476 x 840 (multiples of 28, under 768 * 28 * 28 px); Qwen2.5-VL takes it as it is (grid
# 34 x 60, 510 merged tokens), Qwen3-VL's image processor rounds it to multiples of 32: 480 x 832 (grid
# 30 x 52, 390 merged tokens).
QWENVL_FRAME_SIZES = {
    "qwen25vl-7b": (476, 840),
    "qwen25vl-tiny": (56, 84),  # grid 4 x 6
    "qwen3vl-8b": (480, 832),
    "qwen3vl-tiny": (64, 96),  # grid 4 x 6
}


def random_qwenvl_tower(name: str, layers: int | None = None, *, dtype=torch.float32, device="cpu", seed=0):
    """A Qwen2.5-VL or Qwen3-VL vision tower with random weights at preset widths, cut to ``layers`` blocks if
    given (deepstack taps and full-attention blocks past the cut are dropped). Called as
    ``tower(pixel_values [N, 3 * 2 * p * p], grid_thw=[[t, h, w]])``; ``.pooler_output`` holds the merged
    tokens, and for Qwen3-VL ``.deepstack_features`` the deepstack ones."""
    spec = _pick(QWEN25VL_VISION_PRESETS | QWEN3VL_VISION_PRESETS, name, "vision")
    spec = _depth(spec, layers, key="depth")
    if name in QWEN25VL_VISION_PRESETS:
        from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
            Qwen2_5_VisionTransformerPretrainedModel,
        )

        spec["fullatt_block_indexes"] = [i for i in spec["fullatt_block_indexes"] if i < spec["depth"]]
        config, tower = Qwen2_5_VLVisionConfig(**spec), Qwen2_5_VisionTransformerPretrainedModel
    else:
        from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

        spec["deepstack_visual_indexes"] = [i for i in spec["deepstack_visual_indexes"] if i < spec["depth"]]
        config, tower = Qwen3VLVisionConfig(**spec), Qwen3VLVisionModel
    with seeded(seed, device):
        return tower(config).to(dtype).eval()
