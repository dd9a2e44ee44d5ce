"""The Qwen-VL family (Qwen2-VL, LiveCC's model; Qwen2.5-VL; Qwen3-VL) from stock transformers classes: a
checkpoint (hub id or local folder), or the same architecture with random weights (``random:tiny``,
``random:full``), as ``llava_ov.py`` does for LLaVA-OneVision.

One ``Architecture`` per member says what differs: config.json's ``model_type``, the transformers
classes, the frame transform's defaults, the random presets. ``load``, ``build_random`` and ``save`` are
Qwen2-VL's; ``load_checkpoint``, ``build_random_of`` take an ``Architecture`` (``qwen25vl.py``,
``qwen3vl.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
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
    model: torch.nn.Module  # a Qwen2VL / Qwen2_5_VL / Qwen3VL ForConditionalGeneration
    tokenizer: object
    frames: Qwen2VLFrames
    source: str
    # generation_config.json as the checkpoint ships it ({} for random weights): eos ids, repetition penalty
    generation: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Architecture:
    """What one member of the family needs to load, build at random and save."""

    name: str  # as messages say it: Qwen2-VL
    model_type: str  # config.json's
    config_class: str  # transformers class names
    model_class: str
    default_checkpoint: str
    frames: Qwen2VLFrames  # random models' frames, and a folder's without a preprocessor config
    # random:<name> -> (vision config dict, text config dict, M-RoPE sections, vocabulary size or None)
    random_presets: dict = field(default_factory=dict)
    rope_extra: tuple[tuple[str, object], ...] = ()  # more rope_parameters of random models
    # the preprocessor config the frames come from; None: the video processor's, else the image one's
    frames_file: str | None = None
    # random models stop as the instruct checkpoints' generation_config.json says: at <|im_end|> and
    # <|endoftext|> (saved with them, so that a saved folder answers as the model it came from)
    instruct_eos: bool = False


QWEN2VL = Architecture(
    name="Qwen2-VL",
    model_type="qwen2_vl",
    config_class="Qwen2VLConfig",
    model_class="Qwen2VLForConditionalGeneration",
    default_checkpoint=DEFAULT_CHECKPOINT,
    frames=Qwen2VLFrames(),
    random_presets={
        name: (QWEN2VL_VISION_PRESETS[vision], LLM_PRESETS[llm], sections, vocab)
        for name, (vision, llm, sections, vocab) in RANDOM_PRESETS.items()
    },
)


def load(source: str, *, device="cpu", dtype=torch.float32, revision: str | None = None) -> Qwen2VL:
    """``random:<preset>``, a local checkpoint folder, or a hub id (downloaded into the hub cache)."""
    return load_checkpoint(source, QWEN2VL, device=device, dtype=dtype, revision=revision)


def build_random(preset: str, *, device="cpu", dtype=torch.float32, seed: int = 0) -> Qwen2VL:
    return build_random_of(QWEN2VL, preset, device=device, dtype=dtype, seed=seed)


def load_checkpoint(
    source: str, arch: Architecture, *, device="cpu", dtype=torch.float32, revision: str | None = None
) -> Qwen2VL:
    """A checkpoint of ``arch``: ``random:<preset>``, a local folder, or a hub id."""
    if source.startswith("random:"):
        return build_random_of(arch, source.removeprefix("random:"), device=device, dtype=dtype)
    import transformers

    folder = checkpoint_folder(source, revision)
    # what can be checked without the weights first: a broken checkpoint fails in seconds, with one line
    preprocessor = _check_folder(folder, arch.model_type)
    config = checkpoints.load_config(getattr(transformers, arch.config_class), folder)
    frames = _frames(folder, arch)
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
    model = checkpoints.load_weights(getattr(transformers, arch.model_class), folder, config, dtype)
    return Qwen2VL(model.to(device).eval(), tokenizer, frames, source, _generation(folder))


def _check_folder(folder: Path, model_type: str) -> Path:
    """``checkpoints.check_folder``; Qwen2.5-VL and Qwen3-VL ship Qwen2-VL's image processor
    (``Qwen2VLImageProcessor``), which that check takes for a Qwen2-VL checkpoint's, so for them the
    preprocessor config is checked as Qwen2-VL's."""
    if model_type == QWEN2VL.model_type:
        return checkpoints.check_folder(folder, model_type)
    folder = Path(folder)
    checkpoints.check_architecture(folder, model_type)
    checkpoints.check_weights(folder)
    if not any((folder / name).is_file() for name in checkpoints.TOKENIZER_FILES):
        raise checkpoints.CheckpointError(
            f"{folder}: no tokenizer files ({' or '.join(checkpoints.TOKENIZER_FILES[:2])}); copy them from "
            f"the hub repository the checkpoint came from, or {checkpoints.AGAIN}"
        )
    return checkpoints.preprocessor_config(folder, QWEN2VL.model_type)


