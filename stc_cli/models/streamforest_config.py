"""StreamForest's ``config.json``, read as JSON (``model_type: "llava_qwen"`` is unknown to ``AutoConfig``):
its Qwen2 fields build a ``Qwen2Config`` (``rope_scaling`` off, [SF]
``llava/model/language_model/llava_qwen.py:49-58``); its ``mm_*`` fields are checked against the one
inference path of the released model (``../shared/docs/upstream-streamforest.md`` sections 1-2); the
weight names are checked before anything loads (section 8: the "verify on download" items). Upstream
configs name no tower shape (it is so400m's minus its last layer) nor memory sizes (the
``MemoryManager`` defaults); random models record theirs as ``vision_config`` and ``memory_config``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from stc_cli.models import checkpoints
from stc_cli.models.checkpoints import AGAIN, CheckpointError
from stc_cli.models.presets import VISION_PRESETS

MODEL_TYPE = "llava_qwen"
PROJECTOR_TYPE = "tome729_fstw_pemf"  # [SF] llava/model/multimodal_projector/builder.py:41-42
VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."
PROJECTOR_PREFIX = "model.mm_projector.mlp."
PROJECTOR_KEYS = tuple(f"{PROJECTOR_PREFIX}{i}.{p}" for i in (0, 2) for p in ("weight", "bias"))
# The settings of the one inference path upstream runs (stage 4, scripts/train/stage4-online_ft/
# s4_siglip_online_dynamic_tree_memory.sh): key -> (accepted values, absent is fine)
REQUIRED = {
    "mm_projector_type": ((PROJECTOR_TYPE,), False),
    "mm_local_num_frames": ((1,), True),  # projector_FSTW_PEMF.py:279 asserts <= 1; llava_arch.py:425
    "vision_encode_type": (("image_video_memory_batch",), True),  # llava_arch.py:697-698
    "mm_patch_merge_type": (("flat",), True),  # llava_arch.py:718-720; train.py:88 default: no newlines
}
VISION_FIELDS = (
    "hidden_size intermediate_size num_hidden_layers num_attention_heads image_size patch_size "
    "layer_norm_eps hidden_act"
).split()
# so400m-patch14-384 with its last layer deleted (siglip_encoder.py:70-100, 571): what upstream configs imply
SO400M = {**VISION_PRESETS["siglip-so400m-384"], "layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh"}


@dataclass(frozen=True)
class MemorySettings:
    """``EventMemory``'s sizes: upstream's ``MemoryManager`` defaults ([SF] memory_manager.py:82-83)."""

    windows: tuple[int, int] = (1, 18)
    tokens: tuple[int, int] = (729, 128)
    split_window: int = 8
    long_tokens_per_frame: int = 64
    long_quota: int = 5120
    weights: tuple[float, float, float] = (0.4, 0.2, 0.4)

    def pruned_to(self, kept: int) -> MemorySettings:
        """The sizes after STC-Pruner keeps ``kept`` tokens per frame (spec section 9.2, item 2): the
        now frame holds ``kept``, the short window ``min(tokens[1], kept)``, a long slot at most half that
        (ToMe needs more tokens than its target at every stage)."""
        short = min(self.tokens[1], kept)
        long = min(self.long_tokens_per_frame, short // 2)
        if long < 1:
            raise ValueError(f"--tokens-per-frame must be at least 2 for StreamForest's memory, got {kept}")
        return MemorySettings(
            self.windows, (kept, short), self.split_window, long, self.long_quota, self.weights
        )


# The memory of random:tiny: windows small enough that a few seconds of video split events and merge them
TINY_MEMORY = MemorySettings(
    windows=(1, 3), tokens=(49, 16), split_window=2, long_tokens_per_frame=8, long_quota=16
)


def read_config(folder: Path) -> dict:
    """config.json as a dict, if it is StreamForest's (``llava_qwen`` with the memory projector)."""
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing, so {folder} is not a complete checkpoint folder; {AGAIN}")
    config = checkpoints.read_json(path)
    found = config.get("model_type")
    if found != MODEL_TYPE:
        other = {key: model for key, (_, model, _) in checkpoints.ARCHITECTURES.items()}.get(found)
        hint = f"; run it with --model {other}" if other else ""
        raise CheckpointError(
            f"{path}: model_type {found!r}, but --model streamforest runs LLaVA-NeXT {MODEL_TYPE!r} "
            f"checkpoints (MCG-NJU/StreamForest-Qwen2-7B){hint}"
        )
    for key, (accepted, optional) in REQUIRED.items():
        if (key not in config and not optional) or (key in config and config[key] not in accepted):
            raise CheckpointError(
                f"{path}: {key} is {config.get(key, 'missing')!r}, but --model streamforest runs checkpoints "
                f"with {key} {accepted[0]!r} (StreamForest's event-memory path): this checkpoint is another "
                "LLaVA-NeXT model"
            )
    if "llava_ov" in str(config.get("transformers_version", "")):  # llava_arch.py:706-713 would 2x2-pool
        raise CheckpointError(
            f"{path}: transformers_version {config['transformers_version']!r} makes upstream "
            "pool the frames 2x2 (llava_arch.py:706-713), a path stc does not run"
        )
    tower = str(config.get("mm_vision_tower", "siglip"))
    if "siglip" not in tower.lower():
        raise CheckpointError(
            f"{path}: mm_vision_tower {tower!r} is not a SigLIP tower; --model streamforest "
            "runs SigLIP-so400m checkpoints"
        )
    return config


