"""``stc bench --streamforest N``: StreamForest's event memory over N frames of the ViT stage's tokens,
all 729 per frame vs STC-Pruner's share (223 at 60 of 196), and the LLM prefill of what each memory
holds. The memory already compresses (at most about 9k tokens at any length), so the pruner's prefill
saving is expected to be small; this measures it."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from stc_cli.bench.timer import Timer
from stc_cli.compress import STCPruner
from stc_cli.models.streamforest_config import MemorySettings
from stc_cli.models.streamforest_memory import EventMemory

SHARE = 60 / 196  # STC's share, as stc eval --model streamforest keeps it


def streamforest_stage(timer: Timer, frames: int, features: list[torch.Tensor], llm, seed: int) -> dict:
    """``features``: the ViT's ``[1, 729, C]`` per frame, streamed round-robin for ``frames`` frames."""
    patches, width = features[0].shape[1:]
    kept = round(patches * SHARE)
    memory = _memory(patches)
    settings = {"full": memory, "pruned": memory.pruned_to(kept)}
    heads = 16 if width % 16 == 0 else 1  # SigLIP-so400m's; the metric's head split, not a cost
    memories: dict[str, EventMemory] = {}

    def memory_steps():
        memories.update({side: EventMemory(width, heads, **vars(s)) for side, s in settings.items()})
        pruner, previous = STCPruner(kept), []

        def pruned(i: int) -> None:
            frame = features[i % len(features)]
            flat = frame.reshape(-1)
            similarity = F.cosine_similarity(previous[-1], flat, dim=0) if previous else None
            previous[:] = [flat]
            memories["pruned"].update(pruner.compress(frame)[0][0], similarity)
            memories["pruned"].tokens()

        def full(i: int) -> None:
            memories["full"].update(features[i % len(features)][0])
            memories["full"].tokens()

        # a read after every frame, as streamforest-stream does (the compression is deferred to the read)
        return {"full": full, "pruned": pruned}

    update_ms = timer.compare(memory_steps, chunks=frames, stage="streamforest_update_")
    tokens = {side: memory.tokens() for side, memory in memories.items()}  # the read an answer makes
    projector = _projector(width, llm.config.hidden_size, seed, features[0])

    def prefill_steps():
        return {side: lambda i, t=t: llm(inputs_embeds=projector(t)[None]) for side, t in tokens.items()}

    prefill_ms = timer.compare(prefill_steps, chunks=timer.warmup + 2, stage="streamforest_prefill_")
    return {
        "frames": frames,
        "tokens_per_frame": patches,
        "kept_tokens_per_frame": kept,
        "memory_tokens_full": len(tokens["full"]),
        "memory_tokens_pruned": len(tokens["pruned"]),
        "update_full_ms_per_frame": update_ms["full"],
        "update_pruned_ms_per_frame": update_ms["pruned"],
        "prefill_full_ms": prefill_ms["full"],
        "prefill_pruned_ms": prefill_ms["pruned"],
        "prefill_ratio": prefill_ms["pruned"] / prefill_ms["full"],
    }


def _memory(patches: int) -> MemorySettings:
    """Upstream's sizes for SigLIP-so400m's 729 tokens; other grids (the tiny preset) scale its token
    budgets by ``patches / 729``."""
    upstream = MemorySettings()
    if patches == upstream.tokens[0]:
        return upstream
    short = max(2, round(upstream.tokens[1] * patches / upstream.tokens[0]))
    long = max(1, short // 2)
    quota = max(long, round(upstream.long_quota * patches / upstream.tokens[0]))
    return replace(upstream, tokens=(patches, short), long_tokens_per_frame=long, long_quota=quota)


def _projector(width: int, hidden: int, seed: int, like: torch.Tensor) -> torch.nn.Module:
    """StreamForest's connector (Linear, GELU, Linear) with seeded random weights."""
    with torch.random.fork_rng(devices=[like.device] if like.is_cuda else []):
        torch.manual_seed(seed)
        mlp = torch.nn.Sequential(
            torch.nn.Linear(width, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden)
        )
    return mlp.to(like.device, like.dtype).eval()
