"""Dispider's checkpoint from stock transformers classes: a hub id or local folder in the composite layout of
the release (``dispider_config.py``), or the same architecture with random weights (``random:tiny`` for tests,
``random:full`` for latency work), which ``save`` writes in that layout so that ``load`` reads it back.

Parts: the perception CLIP tower (``CLIPVisionModel``), the pool projector (``dispider_glue.PoolProjector``),
the compact Qwen2 (``Qwen2Model``) with its silent head (``Linear(d, 1, bias=False)``), the reaction Qwen2
(``Qwen2ForCausalLM``) with its ``clip_projector`` (4C -> D) and ``compress_projector`` (d -> D). The
composite state dict is split by prefix (``dispider_config.part_names``); every parameter must be there at
its shape, else one ``CheckpointError`` names the tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from stc_cli.datasets.hub import checkpoint_folder
from stc_cli.models import checkpoints, dispider_config
from stc_cli.models.checkpoints import AGAIN, CheckpointError
from stc_cli.models.dispider_glue import FRAMES_PER_CLIP, PoolProjector, mlp2x_gelu
from stc_cli.models.frames import FrameTransform
from stc_cli.models.presets import LLM_PRESETS, seeded
from stc_cli.models.streamforest_config import weight_names
from stc_cli.models.streamforest_load import read_tensors
from stc_cli.models.tokenizer import byte_tokenizer

DEFAULT_CHECKPOINT = "Mar2Ding/Dispider"
TINY_VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
    image_size=56, patch_size=14, projection_dim=32,
)  # fmt: skip  # 4 x 4 patches + CLS -> 4 mixed tokens of 128 channels per frame
QWEN2_1_5B = dict(
    hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
    num_key_value_heads=2,
    rope_parameters={"rope_type": "default", "rope_theta": 1e6},
)  # fmt: skip
# random:<name> -> (vision, compact LLM, reaction LLM, vocabulary sizes, pool_num, frames per clip)
RANDOM_PRESETS = {
    "tiny": (TINY_VISION, LLM_PRESETS["tiny"], LLM_PRESETS["tiny"], (None, None), 1, 4),
    "full": (
        dispider_config.CLIP_L14,
        QWEN2_1_5B,
        LLM_PRESETS["qwen2-7b"],
        (151936, 152064),
        1,
        FRAMES_PER_CLIP,
    ),
}
SELECT_LAYER = -2  # LLaVA's default mm_vision_select_layer (verify on download)


@dataclass
class DispiderNet:
    """The networks of a Dispider checkpoint, its two tokenizers and its sizes."""

    vision: nn.Module  # CLIPVisionModel
    pool: PoolProjector
    compact: nn.Module  # Qwen2Model
    silent: nn.Linear
    clip_projector: nn.Sequential
    compress_projector: nn.Sequential
    reaction: nn.Module  # Qwen2ForCausalLM
    compact_tokenizer: object
    tokenizer: object
    transform: FrameTransform
    select_layer: int
    frames_per_clip: int
    source: str
    manifest: dict | None = None
    configs: tuple = field(default_factory=tuple)  # (root, perception, vision) dicts as save writes them

    @property
    def resolution(self) -> int:
        return self.pool.resolution

    def parts(self) -> dict[str, nn.Module]:
        return {
            "vision": self.vision, "pool": self.pool, "compact": self.compact, "silent": self.silent,
            "clip_projector": self.clip_projector, "compress_projector": self.compress_projector,
            "reaction": self.reaction,
        }  # fmt: skip


def _modules(vision_config, compact_config, reaction_config, resolution: int, pool_num: int):
    from transformers import CLIPVisionModel, Qwen2ForCausalLM, Qwen2Model

    mixed = 4 * vision_config.hidden_size
    return dict(
        vision=CLIPVisionModel(vision_config),
        pool=PoolProjector(mixed, compact_config.hidden_size, resolution, pool_num),
        compact=Qwen2Model(compact_config),
        silent=nn.Linear(compact_config.hidden_size, 1, bias=False),
        clip_projector=mlp2x_gelu(mixed, reaction_config.hidden_size),
        compress_projector=nn.Sequential(
            nn.Linear(compact_config.hidden_size, reaction_config.hidden_size),
            nn.GELU(),
            nn.Linear(reaction_config.hidden_size, reaction_config.hidden_size),
        ),
        reaction=Qwen2ForCausalLM(reaction_config),
    )


def _transform(folder: Path | None, vision_config) -> FrameTransform:
    """CLIP preprocessing after the squash: bicubic to the tower's side, OpenAI CLIP mean and std (the tower's
    preprocessor_config.json where the checkpoint has one)."""
    side = vision_config.image_size
    if folder is not None and (folder / dispider_config.TOWER / "preprocessor_config.json").is_file():
        found = FrameTransform.from_pretrained(folder / dispider_config.TOWER)
        return FrameTransform(size=(side, side), mean=found.mean, std=found.std)
    return FrameTransform(size=(side, side))


def load(source: str, *, device="cpu", dtype=torch.float32, revision: str | None = None) -> DispiderNet:
    """``random:<preset>``, a local checkpoint folder, or a hub id (downloaded into the hub cache)."""
    if source.startswith("random:"):
        return build_random(source.removeprefix("random:"), device=device, dtype=dtype)
    folder = checkpoint_folder(source, revision)
    found = dispider_config.read_configs(folder)  # what needs no weights first: a wrong checkpoint fails fast
    vision_config, compact_config, reaction_config = dispider_config.build_configs(found, folder)
    checkpoints.check_weights(folder)
    names = dispider_config.part_names(weight_names(folder))
    perception = found["perception"]
    with torch.device(device):
        modules = _modules(
            vision_config,
            compact_config,
            reaction_config,
            perception["resolution"],
            int(perception.get("pool_num", 1)),
        )
    for part, module in modules.items():
        _load_part(folder, part, module, names[part])
    tokenizer = checkpoints.load_tokenizer(folder)
    compact_tokenizer = checkpoints.load_tokenizer(folder / dispider_config.PERCEPTION)
    for token in dispider_config.SPECIAL_TOKENS[:2]:  # the decision sequence's markers, one token each
        if token not in compact_tokenizer.get_vocab():
            raise CheckpointError(
                f"{folder / dispider_config.PERCEPTION}: the compact tokenizer has no {token} token, which "
                f"Dispider's decision sequence needs ([D] dispider/constants.py); {AGAIN}"
            )
    net = DispiderNet(
        **modules,
        compact_tokenizer=compact_tokenizer,
        tokenizer=tokenizer,
        transform=_transform(folder, vision_config),
        select_layer=dispider_config.select_layer(perception),
        frames_per_clip=int(perception.get("frames_per_clip", FRAMES_PER_CLIP)),
        source=source,
        manifest=found["manifest"],
        configs=(found["reaction"], perception, found["vision"]),
    )
    return _to(net, device, dtype)


def _load_part(folder: Path, part: str, module: nn.Module, names: dict[str, str]) -> None:
    """Copy the part's tensors into ``module``; CheckpointError naming the first missing or misshapen one."""
    wanted = module.state_dict()
    tied = part == "reaction" and module.config.tie_word_embeddings
    optional = {"post_layernorm.weight", "post_layernorm.bias"}  # after the selected layer: never read
    optional |= {"lm_head.weight"} if tied else set()
    missing = [key for key in wanted if key not in names and key not in optional]
    if missing:
        example = next((n for n in names.values()), "")
        raise CheckpointError(
            f"{folder}: the {part} part has no {_checkpoint_name(part, missing[0])} "
            f"({len(missing)} tensors missing{', e.g. beside ' + example if example else ''}); {AGAIN}"
        )
    tensors = read_tensors(folder, [names[key] for key in wanted if key in names])
    state = {key: tensors[names[key]] for key in wanted if key in names}
    for key, value in state.items():
        if value.shape != wanted[key].shape:
            raise CheckpointError(
                f"{folder}: {names[key]} has shape {list(value.shape)}, the configs need "
                f"{list(wanted[key].shape)}; {AGAIN}"
            )
    module.load_state_dict(state, strict=False)