def _frames(folder: Path, arch: Architecture) -> Qwen2VLFrames:
    if arch.frames_file is None:
        return Qwen2VLFrames.from_pretrained(folder)
    path = Path(folder) / arch.frames_file
    if not path.is_file():  # only a video config: its patches and normalisation, the image bounds
        found = Qwen2VLFrames.from_pretrained(folder)
        return replace(found, min_pixels=arch.frames.min_pixels, max_pixels=arch.frames.max_pixels)
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise checkpoints.CheckpointError(f"{path}: not valid JSON ({err}); {checkpoints.AGAIN}") from None
    try:
        return Qwen2VLFrames.from_config_dict({**_config_of(arch.frames), **config}, str(path))
    except ValueError as err:
        raise checkpoints.CheckpointError(f"{checkpoints.first_line(err)}; {checkpoints.AGAIN}") from None


def _config_of(frames: Qwen2VLFrames) -> dict:
    """``frames`` as preprocessor config keys: the defaults a checkpoint's own keys override."""
    return {
        "size": {"shortest_edge": frames.min_pixels, "longest_edge": frames.max_pixels},
        "patch_size": frames.patch_size,
        "temporal_patch_size": frames.temporal_patch_size,
        "merge_size": frames.merge_size,
        "image_mean": list(frames.mean),
        "image_std": list(frames.std),
        "rescale_factor": frames.rescale_factor,
    }


def _generation(folder: Path) -> dict:
    """``generation_config.json``'s stop ids and repetition penalty; {} when there is none."""
    path = Path(folder) / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise checkpoints.CheckpointError(f"{path}: not valid JSON ({err}); {checkpoints.AGAIN}") from None
    eos = config.get("eos_token_id")
    kept = {"eos_token_id": [eos] if isinstance(eos, int) else list(eos or [])}
    if (penalty := config.get("repetition_penalty")) is not None:
        kept["repetition_penalty"] = float(penalty)
    return kept


def build_random_of(
    arch: Architecture, preset: str, *, device="cpu", dtype=torch.float32, seed: int = 0
) -> Qwen2VL:
    import transformers

    tokenizer = byte_tokenizer(SPECIAL_TOKENS)
    config = random_config(arch, preset, tokenizer)
    with seeded(seed, device):
        model = getattr(transformers, arch.model_class)(config).to(dtype).eval()
    generation = {}
    if arch.instruct_eos:
        generation["eos_token_id"] = [
            tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")
        ]
    return Qwen2VL(model, tokenizer, arch.frames, f"random:{preset}", generation)


def random_config(arch: Architecture, preset: str, tokenizer=None):
    """The transformers config of ``random:<preset>`` of ``arch`` (its special tokens are ``tokenizer``'s,
    by default the byte tokenizer random models come with)."""
    import transformers

    if preset not in arch.random_presets:
        raise ValueError(
            f"unknown preset random:{preset}; choose random:{' or random:'.join(arch.random_presets)}"
        )
    tokenizer = tokenizer or byte_tokenizer(SPECIAL_TOKENS)
    vision, llm, sections, vocab_size = arch.random_presets[preset]
    text = {**llm, "vocab_size": vocab_size or len(tokenizer)}
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": text.get("rope_parameters", {}).get("rope_theta", 10000.0),
        "mrope_section": sections,
        **dict(arch.rope_extra),
    }
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in _TOKEN_IDS.items()}
    return getattr(transformers, arch.config_class)(
        vision_config=dict(vision),
        text_config=dict(
            text,
            bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        ),
        **ids,
    )


_TOKEN_IDS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}


def save(qwen: Qwen2VL, folder: Path) -> None:
    """Weights, config, tokenizer and preprocessing config, loadable with ``load(folder)`` (or
    ``load_checkpoint(folder, arch)``); the generation settings where the checkpoint had any."""
    qwen.model.save_pretrained(folder)
    qwen.tokenizer.save_pretrained(folder)
    qwen.frames.save_pretrained(folder)
    if qwen.generation:
        (Path(folder) / "generation_config.json").write_text(json.dumps(qwen.generation, indent=2) + "\n")
