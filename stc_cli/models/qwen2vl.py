"""Qwen2-VL (LiveCC's model) from stock transformers classes: a checkpoint (hub id or local folder), or
the same architecture with random weights (``random:tiny``, ``random:full``), as ``llava_ov.py`` does
for LLaVA-OneVision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from stc_cli.datasets.hub import checkpoint_folder
from stc_cli.models import checkpoints
from stc_cli.models.presets import LLM_PRESETS, QWEN2VL_VISION_PRESETS, seeded
from stc_cli.models.qwen2vl_frames import Qwen2VLFrames
from stc_cli.models.tokenizer import byte_tokenizer

DEFAULT_CHECKPOINT = "chenjoya/LiveCC-7B-Instruct"
SPECIAL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
# random:<name> -> (vision preset, LLM preset, M-RoPE sections (sum = head_dim / 2), vocabulary size)
RANDOM_PRESETS = {
    "tiny": ("qwen2vl-tiny", "tiny", [2, 3, 3], None),
    "full": ("qwen2vl-7b", "qwen2-7b", [16, 24, 24], 152064),
}


@dataclass
class Qwen2VL:
    model: torch.nn.Module  # Qwen2VLForConditionalGeneration
    tokenizer: object
    frames: Qwen2VLFrames
    source: str


def load(source: str, *, device="cpu", dtype=torch.float32, revision: str | None = None) -> Qwen2VL:
    """``random:<preset>``, a local checkpoint folder, or a hub id (downloaded into the hub cache)."""
    if source.startswith("random:"):
        return build_random(source.removeprefix("random:"), device=device, dtype=dtype)
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    folder = checkpoint_folder(source, revision)
    # what can be checked without the weights first: a broken checkpoint fails in seconds, with one line
    preprocessor = checkpoints.check_folder(folder, "qwen2_vl")
    config = checkpoints.load_config(Qwen2VLConfig, folder)
    frames = Qwen2VLFrames.from_pretrained(folder)
    vision = config.vision_config
    ours = (frames.patch_size, frames.temporal_patch_size, frames.merge_size)
    tower = (vision.patch_size, vision.temporal_patch_size, vision.spatial_merge_size)
    if ours != tower:
        raise checkpoints.CheckpointError(
            f"{preprocessor}: patches of {ours[0]} px, {ours[1]} frames, merged {ours[2]}x{ours[2]}, but the "
            f"vision tower of config.json takes {tower[0]} px, {tower[1]} frames, {tower[2]}x{tower[2]}; the "
            "two files come from different checkpoints"
        )
    tokenizer = checkpoints.load_tokenizer(folder)
    model = checkpoints.load_weights(Qwen2VLForConditionalGeneration, folder, config, dtype)
    return Qwen2VL(model.to(device).eval(), tokenizer, frames, source)


def build_random(preset: str, *, device="cpu", dtype=torch.float32, seed: int = 0) -> Qwen2VL:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    if preset not in RANDOM_PRESETS:
        raise ValueError(
            f"unknown preset random:{preset}; choose random:{' or random:'.join(RANDOM_PRESETS)}"
        )
    vision, llm_name, sections, vocab_size = RANDOM_PRESETS[preset]
    tokenizer = byte_tokenizer(SPECIAL_TOKENS)
    text = {**LLM_PRESETS[llm_name], "vocab_size": vocab_size or len(tokenizer)}
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": text.get("rope_parameters", {}).get("rope_theta", 10000.0),
        "mrope_section": sections,
    }
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in _TOKEN_IDS.items()}
    config = Qwen2VLConfig(
        vision_config=QWEN2VL_VISION_PRESETS[vision],
        text_config=dict(
            text,
            bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        ),
        **ids,
    )
    with seeded(seed, device):
        model = Qwen2VLForConditionalGeneration(config).to(dtype).eval()
    return Qwen2VL(model, tokenizer, Qwen2VLFrames(), f"random:{preset}")


_TOKEN_IDS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}


def save(qwen: Qwen2VL, folder: Path) -> None:
    """Weights, config, tokenizer and preprocessing config, loadable with ``load(folder)``."""
    qwen.model.save_pretrained(folder)
    qwen.tokenizer.save_pretrained(folder)
    qwen.frames.save_pretrained(folder)
