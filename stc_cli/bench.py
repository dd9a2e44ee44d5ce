"""`stc bench`: STC latency on random-weight models at real sizes, STC on and off side by side.

Frames are streamed one chunk at a time, as ReKV + STC does, through:
  ViT (SigLIP preset) stock vs with the cacher -> projector + 2x2 bilinear pool (not timed)
  -> pruner (timed) -> LLM prefill into a growing KV cache, all pooled tokens vs the kept ones.
A chunk is one ViT call of ``--frames-per-chunk`` frames (default one); its time is reported per frame.
With a Qwen2-VL preset (LiveCC's tower) a chunk holds whole temporal patches (two frames each, packed
with ``grid_thw``), and the LLM gets the patch merger's tokens (its output already has the LLM width), so
the pruner and prefill work per temporal patch on merged tokens (364 at 392 x 728 px).
Optional rows: prefill through ReKV's memory once its window is full (``--long-stream``), and greedy
decoding after a prefill (``--decode-tokens``).
Every compared pair runs in one process on the same frames, interleaved chunk by chunk; the
reported figure is the median over repeats of the mean over chunks.
"""

from __future__ import annotations

import copy
import dataclasses
import resource
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from stc_cli.compress import STCCacher, STCPruner
from stc_cli.configs import BenchConfig
from stc_cli.devices import cpu_name, resolve_device, resolve_dtype
from stc_cli.models.presets import (
    LLM_PRESETS,
    QWEN2VL_FRAME_SIZES,
    QWEN2VL_VISION_PRESETS,
    VISION_PRESETS,
    random_language_model,
    random_vision_tower,
    seeded,
)

CPU_DEFAULT_LAYERS = 2
REKV_TOPK, REKV_INIT_TOKENS = 64, 16  # ReKV's default; its init prompt is ~16 tokens
QUESTION_TOKENS = 16  # the question prefilled before decoding
# The real LM heads' vocabularies: reading the head is part of every generated token's cost.
LM_HEAD_VOCAB = {"qwen2-7b": 152064, "qwen2-0.5b": 151936}
STATE_CHECK_AFTER = 100


def resolve(config: BenchConfig) -> tuple[torch.device, torch.dtype, int | None, int | None]:
    """The device, dtype, ViT depth and LLM depth that ``auto`` and ``None`` stand for here."""
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    layers = config.layers if config.layers is not None or device.type == "cuda" else CPU_DEFAULT_LAYERS
    return device, dtype, layers, config.llm_layers or layers


def frames_per_chunk(config: BenchConfig) -> int:
    """Frames per ViT call: as given, else one frame (SigLIP) or one temporal patch of two (Qwen2-VL)."""
    return config.frames_per_chunk or (2 if _is_qwen2vl(config.vision) else 1)


