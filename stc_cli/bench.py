"""`stc bench`: STC latency on random-weight models at real sizes, STC on and off side by side.

Frames are streamed one chunk (one frame) at a time, as ReKV + STC does, through:
  ViT (SigLIP preset) stock vs with the cacher -> projector + 2x2 bilinear pool (not timed)
  -> pruner (timed) -> LLM prefill into a growing KV cache, all pooled tokens vs the kept ones.
With a Qwen2-VL preset (LiveCC's tower) a chunk is one temporal patch instead (two frames, packed with
``grid_thw``), and the LLM gets the patch merger's tokens (its output already has the LLM width), so
``--frames`` counts chunks and the pruner and prefill work on merged tokens (364 at 392 x 728 px).
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
from stc_cli.devices import resolve_device, resolve_dtype
from stc_cli.models.presets import (
    LLM_PRESETS,
    QWEN2VL_FRAME_SIZES,
    QWEN2VL_VISION_PRESETS,
    VISION_PRESETS,
    random_language_model,
    random_vision_tower,
)

CPU_DEFAULT_LAYERS = 2
REKV_N_LOCAL, REKV_TOPK, REKV_INIT_TOKENS = 15000, 64, 16  # ReKV's defaults; its init prompt is ~16 tokens
STATE_CHECK_AFTER = 100


def resolve(config: BenchConfig) -> tuple[torch.device, torch.dtype, int | None, int | None]:
    """The device, dtype, ViT depth and LLM depth that ``auto`` and ``None`` stand for here."""
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    layers = config.layers if config.layers is not None or device.type == "cuda" else CPU_DEFAULT_LAYERS
    return device, dtype, layers, config.llm_layers or layers


def run_bench(config: BenchConfig, progress: Callable[[str], None] = lambda _msg: None) -> dict:
    """Run the benchmark and return a JSON-ready dict (see ``docs/benchmarks.md`` for the fields)."""
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
    device, dtype, layers, llm_layers = resolve(config)
    # Built before any model, so that a bad option fails at once.
    cacher = STCCacher(update_ratio=config.update_ratio, interval=config.interval)
    pruner = STCPruner(tokens_per_frame=config.tokens_per_frame)
    state_pruner = STCPruner(tokens_per_frame=config.tokens_per_frame, memory_window=config.memory_window)
    timer = _Timer(device, warmup=config.warmup, chunks=config.warmup + config.frames, repeats=config.repeats)

    progress("ViT: stock vs cacher")
    vit, features = _vit_stage(config, timer, cacher, device, dtype, layers)
    progress("pruner and LLM prefill")
    prune_ms, prefill = _llm_stage(config, timer, pruner, features, device, dtype, llm_layers)
    result = {
        "config": dataclasses.asdict(config),
        "environment": environment(device),
        "dtype": str(dtype).removeprefix("torch."),
        "vit": vit,
        "pruner": {"ms_per_frame": prune_ms, "share_of_stc_vit": prune_ms / vit["stc_ms_per_frame"]},
        "prefill": prefill,
        "peak_memory_mb": timer.peak_mb(),
    }
    if config.state_frames:
        progress(f"state over {config.state_frames} chunks")
        result["state"] = state_check(config, state_pruner, prefill["full_tokens"], prefill["width"], device)
    return result


def _vit_stage(
    config: BenchConfig, timer: _Timer, cacher: STCCacher, device, dtype, layers
) -> tuple[dict, list[torch.Tensor]]:
    stock = random_vision_tower(config.vision, layers, dtype=dtype, device=device, seed=config.seed)
    patched = copy.deepcopy(stock)  # the same weights; only this copy gets the cacher
    cacher.attach(patched)
    chunks = [_to(chunk, device, dtype) for chunk in vision_chunks(config.vision, timer.chunks, config.seed)]
    qwen2vl = _is_qwen2vl(config.vision)
    features: list[torch.Tensor] = []  # the STC pass's output, fed to the pruner

    def llm_input(out) -> torch.Tensor:  # [1, P, C]: the merged tokens (Qwen2-VL) or the ViT's (SigLIP)
        return out.pooler_output.unsqueeze(0) if qwen2vl else out.last_hidden_state

    def steps():
        cacher.reset()
        features.clear()
        return {
            "vit_full": lambda i: stock(**chunks[i]),
            "vit_stc": lambda i: features.append(llm_input(patched(**chunks[i]))),
        }

    ms = timer.compare(steps)
    summary = {
        "preset": config.vision,
        "layers": stock.config.num_hidden_layers,
        "tokens_per_frame": vit_tokens(config.vision),  # per chunk: what the cacher works on
        "frames_per_chunk": 2 if qwen2vl else 1,
        "grid_thw": chunks[0]["grid_thw"][0].tolist() if qwen2vl else None,
        "full_ms_per_frame": ms["vit_full"],
        "stc_ms_per_frame": ms["vit_stc"],
        "ratio": ms["vit_stc"] / ms["vit_full"],
        "cacher_state_bytes": cacher.state_nbytes(),
    }
    cacher.detach()  # lets the towers go before the LLM is built
    return summary, features


def _llm_stage(
    config: BenchConfig, timer: _Timer, pruner: STCPruner, features, device, dtype, layers
) -> tuple[float, dict]:
    llm = random_language_model(config.llm, layers, dtype=dtype, device=device, seed=config.seed)
    qwen2vl = _is_qwen2vl(config.vision)
    # Qwen2-VL's patch merger is its projector and 2x2 pool: its tokens go to the LLM as they are.
    pooled = features if qwen2vl else _project_and_pool(features, llm.config.hidden_size, seed=config.seed)
    kept: list[torch.Tensor] = []

    def prune_steps():
        pruner.reset()
        kept.clear()
        return {"pruner": lambda i: kept.append(pruner.compress(pooled[i])[0])}

    def prefill_steps():
        full_stream, pruned_stream = _prefill_stream(llm), _prefill_stream(llm)
        full_rekv, pruned_rekv = _rekv_stream(llm, pooled[0].shape[1]), _rekv_stream(llm, kept[0].shape[1])
        return {
            "prefill_full": lambda i: full_stream(pooled[i]),
            "prefill_pruned": lambda i: pruned_stream(kept[i]),
            "rekv_full": lambda i: full_rekv(pooled[i]),
            "rekv_pruned": lambda i: pruned_rekv(kept[i]),
        }

    prune_ms = timer.compare(prune_steps)["pruner"]
    ms = timer.compare(prefill_steps)
    prefill = {
        "preset": config.llm,
        "layers": llm.config.num_hidden_layers,
        "width": llm.config.hidden_size,
        "full_tokens": pooled[0].shape[1],
        "full_tokens_from": "patch merger" if qwen2vl else "bilinear pool",
        "kept_tokens": config.tokens_per_frame,
        "full_ms_per_frame": ms["prefill_full"],
        "pruned_ms_per_frame": ms["prefill_pruned"],
        "ratio": ms["prefill_pruned"] / ms["prefill_full"],
        "rekv_full_ms_per_frame": ms["rekv_full"],
        "rekv_pruned_ms_per_frame": ms["rekv_pruned"],
        "rekv_ratio": ms["rekv_pruned"] / ms["rekv_full"],
    }
    return prune_ms, prefill


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


def vision_chunks(vision_preset: str, n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` chunks of a synthetic video, each the keyword arguments of one call of the preset's tower:
    one frame, ``pixel_values [1, 3, S, S]`` (SigLIP); or one temporal patch of two frames, packed as
    ``hidden_states [gh * gw, 3 * 2 * p * p]`` with ``grid_thw [[1, gh, gw]]`` (Qwen2-VL)."""
    if not _is_qwen2vl(vision_preset):
        frames = synthetic_video(n, VISION_PRESETS[vision_preset]["image_size"], seed)
        return [{"pixel_values": frame} for frame in frames.split(1)]
    spec = QWEN2VL_VISION_PRESETS[vision_preset]
    tp, p, m = spec["temporal_patch_size"], spec["patch_size"], spec["spatial_merge_size"]
    frames = synthetic_video(tp * n, QWEN2VL_FRAME_SIZES[vision_preset], seed)
    gh, gw = frames.shape[2] // p, frames.shape[3] // p
    # The 5.24 video processor's order: 2x2 merge windows in raster order, each window's patches in raster
    # order; per patch the channel, the frame within the temporal patch, the pixel row and column.
    patches = frames.view(n, tp, 3, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    patches = patches.reshape(n, gh * gw, 3 * tp * p * p)
    grid = torch.tensor([[1, gh, gw]])
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

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
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

    def compare(self, make_steps: Callable[[], dict[str, Callable[[int], object]]]) -> dict[str, float]:
        """Median over repeats of each step's mean ms per chunk. ``make_steps()`` starts a repeat
        (fresh streams) and returns the steps to compare, each called with the chunk index."""
        runs = [self._interleaved(make_steps()) for _ in range(self.repeats)]
        return {label: statistics.median(run[label] for run in runs) for label in runs[0]}

    def _interleaved(self, steps: dict[str, Callable[[int], object]]) -> dict[str, float]:
        # Every step on chunk 0, then every step on chunk 1, ...: the settings compared share the
        # machine's state (clocks, caches, neighbours) as closely as a single process allows.
        totals = dict.fromkeys(steps, 0.0)
        with torch.inference_mode():
            for i in range(self.chunks):
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
        return {label: total / (self.chunks - self.warmup) for label, total in totals.items()}

    def peak_mb(self) -> dict:
        """Per-stage CUDA peaks; on CPU only the whole process's peak RSS can be read."""
        return dict(self.peaks) if self.peaks else {"process_rss": _peak_rss_mb()}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or "unknown CPU"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _project_and_pool(features: list[torch.Tensor], width: int, seed: int) -> list[torch.Tensor]:
    """LLaVA-OneVision's path to the LLM: a (random) projector to the LLM width, then a bilinear 2x
    downsample of the token grid (27 x 27 -> 14 x 14 = 196). Returns ``[1, P, width]`` per frame."""
    first = features[0]
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


def _rekv_stream(llm, block: int) -> Callable:
    """The same through ReKV's memory (``stc eval --model rekv``'s LLM), one block per frame, after an
    init prompt of ``REKV_INIT_TOKENS`` tokens."""
    from stc_cli.models.rekv_lm import ReKVLanguageModel

    rekv = ReKVLanguageModel(llm, n_local=REKV_N_LOCAL, block=block, topk=REKV_TOPK)
    init_ids = torch.arange(REKV_INIT_TOKENS, device=llm.device)[None] % llm.config.vocab_size
    rekv.encode(llm.embed_tokens(init_ids))
    return rekv.encode


def _prefill_stream(llm) -> Callable:
    """A step that appends one frame's tokens to a KV cache that grows over the stream."""
    from transformers import DynamicCache

    cache = DynamicCache(config=llm.config)

    def step(tokens: torch.Tensor) -> None:
        llm(inputs_embeds=tokens, cache=cache, use_cache=True)

    return step
