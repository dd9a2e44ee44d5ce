"""One typed, frozen config per command: the CLI builds it, the library runs it, results record it.

Kept free of heavy imports so that the CLI can take its defaults from here and still start fast.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchConfig:
    vision: str = "siglip-so400m-384"  # or a Qwen2-VL tower: then a chunk is a temporal patch (2 frames)
    llm: str = "qwen2-7b"
    layers: int | None = None  # cut both models to N layers; None: full depth on CUDA, 2 on CPU
    llm_layers: int | None = None  # the LLM's depth when it should differ from ``layers``
    frames: int = 8  # timed chunks per pass (even, so reference and selective chunks are balanced)
    warmup: int = 2
    repeats: int = 3
    update_ratio: float = 0.25
    interval: int = 2
    tokens_per_frame: int = 60
    memory_window: int = 64  # for the state check
    state_frames: int = 1_000  # chunks streamed through the pruner and a tiny cacher; 0 skips it
    # frames per ViT call: SigLIP a batch, Qwen2-VL N / 2 temporal patches; None: 1 (SigLIP), 2 (Qwen2-VL)
    frames_per_chunk: int | None = None
    long_stream: bool = False  # also time ReKV prefill with its window full (streams untimed frames first)
    n_local: int = 15_000  # ReKV's sliding window in tokens, for every ReKV row
    decode_tokens: int = 16  # greedy tokens timed per answer; 0 skips the decoding rows
    compress: tuple[str, ...] = ()  # baselines timed beside STC at its budget: tome, vidcom2, visionzip, dtd
    streamforest: int = 0  # frames streamed through StreamForest's memory, full vs pruned; 0 skips it
    dispider: int = 0  # frames through Dispider's CLIP tower (cacher) and reaction prefill (pruner); 0 skips
    cuda_graphs: bool = False  # replay the ViT sides from CUDA graphs (CUDA only)
    llm_graphs: bool = False  # the LLM rows from CUDA graphs (ring buffers, static KV caches; CUDA only)
    compile: bool = False  # the stock and STC ViT layers through torch.compile, the same for both
    device: str = "auto"
    dtype: str = "auto"  # float16 on CUDA, float32 on CPU
    seed: int = 0


@dataclass(frozen=True)
class EvalConfig:
    model: str = "rekv"
    bench: str = "demo"
    model_path: str | None = None  # hub id, folder or random:<preset>; None: the model's released checkpoint
    data_dir: str | None = None  # None: $STC_DATA_DIR, else ~/.cache/stc
    tasks: tuple[str, ...] = ()  # empty: all of the benchmark's tasks
    limit: int | None = None  # the first N queries (after --tasks)
    protocol: str | None = None  # a named protocol (stc_cli/protocols); None: the pair's default
    # overrides of single protocol settings; None keeps the protocol's
    fps: float | None = None
    schedule: str | None = None  # stream, clip or auto (stream where every window starts at 0)
    max_new_tokens: int | None = None
    answer_mode: str | None = None  # LiveCC: generate, or logits (the answer read from candidate logits)
    output: str | None = None  # None: runs/<model>-<bench>-<variant>
    # stc (the parts --cacher/--pruner say), none, or a baseline: tome, vidcom2, visionzip, dtd, lastn
    compress: str = "stc"
    last_frames: int = 4  # --compress lastn: the frames an answer sees (SimpleStream's N)
    dtd_threshold: float | None = None  # --compress dtd: drop cosine > it; None: keep --tokens-per-frame
    tome_r: int | None = None  # --compress tome: tokens merged per layer; None: leave STC's share
    encode_chunk: int = 1  # ReKV: frames per ViT call and per prefill (offline throughput mode)
    cuda_graphs: bool = True  # ReKV on CUDA: replay the vision tower from CUDA graphs (both sides)
    llm_graphs: bool = False  # ReKV on CUDA: each frame's prefill from CUDA graphs (experimental)
    compile: bool = False  # ReKV: the vision tower's layers through torch.compile (both sides)
    stc: bool = True  # False turns both parts off
    cacher: bool = True
    pruner: bool = True
    update_ratio: float | None = None  # None: the model's default (0.25)
    cache_interval: int | None = None  # None: the model's default (2; Dispider 4, as STC runs it)
    tokens_per_frame: int | None = None  # None: the model's default (60 of LLaVA-OV's 196)
    pruner_memory: str = "video"  # or process: kept across videos, as released (order-dependent)
    pruner_window: int | None = None  # pruner: chunk means in its temporal anchor; None: all, as released
    n_local: int = 15000  # ReKV sliding window, tokens
    topk: int = 64  # ReKV frames retrieved per question
    max_blocks: int | None = None  # ReKV: keep only the last N frames' blocks for retrieval (not upstream)
    max_cache_tokens: int | None = None  # LiveCC: evict the oldest chunks past this many (not upstream)
    device: str = "auto"
    dtype: str = "auto"
    overwrite: bool = False
    max_consecutive_errors: int = 20  # stop a run whose model or data is broken; 0: never

    @property
    def variant(self) -> str:
        """stc, cacher, pruner or base: which STC parts are on; or the baseline compression's name."""
        if self.compress not in ("stc", "none"):
            return self.compress
        on = self.stc and self.compress == "stc"
        cacher, pruner = on and self.cacher, on and self.pruner
        return {(True, True): "stc", (True, False): "cacher", (False, True): "pruner"}.get(
            (cacher, pruner), "base"
        )


@dataclass(frozen=True)
class StreamConfig:
    """``stc stream``: a live source, how it is played and the questions put to it; the model, its
    checkpoint, protocol, ``--fps`` and STC flags as ``stc eval`` takes them (``model.bench`` names the
    protocol table live mode uses: StreamingBench's, stc-online for rekv and livecc-stream for livecc)."""

    source: str = ""  # a video file, an http(s):// or rtsp:// URL, or a camera (/dev/video0)
    model: EvalConfig = EvalConfig(bench="streamingbench")
    speed: float | None = None  # a file: 1 real time, 2 twice as fast, 0 as fast as the model goes; None: 1
    when_behind: str = (
        "drop"  # drop (skip the oldest waiting frames, counted) or queue (every frame, lag grows)
    )
    asks: tuple[str, ...] = ()  # --ask "12.5: question | A. option | B. option"
    questions: str | None = None  # --questions FILE.jsonl
    stdin: bool = True  # lines typed on stdin are questions asked at the current stream time
    duration: float | None = None  # stop after this many stream seconds; None: at the source's end
    json_lines: bool = False  # --json: JSON-lines events on stdout
    log_frames: bool = False  # --log-frames: a frame event per frame (with --json)
    timeout: float = 10.0  # seconds to open, or wait for data from, a network source or camera
    reconnect: int = 3  # a network source or camera that drops is opened again this many times; 0: off
    reconnect_wait: float = 1.0  # seconds before the first attempt, doubling
