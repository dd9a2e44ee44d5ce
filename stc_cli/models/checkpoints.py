"""Checks of a checkpoint folder, and its loading calls, that turn a broken or mismatched checkpoint into one
``CheckpointError`` line naming the file at fault and what to do, instead of a traceback (or random weights,
or an error in every sample) after minutes of loading.

``check_folder`` runs before anything loads: config.json (its ``model_type`` must be the architecture
asked for), the weight files (complete, as their safetensors headers describe them), tokenizer files and
the preprocessor config. ``load_config``, ``load_tokenizer`` and ``load_weights`` wrap the transformers
calls; ``load_weights`` also refuses weights that leave parameters missing or of another shape, which
transformers would fill with random values after a warning.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

from stc_cli.models.frames import CONFIG_FILES

# config.json's model_type -> (architecture, the --model that runs it, its transformers class)
ARCHITECTURES = {
    "llava_onevision": ("LLaVA-OneVision", "rekv", "LlavaOnevisionForConditionalGeneration"),
    "qwen2_vl": ("Qwen2-VL", "livecc", "Qwen2VLForConditionalGeneration"),
    "llava_qwen": ("StreamForest", "streamforest", "LlavaQwenForCausalLM"),
    "qwen2_5_vl": ("Qwen2.5-VL", "qwen25vl", "Qwen2_5_VLForConditionalGeneration"),
    "qwen3_vl": ("Qwen3-VL", "qwen3vl", "Qwen3VLForConditionalGeneration"),
    "long": ("Dispider", "dispider", "LongQwen2ForCausalLM"),  # [D] long_qwen.py:31-32 (LongConfig)
}
# how the processor types of each architecture's preprocessor configs begin (LlavaOnevisionImageProcessor...)
PROCESSORS = {"llava_onevision": "LlavaOnevision", "qwen2_vl": "Qwen2VL"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
WEIGHTS, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"
OTHER_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")  # transformers loads these too
HEADER_LIMIT = 100_000_000  # safetensors' own bound on a header's length
AGAIN = "download the checkpoint again"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded as the model asked for. The message is one line: the file
    at fault, what is wrong with it, what to do."""


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def check_folder(folder: Path, model_type: str) -> Path:
    """Everything about checkpoint ``folder`` that needs no weights loaded, for an architecture of
    ``model_type`` (a key of ``ARCHITECTURES``); returns the path of its preprocessor config."""
    folder = Path(folder)
    check_architecture(folder, model_type)
    check_weights(folder)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(
            f"{folder}: no tokenizer files ({' or '.join(TOKENIZER_FILES[:2])}); copy them from the hub "
            f"repository the checkpoint came from, or {AGAIN}"
        )
    return preprocessor_config(folder, model_type)


def check_architecture(folder: Path, model_type: str) -> dict:
    """config.json of ``folder`` as a dict; CheckpointError unless it is there, JSON, and for ``model_type``
    (saying which ``--model`` runs the checkpoint it is, when that is another one)."""
    path = folder / "config.json"
    name, model, _ = ARCHITECTURES[model_type]
    if not path.is_file():
        raise CheckpointError(
            f"{path}: missing, so {folder} is not a complete checkpoint folder (config.json, weights, "
            f"tokenizer files, preprocessor_config.json); {AGAIN} or pass its hub id"
        )
    config = read_json(path)
    found = config.get("model_type")
    classes = config.get("architectures") if isinstance(config.get("architectures"), list) else []
    if found is None:  # an old or hand-written config: the class names say the same
        found = next((key for key, (*_, cls) in ARCHITECTURES.items() if cls in classes), None)
    if found == model_type:
        return config
    declared = config.get("model_type")
    what = f"model_type {declared!r}" if declared is not None else "no model_type"
    what += f", {', '.join(map(str, classes))}" if classes else ""
    if found in ARCHITECTURES:
        other, other_model, _ = ARCHITECTURES[found]
        raise CheckpointError(
            f"{path}: a {other} checkpoint ({what}), but --model {model} runs {name} ({model_type!r}) "
            f"checkpoints; run this one with --model {other_model}"
        )
    known = ", ".join(f"{key!r} (--model {m})" for key, (_, m, _) in ARCHITECTURES.items())
    raise CheckpointError(
        f"{path}: {what}, but --model {model} runs {name} ({model_type!r}) checkpoints; "
        f"stc eval runs model_type {known}"
    )


