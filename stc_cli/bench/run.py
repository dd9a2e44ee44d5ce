"""`stc bench`'s run: the options checked, ``auto`` resolved, then each stage in turn into one report."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from stc_cli.bench.baselines import BASELINES, PRUNER_BASELINES, baselines_stage
from stc_cli.bench.decode import decode_stage
from stc_cli.bench.dispider import dispider_stage
from stc_cli.bench.inputs import (
    frames_per_chunk,
    is_qwen2vl,
    merged_width,
    pooled_tokens,
    project_and_pool,
    units_per_chunk,
)
from stc_cli.bench.prefill import long_stream_stage, prefill_stage
from stc_cli.bench.state import state_check
from stc_cli.bench.streamforest import streamforest_stage
from stc_cli.bench.timer import Timer, environment
from stc_cli.bench.vit import prune_stage, vit_stage
from stc_cli.compress import STCCacher, STCPruner
from stc_cli.configs import BenchConfig
from stc_cli.devices import resolve_device, resolve_dtype
from stc_cli.models.presets import LLM_PRESETS, VISION_PRESETS, random_language_model

CPU_DEFAULT_LAYERS = 2


def resolve(config: BenchConfig) -> tuple[torch.device, torch.dtype, int | None, int | None]:
    """The device, dtype, ViT depth and LLM depth that ``auto`` and ``None`` stand for here."""
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    layers = config.layers if config.layers is not None or device.type == "cuda" else CPU_DEFAULT_LAYERS
    return device, dtype, layers, config.llm_layers or layers


def run_bench(config: BenchConfig, progress: Callable[[int, int, str], None] = lambda *_: None) -> dict:
    """Run the benchmark and return a JSON-ready dict (see ``docs/benchmarks.md`` for the fields).
    ``progress(stages done, stages in all, the stage starting)`` hears each stage as it starts, and the
    end (``done == total``)."""
    check_options(config)
    device, dtype, layers, llm_layers = resolve(config)
    # Built before any model, so that a bad option fails at once.
    cacher = STCCacher(update_ratio=config.update_ratio, interval=config.interval, compile=config.compile)
    pruner = STCPruner(tokens_per_frame=config.tokens_per_frame)
    state_pruner = STCPruner(tokens_per_frame=config.tokens_per_frame, memory_window=config.memory_window)
    # Replayed graphs and compiled code run no operators one by one: nothing there to count.
    count_ops = not (config.compile or config.cuda_graphs or config.llm_graphs)
    chunks = config.warmup + config.frames
    timer = Timer(device, warmup=config.warmup, chunks=chunks, repeats=config.repeats, count_ops=count_ops)
    stages = 2 + bool(set(config.compress) & set(PRUNER_BASELINES)) + bool(config.streamforest)
    stages += bool(config.long_stream) + bool(config.decode_tokens) + bool(config.state_frames)
    stages += bool(config.dispider)
    started = iter(range(stages + 1))

    def stage(name: str) -> None:
        progress(next(started), stages, name)

    stage("ViT: stock vs cacher")
    vit, features, last_layer = vit_stage(config, timer, cacher, device, dtype, layers)
    stage("pruner and LLM prefill")
    llm = random_language_model(config.llm, llm_layers, dtype=dtype, device=device, seed=config.seed)
    # Qwen2-VL's patch merger is its projector and 2x2 pool: its tokens go to the LLM as they are.
    pooled = features if is_qwen2vl(config.vision) else project_and_pool(features, llm, seed=config.seed)
    prune_ms, kept = prune_stage(timer, pruner, pooled, per_call=units_per_chunk(config))
    vit_ms_per_step = vit["stc_ms_per_frame"] * (2 if is_qwen2vl(config.vision) else 1)  # the pruner's unit
    result = {
        "config": dataclasses.asdict(config),
        "environment": environment(device),
        "dtype": str(dtype).removeprefix("torch."),
        "vit": vit,
        "pruner": {"ms_per_frame": prune_ms, "share_of_stc_vit": prune_ms / vit_ms_per_step},
        "prefill": prefill_stage(config, timer, llm, pooled, kept),
    }
    if set(config.compress) & set(PRUNER_BASELINES):
        stage("the baselines before the prefill")
        result["baselines"] = baselines_stage(
            timer,
            config.compress,
            config.tokens_per_frame,
            pooled,
            last_layer.get("layer"),
            last_layer.get("inputs"),
        )
    if config.streamforest:
        stage(f"StreamForest's memory over {config.streamforest} frames")
        result["streamforest"] = streamforest_stage(timer, config.streamforest, features, llm, config.seed)
    if config.dispider:
        stage(f"Dispider's CLIP tower and reaction prefill over {config.dispider} frames")
        result["dispider"] = dispider_stage(config, timer, llm, layers)
    memories = None
    if config.long_stream:
        stage(f"filling ReKV's window of {config.n_local} tokens")
        result["long_stream"], memories = long_stream_stage(config, timer, llm, pooled, kept)
    if config.decode_tokens:
        stage(f"decoding {config.decode_tokens} tokens")
        # The first frames, one per chunk whatever its size: a context of every frame would make a
        # CPU run at --frames-per-chunk 16 prefill 31,000 tokens per repeat.
        first = slice(0, timer.chunks)
        result["decode"] = decode_stage(config, timer, llm, pooled[first], kept[first], memories)
    result["frame"] = per_frame(result, is_qwen2vl(config.vision))
    result["peak_memory_mb"] = timer.peak_mb()
    result["launches"] = timer.op_counts()
    if config.state_frames:
        stage(f"state over {config.state_frames} chunks")
        full_tokens, width = pooled[0].shape[1:]
        result["state"] = state_check(config, state_pruner, full_tokens, width, device)
    stage("done")
    return result


def per_frame(result: dict, qwenvl: bool) -> dict:
    """ViT + pruner + prefill per frame, STC off vs on: what STC changes end to end, bar the decoding of
    the video. The prefill is the model's own: through ReKV's memory beside a SigLIP preset (its window
    full with ``--long-stream``), into a KV cache beside a Qwen-VL tower (LiveCC), whose rows per
    temporal patch count half per frame."""
    if qwenvl:
        prefill, rows, prefix = "KV cache", result["prefill"], ""
    elif "long_stream" in result:
        prefill, rows, prefix = "ReKV, window full", result["long_stream"], ""
    else:
        prefill, rows, prefix = "ReKV", result["prefill"], "rekv_"
    frames = 2 if qwenvl else 1  # per LLM step
    vit, pruner = result["vit"], result["pruner"]["ms_per_frame"]
    off = vit["full_ms_per_frame"] + rows[f"{prefix}full_ms_per_frame"] / frames
    on = vit["stc_ms_per_frame"] + (pruner + rows[f"{prefix}pruned_ms_per_frame"]) / frames
    return {"prefill": prefill, "full_ms": off, "stc_ms": on, "ratio": on / off}


def check_options(config: BenchConfig) -> None:
    """One-line ValueErrors, naming the option, before anything is built."""
    if config.frames < 2 or config.frames % 2:
        raise ValueError(f"--frames must be an even number >= 2, got {config.frames}")
    if config.repeats < 1 or config.warmup < 0 or config.state_frames < 0:
        raise ValueError(
            f"--repeats must be >= 1, --warmup and --state-frames >= 0; got {config.repeats}, "
            f"{config.warmup} and {config.state_frames}"
        )
    known = config.vision in VISION_PRESETS or is_qwen2vl(config.vision)
    if known and config.tokens_per_frame > pooled_tokens(config.vision):
        raise ValueError(
            f"--tokens-per-frame {config.tokens_per_frame} is more than the {pooled_tokens(config.vision)} "
            f"pooled tokens per frame of the {config.vision} preset"
        )
    if is_qwen2vl(config.vision) and config.llm in LLM_PRESETS:
        merged = merged_width(config.vision)  # the merger feeds the LLM as it is
        width = LLM_PRESETS[config.llm]["hidden_size"]
        if merged != width:
            raise ValueError(
                f"--vision {config.vision} merges into {merged} channels, but --llm {config.llm} is {width} "
                "wide: pick an LLM of that width"
            )
    if config.frames_per_chunk is not None and config.frames_per_chunk < 1:
        raise ValueError(f"--frames-per-chunk must be >= 1, got {config.frames_per_chunk}")
    if is_qwen2vl(config.vision) and frames_per_chunk(config) % 2:
        raise ValueError(
            f"--frames-per-chunk must be even for --vision {config.vision} (a chunk holds whole temporal "
            f"patches of 2 frames), got {config.frames_per_chunk}"
        )
    if config.n_local < 1:
        raise ValueError(f"--n-local must be >= 1, got {config.n_local}")
    if config.decode_tokens < 0:
        raise ValueError(f"--decode-tokens must be >= 0, got {config.decode_tokens}")
    if unknown := [name for name in config.compress if name not in BASELINES]:
        raise ValueError(f"--compress takes {', '.join(BASELINES)}; got {', '.join(unknown)}")
    if config.streamforest < 0 or (config.streamforest and is_qwen2vl(config.vision)):
        raise ValueError(
            f"--streamforest takes a frame count >= 0 on a SigLIP preset, got {config.streamforest}"
        )
    if config.dispider < 0 or 0 < config.dispider <= config.warmup:
        raise ValueError(
            f"--dispider takes 0 (skip) or more frames than --warmup ({config.warmup}), got {config.dispider}"
        )
    if config.dispider and is_qwen2vl(config.vision):  # its reaction LLM is --llm, picked for that tower
        raise ValueError(f"--dispider runs beside a SigLIP preset, not --vision {config.vision}")
    if config.cuda_graphs and (is_qwen2vl(config.vision) or resolve_device(config.device).type != "cuda"):
        raise ValueError("--cuda-graphs needs a CUDA device and a SigLIP preset (--vision)")
    if config.llm_graphs and resolve_device(config.device).type != "cuda":
        raise ValueError("--llm-graphs needs a CUDA device")
    if config.compile and (is_qwen2vl(config.vision) or "tome" in config.compress):
        raise ValueError(
            "--compile compiles SigLIP presets' layers, stock and STC, and not with --compress tome"
        )
    if config.compress and is_qwen2vl(config.vision):
        raise ValueError(f"--compress times the baselines on a SigLIP preset, not --vision {config.vision}")
