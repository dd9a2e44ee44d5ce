"""The eval loop: queries -> a model -> one record per query in ``samples.jsonl``, flushed as it goes.

Schedules:
- ``stream``: each video is decoded once and its queries answered in time order on a growing memory;
  each record carries the cost of the frames added since the previous query of its video.
- ``clip``: a fresh memory per query, holding only its window.
A model that answers from its memory alone gives both the same answers.

A record holds the query, the answer as the protocol reads it (``response``) and the model's whole
output (``full_response``), the text prefilled after the visual memory (``model_input``) and the one
that retrieved frames (``retrieval_input``), the times of the frames the memory held (``frame_times``),
the cost per stage (``timings_ms``) and token counts (``counts``).

The run folder holds ``samples.jsonl`` (the resume state: a rerun skips the ids already written) and
``run.json`` (the settings; a rerun with other settings is refused unless ``overwrite``). A query whose
video is missing or broken, or whose model call fails, is written with its ``error``; the run goes on.

Under torchrun each rank answers its share of the videos into ``shards/`` (each shard resumes on its
own) and rank 0 merges them into ``samples.jsonl``, the same file a one-process run writes: see
``distributed.py``. The number of processes is a setting: a run resumes only with as many.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from stc_cli import distributed
from stc_cli.benchmarks.base import Query
from stc_cli.distributed import Shard
from stc_cli.models.base import Answer, Step, VideoModel, timed
from stc_cli.video import Sampling, VideoError, VideoFrames

SCHEDULES = ("stream", "clip")
DECODE_BATCH = 32  # frames decoded at a time: host memory stays bounded whatever the video's length
_HOST = torch.device("cpu")  # decoding runs on the host: timing it waits for no GPU


@dataclass
class RunSummary:
    output: Path
    n_queries: int
    n_skipped: int  # written by an earlier run
    n_written: int
    n_errors: int


def run(
    model: VideoModel,
    queries: list[Query],
    video_root: Path,
    output: Path,
    *,
    schedule: str = "stream",
    sampling: Sampling = Sampling(1.0),  # noqa: B008 (frozen)
    read: Callable[[str], str] = lambda response: response,
    settings: dict | None = None,
    environment: dict | None = None,
    overwrite: bool = False,
    progress: Callable[[dict], None] = lambda _record: None,
    on_start: Callable[[int], None] = lambda _count: None,
    shard: Shard = Shard(),  # noqa: B008 (frozen)
) -> RunSummary:
    """Answer every query not yet in ``output/samples.jsonl``; videos are read under ``video_root``.
    Frames are taken by ``sampling``; ``read`` gives the answer a scorer reads from a response.
    ``settings`` must match on a rerun; ``environment`` (versions, machine) is recorded, not checked.
    ``on_start`` hears how many records this process is about to write, ``progress`` each record.

    With ``shard.world > 1`` this process answers the queries of its share of the videos and its summary
    covers them; rank 0 then waits for the other ranks, merges, and its summary covers the whole run.

    Raises ValueError for an unknown schedule, a stream run over windows that do not start at 0, or an
    output folder written with other settings; TimeoutError (rank 0) when another rank stops writing.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if schedule == "stream" and any(q.window[0] > 0 for q in queries):
        raise ValueError("the stream schedule needs windows that start at 0: use --schedule clip")
    output.mkdir(parents=True, exist_ok=True)
    header = {"settings": settings or {}, "schedule": schedule, "world": shard.world}
    resuming = _claim(output, header, overwrite, shard)
    if shard.rank == 0 and environment is not None:  # this launch's
        _write_json(output / "run.json", {**_read_json(output / "run.json"), "environment": environment})
    by_video: dict[str, list[Query]] = {}
    for query in queries:
        by_video.setdefault(query.video, []).append(query)
    videos = list(by_video)
    shares = [
        [q for v in Shard(r, shard.world).take(videos) for q in by_video[v]] for r in range(shard.world)
    ]
    done = finished_ids(shard.samples(output)) | (_ids_elsewhere(output, shard) if resuming else set())
    mine = {video: by_video[video] for video in shard.take(videos)}
    on_start(sum(q.id not in done for group in mine.values() for q in group))  # what this process will write
    replay = _stream if schedule == "stream" else _clip

    def answer_all(path: Path, group: list[Query]) -> Iterator[dict]:
        return replay(model, path, group, sampling, read, done)

    alive = distributed.heartbeat(shard, output) if shard.world > 1 else contextlib.nullcontext()
    with alive:
        counts = _answer(answer_all, mine, video_root, shard.samples(output), done, progress)
    if shard.world > 1:
        counts = _gather(output, shard, header, shares, videos, counts)
    if shard.rank == 0:
        _write_json(output / "run.json", {**_read_json(output / "run.json"), "finished": _now()})
    return RunSummary(output, len(queries) if shard.rank == 0 else len(shares[shard.rank]), **counts)


