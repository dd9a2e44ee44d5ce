"""The LLM prefill stages: each frame's tokens into a growing KV cache and into ReKV's memory, all pooled
tokens vs the pruner's kept ones; and through ReKV's memory once its window is full (``--long-stream``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from stc_cli.accel import GraphReplay, StaticStream
from stc_cli.bench.inputs import is_qwen2vl, per_call, units_per_chunk
from stc_cli.bench.timer import Timer
from stc_cli.configs import BenchConfig

REKV_TOPK, REKV_INIT_TOKENS = 64, 16  # ReKV's default; its init prompt is ~16 tokens


def prefill_stage(config: BenchConfig, timer: Timer, llm, pooled: list, kept: list) -> dict:
    """Each ViT chunk's tokens, all pooled vs kept, prefilled in one call (one frame or temporal patch by
    default) into a growing KV cache and into ReKV's memory (one block per frame); ms per unit."""
    n = units_per_chunk(config)
    full_calls, pruned_calls = per_call(pooled, n), per_call(kept, n)

    def prefill_steps():
        full_stream, pruned_stream = (
            prefill_stream(llm, sum(c.shape[1] for c in calls) if config.llm_graphs else None)
            for calls in (full_calls, pruned_calls)
        )
        full_rekv = rekv_model(llm, pooled[0].shape[1], config.n_local, config.llm_graphs).encode
        pruned_rekv = rekv_model(llm, kept[0].shape[1], config.n_local, config.llm_graphs).encode
        return {
            "prefill_full": lambda i: full_stream(full_calls[i]),
            "prefill_pruned": lambda i: pruned_stream(pruned_calls[i]),
            "rekv_full": lambda i: full_rekv(full_calls[i]),
            "rekv_pruned": lambda i: pruned_rekv(pruned_calls[i]),
        }

    ms = {label: chunk_ms / n for label, chunk_ms in timer.compare(prefill_steps).items()}
    return {
        "preset": config.llm,
        "layers": llm.config.num_hidden_layers,
        "width": llm.config.hidden_size,
        "full_tokens": pooled[0].shape[1],
        "full_tokens_from": "patch merger" if is_qwen2vl(config.vision) else "bilinear pool",
        "kept_tokens": config.tokens_per_frame,
        "frames_per_call": n,  # units: temporal patches for a Qwen-VL tower
        "full_ms_per_frame": ms["prefill_full"],
        "pruned_ms_per_frame": ms["prefill_pruned"],
        "ratio": ms["prefill_pruned"] / ms["prefill_full"],
        "rekv_full_ms_per_frame": ms["rekv_full"],
        "rekv_pruned_ms_per_frame": ms["rekv_pruned"],
        "rekv_ratio": ms["rekv_pruned"] / ms["rekv_full"],
        "llm_graphs": config.llm_graphs,
    }


def long_stream_stage(config: BenchConfig, timer: Timer, llm, pooled: list, kept: list) -> tuple[dict, dict]:
    """Prefill through ReKV's memory once its window is full, as on a long stream: each side first
    streams, untimed, as many calls of its own token count as fill ``n_local`` video tokens (so the init
    prompt has slid out and every frame attends a full window), then the timed calls continue it; a call
    is a ViT chunk's frames, as in the prefill rows. Returns the block and the two memories
    (``{"full": ..., "pruned": ...}``) for the decoding rows."""
    n = units_per_chunk(config)
    calls = {"full": per_call(pooled, n), "pruned": per_call(kept, n)}
    memories, fill, window, blocks = {}, {}, {}, {}
    with torch.inference_mode():
        for side, chunks in calls.items():
            tokens = chunks[0].shape[1]
            memories[side] = rekv = rekv_model(llm, tokens // n, config.n_local, config.llm_graphs)
            fill[side] = n * -(-config.n_local // tokens)  # in frames, whole calls
            for i in range(fill[side] // n):
                rekv.encode(chunks[i % len(chunks)])
            window[side], blocks[side] = _window_tokens(rekv), len(rekv.memory[0].blocks)
    # The same two streams go on across repeats: a full window stays full, and refilling it per
    # repeat would multiply the fill's cost.
    ms = timer.compare(
        lambda: {f"window_{side}": _encode_step(memories[side], calls[side]) for side in ("full", "pruned")}
    )
    ms = {label: chunk_ms / n for label, chunk_ms in ms.items()}
    block = {"n_local": config.n_local, "full_tokens": pooled[0].shape[1], "kept_tokens": kept[0].shape[1]}
    for side in ("full", "pruned"):  # at the start of timing
        block |= {f"{side}_fill_frames": fill[side], f"{side}_window_tokens": window[side]}
        block[f"{side}_offloaded_blocks"] = blocks[side]
    block |= {
        "full_ms_per_frame": ms["window_full"],
        "pruned_ms_per_frame": ms["window_pruned"],
        "ratio": ms["window_pruned"] / ms["window_full"],
    }
    return block, memories


def rekv_model(llm, block: int, n_local: int, cuda_graphs: bool = False):
    """ReKV's memory over ``llm`` (``stc eval --model rekv``'s LLM), one block per frame, after an init
    prompt of ``REKV_INIT_TOKENS`` tokens; with ``cuda_graphs``, each frame replayed from a CUDA graph."""
    from stc_cli.models.rekv_lm import ReKVLanguageModel

    rekv = ReKVLanguageModel(llm, n_local=n_local, block=block, topk=REKV_TOPK, cuda_graphs=cuda_graphs)
    rekv.encode(prompt(llm, 0, REKV_INIT_TOKENS))
    return rekv


def _encode_step(rekv, calls: list[torch.Tensor]) -> Callable[[int], None]:
    return lambda i: rekv.encode(calls[i])


def _window_tokens(rekv) -> int:
    """Video tokens in the sliding window of the next frame: ``n_local`` once the init prompt is out."""
    memory = rekv.memory[0]
    return min(memory.n_local, memory.length - REKV_INIT_TOKENS)


def prompt(llm, start: int, length: int) -> torch.Tensor:
    """``[1, length, width]``: embeddings of the token ids ``start...`` (a stand-in for text)."""
    ids = torch.arange(start, start + length, device=llm.device)[None] % llm.config.vocab_size
    return llm.embed_tokens(ids)


def prefill_stream(llm, capacity: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A step that appends tokens ``[1, L, width]`` to a KV cache that grows over the stream and returns
    their last hidden states: transformers' ``DynamicCache``, or given a ``capacity`` (``--llm-graphs``),
    a static one of that many tokens, each step of one size replayed from a CUDA graph."""
    if capacity is not None:
        return StaticStream(llm, capacity, GraphReplay())
    from transformers import DynamicCache

    cache = DynamicCache(config=llm.config)

    def step(tokens: torch.Tensor) -> torch.Tensor:
        return llm(inputs_embeds=tokens, cache=cache, use_cache=True).last_hidden_state

    return step
