"""``stc eval`` as a library call: an ``EvalConfig`` -> a protocol and its queries, a model -> the runner
-> a run folder.

Under ``torchrun`` each process (rank) builds the model on its own GPU and answers its share of the
videos; rank 0 merges the shards (``distributed.py``).
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from stc_cli import __version__, benchmarks, models, protocols
from stc_cli.benchmarks.base import Query
from stc_cli.configs import EvalConfig
from stc_cli.datasets.datadir import benchmark_data_dir, resolve_data_dir
from stc_cli.evaluation.distributed import Shard
from stc_cli.evaluation.runner import RunSummary, run
from stc_cli.protocols import Protocol

PRUNER_MEMORIES = ("video", "process")
# --compress: STC, nothing, or a baseline: ToMe in the ViT; VidCom², VisionZip or DTD in the pruner's
# place; the last N frames only (lastn)
COMPRESSIONS = ("stc", "none", "tome", "vidcom2", "visionzip", "dtd", "lastn")
# the models each baseline runs on (stc and none run on every model)
COMPRESSION_MODELS = {
    "tome": ("rekv",),
    "vidcom2": ("rekv",),
    "visionzip": ("rekv",),
    "dtd": ("rekv", "livecc", "qwen3vl", "qwen25vl"),
    "lastn": ("rekv",),
}


@dataclass(frozen=True)
class Plan:
    queries: list[Query]  # as the protocol puts them to the model
    video_root: Path
    protocol: Protocol
    schedule: str  # stream or clip
    output: Path
    notes: tuple[str, ...] = ()  # what the user should know, e.g. which data is used


def protocol_of(config: EvalConfig) -> Protocol:
    """The named protocol of ``config`` (its pair's default unless ``--protocol``) with the flags that
    override single settings applied; raises ValueError for an unknown or unfit name or value."""
    models.check(config.model)
    benchmarks.get(config.bench)  # an unknown --bench fails here, listing the known ones
    _check_settings(config)
    protocol = protocols.resolve(config.model, config.bench, config.protocol)
    if hasattr(protocol, "recent_frames"):  # SimpleStream's N is --last-frames
        protocol = protocol.override(recent_frames=config.last_frames)
    decoding = None
    if config.answer_mode is not None:
        if config.model != "livecc" or config.answer_mode not in ("generate", "logits"):
            raise ValueError(
                f"--answer-mode must be generate or logits, with --model livecc; got {config.answer_mode!r}"
            )
        logits = "candidate-logits" if protocol.template == "livecc-clip" else "option-logits"
        decoding = "greedy" if config.answer_mode == "generate" else logits
    protocol = protocol.override(
        fps=config.fps, schedule=config.schedule, max_new_tokens=config.max_new_tokens, decoding=decoding
    )
    if protocol.sampling != "stride" and protocol.schedule == "stream":
        raise ValueError(f"--schedule stream: {protocol.name} picks each query's frames over its own window")
    if protocol.sampling == "dynamic_fps1" and "fps" in protocol.changed:
        raise ValueError(f"--fps: {protocol.name} takes int(duration + 1) frames of each clip (dynamic_fps1)")
    return protocol


def plan(config: EvalConfig) -> Plan:
    """Protocol, queries, video folder, schedule and output folder of ``config``; raises ValueError or
    MetadataError (naming the file and record) before any model is built."""
    protocol = protocol_of(config)
    module = benchmarks.get(config.bench)
    data_dir, note = benchmark_data_dir(module, resolve_data_dir(config.data_dir))
    notes = [note] if note else []
    if protocol.template in ("livecc-turns", "qwenvl-turns") and config.max_cache_tokens is None:
        notes.append(
            f"{protocol.name} keeps every chunk of a video in its KV cache, as LiveCC does: up to about "
            "80 GB per hour of video at 7B with STC off; --max-cache-tokens N bounds it"
        )
    if config.model_path == "demo" and config.bench != "demo":
        notes.append(
            f"--model-path demo knows only the demo's questions: its answers on {config.bench} mean nothing"
        )
    queries = module.load_queries(data_dir)
    if config.tasks:
        unknown = sorted(set(config.tasks) - set(module.TASKS))
        if unknown:
            raise ValueError(
                f"--tasks: {config.bench} has no task {', '.join(unknown)}; known: {', '.join(module.TASKS)}"
            )
        queries = [q for q in queries if q.task in config.tasks]
    if config.limit is not None:
        if config.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {config.limit}")
        queries = queries[: config.limit]
    queries = [protocol.prepare(q) for q in queries]
    video_root = data_dir / module.FOLDER
    schedule = protocol.schedule
    if schedule == "auto":
        schedule = "stream" if all(q.window[0] == 0 for q in queries) else "clip"
    if schedule == "clip" and protocol.window == "benchmark":
        queries = [_precut(q, video_root) for q in queries]
    from stc_cli.devices import resolve_device, resolve_dtype

    shard = Shard.from_env()
    device = resolve_device(config.device, shard.local_rank, shard.world)  # a bad --device fails here,
    resolve_dtype(config.dtype, device)  # and a bad --dtype
    return Plan(queries, video_root, protocol, schedule, _output(config, protocol), tuple(notes))


def _output(config: EvalConfig, protocol: Protocol) -> Path:
    """``--output``, else ``runs/<model>-<bench>-<variant>``, the protocol named unless it is the default."""
    if config.output:
        return Path(config.output)
    default = protocols.resolve(config.model, config.bench).name
    named = "" if protocol.name == default else f"-{protocol.name}"
    return Path(f"runs/{config.model}-{config.bench}{named}-{config.variant}")


def _check_settings(config: EvalConfig) -> None:
    """Options out of range fail here, before minutes of model loading: none is accepted and then ignored."""
    if config.pruner_memory not in PRUNER_MEMORIES or (
        config.pruner_memory == "process" and config.model != "rekv"
    ):
        raise ValueError(
            f"--pruner-memory must be video (or process, with --model rekv), got {config.pruner_memory!r}"
        )
    if config.compress not in COMPRESSIONS:
        raise ValueError(f"--compress must be one of {', '.join(COMPRESSIONS)}, got {config.compress!r}")
    if config.model not in COMPRESSION_MODELS.get(config.compress, (config.model,)):
        models = ", ".join(COMPRESSION_MODELS[config.compress])
        raise ValueError(f"--compress {config.compress} runs with --model {models} only, not {config.model}")
    if config.dtd_threshold is not None and config.compress != "dtd":
        raise ValueError("--dtd-threshold applies to --compress dtd only")
    if config.dtd_threshold is not None and not -1 <= config.dtd_threshold <= 1:
        raise ValueError(f"--dtd-threshold is a cosine in [-1, 1], got {config.dtd_threshold}")
    if config.tome_r is not None and config.compress != "tome":
        raise ValueError("--tome-r applies to --compress tome only")
    if config.tome_r is not None and config.tome_r < 0:
        raise ValueError(f"--tome-r must be >= 0, got {config.tome_r}")
    stc_pruner = config.stc and config.compress == "stc" and config.pruner  # as STCSettings.from_config
    if config.pruner_window is not None and not stc_pruner:
        raise ValueError("--pruner-window applies to STC-Pruner only (--compress stc, the pruner on)")
    if config.encode_chunk != 1 and config.model != "rekv":
        raise ValueError(f"--encode-chunk runs with --model rekv only, not {config.model}")
    if config.compile and (config.model != "rekv" or config.compress == "tome"):
        raise ValueError("--compile runs with --model rekv, on the stock tower or STC-Cacher (not ToMe)")
    if config.llm_graphs and config.model != "rekv":
        raise ValueError(f"--llm-graphs runs with --model rekv only, not {config.model}")
    if config.max_blocks is not None and config.model != "rekv":
        raise ValueError(f"--max-blocks runs with --model rekv only, not {config.model}")
    if config.update_ratio is not None and not 0 < config.update_ratio <= 1:
        raise ValueError(f"--update-ratio must be in (0, 1], got {config.update_ratio}")
    if config.fps is not None and not math.isfinite(config.fps):
        raise ValueError(f"--fps must be a finite number of frames per second, got {config.fps}")
    counts = {
        "--cache-interval": config.cache_interval,
        "--tokens-per-frame": config.tokens_per_frame,
        "--n-local": config.n_local,
        "--topk": config.topk,
        "--max-new-tokens": config.max_new_tokens,
        "--max-cache-tokens": config.max_cache_tokens,
        "--last-frames": config.last_frames,
        "--encode-chunk": config.encode_chunk,
        "--pruner-window": config.pruner_window,
        "--max-blocks": config.max_blocks,
    }
    for flag, value in counts.items():
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if config.max_consecutive_errors < 0:
        raise ValueError(
            f"--max-consecutive-errors must be >= 0 (0: never stop), got {config.max_consecutive_errors}"
        )


def _precut(query: Query, video_root: Path) -> Query:
    """OVO-Bench's clip schedule reads the pre-cut clip where it was downloaded, else cuts the source."""
    clip = query.extra.get("clip")
    return replace(query, video=clip) if clip and (video_root / clip).is_file() else query


def load_model(config: EvalConfig, protocol: Protocol, shard: Shard | None = None):
    """``(model, device, dtype)``: ``config.model`` built under ``protocol`` on the device ``--device``
    resolves to (this process's GPU under torchrun), in ``--dtype`` (``auto``: the model's own on CUDA)."""
    import torch

    from stc_cli.devices import resolve_device, resolve_dtype

    shard = shard or Shard.from_env()
    device = resolve_device(config.device, shard.local_rank, shard.world)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # kernels and allocations of libraries that use the current device
    dtype = resolve_dtype(config.dtype, device, models.CUDA_DTYPES[config.model])
    return models.build(config, protocol, device, dtype), device, dtype


def evaluate(
    config: EvalConfig,
    the_plan: Plan | None = None,
    progress: Callable[[dict], None] = lambda _record: None,
    on_start: Callable[[int], None] = lambda _count: None,
    shard: Shard | None = None,
) -> RunSummary:
    """Run ``config`` (its ``plan`` unless given) and return the summary; the records are in
    ``<output>/samples.jsonl``."""
    import torch

    from stc_cli.devices import cpu_name

    shard = shard or Shard.from_env()
    the_plan = the_plan or plan(config)
    model, device, dtype = load_model(config, the_plan.protocol, shard)
    environment = {
        "stc": __version__,
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
    }
    return run(
        model,
        the_plan.queries,
        the_plan.video_root,
        the_plan.output,
        schedule=the_plan.schedule,
        sampling=the_plan.protocol.sampling_rule(),
        read=the_plan.protocol.read,
        settings=run_settings(config, the_plan, model.describe(), device),
        selection={"limit": config.limit, "tasks": list(config.tasks), "queries": len(the_plan.queries)},
        environment=environment,
        overwrite=config.overwrite,
        max_consecutive_errors=config.max_consecutive_errors,
        progress=progress,
        on_start=on_start,
        shard=shard,
    )


# Options that pick queries or say where to write, not how to answer: a rerun may change them and resume.
NOT_SETTINGS = (
    "overwrite",
    "limit",
    "tasks",
    "output",
    "max_consecutive_errors",
    "device",
    "dtype",
    "data_dir",
)


def run_settings(config: EvalConfig, the_plan: Plan, model: dict, device) -> dict:
    """What moves a score or a timing: a rerun into the same folder must match it. ``--device`` and
    ``--dtype`` count as what they resolve to (``model`` holds the dtype), the data as its folder."""
    kept = {key: value for key, value in asdict(config).items() if key not in NOT_SETTINGS}
    kept.update(device=device.type, videos=str(the_plan.video_root.resolve()))
    return {"config": kept, "protocol": the_plan.protocol.settings(), "model": model}


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