def _checkpoint_name(part: str, key: str) -> str:
    """The name ``key`` of ``part`` has in the composite checkpoint."""
    return {
        "vision": f"{dispider_config.VISION_PREFIX}{key}",
        "pool": f"{dispider_config.POOL_PREFIX}{key.removeprefix('mlp.')}",
        "compact": f"{dispider_config.COMPACT_PREFIX}model.{key}",
        "silent": dispider_config.SILENT_KEY,
        "clip_projector": f"{dispider_config.CLIP_PROJECTOR_PREFIX}{key}",
        "compress_projector": f"{dispider_config.COMPRESS_PROJECTOR_PREFIX}{key}",
    }.get(part, key)


def _to(net: DispiderNet, device, dtype) -> DispiderNet:
    for module in net.parts().values():
        module.to(device=device, dtype=dtype).eval()
    return net


def build_random(preset: str, *, device="cpu", dtype=torch.float32, seed: int = 0) -> DispiderNet:
    """Dispider's architecture at ``preset`` widths with seeded random weights."""
    from transformers import CLIPVisionConfig, Qwen2Config

    if preset not in RANDOM_PRESETS:
        raise ValueError(
            f"unknown preset random:{preset}; choose random:{' or random:'.join(RANDOM_PRESETS)}"
        )
    vision_spec, compact_spec, reaction_spec, (compact_vocab, vocab), pool_num, per_clip = RANDOM_PRESETS[
        preset
    ]
    tokenizer = byte_tokenizer(dispider_config.SPECIAL_TOKENS)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    vision_config = CLIPVisionConfig(**{**dispider_config.CLIP_L14, **vision_spec})
    compact_config = Qwen2Config(vocab_size=compact_vocab or len(tokenizer), eos_token_id=eos, **compact_spec)
    reaction_config = Qwen2Config(
        vocab_size=vocab or len(tokenizer), tie_word_embeddings=False, eos_token_id=eos, **reaction_spec
    )
    resolution = (vision_config.image_size // vision_config.patch_size // 2) ** 2
    with seeded(seed, device):
        modules = _modules(vision_config, compact_config, reaction_config, resolution, pool_num)
    configs = dispider_config.config_dicts(
        vision_config, compact_config, reaction_config, resolution, pool_num, per_clip, SELECT_LAYER
    )
    net = DispiderNet(
        **modules,
        compact_tokenizer=tokenizer,
        tokenizer=tokenizer,
        transform=_transform(None, vision_config),
        select_layer=SELECT_LAYER,
        frames_per_clip=per_clip,
        source=f"random:{preset}",
        configs=configs,
    )
    return _to(net, device, dtype)


def save(net: DispiderNet, folder: Path) -> None:
    """Write the composite layout (configs, one model.safetensors, both tokenizers), loadable with
    ``load``."""
    import json

    from safetensors.torch import save_file

    folder = Path(folder)
    (folder / dispider_config.TOWER).mkdir(parents=True, exist_ok=True)
    prefixes = {
        "vision": dispider_config.VISION_PREFIX,
        "pool": dispider_config.POOL_PREFIX.removesuffix("mlp."),
        "compact": f"{dispider_config.COMPACT_PREFIX}model.",
        "silent": f"{dispider_config.COMPACT_PREFIX}silent_head.",
        "clip_projector": dispider_config.CLIP_PROJECTOR_PREFIX,
        "compress_projector": dispider_config.COMPRESS_PROJECTOR_PREFIX,
        "reaction": "",
    }
    tensors = {
        f"{prefixes[part]}{key}": value.detach().contiguous().cpu()
        for part, module in net.parts().items()
        for key, value in module.state_dict().items()
    }
    save_file(tensors, str(folder / checkpoints.WEIGHTS), metadata={"format": "pt"})
    root, perception, vision = net.configs
    for path, config in (
        (folder / "config.json", root),
        (folder / dispider_config.PERCEPTION / "config.json", perception),
        (folder / dispider_config.TOWER / "config.json", vision),
        (folder / dispider_config.MANIFEST, {"format_version": 2, "written_by": "stc"}),
    ):
        path.write_text(json.dumps(config, indent=2) + "\n")
    net.tokenizer.save_pretrained(folder)
    net.compact_tokenizer.save_pretrained(folder / dispider_config.PERCEPTION)
    if folder.joinpath(dispider_config.TOWER, "preprocessor_config.json").exists() is False:
        net.transform.save_pretrained(folder / dispider_config.TOWER)