def run_bench(config: BenchConfig, progress: Callable[[int, int, str], None] = lambda *_: None) -> dict:
    """Run the benchmark and return a JSON-ready dict (see ``docs/benchmarks.md`` for the fields).
    ``progress(stages done, stages in all, the stage starting)`` hears each stage as it starts, and the
    end (``done == total``)."""
    check_options(config)
    device, dtype, layers, llm_layers = resolve(config)
    # Built before any model, so that a bad option fails at once.
    cacher = STCCacher(update_ratio=config.update_ratio, interval=config.interval)
    pruner = STCPruner(tokens_per_frame=config.tokens_per_frame)
    state_pruner = STCPruner(tokens_per_frame=config.tokens_per_frame, memory_window=config.memory_window)
    timer = _Timer(device, warmup=config.warmup, chunks=config.warmup + config.frames, repeats=config.repeats)
    stages = 2 + bool(config.long_stream) + bool(config.decode_tokens) + bool(config.state_frames)
    started = iter(range(stages + 1))

    def stage(name: str) -> None:
        progress(next(started), stages, name)

    stage("ViT: stock vs cacher")
    vit, features = _vit_stage(config, timer, cacher, device, dtype, layers)
    stage("pruner and LLM prefill")
    llm = random_language_model(config.llm, llm_layers, dtype=dtype, device=device, seed=config.seed)
    # Qwen2-VL's patch merger is its projector and 2x2 pool: its tokens go to the LLM as they are.
    pooled = features if _is_qwen2vl(config.vision) else _project_and_pool(features, llm, seed=config.seed)
    prune_ms, kept = _prune_stage(timer, pruner, pooled)
    vit_ms_per_step = vit["stc_ms_per_frame"] * (2 if _is_qwen2vl(config.vision) else 1)  # the pruner's unit
    result = {
        "config": dataclasses.asdict(config),
        "environment": environment(device),
        "dtype": str(dtype).removeprefix("torch."),
        "vit": vit,
        "pruner": {"ms_per_frame": prune_ms, "share_of_stc_vit": prune_ms / vit_ms_per_step},
        "prefill": _prefill_stage(config, timer, llm, pooled, kept),
    }
    memories = None
    if config.long_stream:
        stage(f"filling ReKV's window of {config.n_local} tokens")
        result["long_stream"], memories = _long_stream_stage(config, timer, llm, pooled, kept)
    if config.decode_tokens:
        stage(f"decoding {config.decode_tokens} tokens")
        result["decode"] = _decode_stage(config, timer, llm, pooled, kept, memories)
    result["peak_memory_mb"] = timer.peak_mb()
    if config.state_frames:
        stage(f"state over {config.state_frames} chunks")
        full_tokens, width = pooled[0].shape[1:]
        result["state"] = state_check(config, state_pruner, full_tokens, width, device)
    stage("done")
    return result


def check_options(config: BenchConfig) -> None:
    """One-line ValueErrors, naming the option, before anything is built."""
    if config.frames < 2 or config.frames % 2:
        raise ValueError(f"--frames must be an even number >= 2, got {config.frames}")
    if config.repeats < 1 or config.warmup < 0 or config.state_frames < 0:
        raise ValueError(
            f"--repeats must be >= 1, --warmup and --state-frames >= 0; got {config.repeats}, "
            f"{config.warmup} and {config.state_frames}"
        )
    known = config.vision in VISION_PRESETS or _is_qwen2vl(config.vision)
    if known and config.tokens_per_frame > pooled_tokens(config.vision):
        raise ValueError(
            f"--tokens-per-frame {config.tokens_per_frame} is more than the {pooled_tokens(config.vision)} "
            f"pooled tokens per frame of the {config.vision} preset"
        )
    if _is_qwen2vl(config.vision) and config.llm in LLM_PRESETS:
        merged = QWEN2VL_VISION_PRESETS[config.vision]["hidden_size"]  # the merger feeds the LLM as it is
        width = LLM_PRESETS[config.llm]["hidden_size"]
        if merged != width:
            raise ValueError(
                f"--vision {config.vision} merges into {merged} channels, but --llm {config.llm} is {width} "
                "wide: pick an LLM of that width"
            )
    if config.frames_per_chunk is not None and config.frames_per_chunk < 1:
        raise ValueError(f"--frames-per-chunk must be >= 1, got {config.frames_per_chunk}")
    if _is_qwen2vl(config.vision) and frames_per_chunk(config) % 2:
        raise ValueError(
            f"--frames-per-chunk must be even for --vision {config.vision} (a chunk holds whole temporal "
            f"patches of 2 frames), got {config.frames_per_chunk}"
        )
    if config.n_local < 1:
        raise ValueError(f"--n-local must be >= 1, got {config.n_local}")
    if config.decode_tokens < 0:
        raise ValueError(f"--decode-tokens must be >= 0, got {config.decode_tokens}")


