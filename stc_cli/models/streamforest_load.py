"""StreamForest's checkpoint from stock transformers classes: a hub id or local folder in the LLaVA-NeXT
layout upstream publishes, or the same architecture with random weights (``random:tiny`` for tests,
``random:full`` for latency work), which ``save`` writes in that layout so that ``load`` reads it back.

Weights (``../shared/docs/upstream-streamforest.md`` section 8): ``model.{embed_tokens,layers,norm}.*`` and
``lm_head.*`` are Qwen2's own keys; the SigLIP tower sits under
``model.vision_tower.vision_tower.vision_model.`` (transformers 5.x's ``SiglipVisionModel`` has no
``vision_model``: the prefix is stripped; ``head.*`` and a 27th layer are left out, as upstream deletes
them, [SF] ``llava/model/multimodal_encoder/siglip_encoder.py:571-572``); the MLP connector is
``model.mm_projector.mlp.{0,2}.*`` ([SF] ``llava/model/multimodal_projector/projector_FSTW_PEMF.py:180-182``).
The config and the checks: ``streamforest_config.py``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from stc_cli.datasets.hub import checkpoint_folder
from stc_cli.models import checkpoints
from stc_cli.models.checkpoints import AGAIN, CheckpointError
from stc_cli.models.frames import FrameTransform
from stc_cli.models.presets import LLM_PRESETS, VISION_PRESETS, seeded
from stc_cli.models.streamforest_config import (
    PROJECTOR_KEYS,
    PROJECTOR_PREFIX,
    SO400M,
    TINY_MEMORY,
    VISION_PREFIX,
    MemorySettings,
    check_names,
    config_json,
    configs,
    read_config,
    weight_names,
)
from stc_cli.models.tokenizer import byte_tokenizer

DEFAULT_CHECKPOINT = "MCG-NJU/StreamForest-Qwen2-7B"
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)  # [SF] siglip_encoder.py:34 SigLipImageProcessor
# random:<name> -> (vision preset + overrides, LLM preset, vocabulary size, memory)
RANDOM_PRESETS = {
    "tiny": (("tiny", {"image_size": 56}), "tiny", None, TINY_MEMORY),  # 7 x 7 = 49 patches
    "full": (("siglip-so400m-384", {}), "qwen2-7b", 152064, MemorySettings()),  # the released shapes
}


@dataclass
class StreamForestNet:
    """The parts of a StreamForest checkpoint: the SigLIP tower (``SiglipVisionModel``), the MLP
    connector (``nn.Sequential``: Linear, GELU, Linear) and the LLM (``Qwen2ForCausalLM``)."""

    vision: nn.Module
    projector: nn.Module
    llm: nn.Module
    tokenizer: object
    transform: FrameTransform
    memory: MemorySettings
    source: str
    config: dict = field(default_factory=dict)  # config.json as read (random: as save writes it)

    @property
    def patches(self) -> int:
        side = self.vision.config.image_size // self.vision.config.patch_size
        return side * side

    @property
    def vocab(self) -> int:
        """Rows of the LM head upstream can produce: it resizes the embeddings to the tokenizer's length
        after adding ``<im_patch>`` where ``mm_use_im_patch_token`` (default on; [SF] builder.py:354-360)."""
        added = (
            self.config.get("mm_use_im_patch_token", True) and "<im_patch>" not in self.tokenizer.get_vocab()
        )
        return min(len(self.tokenizer) + int(added), self.llm.config.vocab_size)

    @property
    def max_length(self) -> int | None:
        """Input embeddings beyond this many are cut ([SF] llava_arch.py:965-970)."""
        return self.config.get("tokenizer_model_max_length")


def load(source: str, *, device="cpu", dtype=torch.float32, revision: str | None = None) -> StreamForestNet:
    """``random:<preset>``, a local checkpoint folder, or a hub id (downloaded into the hub cache)."""
    if source.startswith("random:"):
        return build_random(source.removeprefix("random:"), device=device, dtype=dtype)
    from transformers import Qwen2ForCausalLM, SiglipVisionModel

    folder = checkpoint_folder(source, revision)
    config = read_config(folder)  # what needs no weights first: a wrong checkpoint fails in seconds
    vision_config, llm_config, memory = configs(config, folder / "config.json")
    checkpoints.check_weights(folder)
    names = weight_names(folder)
    check_names(names, folder, vision_config.num_hidden_layers)
    tokenizer = checkpoints.load_tokenizer(folder)
    vision = _from_pretrained(SiglipVisionModel, folder, vision_config, dtype, {f"^{VISION_PREFIX}": ""})
    llm = _from_pretrained(Qwen2ForCausalLM, folder, llm_config, dtype, None)
    projector = _projector(vision_config.hidden_size, llm_config.hidden_size)
    projector.load_state_dict(
        {
            key.removeprefix(PROJECTOR_PREFIX): value
            for key, value in read_tensors(folder, PROJECTOR_KEYS).items()
        }
    )
    net = StreamForestNet(
        vision, projector.to(dtype), llm, tokenizer, _transform(vision_config), memory, source, config
    )
    return _to(net, device)


def read_tensors(folder: Path, names) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    index = folder / checkpoints.WEIGHTS_INDEX
    files = (
        json.loads(index.read_text())["weight_map"]
        if index.is_file()
        else dict.fromkeys(names, checkpoints.WEIGHTS)
    )
    out = {}
    for name in names:
        with safe_open(folder / files[name], framework="pt") as file:
            out[name] = file.get_tensor(name)
    return out


def _from_pretrained(model_class, folder: Path, config, dtype, key_mapping):
    """``model_class.from_pretrained`` on the part of the checkpoint it owns: the other parts' tensors are
    expected leftovers, so transformers' report of them is not shown; missing or misshapen ones fail."""
    logger = logging.getLogger("transformers.modeling_utils")
    quiet = _Quiet()
    logger.addFilter(quiet)
    try:
        model, info = model_class.from_pretrained(
            folder,
            config=config,
            dtype=dtype,
            key_mapping=key_mapping,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
        )
    except (OSError, RuntimeError) as error:
        raise CheckpointError(f"{folder}: does not load ({checkpoints.first_line(error)}); {AGAIN}") from None
    finally:
        logger.removeFilter(quiet)
    missing = sorted(k for k in info.get("missing_keys") or () if not k.startswith("post_layernorm."))
    mismatched = list(info.get("mismatched_keys") or ())
    if missing or mismatched:
        what = f"{missing[0]} missing" if missing else f"{mismatched[0][0]} of shape {list(mismatched[0][1])}"
        raise CheckpointError(f"{folder}: does not fit config.json ({what}); {AGAIN}")
    return model.eval()


