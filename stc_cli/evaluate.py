"""``stc eval`` as a library call: an ``EvalConfig`` -> queries, a model -> the runner -> a run folder.

Under ``torchrun`` each process (rank) builds the model on its own GPU and answers its share of the
videos; rank 0 merges the shards (``distributed.py``).
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from stc_cli import __version__, benchmarks, models
from stc_cli.benchmarks.base import Query
from stc_cli.configs import EvalConfig
from stc_cli.datadir import resolve_data_dir
from stc_cli.distributed import Shard
from stc_cli.runner import PROTOCOLS, RunSummary, run


@dataclass(frozen=True)
class Plan:
    queries: list[Query]
    video_root: Path
    protocol: str
    fps: float
    output: Path
    note: str = ""  # something the user should know, e.g. which data is used


def plan(config: EvalConfig) -> Plan:
    """Queries, video folder, protocol and output folder of ``config``; raises ValueError or
    MetadataError (naming the file and record) before any model is built."""
    module = benchmarks.get(config.bench)
    fps = config.fps or models.default_fps(config.model)  # an unknown --model fails here, before reading
    data_dir, note = resolve_data_dir(config.data_dir), ""
    if config.bench == "demo" and not (data_dir / module.FOLDER / module.METADATA).is_file():
        data_dir, note = module.PACKAGED.parent, "demo: using the copy shipped in the package"
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
    _check_numbers(config)
    video_root = data_dir / module.FOLDER
    protocol = config.protocol
    if protocol == "auto":
        protocol = "stream" if all(q.window[0] == 0 for q in queries) else "clip"
    elif protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be auto, {' or '.join(PROTOCOLS)}, got {protocol!r}")
    if protocol == "clip":
        queries = [_precut(q, video_root) for q in queries]
    from stc_cli.devices import resolve_device, resolve_dtype

    resolve_dtype(config.dtype, resolve_device(config.device))  # a bad --device or --dtype fails here
    output = Path(config.output or f"runs/{config.model}-{config.bench}-{config.variant}")
    return Plan(queries, video_root, protocol, fps, output, note)


def _check_numbers(config: EvalConfig) -> None:
    """Numeric options out of range fail here, before minutes of model loading."""
    if config.fps is not None and config.fps <= 0:
        raise ValueError(f"--fps must be > 0, got {config.fps}")
    if config.answer_mode not in ("generate", "logits") or (
        config.answer_mode == "logits" and config.model == "rekv"
    ):
        raise ValueError(
            f"--answer-mode must be generate (or logits, with --model livecc), got {config.answer_mode!r}"
        )
    if not 0 < config.update_ratio <= 1:
        raise ValueError(f"--update-ratio must be in (0, 1], got {config.update_ratio}")
    counts = {
        "--cache-interval": config.cache_interval,
        "--tokens-per-frame": config.tokens_per_frame or 1,
        "--n-local": config.n_local,
        "--topk": config.topk,
        "--max-new-tokens": config.max_new_tokens or 1,
        "--max-cache-tokens": config.max_cache_tokens or 1,
    }
    for flag, value in counts.items():
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")


def _precut(query: Query, video_root: Path) -> Query:
    """OVO-Bench's clip protocol reads the pre-cut clip where it was downloaded, else cuts the source."""
    clip = query.extra.get("clip")
    return replace(query, video=clip) if clip and (video_root / clip).is_file() else query


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

    from stc_cli.devices import resolve_device, resolve_dtype

    shard = shard or Shard.from_env()
    the_plan = the_plan or plan(config)
    device = resolve_device(config.device, local_rank=shard.local_rank)
    model = models.build(config, device, resolve_dtype(config.dtype, device))
    # what moves a score or a timing; a rerun into the same folder must match it (environment aside)
    settings = {
        "config": {key: value for key, value in asdict(config).items() if key != "overwrite"},
        "model": model.describe(),
    }
    environment = {
        "stc": __version__,
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
    }
    return run(
        model,
        the_plan.queries,
        the_plan.video_root,
        the_plan.output,
        protocol=the_plan.protocol,
        fps=the_plan.fps,
        settings=settings,
        environment=environment,
        overwrite=config.overwrite,
        progress=progress,
        on_start=on_start,
        shard=shard,
    )


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