def _answer(
    answer_all: Callable[[Path, list[Query]], Iterator[dict]],
    by_video: dict[str, list[Query]],
    video_root: Path,
    samples: Path,
    done: set[str],
    progress: Callable[[dict], None],
) -> dict[str, int]:
    """Append a record to ``samples`` for each query (grouped by video) not in ``done``, as
    ``answer_all(video path, its queries)`` yields them; return RunSummary's counts."""
    written = errors = 0
    with open(samples, "a", encoding="utf-8") as sink:
        for video, group in by_video.items():
            if all(q.id in done for q in group):
                continue
            for record in answer_all(video_root / video, group):
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                written += 1
                errors += record["error"] is not None
                progress(record)
    skipped = sum(q.id in done for group in by_video.values() for q in group)
    return {"n_skipped": skipped, "n_written": written, "n_errors": errors}


def _ids_elsewhere(output: Path, shard: Shard) -> set[str]:
    """Ids in the other ranks' shards, read as they are written (a cut last line is passed over): a rerun
    over other queries can give a video to another rank than the one that answered it before."""
    ids = set()
    others = [Shard(rank, shard.world).samples(output) for rank in range(shard.world) if rank != shard.rank]
    for path in (path for path in others if path.is_file()):
        for line in path.read_text("utf-8").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                ids.add(json.loads(line)["id"])
    return ids


def _gather(
    output: Path, shard: Shard, header: dict, shares: list[list[Query]], videos: list[str], counts: dict
) -> dict[str, int]:
    """Mark this shard done; on rank 0, wait for every rank's, merge the shards in the order of
    ``videos``, and return the counts of all ranks added up."""
    keys = [distributed.done_key(shard.launch, header, [q.id for q in share]) for share in shares]
    distributed.mark_done(shard, output, keys[shard.rank], counts)
    if shard.rank != 0:
        return counts
    markers = distributed.wait_for_ranks(output, keys)
    parts = [Shard(r, shard.world).samples(output) for r in range(shard.world)]
    distributed.merge(parts, output / "samples.jsonl", videos)
    return {name: sum(marker[name] for marker in markers) for name in counts}


def finished_ids(samples: Path) -> set[str]:
    """Ids already in ``samples``. A last line cut short by a crash is dropped from the file."""
    if not samples.is_file():
        return set()
    lines = samples.read_text(encoding="utf-8").splitlines(keepends=True)
    ids = set()
    for number, line in enumerate(lines, start=1):
        try:
            ids.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            if number != len(lines):
                raise ValueError(f"{samples}, line {number}: not a record; fix or remove the line") from None
            samples.write_text("".join(lines[:-1]), encoding="utf-8")  # an interrupted write
    return ids


def _stream(
    model: VideoModel, path: Path, queries: list[Query], sampling: Sampling, read, done: set[str]
) -> Iterator[dict]:
    queries = sorted(queries, key=lambda q: q.window[1])
    started = time.perf_counter()
    try:
        video = VideoFrames(path, sampling, (0.0, max(q.window[1] for q in queries)))
    except VideoError as error:
        yield from (_record(q, error=str(error)) for q in queries if q.id not in done)
        return
    cost = Step({"decode": (time.perf_counter() - started) * 1000})
    try:
        model.reset()
    except Exception as error:  # a sticky CUDA error after an out-of-memory fails here: recorded too
        failed = _failed("resetting the model", error)
        yield from (_record(q, error=failed) for q in queries if q.id not in done)
        return
    added, broken = 0, None
    for query in queries:
        visible = bisect.bisect_left(video.times, query.window[1])
        if visible > added and broken is None:
            try:
                _feed(model, video, added, visible, cost)
            except Exception as error:  # any failed call (CUDA OOM included) is recorded; the run goes on
                broken = _failed("adding frames", error)
        added = max(added, visible)
        if query.id in done:
            continue
        if broken:
            yield _record(query, error=broken)
        else:
            yield _answered(model, query, read, cost, video.times[:added])
        cost = Step()


def _clip(
    model: VideoModel, path: Path, queries: list[Query], sampling: Sampling, read, done: set[str]
) -> Iterator[dict]:
    for query in queries:
        if query.id in done:
            continue
        started = time.perf_counter()
        try:
            video = VideoFrames(path, sampling, query.window)
        except VideoError as error:
            yield _record(query, error=str(error))
            continue
        cost = Step({"decode": (time.perf_counter() - started) * 1000})
        try:
            model.reset()
        except Exception as error:  # recorded, as above
            yield _record(query, error=_failed("resetting the model", error))
            continue
        try:
            _feed(model, video, 0, len(video), cost, whole=getattr(model, "takes_whole_clip", False))
        except Exception as error:  # recorded, as above
            yield _record(query, error=_failed("adding frames", error))
            continue
        yield _answered(model, query, read, cost, video.times)