class _Quiet(logging.Filter):
    """Drops transformers' messages that say what is expected here: the load report (its unexpected keys
    are the other parts' tensors), and the remark on the ``llava_qwen`` config it cannot read."""

    PHRASES = ("LOAD REPORT", "to instantiate a model of type")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(phrase in str(record.msg) for phrase in self.PHRASES)


def _projector(width: int, hidden: int) -> nn.Sequential:
    """The connector after the memory: Linear, GELU (exact), Linear ([SF] projector_FSTW_PEMF.py:180-182)."""
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden))


def _transform(vision_config) -> FrameTransform:
    """Squash to the tower's square input, bicubic, x / 255, mean = std = 0.5 (siglip_encoder.py:34-67)."""
    side = vision_config.image_size
    return FrameTransform(size=(side, side), mean=SIGLIP_MEAN, std=SIGLIP_STD)


def _to(net: StreamForestNet, device) -> StreamForestNet:
    for part in (net.vision, net.projector, net.llm):
        part.to(device).eval()
    return net


def build_random(preset: str, *, device="cpu", dtype=torch.float32, seed: int = 0) -> StreamForestNet:
    """StreamForest's architecture at ``preset`` widths with seeded random weights."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    if preset not in RANDOM_PRESETS:
        raise ValueError(
            f"unknown preset random:{preset}; choose random:{' or random:'.join(RANDOM_PRESETS)}"
        )
    (vision_name, overrides), llm_name, vocab_size, memory = RANDOM_PRESETS[preset]
    tokenizer = byte_tokenizer()
    vision_config = SiglipVisionConfig(
        **{**SO400M, **VISION_PRESETS[vision_name], **overrides}, vision_use_head=False
    )
    llm_config = Qwen2Config(
        vocab_size=vocab_size or len(tokenizer),
        tie_word_embeddings=False,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        **LLM_PRESETS[llm_name],
    )
    with seeded(seed, device):
        vision = SiglipVisionModel(vision_config)
        projector = _projector(vision_config.hidden_size, llm_config.hidden_size)
        llm = Qwen2ForCausalLM(llm_config)
    config = config_json(vision_config, llm_config, memory)
    net = StreamForestNet(
        vision.to(dtype),
        projector.to(dtype),
        llm.to(dtype),
        tokenizer,
        _transform(vision_config),
        memory,
        f"random:{preset}",
        config,
    )
    return _to(net, device)


def save(net: StreamForestNet, folder: Path) -> None:
    """Write config.json, model.safetensors (LLaVA-NeXT keys) and the tokenizer, loadable with ``load``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"{VISION_PREFIX}{key}": value for key, value in net.vision.state_dict().items()}
    tensors |= {f"{PROJECTOR_PREFIX}{key}": value for key, value in net.projector.state_dict().items()}
    tensors |= net.llm.state_dict()
    save_file(
        {key: value.detach().contiguous().cpu() for key, value in tensors.items()},
        str(folder / checkpoints.WEIGHTS),
        metadata={"format": "pt"},
    )
    (folder / "config.json").write_text(json.dumps(net.config, indent=2) + "\n")
    net.tokenizer.save_pretrained(folder)
