"""Base systems, one module each, looked up by ``--model`` name in an explicit registry.

Each module provides ``build(config: EvalConfig, protocol: Protocol, device, dtype) -> VideoModel`` (see
``base.py``); the module is imported only when its model is asked for. Their protocols (frame rate,
texts, decoding) are in ``stc_cli/protocols``.
"""

from __future__ import annotations

import importlib

_MODULES = {
    "rekv": "stc_cli.models.rekv",
    "livecc": "stc_cli.models.livecc",
    "streamforest": "stc_cli.models.streamforest",
    "qwen3vl": "stc_cli.models.qwen3vl",
    "qwen25vl": "stc_cli.models.qwen25vl",
    "dispider": "stc_cli.models.dispider",
}
# --dtype auto on CUDA, as each upstream runs its checkpoint: ReKV + STC loads LLaVA-OneVision in float16
# ([STC] model/llava_onevision_rekv.py:181); LiveCC is trained and evaluated in bfloat16, its config's
# dtype (Qwen2 in float16 is known to overflow)
CUDA_DTYPES = {"rekv": "float16", "livecc": "bfloat16"}
CUDA_DTYPES["streamforest"] = "float16"  # [SF] llava/model/builder.py:36 (torch_dtype=float16)
# Qwen3-VL and Qwen2.5-VL: bfloat16, their config.json dtype and how SimpleStream loads them
# ([SS] lib/recent_window_eval.py:103-104)
CUDA_DTYPES.update(qwen3vl="bfloat16", qwen25vl="bfloat16")
CUDA_DTYPES["dispider"] = "float16"  # [D] inference.py:221-222 (pixels in float16, the model in half)


def names() -> list[str]:
    return list(_MODULES)


def check(name: str) -> None:
    """Raise ValueError unless ``name`` is a known ``--model``."""
    if name not in _MODULES:
        raise ValueError(f"unknown --model {name!r}; known: {', '.join(_MODULES)}")


def build(config, protocol, device, dtype):
    """The model ``config.model`` names, loaded from ``config.model_path`` onto ``device``, to be
    evaluated under ``protocol``."""
    check(config.model)
    return importlib.import_module(_MODULES[config.model]).build(config, protocol, device, dtype)