def _vit_stage(
    config: BenchConfig, timer: _Timer, cacher: STCCacher, device, dtype, layers
) -> tuple[dict, list[torch.Tensor]]:
    stock = random_vision_tower(config.vision, layers, dtype=dtype, device=device, seed=config.seed)
    patched = copy.deepcopy(stock)  # the same weights; only this copy gets the cacher
    cacher.attach(patched)
    per_chunk = frames_per_chunk(config)
    chunks = vision_chunks(config.vision, timer.chunks, config.seed, per_chunk)
    chunks = [_to(chunk, device, dtype) for chunk in chunks]
    qwen2vl = _is_qwen2vl(config.vision)
    outputs: list = []  # the STC pass's output, fed to the pruner

    def steps():
        cacher.reset()
        outputs.clear()
        return {
            "vit_full": lambda i: stock(**chunks[i]),
            "vit_stc": lambda i: outputs.append(patched(**chunks[i])),
        }

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
    }
    cacher.detach()  # lets the towers go before the LLM is built
    # The pruner and LLM work per frame (SigLIP) or per temporal patch (Qwen2-VL), [1, P, C] each; the
    # LLM rows time as many of them as the ViT timed chunks, so their cost does not grow with the chunk.
    per_step = [_llm_inputs(out, qwen2vl, pooled_tokens(config.vision)) for out in outputs]
    return summary, [t for chunk in per_step for t in chunk][: timer.chunks]


def _prune_stage(timer: _Timer, pruner: STCPruner, pooled: list[torch.Tensor]) -> tuple[float, list]:
    kept: list[torch.Tensor] = []

    def prune_steps():
        pruner.reset()
        kept.clear()
        return {"pruner": lambda i: kept.append(pruner.compress(pooled[i])[0])}

    return timer.compare(prune_steps)["pruner"], kept


def _prefill_stage(config: BenchConfig, timer: _Timer, llm, pooled: list, kept: list) -> dict:
    def prefill_steps():
        full_stream, pruned_stream = _prefill_stream(llm), _prefill_stream(llm)
        full_rekv = _rekv_model(llm, pooled[0].shape[1], config.n_local).encode
        pruned_rekv = _rekv_model(llm, kept[0].shape[1], config.n_local).encode
        return {
            "prefill_full": lambda i: full_stream(pooled[i]),
            "prefill_pruned": lambda i: pruned_stream(kept[i]),
            "rekv_full": lambda i: full_rekv(pooled[i]),
            "rekv_pruned": lambda i: pruned_rekv(kept[i]),
        }

    ms = timer.compare(prefill_steps)
    return {
        "preset": config.llm,
        "layers": llm.config.num_hidden_layers,
        "width": llm.config.hidden_size,
        "full_tokens": pooled[0].shape[1],
        "full_tokens_from": "patch merger" if _is_qwen2vl(config.vision) else "bilinear pool",
        "kept_tokens": config.tokens_per_frame,
        "full_ms_per_frame": ms["prefill_full"],
        "pruned_ms_per_frame": ms["prefill_pruned"],
        "ratio": ms["prefill_pruned"] / ms["prefill_full"],
        "rekv_full_ms_per_frame": ms["rekv_full"],
        "rekv_pruned_ms_per_frame": ms["rekv_pruned"],
        "rekv_ratio": ms["rekv_pruned"] / ms["rekv_full"],
    }


