"""Dispider's configs, read as JSON, and the key layout of its composite checkpoint
(``../shared/docs/upstream-dispider.md`` sections 1 and 6).

The released "portable" layout (format v2; spec section 1, not downloaded here: the values are "verify on
download"): the reaction Qwen2-7B's ``config.json`` at the root (model_type ``long``, [D]
``dispider/model/language_model/long_qwen.py:31-32``; ``clip_projector_type`` and ``compress_projector_type``
``mlp2x_gelu``), ``perception_decision/config.json`` (the compact Qwen2-1.5B, ``mm_projector_type`` ``pool``,
``resolution``, ``pool_num``, the CLIP select layer), ``perception_decision/vision_tower/config.json`` (the
CLIP tower) and one set of safetensors holding every weight, the compact model's under
``model.compressor.compressor.``.
Sizes come from these configs, never from constants; stc's own ``frames_per_clip`` (16 upstream) lets random
models cut shorter clips.
"""

from __future__ import annotations

from pathlib import Path

from stc_cli.models import checkpoints
from stc_cli.models.checkpoints import AGAIN, CheckpointError

MODEL_TYPE = "long"  # LongConfig, [D] long_qwen.py:31-32
PERCEPTION = "perception_decision"
TOWER = f"{PERCEPTION}/vision_tower"
MANIFEST = "dispider_checkpoint_manifest.json"
COMPACT_PREFIX = "model.compressor.compressor."  # [D2] checkpoint.py EMBEDDED_PERCEPTION_DECISION_PREFIX
VISION_PREFIX = f"{COMPACT_PREFIX}model.vision_tower.vision_tower.vision_model."
POOL_PREFIX = f"{COMPACT_PREFIX}model.mm_projector.mlp."
SILENT_KEY = f"{COMPACT_PREFIX}silent_head.weight"  # [D] stream_grounding_qwen.py:49
CLIP_PROJECTOR_PREFIX = "model.clip_projector."  # [D] long_arch.py, language_model/builder.py:195-214
COMPRESS_PROJECTOR_PREFIX = "model.compress_projector."  # language_model/builder.py:175-192
SPECIAL_TOKENS = ("<has_answer>", "<to_do>", "<keep_silent>")  # [D] dispider/constants.py
VISION_FIELDS = (
    "hidden_size intermediate_size num_hidden_layers num_attention_heads image_size patch_size "
    "layer_norm_eps hidden_act projection_dim"
).split()
CLIP_L14 = dict(  # openai/clip-vit-large-patch14 vision_config: 224 px, 16 x 16 patches + CLS
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
    image_size=224, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
)  # fmt: skip


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(
            f"{path}: missing, so {path.parent} is not a complete Dispider checkpoint; {AGAIN}"
        )
    return checkpoints.read_json(path)


def _refuse(path: Path, key: str, found, wanted: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: {key} is {found!r}, but --model dispider runs checkpoints with {key} {wanted} "
        "(Dispider's released inference path)"
    )


def read_configs(folder: Path) -> dict:
    """The three configs and the manifest of a checkpoint folder, checked against the one inference path of
    the release: ``{"reaction": ..., "perception": ..., "vision": ..., "manifest": ... or None}``."""
    path = folder / "config.json"
    reaction = read_json(path)
    found = reaction.get("model_type")
    if found != MODEL_TYPE:
        other = {key: model for key, (_, model, _) in checkpoints.ARCHITECTURES.items()}.get(found)
        hint = f"; run it with --model {other}" if other and other != "dispider" else ""
        raise CheckpointError(
            f"{path}: model_type {found!r}, but --model dispider runs Dispider's {MODEL_TYPE!r} checkpoints "
            f"(Mar2Ding/Dispider){hint}"
        )
    for key in ("clip_projector_type", "compress_projector_type"):
        if reaction.get(key) != "mlp2x_gelu":  # [D2] reaction.py requires mlp2x_gelu
            raise _refuse(path, key, reaction.get(key, "missing"), "'mlp2x_gelu'")
    perception_path = folder / PERCEPTION / "config.json"
    perception = read_json(perception_path)
    if perception.get("mm_projector_type") != "pool":  # [D2] projectors.py accepts only pool
        raise _refuse(
            perception_path, "mm_projector_type", perception.get("mm_projector_type", "missing"), "'pool'"
        )
    for key in ("resolution",):
        if not isinstance(perception.get(key), int) or perception[key] < 1:
            raise _refuse(perception_path, key, perception.get(key, "missing"), "a positive integer")
    vision = read_json(folder / TOWER / "config.json")
    vision = vision.get("vision_config", vision)  # a whole CLIPConfig names its tower's fields there
    manifest = read_json(folder / MANIFEST) if (folder / MANIFEST).is_file() else None
    return {"reaction": reaction, "perception": perception, "vision": vision, "manifest": manifest}


