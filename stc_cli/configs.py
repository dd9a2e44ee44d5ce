"""One typed, frozen config per command: the CLI builds it, the library runs it, results record it.

Kept free of heavy imports so that the CLI can take its defaults from here and still start fast.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchConfig:
    vision: str = "siglip-so400m-384"
    llm: str = "qwen2-7b"
    layers: int | None = None  # cut both models to N layers; None: full depth on CUDA, 2 on CPU
    llm_layers: int | None = None  # the LLM's depth when it should differ from ``layers``
    frames: int = 8  # timed frames per pass (even, so reference and selective chunks are balanced)
    warmup: int = 2
    repeats: int = 3
    update_ratio: float = 0.25
    interval: int = 2
    tokens_per_frame: int = 60
    memory_window: int = 64  # for the state check
    state_frames: int = 1_000  # chunks streamed through the pruner and a tiny cacher; 0 skips it
    device: str = "auto"
    dtype: str = "auto"  # float16 on CUDA, float32 on CPU
    seed: int = 0
