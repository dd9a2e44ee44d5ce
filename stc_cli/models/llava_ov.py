"""LLaVA-OneVision from stock transformers classes: a checkpoint (hub id or local folder), or the same
architecture with random weights (``random:tiny`` for tests and demos, ``random:full`` for latency work).

Random models come with a byte-level tokenizer (256 byte tokens plus the chat special tokens), so they
need no download; ``save`` writes any loaded model as a checkpoint folder that ``load`` reads back
through the same path a downloaded checkpoint takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from stc_cli.compress.visionzip import attention_stats
from stc_cli.datasets.hub import checkpoint_folder
from stc_cli.models import checkpoints
from stc_cli.models.frames import FrameTransform
from stc_cli.models.presets import LLM_PRESETS, VISION_PRESETS, seeded
from stc_cli.models.tokenizer import byte_tokenizer

DEFAULT_CHECKPOINT = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
SPECIAL_TOKENS = ("<image>", "<video>")  # besides the chat tokens every byte tokenizer has
# random:<name> -> (vision preset + overrides, LLM preset, vocabulary size)
RANDOM_PRESETS = {
    # 56 px / patch 8 = 7 x 7 patches, pooled to 4 x 4 = 16 tokens per frame
    "tiny": (("tiny", {"image_size": 56}), "tiny", None),
    # the demo model's architecture (scripts/train_demo_model.py trains it): the tiny tower, a wider LLM
    "demo": (("tiny", {"image_size": 56}), "demo", None),
    # the 7B checkpoint's shapes: 729 patches pooled to 196 tokens, Qwen2-7B with its 152,064-row vocabulary
    "full": (("siglip-so400m-384", {}), "qwen2-7b", 152064),
}


@dataclass
class LlavaOV:
    model: torch.nn.Module  # LlavaOnevisionForConditionalGeneration
    tokenizer: object
    transform: FrameTransform
    source: str

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``[N, H, W, 3]`` -> the LLM's visual tokens ``[N, tokens_per_frame, width]``: the
        vision tower's feature layer, the projector, then LLaVA-OneVision's 2x2 bilinear pooling."""
        return self.project(self.tower_states(frames))

    def tower_states(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """uint8 frames ``[N, H, W, 3]`` -> the vision tower's hidden states (embeddings, then each layer)."""
        return self.run_tower(self.pixels(frames))

    def pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``[N, H, W, 3]`` -> the tower's input ``[N, 3, S, S]`` (resized, normalised)."""
        lm = self.model.model.language_model
        return self.transform(frames, dtype=lm.dtype, device=lm.embed_tokens.weight.device)

    def run_tower(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The vision tower on ``pixels`` -> its hidden states (embeddings, then each layer)."""
        return self.model.model.vision_tower(pixels, output_hidden_states=True).hidden_states

    def project(self, states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The feature layer of ``tower_states`` -> the LLM's visual tokens (projector, 2x2 pooling)."""
        inner = self.model.model
        features = self._patches(states[self.model.config.vision_feature_layer])
        return inner.apply_pooling(inner.multi_modal_projector(features))

    def feature_attention(self, states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """VisionZip's statistics of the layer whose output is the feature layer (``attention_stats``: the
        attention each patch receives ``[N, P]`` and the keys averaged over heads ``[N, P, head_dim]``),
        pooled like the features, so that they describe the LLM's ``P = tokens_per_frame`` tokens."""
        feature = self.model.config.vision_feature_layer  # states[0] is the embeddings: layer i gives i + 1
        tower = self.model.model.vision_tower
        layers = getattr(tower, "vision_model", tower).encoder.layers
        layer = layers[feature] if feature < 0 else layers[feature - 1]
        scores, metric = attention_stats(layer, states[feature - 1])
        pool = self.model.model.apply_pooling
        return pool(self._patches(scores[..., None]))[..., 0], pool(self._patches(metric))

    def _patches(self, rows: torch.Tensor) -> torch.Tensor:
        """Drop the CLS row where the checkpoint's strategy says so ("default"); SigLIP has none."""
        return rows[:, 1:] if self.model.config.vision_feature_select_strategy == "default" else rows

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens per frame after the 2x2 pooling (196 for the released checkpoints)."""
        side = self.model.config.vision_config.image_size // self.model.config.vision_config.patch_size
        return math.ceil(side / 2) ** 2


def load(source: str, *, device="cpu", dtype=torch.float32, revision: str | None = None) -> LlavaOV:
    """``random:<preset>``, a local checkpoint folder, or a hub id (downloaded into the hub cache)."""
    if source.startswith("random:"):
        return build_random(source.removeprefix("random:"), device=device, dtype=dtype)
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    folder = checkpoint_folder(source, revision)
    # what can be checked without the weights first: a broken checkpoint fails in seconds, with one line
    preprocessor = checkpoints.check_folder(folder, "llava_onevision")
    config = checkpoints.load_config(LlavaOnevisionConfig, folder)
    transform = FrameTransform.from_pretrained(folder)
    side = config.vision_config.image_size
    if transform.size != (side, side):  # the tower's position embeddings fix its input size
        raise checkpoints.CheckpointError(
            f"{preprocessor}: resizes frames to {transform.size[0]}x{transform.size[1]}, but the vision "
            f"tower of config.json takes {side}x{side}; the two files come from different checkpoints"
        )
    tokenizer = checkpoints.load_tokenizer(folder)
    model = checkpoints.load_weights(LlavaOnevisionForConditionalGeneration, folder, config, dtype)
    return LlavaOV(model.to(device).eval(), tokenizer, transform, source)


def build_random(preset: str, *, device="cpu", dtype=torch.float32, seed: int = 0) -> LlavaOV:
    """The LLaVA-OneVision architecture at ``preset`` widths with seeded random weights."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    if preset not in RANDOM_PRESETS:
        raise ValueError(
            f"unknown preset random:{preset}; choose random:{' or random:'.join(RANDOM_PRESETS)}"
        )
    (vision_name, overrides), llm_name, vocab_size = RANDOM_PRESETS[preset]
    tokenizer = byte_tokenizer(SPECIAL_TOKENS)
    video_token, image_token = (tokenizer.convert_tokens_to_ids(t) for t in ("<video>", "<image>"))
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**{**VISION_PRESETS[vision_name], **overrides}),
        text_config=Qwen2Config(
            vocab_size=vocab_size or len(tokenizer),
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            **LLM_PRESETS[llm_name],
        ),
        image_token_id=image_token,
        video_token_id=video_token,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    with seeded(seed, device):
        model = LlavaOnevisionForConditionalGeneration(config).to(dtype).eval()
    side = config.vision_config.image_size
    return LlavaOV(model, tokenizer, FrameTransform(size=(side, side)), f"random:{preset}")


def save(llava: LlavaOV, folder: Path) -> None:
    """Write weights, config, tokenizer and preprocessing config, loadable with ``load(folder)``."""
    llava.model.save_pretrained(folder)
    llava.tokenizer.save_pretrained(folder)
    llava.transform.save_pretrained(folder)
