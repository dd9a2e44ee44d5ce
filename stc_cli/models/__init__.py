"""Base systems, one module each, looked up by ``--model`` name in an explicit registry.

Each module provides ``build(config: EvalConfig, device, dtype) -> VideoModel`` (see ``base.py``); the
module is imported only when its model is asked for.
"""

from __future__ import annotations

import importlib

_MODULES = {
    "rekv": "stc_cli.models.rekv",
    "livecc": "stc_cli.models.livecc",
}
# frames per second each base system reads, as its authors ran it (--fps overrides)
DEFAULT_FPS = {"rekv": 0.5, "livecc": 2.0}


def names() -> list[str]:
    return list(_MODULES)


def default_fps(name: str) -> float:
    if name not in _MODULES:
        raise ValueError(f"unknown --model {name!r}; known: {', '.join(_MODULES)}")
    return DEFAULT_FPS[name]


def build(config, device, dtype):
    """The model ``config.model`` names, loaded from ``config.model_path`` onto ``device``."""
    if config.model not in _MODULES:
        raise ValueError(f"unknown --model {config.model!r}; known: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[config.model]).build(config, device, dtype)
