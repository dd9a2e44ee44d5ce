"""Base systems, one module each, looked up by ``--model`` name in an explicit registry.

Each module provides ``build(config: EvalConfig, device, dtype) -> VideoModel`` (see ``base.py``).
"""

from __future__ import annotations

import importlib

_MODULES = {
    "rekv": "stc_cli.models.rekv",
}


def names() -> list[str]:
    return list(_MODULES)


def build(config, device, dtype):
    """The model ``config.model`` names, loaded from ``config.model_path`` onto ``device``."""
    if config.model not in _MODULES:
        raise ValueError(f"unknown --model {config.model!r}; known: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[config.model]).build(config, device, dtype)