def _feed(model: VideoModel, video: VideoFrames, start: int, stop: int, cost: Step, whole=False) -> None:
    """Add frames ``start`` to ``stop`` of ``video`` to ``model``, ``DECODE_BATCH`` at a time (all at once
    where the model takes a whole clip), the next batch decoding in a thread while the model encodes
    this one; ``cost`` gets the decoding time the model waited for."""
    batch = max(stop - start, 1) if whole else DECODE_BATCH
    spans = [(first, min(first + batch, stop)) for first in range(start, stop, batch)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stc-decode") as pool:
        pending = pool.submit(video.pixels, *spans[0]) if spans else None
        for i, (first, last) in enumerate(spans):
            with timed(cost, "decode", _HOST):
                pixels = pending.result()
            if i + 1 < len(spans):
                pending = pool.submit(video.pixels, *spans[i + 1])
            _add(cost, model.add_frames(pixels, video.times[first:last]))


def _answered(model: VideoModel, query: Query, read, cost: Step, times: tuple[float, ...]) -> dict:
    try:
        answer: Answer = model.answer(query)
    except Exception as error:  # recorded, as above
        return _record(query, error=_failed("answering", error), cost=cost, times=times)
    _add(cost, answer)
    held = times if answer.frame_times is None else answer.frame_times
    return _record(query, answer=answer, response=read(answer.text), cost=cost, times=held)


def _failed(what: str, error: Exception) -> str:
    return f"{what} failed: {type(error).__name__}: {error}"


def _record(
    query: Query,
    answer: Answer | None = None,
    response: str | None = None,
    error: str | None = None,
    cost: Step | None = None,
    times: tuple[float, ...] = (),
) -> dict:
    cost = cost or Step()
    return {
        **query.to_record(),
        "response": response,
        "full_response": answer.text if answer else None,
        "error": error,
        "frames": len(times),
        "frame_times": [round(t, 3) for t in times],  # to the millisecond
        "model_input": answer.model_input if answer else None,
        "retrieval_input": answer.retrieval_input if answer else None,
        "timings_ms": cost.timings_ms,
        "counts": cost.counts,
    }


def _add(total: Step, step: Step) -> None:
    for key, value in step.timings_ms.items():
        total.timings_ms[key] = total.timings_ms.get(key, 0.0) + value
    for key, value in step.counts.items():
        total.counts[key] = total.counts.get(key, 0) + value


def _claim(output: Path, header: dict, overwrite: bool, shard: Shard) -> bool:
    """Write run.json (rank 0), or check that a rerun in the same folder uses the same settings; whether
    it resumes. Each rank clears only its own files: the others may already be writing theirs."""
    previous = _read_json(output / "run.json")
    header = json.loads(json.dumps(header))  # as run.json holds it: tuples become lists
    shard.samples(output).parent.mkdir(exist_ok=True)
    shard.marker(output).unlink(missing_ok=True)
    if previous and not overwrite:
        old = {key: previous.get(key) for key in header}
        old["world"] = previous.get("world", 1)  # a run.json from before sharding
        if old == header:
            return True
        if {**old, "world": header["world"]} == header:
            raise ValueError(
                f"{output} holds a run split over {old['world']} processes, not {header['world']}: resume it "
                f"with as many (torchrun --nproc-per-node {old['world']}), or pass --overwrite"
            )
        changed = "; ".join(
            f"{key}: {was!r} there, {now!r} now" for key, was, now in _differences(old, header)
        )
        raise ValueError(
            f"{output} holds a run with other settings ({changed}): "
            "pass --overwrite to start it afresh, or choose another --output"
        )
    shard.samples(output).unlink(missing_ok=True)
    if shard.rank == 0:
        (output / "samples.jsonl").unlink(missing_ok=True)
        for path in (output / "shards").glob("*rank*"):  # left by a run over more processes
            if shard.world == 1 or int(re.search(r"rank(\d+)", path.name)[1]) >= shard.world:
                path.unlink()
        _write_json(output / "run.json", {**header, "started": _now()})
    return False


def _differences(old, new, prefix: str = ""):
    """``(dotted key, old value, new value)`` for each leaf where two nested dicts differ."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        yield prefix, old, new
        return
    for key in dict.fromkeys([*old, *new]):
        if old.get(key) != new.get(key):
            yield from _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    distributed.write_atomic(path, json.dumps(data, indent=1) + "\n")  # other ranks may be reading it