def configs(config: dict, path: Path):
    """``(SiglipVisionConfig, Qwen2Config, MemorySettings)`` of a StreamForest config.json dict."""
    from transformers import SiglipVisionConfig

    try:
        vision = SiglipVisionConfig(**{**SO400M, **config.get("vision_config", {})}, vision_use_head=False)
        llm = checkpoints.qwen2_config(config)
        memory = config.get("memory_config")
        memory = (
            MemorySettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in memory.items()})
            if memory
            else MemorySettings()
        )
    except (TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{path}: does not load ({checkpoints.first_line(error)}); {AGAIN}") from None
    side = vision.image_size // vision.patch_size
    if config.get("mm_hidden_size", vision.hidden_size) != vision.hidden_size:
        raise CheckpointError(
            f"{path}: mm_hidden_size {config['mm_hidden_size']} is not the SigLIP width "
            f"{vision.hidden_size}; {AGAIN}"
        )
    if (
        memory.tokens[0] != side * side
        or vision.hidden_size % 4
        or vision.hidden_size % vision.num_attention_heads
    ):
        raise CheckpointError(
            f"{path}: the memory takes frames of {memory.tokens[0]} tokens, the tower gives {side * side} of "
            f"width {vision.hidden_size} (a multiple of 4 and of its heads is needed); {AGAIN}"
        )
    return vision, llm, memory


def weight_names(folder: Path) -> list[str]:
    """Every tensor name of the checkpoint's safetensors (one file, or the shards of its index)."""
    from safetensors import safe_open

    index = folder / checkpoints.WEIGHTS_INDEX
    if index.is_file():
        return sorted(json.loads(index.read_text())["weight_map"])
    with safe_open(folder / checkpoints.WEIGHTS, framework="pt") as file:
        return sorted(file.keys())


def check_names(names: list[str], folder: Path, vision_layers: int) -> None:
    """The checkpoint has the vision tower, all its layers, the connector and the LLM's embeddings."""
    where = folder / (
        checkpoints.WEIGHTS_INDEX if (folder / checkpoints.WEIGHTS_INDEX).is_file() else checkpoints.WEIGHTS
    )
    if not any(name.startswith(VISION_PREFIX) for name in names):
        raise CheckpointError(
            f"{where}: no {VISION_PREFIX}* weights: this checkpoint carries no vision tower (upstream "
            "would then run the stock google/siglip-so400m-patch14-384 weights, which stc does not fetch); a "
            "StreamForest checkpoint with its fine-tuned tower is needed"
        )
    wanted = [
        *PROJECTOR_KEYS,
        "model.embed_tokens.weight",
        f"{VISION_PREFIX}encoder.layers.{vision_layers - 1}.mlp.fc2.weight",
    ]
    missing = [name for name in wanted if name not in set(names)]
    if missing:
        raise CheckpointError(f"{where}: no {missing[0]} ({len(missing)} expected tensors missing); {AGAIN}")


def config_json(vision_config, llm_config, memory: MemorySettings) -> dict:
    """config.json of a model stc built, in upstream's layout (plus its tower's and memory's sizes)."""
    return {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": MODEL_TYPE,
        **checkpoints.qwen2_fields(llm_config),
        "mm_projector_type": PROJECTOR_TYPE,
        "mm_hidden_size": vision_config.hidden_size,
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "mm_local_num_frames": 1,
        "vision_encode_type": "image_video_memory_batch",
        "mm_patch_merge_type": "flat",
        "mm_use_im_patch_token": False,
        "tokenizer_model_max_length": 32768,
        "vision_config": {key: getattr(vision_config, key) for key in VISION_FIELDS},
        "memory_config": asdict(memory),
    }
