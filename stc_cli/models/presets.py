"""Architecture presets for random-weight models: real widths without downloading weights.

``tiny`` presets are for tests and demos; the others mirror the checkpoints ReKV + STC runs on
(``llava-hf/llava-onevision-qwen2-{7b,0.5b}-ov-hf``: SigLIP-so400m at 384 px, 26 layers in the HF
port; Qwen2-7B / Qwen2-0.5B language models), so latency measured on them is the real cost.
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
}


def _pick(presets: dict, name: str, kind: str) -> dict:
    if name not in presets:
        raise ValueError(f"unknown {kind} preset {name!r}; choose one of: {', '.join(presets)}")
    return dict(presets[name])


def _depth(spec: dict, layers: int | None) -> dict:
    if layers is not None:
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        spec["num_hidden_layers"] = min(layers, spec["num_hidden_layers"])
    return spec


@contextmanager
def seeded(seed: int, device):
    """Build on ``device`` from ``seed`` without moving the caller's random state."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        torch.manual_seed(seed)
        yield


def random_vision_tower(name: str, layers: int | None = None, *, dtype=torch.float32, device="cpu", seed=0):
    """A ``SiglipVisionModel`` with random weights at preset widths, cut to ``layers`` if given."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(**_depth(_pick(VISION_PRESETS, name, "vision"), layers))
    with seeded(seed, device):
        return SiglipVisionModel(config).to(dtype).eval()


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