def _long_stream_stage(
    config: BenchConfig, timer: _Timer, llm, pooled: list, kept: list
) -> tuple[dict, dict]:
    """Prefill through ReKV's memory once its window is full, as on a long stream: each side first
    streams, untimed, as many frames of its own token count as fill ``n_local`` video tokens (so the init
    prompt has slid out and every frame attends a full window), then the timed frames continue it.
    Returns the block and the two memories (``{"full": ..., "pruned": ...}``) for the decoding rows."""
    memories, fill, window, blocks = {}, {}, {}, {}
    with torch.inference_mode():
        for side, frames in (("full", pooled), ("pruned", kept)):
            tokens = frames[0].shape[1]
            memories[side] = rekv = _rekv_model(llm, tokens, config.n_local)
            fill[side] = -(-config.n_local // tokens)
            for i in range(fill[side]):
                rekv.encode(frames[i % len(frames)])
            window[side], blocks[side] = _window_tokens(rekv), len(rekv.memory[0].blocks)
    # The same two streams go on across repeats: a full window stays full, and refilling it per
    # repeat would multiply the fill's cost.
    ms = timer.compare(
        lambda: {
            "window_full": _encode_step(memories["full"], pooled),
            "window_pruned": _encode_step(memories["pruned"], kept),
        }
    )
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


def _decode_stage(config: BenchConfig, timer: _Timer, llm, pooled: list, kept: list, memories) -> dict:
    """Greedy decoding after a prefill, STC off vs on: the contexts differ only in their visual tokens.
    Plain: ``[init ; the prefill rows' frames ; question]`` in a KV cache. Through ReKV's memory, as
    ``stc eval`` answers: the question retrieves ``topk`` blocks per layer, is prefilled on them, then
    tokens are generated on that answer cache; the memory is the long stream's when there is one,
    else the prefill rows' frames. Each repeat answers afresh; each step is one argmax token fed back."""
    head = _lm_head(config, llm)
    init, question = _prompt(llm, 0, REKV_INIT_TOKENS), _prompt(llm, REKV_INIT_TOKENS, QUESTION_TOKENS)
    frames = {"full": pooled, "pruned": kept}
    if memories is None:
        with torch.inference_mode():
            memories = {side: _encoded(llm, chunks, config.n_local) for side, chunks in frames.items()}
    for rekv in memories.values():
        rekv.lm_head = head
    context: dict[str, int] = {}

    def steps():
        out = {}
        for side, chunks in frames.items():
            prompt = torch.cat([init, *chunks, question], dim=1)
            out[f"decode_{side}"] = _plain_decoder(llm, head, prompt)
            context[side] = prompt.shape[1]
        for side, rekv in memories.items():
            rekv.retrieve(question)
            out[f"rekv_decode_{side}"] = _greedy(llm, rekv.extend, rekv.extend(question))
            context[f"rekv_{side}"] = rekv.memory[0].answer_k.shape[1]  # init, chosen blocks, question
        return out

    ms = timer.compare(steps, chunks=config.warmup + config.decode_tokens)
    for rekv in memories.values():
        rekv.end_answer()
    block = {"tokens": config.decode_tokens, "question_tokens": QUESTION_TOKENS, "vocab": head.out_features}
    for prefix in ("", "rekv_"):
        block |= {
            f"{prefix}full_context_tokens": context[f"{prefix}full"],
            f"{prefix}pruned_context_tokens": context[f"{prefix}pruned"],
            f"{prefix}full_ms_per_token": ms[f"{prefix}decode_full"],
            f"{prefix}pruned_ms_per_token": ms[f"{prefix}decode_pruned"],
            f"{prefix}ratio": ms[f"{prefix}decode_pruned"] / ms[f"{prefix}decode_full"],
        }
    block["rekv_memory"] = "long stream" if config.long_stream else "prefill rows' frames"
    return block


def _llm_inputs(out, qwen2vl: bool, merged: int) -> tuple[torch.Tensor, ...]:
    """A chunk's tower output as ``[1, P, C]`` per frame (SigLIP) or per temporal patch (Qwen2-VL's
    merged tokens, ``merged`` per patch)."""
    if not qwen2vl:
        return out.last_hidden_state.split(1)
    return out.pooler_output.view(-1, merged, out.pooler_output.shape[-1]).split(1)


def _is_qwen2vl(vision_preset: str) -> bool:
    return vision_preset in QWEN2VL_VISION_PRESETS


def _grid(vision_preset: str) -> tuple[int, int]:
    """Patches per side of a chunk: 27 x 27 for SigLIP at 384 px, 28 x 52 for Qwen2-VL at 392 x 728."""
    if _is_qwen2vl(vision_preset):
        height, width = QWEN2VL_FRAME_SIZES[vision_preset]
        patch = QWEN2VL_VISION_PRESETS[vision_preset]["patch_size"]
        return height // patch, width // patch
    spec = VISION_PRESETS[vision_preset]
    return (spec["image_size"] // spec["patch_size"],) * 2


def vit_tokens(vision_preset: str) -> int:
    """Tokens per chunk in the ViT layers: 729 for SigLIP at 384 px, 1456 for Qwen2-VL at 392 x 728."""
    height, width = _grid(vision_preset)
    return height * width


def pooled_tokens(vision_preset: str) -> int:
    """Tokens per chunk that reach the LLM: after the 2x bilinear pool, 27 x 27 -> 14 x 14 = 196 for
    SigLIP at 384 px; after Qwen2-VL's 2x2 patch merger, 28 x 52 -> 14 x 26 = 364."""
    height, width = _grid(vision_preset)
    return -(-height // 2) * -(-width // 2)


def synthetic_video(n: int, size: int | tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``[n, 3, H, W]`` normalised pixels (``size``: S for S x S, or (H, W)): a fixed random scene, a
    square drifting right, noise."""
    height, width = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    scene = torch.randn(3, height, width, generator=g)
    frames = scene.repeat(n, 1, 1, 1) + 0.05 * torch.randn(n, 3, height, width, generator=g)
    side = min(height, width) // 4
    for t in range(n):
        left = (t * width // 16) % (width - side)
        frames[t, :, side : 2 * side, left : left + side] += 2.0
    return frames


def vision_chunks(
    vision_preset: str, n: int, seed: int = 0, frames: int | None = None
) -> list[dict[str, torch.Tensor]]:
    """``n`` chunks of ``frames`` frames of a synthetic video (default: 1 for SigLIP, 2 for Qwen2-VL),
    each the keyword arguments of one call of the preset's tower: ``pixel_values [F, 3, S, S]``
    (SigLIP); or F / 2 temporal patches of two frames, packed as ``hidden_states [F / 2 * gh * gw,
    3 * 2 * p * p]`` with ``grid_thw [[F / 2, gh, gw]]`` (Qwen2-VL)."""
    if not _is_qwen2vl(vision_preset):
        video = synthetic_video(n * (frames or 1), VISION_PRESETS[vision_preset]["image_size"], seed)
        return [{"pixel_values": chunk} for chunk in video.split(frames or 1)]
    spec = QWEN2VL_VISION_PRESETS[vision_preset]
    tp, p, m = spec["temporal_patch_size"], spec["patch_size"], spec["spatial_merge_size"]
    per_chunk = (frames or tp) // tp  # temporal patches per call
    n *= per_chunk
    video = synthetic_video(tp * n, QWEN2VL_FRAME_SIZES[vision_preset], seed)
    gh, gw = video.shape[2] // p, video.shape[3] // p
    # The 5.24 video processor's order: 2x2 merge windows in raster order, each window's patches in raster
    # order; per patch the channel, the frame within the temporal patch, the pixel row and column.
    patches = video.view(n, tp, 3, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    patches = patches.reshape(n // per_chunk, per_chunk * gh * gw, 3 * tp * p * p)  # patch after patch
    grid = torch.tensor([[per_chunk, gh, gw]])
    return [{"hidden_states": chunk, "grid_thw": grid} for chunk in patches]


def _to(chunk: dict[str, torch.Tensor], device, dtype) -> dict[str, torch.Tensor]:
    """Pixels to ``dtype`` on ``device``; integer grids stay integers."""
    return {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in chunk.items()}


def state_check(
    config: BenchConfig, pruner: STCPruner, tokens: int, width: int, device: torch.device
) -> dict:
    """Bytes of pruner state (``[1, tokens, width]`` chunks, ``memory_window`` set) and of cacher state
    (on the tiny tower: a real-size ViT is too slow for 10,000 frames on a CPU) after 100 chunks and
    after ``state_frames`` chunks."""
    tiny_preset = "qwen2vl-tiny" if _is_qwen2vl(config.vision) else "tiny"  # the same cacher family
    tiny = random_vision_tower(tiny_preset, device=device)
    cacher = STCCacher(update_ratio=config.update_ratio, interval=config.interval).attach(tiny)
    g = torch.Generator(device=device).manual_seed(config.seed)
    inputs = [_to(chunk, device, torch.float32) for chunk in vision_chunks(tiny_preset, 4, config.seed)]
    after = {}
    with torch.inference_mode():
        for chunk in range(1, config.state_frames + 1):
            pruner.compress(torch.randn(1, tokens, width, generator=g, device=device))
            tiny(**inputs[chunk % len(inputs)])
            if chunk in (STATE_CHECK_AFTER, config.state_frames):
                after[chunk] = (pruner.state_nbytes(), cacher.state_nbytes(), _peak_rss_mb())
    cacher.detach()
    first, last = after[min(after)], after[max(after)]
    return {
        "chunks": [min(after), max(after)],
        "pruner_bytes": [first[0], last[0]],
        "tiny_cacher_bytes": [first[1], last[1]],
        "process_peak_rss_mb": [first[2], last[2]],
    }


def environment(device: torch.device) -> dict:
    import transformers

    from stc_cli import __version__

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "device": f"{device.type}: {name}",
        "threads": torch.get_num_threads(),
        "stc": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


class _Timer:
    """Wall time of streamed work, synchronising the device around each chunk, and CUDA peaks."""

    def __init__(self, device: torch.device, *, warmup: int, chunks: int, repeats: int) -> None:
        self.device, self.warmup, self.chunks, self.repeats = device, warmup, chunks, repeats
        self.peaks: dict[str, float] = {}

    def compare(
        self, make_steps: Callable[[], dict[str, Callable[[int], object]]], chunks: int | None = None
    ) -> dict[str, float]:
        """Median over repeats of each step's mean ms per chunk. ``make_steps()`` starts a repeat
        (fresh streams) and returns the steps to compare, each called with the chunk index, ``chunks``
        times (default: the timer's), the first ``warmup`` untimed."""
        runs = [self._interleaved(make_steps, chunks or self.chunks) for _ in range(self.repeats)]
        return {label: statistics.median(run[label] for run in runs) for label in runs[0]}

    def _interleaved(self, make_steps: Callable[[], dict], chunks: int) -> dict[str, float]:
        # Every step on chunk 0, then every step on chunk 1, ...: the settings compared share the
        # machine's state (clocks, caches, neighbours) as closely as a single process allows.
        with torch.inference_mode():  # the untimed set-up too (prefills in make_steps)
            steps = make_steps()
            totals = dict.fromkeys(steps, 0.0)
            for i in range(chunks):
                for label, step in steps.items():
                    if self.device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(self.device)
                        torch.cuda.synchronize(self.device)
                    start = time.perf_counter()
                    step(i)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                        peak = torch.cuda.max_memory_allocated(self.device) / 2**20
                        self.peaks[label] = max(self.peaks.get(label, 0.0), peak)
                    if i >= self.warmup:
                        totals[label] += (time.perf_counter() - start) * 1000
        return {label: total / (chunks - self.warmup) for label, total in totals.items()}

    def peak_mb(self) -> dict:
        """Per-stage CUDA peaks; on CPU only the whole process's peak RSS can be read."""
        return dict(self.peaks) if self.peaks else {"process_rss": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _project_and_pool(features: list[torch.Tensor], llm, seed: int) -> list[torch.Tensor]:
    """LLaVA-OneVision's path to the LLM: a (random) projector to the LLM width, then a bilinear 2x
    downsample of the token grid (27 x 27 -> 14 x 14 = 196). Returns ``[1, P, width]`` per frame."""
    first, width = features[0], llm.config.hidden_size
    g = torch.Generator(device=first.device).manual_seed(seed)
    proj = torch.randn(first.shape[-1], width, generator=g, device=first.device).to(first.dtype)
    proj /= first.shape[-1] ** 0.5
    side = int(first.shape[1] ** 0.5)
    out = []
    with torch.inference_mode():
        for feats in features:
            grid = (feats @ proj).view(1, side, side, width).permute(0, 3, 1, 2)
            pooled = F.interpolate(grid, size=(-(-side // 2),) * 2, mode="bilinear")
            out.append(pooled.flatten(2).transpose(1, 2).contiguous())
    return out


def _rekv_model(llm, block: int, n_local: int):
    """ReKV's memory over ``llm`` (``stc eval --model rekv``'s LLM), one block per frame, after an init
    prompt of ``REKV_INIT_TOKENS`` tokens."""
    from stc_cli.models.rekv_lm import ReKVLanguageModel

    rekv = ReKVLanguageModel(llm, n_local=n_local, block=block, topk=REKV_TOPK)
    rekv.encode(_prompt(llm, 0, REKV_INIT_TOKENS))
    return rekv


def _encoded(llm, frames: list[torch.Tensor], n_local: int):
    """A ReKV memory with ``frames`` streamed into it."""
    rekv = _rekv_model(llm, frames[0].shape[1], n_local)
    for frame in frames:
        rekv.encode(frame)
    return rekv


def _encode_step(rekv, frames: list[torch.Tensor]) -> Callable[[int], None]:
    return lambda i: rekv.encode(frames[i])


def _window_tokens(rekv) -> int:
    """Video tokens in the sliding window of the next frame: ``n_local`` once the init prompt is out."""
    memory = rekv.memory[0]
    return min(memory.local_k.shape[1], memory.length - REKV_INIT_TOKENS)


def _prompt(llm, start: int, length: int) -> torch.Tensor:
    """``[1, length, width]``: embeddings of the token ids ``start...`` (a stand-in for text)."""
    ids = torch.arange(start, start + length, device=llm.device)[None] % llm.config.vocab_size
    return llm.embed_tokens(ids)


def _lm_head(config: BenchConfig, llm) -> torch.nn.Linear:
    """A random LM head at the real vocabulary size (``llm``'s own, small, for the tiny preset)."""
    vocab = LM_HEAD_VOCAB.get(config.llm, llm.config.vocab_size)
    with seeded(config.seed + 1, llm.device):
        head = torch.nn.Linear(llm.config.hidden_size, vocab, bias=False)
    return head.to(llm.dtype).eval()


def _plain_decoder(llm, head, prompt: torch.Tensor) -> Callable[[int], None]:
    """Prefill ``prompt`` into a fresh KV cache; the step generates one token on it."""
    from transformers import DynamicCache

    cache = DynamicCache(config=llm.config)

    def forward(embeds: torch.Tensor) -> torch.Tensor:
        return head(llm(inputs_embeds=embeds, cache=cache, use_cache=True).last_hidden_state[0, -1])

    return _greedy(llm, forward, forward(prompt))


def _greedy(llm, forward: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor) -> Callable:
    """A step that generates one token: the argmax of the latest logits, embedded and fed to ``forward``
    (the logits of the next one). No sampling, and the token stays on the device (no host sync). Ids
    past the small random embedding table wrap: a lookup costs the same whichever row it reads.
    ``step.tokens`` collects the tokens fed back."""
    state, tokens = {"logits": logits}, []

    def step(_i: int) -> None:
        token = state["logits"].argmax(-1).reshape(1, 1) % llm.config.vocab_size
        tokens.append(token)
        state["logits"] = forward(llm.embed_tokens(token))

    step.tokens = tokens
    return step


def _prefill_stream(llm) -> Callable:
    """A step that appends one frame's tokens to a KV cache that grows over the stream."""
    from transformers import DynamicCache

    cache = DynamicCache(config=llm.config)

    def step(tokens: torch.Tensor) -> None:
        llm(inputs_embeds=tokens, cache=cache, use_cache=True)

    return step
