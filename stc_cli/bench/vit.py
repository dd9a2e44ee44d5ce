"""The ViT stage (the stock tower vs a copy with STC's cacher, chunk by chunk) and the pruner stage."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch

from stc_cli.accel import TowerGraphs, compile_layers
from stc_cli.bench.baselines import tome_for
from stc_cli.bench.inputs import (
    frames_per_chunk,
    is_qwen2vl,
    llm_inputs,
    pooled_tokens,
    to_device,
    vision_chunks,
    vit_tokens,
)
from stc_cli.bench.timer import Timer
from stc_cli.compress import STCCacher, STCPruner
from stc_cli.configs import BenchConfig
from stc_cli.models.presets import random_vision_tower


def vit_stage(
    config: BenchConfig, timer: Timer, cacher: STCCacher, device, dtype, layers
) -> tuple[dict, list[torch.Tensor], dict]:
    """The stock tower vs a copy with the cacher (and one with ToMe under ``--compress tome``), chunk by
    chunk. Returns the summary, the STC pass's outputs as the LLM's per-frame inputs, and for
    ``--compress visionzip`` the stock tower's last layer and its input per frame (else empty)."""
    stock = random_vision_tower(config.vision, layers, dtype=dtype, device=device, seed=config.seed)
    patched = copy.deepcopy(stock)  # the same weights; only this copy gets the cacher
    cacher.attach(patched)
    if config.compile:
        compile_layers(stock)  # the same compiled layer function as the cacher's reference chunks
    tome = None
    if "tome" in config.compress:
        tome = tome_for(
            vit_tokens(config.vision),
            stock.config.num_hidden_layers,
            pooled_tokens(config.vision),
            config.tokens_per_frame,
        )
        merged = copy.deepcopy(stock)  # the same weights, with ToMe
        tome.attach(merged)
    per_chunk = frames_per_chunk(config)
    chunks = vision_chunks(config.vision, timer.chunks, config.seed, per_chunk)
    chunks = [to_device(chunk, device, dtype) for chunk in chunks]
    qwen2vl = is_qwen2vl(config.vision)
    outputs: list = []  # the STC pass's output, fed to the pruner
    calls = {"vit_full": stock, "vit_stc": patched} | ({"vit_tome": merged} if tome else {})
    if config.cuda_graphs:
        calls = {
            label: _graphed(tower, cacher if tower is patched else None) for label, tower in calls.items()
        }
        _record_graphs(calls, chunks, cacher)

    def steps():
        cacher.reset()
        outputs.clear()
        steps = {label: lambda i, call=call: call(**chunks[i]) for label, call in calls.items()}
        return steps | {"vit_stc": lambda i: outputs.append(calls["vit_stc"](**chunks[i]))}

    ms = timer.compare(steps)
    full, stc = ms["vit_full"] / per_chunk, ms["vit_stc"] / per_chunk
    summary = {
        "preset": config.vision,
        "layers": stock.config.num_hidden_layers,
        "tokens_per_frame": vit_tokens(config.vision),  # per frame (SigLIP) or temporal patch (Qwen2-VL)
        "frames_per_chunk": per_chunk,
        "timed_frames": config.frames * per_chunk,  # per pass, after the warm-up chunks
        "grid_thw": chunks[0]["grid_thw"][0].tolist() if qwen2vl else None,
        "full_ms_per_chunk": ms["vit_full"],
        "stc_ms_per_chunk": ms["vit_stc"],
        "full_ms_per_frame": full,
        "stc_ms_per_frame": stc,
        "ratio": stc / full,
        "cacher_state_bytes": cacher.state_nbytes(),
        "cuda_graphs": config.cuda_graphs,
        "compiled": config.compile,
    }
    if tome:
        summary |= {
            "tome_ms_per_frame": ms["vit_tome"] / per_chunk,
            "tome_ratio": ms["vit_tome"] / ms["vit_full"],
            "tome_r": tome.r,
            "tome_tokens_left": tome.tokens[-1],
        }
        tome.detach()
    last_layer = {}
    if "visionzip" in config.compress:
        last_layer = {"layer": stock.encoder.layers[-1], "inputs": _last_layer_inputs(stock, chunks)}
    cacher.detach()  # lets the towers go before the LLM is built
    # The pruner and LLM take [1, P, C] per frame (SigLIP) or per temporal patch (Qwen2-VL), a chunk's
    # worth per call.
    per_step = [llm_inputs(out, qwen2vl, pooled_tokens(config.vision)) for out in outputs]
    return summary, [t for chunk in per_step for t in chunk], last_layer


def _graphed(tower, cacher: STCCacher | None):
    """A side's chunk call, replayed from CUDA graphs; its output is copied out of the graph's storage,
    which the next chunk rewrites (the STC side's outputs are kept for the pruner)."""
    graphs = TowerGraphs(lambda pixels: (tower(pixel_values=pixels).last_hidden_state,), cacher)
    return lambda pixel_values: SimpleNamespace(last_hidden_state=graphs(pixel_values)[0].clone())


def _record_graphs(calls: dict, chunks: list[dict], cacher: STCCacher) -> None:
    """Untimed: run each side until every graph it replays is recorded. With the cacher at interval k,
    a reference key is recorded on its second chunk, and the selective keys that read its references
    on their second chunk after it: 3 k chunks; the stock towers need 2."""
    cacher.reset()
    with torch.inference_mode():
        for i in range(3 * cacher.interval):
            for call in calls.values():
                call(**chunks[i % len(chunks)])


def _last_layer_inputs(stock, chunks: list[dict]) -> list[torch.Tensor]:
    """The input of the tower's last layer for each frame, ``[1, T, C]`` (VisionZip scores that layer)."""
    inputs: list[torch.Tensor] = []
    hook = stock.encoder.layers[-1].register_forward_pre_hook(
        lambda _m, args: inputs.extend(args[0].split(1))
    )
    with torch.inference_mode():
        for chunk in chunks:
            stock(**chunk)
    hook.remove()
    return inputs


def prune_stage(
    timer: Timer, pruner: STCPruner, pooled: list[torch.Tensor], stage: str = "", per_call: int = 1
) -> tuple[float, list]:
    """The pruner over ``per_call`` units ``[1, P, C]`` of ``pooled`` per call (a ViT chunk's, as ``stc
    eval --encode-chunk`` prunes them). Returns ms per unit and the kept ``[1, k, C]`` of every unit."""
    kept: list[torch.Tensor] = []

    def prune(i: int) -> None:
        chunk = torch.cat(pooled[i * per_call : (i + 1) * per_call])  # [per_call, P, C]
        kept.extend(pruner.compress(chunk)[0].split(1))

    def prune_steps():
        pruner.reset()
        kept.clear()
        return {"pruner": prune}

    return timer.compare(prune_steps, stage=stage)["pruner"] / per_call, kept
