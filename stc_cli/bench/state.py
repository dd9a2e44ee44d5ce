"""How STC's state grows over a long stream: the pruner's and the cacher's bytes, and the process's peak
RSS, after 100 chunks and after ``--state-frames``."""

from __future__ import annotations

import torch

from stc_cli.bench.inputs import tiny_of, to_device, vision_chunks
from stc_cli.bench.timer import peak_rss_mb
from stc_cli.compress import STCCacher, STCPruner
from stc_cli.configs import BenchConfig
from stc_cli.models.presets import random_vision_tower

STATE_CHECK_AFTER = 100


def state_check(
    config: BenchConfig, pruner: STCPruner, tokens: int, width: int, device: torch.device
) -> dict:
    """Bytes of pruner state (``[1, tokens, width]`` chunks, ``memory_window`` set) and of cacher state
    (on the tiny tower: a real-size ViT is too slow for 10,000 frames on a CPU) after 100 chunks and
    after ``state_frames`` chunks."""
    tiny_preset = tiny_of(config.vision)  # the same cacher family
    tiny = random_vision_tower(tiny_preset, device=device)
    cacher = STCCacher(update_ratio=config.update_ratio, interval=config.interval).attach(tiny)
    g = torch.Generator(device=device).manual_seed(config.seed)
    inputs = [to_device(chunk, device, torch.float32) for chunk in vision_chunks(tiny_preset, 4, config.seed)]
    after = {}
    with torch.inference_mode():
        for chunk in range(1, config.state_frames + 1):
            pruner.compress(torch.randn(1, tokens, width, generator=g, device=device))
            tiny(**inputs[chunk % len(inputs)])
            if chunk in (STATE_CHECK_AFTER, config.state_frames):
                after[chunk] = (pruner.state_nbytes(), cacher.state_nbytes(), peak_rss_mb())
    cacher.detach()
    first, last = after[min(after)], after[max(after)]
    return {
        "chunks": [min(after), max(after)],
        "pruner_bytes": [first[0], last[0]],
        "tiny_cacher_bytes": [first[1], last[1]],
        "process_peak_rss_mb": [first[2], last[2]],
    }