def select_layer(perception: dict) -> int:
    """The CLIP hidden state the perception reads ([D] clip_encoder.py: ``mm_vision_select_layer``, -2 in
    LLaVA; [D2] names it ``perception_select_layer``)."""
    return int(perception.get("perception_select_layer", perception.get("mm_vision_select_layer", -2)))


def build_configs(found: dict, folder: Path):
    """``(CLIPVisionConfig, compact Qwen2Config, reaction Qwen2Config)`` of ``read_configs``'s dicts, with the
    widths that tie them together checked."""
    from transformers import CLIPVisionConfig

    try:
        vision = CLIPVisionConfig(
            **{**CLIP_L14, **{k: found["vision"][k] for k in VISION_FIELDS if k in found["vision"]}}
        )
        compact, reaction = (checkpoints.qwen2_config(found[part]) for part in ("perception", "reaction"))
    except (TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{folder}: does not load ({checkpoints.first_line(error)}); {AGAIN}") from None
    perception, side = found["perception"], vision.image_size // vision.patch_size
    resolution, pool_num = perception["resolution"], int(perception.get("pool_num", 1))  # builder.py:639
    checks = (
        ("mm_hidden_size", perception.get("mm_hidden_size", vision.hidden_size), vision.hidden_size,
         PERCEPTION),
        ("resolution", resolution, (side // 2) ** 2, PERCEPTION),
        ("compress_hidden_size", found["reaction"].get("compress_hidden_size", compact.hidden_size),
         compact.hidden_size, "."),
    )  # fmt: skip
    for key, value, wanted, where in checks:
        if value != wanted:
            raise CheckpointError(
                f"{folder / where / 'config.json'}: {key} is {value}, but the parts it joins need {wanted}; "
                f"{AGAIN}"
            )
    grid = round(pool_num**0.5)
    if side % 2 or grid * grid != pool_num or (side // 2) % grid:
        raise _refuse(folder / PERCEPTION / "config.json", "pool_num", pool_num, "a square dividing the grid")
    if not -vision.num_hidden_layers - 1 <= select_layer(perception) <= vision.num_hidden_layers:
        raise _refuse(folder / PERCEPTION / "config.json", "mm_vision_select_layer", select_layer(perception),
                      f"within the tower's {vision.num_hidden_layers} layers")  # fmt: skip
    return vision, compact, reaction


def part_names(names: list[str]) -> dict[str, dict[str, str]]:
    """The checkpoint's tensor names by the part that owns them, each mapped to the part's own key:
    ``vision`` (stock CLIPVisionModel keys), ``pool`` (the projector's MLP), ``compact`` (Qwen2Model),
    ``silent``, ``clip_projector``, ``compress_projector`` and ``reaction`` (Qwen2ForCausalLM)."""
    owners = ("vision", "pool", "compact", "silent", "clip_projector", "compress_projector", "reaction")
    parts: dict[str, dict[str, str]] = {owner: {} for owner in owners}
    for name in names:
        if name.startswith(VISION_PREFIX):
            parts["vision"][name.removeprefix(VISION_PREFIX)] = name
        elif name.startswith(POOL_PREFIX):
            parts["pool"][f"mlp.{name.removeprefix(POOL_PREFIX)}"] = name
        elif name == SILENT_KEY:
            parts["silent"]["weight"] = name
        elif name.startswith(f"{COMPACT_PREFIX}model."):
            parts["compact"][name.removeprefix(f"{COMPACT_PREFIX}model.")] = name
        elif name.startswith(CLIP_PROJECTOR_PREFIX):
            parts["clip_projector"][name.removeprefix(CLIP_PROJECTOR_PREFIX)] = name
        elif name.startswith(COMPRESS_PROJECTOR_PREFIX):
            parts["compress_projector"][name.removeprefix(COMPRESS_PROJECTOR_PREFIX)] = name
        elif not name.startswith(COMPACT_PREFIX):  # the compact model's own lm_head is never read
            parts["reaction"][name] = name
    return parts


def config_dicts(vision, compact, reaction, resolution: int, pool_num: int, frames_per_clip: int, layer: int):
    """The configs of a model stc built, in the release's layout: ``(root, perception, vision)`` dicts."""

    root = {
        "architectures": ["LongQwen2ForCausalLM"],
        "model_type": MODEL_TYPE,
        **checkpoints.qwen2_fields(reaction),
        "clip_projector_type": "mlp2x_gelu",
        "compress_projector_type": "mlp2x_gelu",
        "compress_hidden_size": compact.hidden_size,
    }
    perception = {
        "architectures": ["StreamGroundQwenForCausalLM"],
        **checkpoints.qwen2_fields(compact),
        "mm_projector_type": "pool",
        "mm_hidden_size": vision.hidden_size,
        "mm_vision_select_layer": layer,
        "resolution": resolution,
        "pool_num": pool_num,
        "frames_per_clip": frames_per_clip,
    }
    tower = {"model_type": "clip_vision_model", **{k: getattr(vision, k) for k in VISION_FIELDS}}
    return root, perception, tower