def check_weights(folder: Path) -> None:
    """The safetensors weights of ``folder`` are there and complete (as transformers looks for them:
    model.safetensors, else the shards model.safetensors.index.json names)."""
    if (folder / WEIGHTS).is_file():
        check_safetensors(folder / WEIGHTS)
        return
    index = folder / WEIGHTS_INDEX
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: no weight_map of tensors to files; {AGAIN}")
        shards = sorted({str(shard) for shard in weight_map.values()})
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            raise CheckpointError(
                f"{folder / missing[0]}: missing ({len(missing)} of the {len(shards)} weight files that "
                f"{WEIGHTS_INDEX} names); {AGAIN}"
            )
        for shard in shards:
            check_safetensors(folder / shard)
        return
    if not any((folder / name).is_file() for name in OTHER_WEIGHTS):
        raise CheckpointError(
            f"{folder / WEIGHTS}: missing (nor {WEIGHTS_INDEX} with its shards): the folder has no weights; "
            f"{AGAIN}"
        )


def check_safetensors(path: Path) -> None:
    """CheckpointError unless ``path`` is a whole safetensors file: a JSON header whose tensors end exactly
    where the file does (a cut download ends early)."""
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated or not a safetensors file ({size:,} bytes); {AGAIN}")
        (length,) = struct.unpack("<Q", head)
        if length > HEADER_LIMIT:
            raise CheckpointError(f"{path}: not a safetensors file (no header length at its start); {AGAIN}")
        if 8 + length > size:
            raise CheckpointError(
                f"{path}: truncated ({size:,} bytes, fewer than its {length:,}-byte header needs); {AGAIN}"
            )
        try:
            header = json.loads(file.read(length))
            end = max(
                (int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"),
                default=0,
            )
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError,
                ValueError) as error:  # fmt: skip
            raise CheckpointError(
                f"{path}: corrupt safetensors header ({first_line(error)}); {AGAIN}"
            ) from None
    expected = 8 + length + end
    if size < expected:
        raise CheckpointError(f"{path}: truncated ({size:,} of {expected:,} bytes); {AGAIN}")
    if size > expected:
        raise CheckpointError(
            f"{path}: corrupt ({size:,} bytes where its header describes {expected:,}); {AGAIN}"
        )


def preprocessor_config(folder: Path, model_type: str) -> Path:
    """The preprocessor config of ``folder`` that the frame transforms read (the first of CONFIG_FILES);
    CheckpointError when there is none, or when its processor type is another architecture's."""
    for name in CONFIG_FILES:
        path = folder / name
        if path.is_file():
            config = read_json(path)
            kind = str(config.get("video_processor_type") or config.get("image_processor_type") or "")
            other = next((key for key, prefix in PROCESSORS.items() if kind.startswith(prefix)), model_type)
            if other != model_type:
                raise CheckpointError(
                    f"{path}: {kind} is {ARCHITECTURES[other][0]}'s, but config.json is for "
                    f"{ARCHITECTURES[model_type][0]}; the two files come from different checkpoints: {AGAIN}"
                )
            return path
    raise CheckpointError(
        f"{folder / CONFIG_FILES[1]}: missing (nor {CONFIG_FILES[0]}); it gives the frame size and "
        "normalisation the vision tower expects: copy it from the hub repository the checkpoint came from, "
        f"or {AGAIN}"
    )


def load_config(config_class, folder: Path):
    """``config_class.from_pretrained(folder)``; CheckpointError naming config.json when it does not parse."""
    try:
        from huggingface_hub.errors import StrictDataclassError  # transformers 5 validates config fields
    except ImportError:  # an older huggingface_hub: transformers does not raise it either
        StrictDataclassError = ValueError  # noqa: N806
    try:
        return config_class.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, StrictDataclassError) as error:
        raise CheckpointError(
            f"{folder / 'config.json'}: does not load ({first_line(error)}); {AGAIN}"
        ) from None


