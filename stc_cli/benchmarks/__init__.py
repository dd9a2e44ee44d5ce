"""The benchmarks: one module each, looked up by ``--bench`` name in an explicit registry."""

from __future__ import annotations

import importlib
from types import ModuleType

_MODULES = {
    "ovo": "stc_cli.benchmarks.ovo",
    "streamingbench": "stc_cli.benchmarks.streamingbench",
    "mlvu": "stc_cli.benchmarks.mlvu",
    "egoschema": "stc_cli.benchmarks.egoschema",
    "videomme": "stc_cli.benchmarks.videomme",
    "demo": "stc_cli.benchmarks.demo",
}


def names() -> list[str]:
    return list(_MODULES)


def get(name: str) -> ModuleType:
    """The module of benchmark ``name`` (see ``base.py`` for what it provides)."""
    if name not in _MODULES:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name])