def load_tokenizer(folder: Path):
    """``AutoTokenizer.from_pretrained(folder)``; CheckpointError naming the folder when it does not load.
    Its remark on a config.json of a model type transformers does not know (StreamForest's ``llava_qwen``,
    Dispider's ``long``) is dropped: the tokenizer files are all it reads here."""
    from transformers import AutoTokenizer

    logger = logging.getLogger("transformers.configuration_utils")
    unknown_type = _Dropping("to instantiate a model of type")
    logger.addFilter(unknown_type)
    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise CheckpointError(
            f"{folder}: the tokenizer does not load ({first_line(error)}); copy the tokenizer files from the "
            f"hub repository the checkpoint came from, or {AGAIN}"
        ) from None
    finally:
        logger.removeFilter(unknown_type)


class _Dropping(logging.Filter):
    """Drops the log records whose message holds ``phrase``."""

    def __init__(self, phrase: str) -> None:
        super().__init__()
        self.phrase = phrase

    def filter(self, record: logging.LogRecord) -> bool:
        return self.phrase not in str(record.msg)


class _HeldBack(logging.Filter):
    """Keeps transformers' load report (a long table) off the terminal until the load is judged."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in str(record.msg):
            self.records.append(record)
            return False
        return True


def load_weights(model_class, folder: Path, config, dtype):
    """``model_class.from_pretrained(folder, config=config, dtype=dtype)``; CheckpointError when the weight
    files do not read or do not fit ``config`` (parameters missing or of another shape)."""
    from safetensors import SafetensorError

    weights = next((folder / n for n in (WEIGHTS, WEIGHTS_INDEX) if (folder / n).is_file()), folder)
    logger = logging.getLogger("transformers.modeling_utils")
    held = _HeldBack()
    logger.addFilter(held)
    try:
        model, info = model_class.from_pretrained(
            folder, config=config, dtype=dtype, output_loading_info=True, ignore_mismatched_sizes=True
        )
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights}: does not load ({first_line(error)}); {AGAIN}") from None
    except RuntimeError as error:  # transformers' own verdicts on the state dict; out of memory passes
        if not str(error).startswith(("Error(s) in loading state_dict", "We encountered some issues")):
            raise
        raise CheckpointError(f"{weights}: does not load ({first_line(error)}); {AGAIN}") from None
    finally:
        logger.removeFilter(held)
    missing, mismatched = list(info.get("missing_keys") or ()), list(info.get("mismatched_keys") or ())
    if missing or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} parameters missing (e.g. {sorted(missing)[0]})")
        if mismatched:
            key, found, wanted = mismatched[0]
            problems.append(
                f"{len(mismatched)} of another shape (e.g. {key}: {list(found)} in the weights, "
                f"{list(wanted)} in config.json)"
            )
        raise CheckpointError(
            f"{weights}: does not fit config.json: {', '.join(problems)}; the two come from different "
            f"checkpoints: {AGAIN}"
        )
    for record in held.records:  # only unexpected keys: harmless, reported as transformers would
        logger.handle(record)
    return model


def read_json(path: Path) -> dict:
    """A checkpoint's JSON file as a dict; one ``CheckpointError`` line if it is not a JSON object."""
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({first_line(error)}); {AGAIN}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}; {AGAIN}")
    return data


# Qwen2Config fields a checkpoint's config.json carries in transformers 4.x's names: 5.x keeps rope_theta in
# rope_parameters (StreamForest's and Dispider's releases write the 4.x layout)
QWEN2_FIELDS = (
    "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads "
    "num_key_value_heads hidden_act max_position_embeddings rms_norm_eps rope_theta "
    "tie_word_embeddings use_sliding_window sliding_window max_window_layers attention_dropout "
    "initializer_range bos_token_id eos_token_id"
).split()


def qwen2_config(found: dict):
    """The ``Qwen2Config`` of a 4.x-layout config dict's Qwen2 fields."""
    from transformers import Qwen2Config

    return Qwen2Config(**{key: found[key] for key in QWEN2_FIELDS if key in found})


def qwen2_fields(config) -> dict:
    """``config``'s Qwen2 fields in the 4.x layout (``rope_theta`` at the top), for a config.json."""
    found = config.to_dict()
    fields = {key: found[key] for key in QWEN2_FIELDS if key in found and key != "rope_theta"}
    return {**fields, "rope_theta": config.rope_parameters["rope_theta"]}
