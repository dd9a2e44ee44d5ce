"""The eval loop: queries -> a model -> one record per query in ``samples.jsonl``, flushed as it goes.

Schedules:
- ``stream``: each video is decoded once and its queries answered in time order on a growing memory;
  each record carries the cost of the frames added since the previous query of its video (and of the
  proactive loop's decisions and answers meanwhile).
- ``clip``: a fresh memory per query, holding only its window.
A model that answers from its memory alone gives both the same answers.

A proactive model (``models/base.py``, ``ProactiveModel``: Dispider under ``dispider-proactive``) answers the
forward (active-responding) queries itself, on the stream schedule: each is posed at the video's start, the
model is asked after every frame up to the query's time whether it answers now, and answers there when it
does. The query's record holds the answer given at the last such decision (its ``frame_times`` those the
model held then) and ``decided_at``, the times of every decision; where the model never decided, the query
is asked at its time as without the loop and ``decided_at`` is empty. Other records have no ``decided_at``.

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
import dataclasses
import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from stc_cli.benchmarks.base import Query
from stc_cli.configs import EvalConfig
from stc_cli.evaluation import distributed, run_folder
from stc_cli.evaluation.distributed import Shard
from stc_cli.models.base import Answer, Step, VideoModel, timed
from stc_cli.video import Sampling, VideoError, VideoFrames

SCHEDULES = ("stream", "clip")
FORWARD = "forward"  # OVO-Bench's active-responding category: the queries a proactive model answers itself
DECODE_BATCH = 32  # frames decoded at a time: host memory stays bounded whatever the video's length
_HOST = torch.device("cpu")  # decoding runs on the host: timing it waits for no GPU


@dataclass
class RunSummary:
    output: Path
    n_queries: int
    n_skipped: int  # answered by an earlier run
    n_written: int
    n_errors: int
    n_retried: int = 0  # written again because an earlier run's record had failed
    first_error: str | None = None  # of this process's records


class RunFailed(RuntimeError):
    """The run stopped because every recent sample failed: the model or the data is broken."""


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
    selection: dict | None = None,
    environment: dict | None = None,
    overwrite: bool = False,
    max_consecutive_errors: int | None = None,
    progress: Callable[[dict], None] = lambda _record: None,
    on_start: Callable[[int], None] = lambda _count: None,
    shard: Shard = Shard(),  # noqa: B008 (frozen)
) -> RunSummary:
    """Answer every query not yet answered in ``output/samples.jsonl``; videos are read under
    ``video_root``. Frames are taken by ``sampling``; ``read`` gives the answer a scorer reads from a
    response. ``settings`` must match on a rerun; ``selection`` (which queries: limit, tasks) and
    ``environment`` (versions, machine) are recorded, not checked. A query whose record failed is answered
    again and its new record replaces the old one. ``on_start`` hears how many records this process is
    about to write, ``progress`` each record.

    With ``shard.world > 1`` this process answers the queries of its share of the videos and its summary
    covers them; rank 0 then waits for the other ranks, merges, and its summary covers the whole run.

    Raises ValueError for an unknown schedule, a stream run over windows that do not start at 0, or an
    output folder that is in use, is not a run folder or was written with other settings; RunFailed after
    ``max_consecutive_errors`` failed records in a row; TimeoutError (rank 0) when another rank stops
    writing.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if schedule == "stream" and any(q.window[0] > 0 for q in queries):
        raise ValueError("the stream schedule needs windows that start at 0: use --schedule clip")
    if schedule == "clip" and getattr(model, "proactive", False):
        raise ValueError("the proactive loop runs on the stream schedule: use --schedule stream")
    run_folder.check(output, overwrite, shard)
    output.mkdir(parents=True, exist_ok=True)
    with run_folder.locked(output, shard):
        return _run_locked(
            model, queries, video_root, output, schedule, sampling, read, settings, selection, environment,
            overwrite, max_consecutive_errors, progress, on_start, shard,
        )  # fmt: skip


def _run_locked(
    model, queries, video_root, output, schedule, sampling, read, settings, selection, environment,
    overwrite, max_consecutive_errors, progress, on_start, shard,
) -> RunSummary:  # fmt: skip
    header = {"settings": settings or {}, "schedule": schedule, "world": shard.world}
    resuming = _claim(output, header, overwrite, shard)
    if shard.rank == 0:  # this launch's
        launch = {"selection": selection, "environment": environment}
        recorded = {key: value for key, value in launch.items() if value is not None}
        _write_json(output / "run.json", {**run_folder.read_json(output / "run.json"), **recorded})
    by_video: dict[str, list[Query]] = {}
    for query in queries:
        by_video.setdefault(query.video, []).append(query)
    videos = list(by_video)
    shares = [
        [q for v in Shard(r, shard.world).take(videos) for q in by_video[v]] for r in range(shard.world)
    ]
    done = run_folder.answered_ids(shard.samples(output))
    done |= _ids_elsewhere(output, shard) if resuming else set()
    mine = {video: by_video[video] for video in shard.take(videos)}
    on_start(sum(q.id not in done for group in mine.values() for q in group))  # what this process will write
    replay = _stream if schedule == "stream" else _clip
    opener = _Opener(_opening_order(mine, video_root, done, schedule), sampling)

    def answer_all(path: Path, group: list[Query]) -> Iterator[dict]:
        return replay(model, path, group, read, done, opener.open)

    alive = distributed.heartbeat(shard, output) if shard.world > 1 else contextlib.nullcontext()
    samples = shard.samples(output)
    try:
        with alive, opener:
            counts = _answer(answer_all, mine, video_root, samples, done, progress, max_consecutive_errors)
    finally:  # a retried query's new record takes its old one's place, however the run ends
        retried = run_folder.compact(samples)
    first_error = counts.pop("first_error")
    counts["n_retried"] = retried
    if shard.world > 1:
        counts = _gather(output, shard, header, shares, videos, counts)
    if shard.rank == 0:
        _write_json(
            output / "run.json", {**run_folder.read_json(output / "run.json"), "finished": run_folder.now()}
        )
    total = len(queries) if shard.rank == 0 else len(shares[shard.rank])
    return RunSummary(output, total, first_error=first_error, **counts)


def _answer(
    answer_all: Callable[[Path, list[Query]], Iterator[dict]],
    by_video: dict[str, list[Query]],
    video_root: Path,
    samples: Path,
    done: set[str],
    progress: Callable[[dict], None],
    max_consecutive_errors: int | None,
) -> dict:
    """Append a record to ``samples`` for each query (grouped by video) not in ``done``, as
    ``answer_all(video path, its queries)`` yields them; return RunSummary's counts and the first error.
    Raises RunFailed once ``max_consecutive_errors`` records in a row have failed."""
    written = errors = streak = 0
    first_error = None
    with open(samples, "a", encoding="utf-8") as sink:
        for video, group in by_video.items():
            if all(q.id in done for q in group):
                continue
            for record in answer_all(video_root / video, group):
                sink.write(json.dumps(record, allow_nan=False) + "\n")
                sink.flush()
                written += 1
                failed = record["error"] is not None
                errors += failed
                streak = streak + 1 if failed else 0
                first_error = first_error or (f"{record['id']}: {record['error']}" if failed else None)
                progress(record)
                if max_consecutive_errors and streak >= max_consecutive_errors:
                    raise RunFailed(
                        f"stopped after {streak} failed samples in a row (--max-consecutive-errors); the "
                        f"first: {first_error}. The records are in {samples}; fix the cause and run the "
                        "same command again: failed samples are retried"
                    )
    skipped = sum(q.id in done for group in by_video.values() for q in group)
    return {"n_skipped": skipped, "n_written": written, "n_errors": errors, "first_error": first_error}


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


def _opening_order(by_video: dict[str, list[Query]], video_root: Path, done: set[str], schedule: str):
    """``(path, window)`` of each video opening, in the order ``_stream`` or ``_clip`` will ask for them."""
    order = []
    for video, group in by_video.items():
        if all(q.id in done for q in group):
            continue
        if schedule == "stream":
            order.append((video_root / video, _stream_window(group)))
        else:
            order += [(video_root / video, q.window) for q in group if q.id not in done]
    return order


class _Opener:
    """Opens videos in a known order, the next one ahead in a worker thread: while the model works on one
    video, the next is opened and its first ``DECODE_BATCH`` frames decoded, so the GPU does not wait for
    the decoder between videos. Use inside ``with``."""

    def __init__(self, order: list[tuple[Path, tuple]], sampling: Sampling):
        self.order, self.sampling = order, sampling
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stc-open")
        self._ahead: tuple[int, Future] | None = None  # (place in order, its opening)

    def __enter__(self) -> _Opener:
        return self

    def __exit__(self, *_exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def open(self, path: Path, window: tuple) -> VideoFrames:
        """The video; VideoError where it is missing or broken."""
        place = self.order.index((path, window)) if (path, window) in self.order else None
        ahead, self._ahead = self._ahead, None
        if place is not None and place + 1 < len(self.order):
            self._ahead = (place + 1, self._pool.submit(self._open, *self.order[place + 1]))
        if ahead is not None and ahead[0] == place:
            return ahead[1].result()
        return self._open(path, window)

    def _open(self, path: Path, window: tuple) -> VideoFrames:
        video = VideoFrames(path, self.sampling, window)
        video.decode_ahead(DECODE_BATCH)
        return video


def _stream_window(queries: list[Query]) -> tuple[float, float]:
    return (0.0, max(q.window[1] for q in queries))


def _stream(
    model: VideoModel, path: Path, queries: list[Query], read, done: set[str], open_video
) -> Iterator[dict]:
    queries = sorted(queries, key=lambda q: q.window[1])
    started = time.perf_counter()
    try:
        video = open_video(path, _stream_window(queries))
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
    loop = _Proactive(model, [q for q in queries if q.id not in done])
    added, broken = 0, None
    for query in queries:
        visible = bisect.bisect_left(video.times, query.window[1])
        if visible > added and broken is None:
            after = partial(loop.decide, video.times, cost) if loop.watching else None
            try:
                _feed(model, video, added, visible, cost, after=after)
            except Exception as error:  # any failed call (CUDA OOM included) is recorded; the run goes on
                broken = _failed("adding frames", error)
        added = max(added, visible)
        if query.id in done:  # answered before: its frames' cost was billed then, to its own record
            cost = Step()
            continue
        if broken:
            yield _record(query, error=broken)
        else:
            yield loop.answered(query, read, cost, video.times[:added])
        cost = Step()


class _Proactive:
    """The proactive loop over one video's forward queries (none unless the model is proactive): which are
    still watched, the times the model decided to answer each, and the answer (with the frame times then
    held) or the failure of its last decision."""

    def __init__(self, model: VideoModel, queries: list[Query]):
        self.model = model
        on = getattr(model, "proactive", False)
        self.watching = [q for q in queries if on and q.category == FORWARD]
        self.decided_at: dict[str, list[float]] = {q.id: [] for q in self.watching}
        self.given: dict[str, tuple[Answer, tuple[float, ...]] | str] = {}

    def decide(self, times: tuple[float, ...], cost: Step, held: int) -> None:
        """After the frames ``times[:held]`` were added: ask the model, once per distinct question, whether
        it answers now, and have it answer if so; ``cost`` gets the time of both."""
        alike: dict[tuple, list[Query]] = {}  # queries the model cannot tell apart share a decision
        for query in self.watching:
            alike.setdefault((query.prompt, query.question, query.options), []).append(query)
        for group in alike.values():
            what = "deciding to answer"
            try:
                with timed(cost, "decide", _HOST):
                    decided = self.model.wants_to_answer(group[0])
                if not decided:
                    continue
                what = "answering"
                answer = self.model.answer(group[0])
            except Exception as error:  # recorded on the group's records; the other queries go on
                ids = {q.id for q in group}
                self.given.update(dict.fromkeys(ids, _failed(what, error)))
                self.watching = [q for q in self.watching if q.id not in ids]
                continue
            _add(cost, answer)
            for query in group:
                self.given[query.id] = (answer, times[:held])
                self.decided_at[query.id].append(times[held - 1])

    def answered(self, query: Query, read, cost: Step, times: tuple[float, ...]) -> dict:
        """The record of ``query`` at its time: from its last decision's answer where it has one, else
        asked now."""
        if query.id not in self.decided_at:
            return _answered(self.model, query, read, cost, times)
        self.watching = [q for q in self.watching if q.id != query.id]
        given = self.given.get(query.id)
        if given is None:
            record = _answered(self.model, query, read, cost, times)
        elif isinstance(given, str):
            record = _record(query, error=given, cost=cost, times=times)
        else:
            record = _answer_record(query, given[0], read, cost, given[1])
        return {**record, "decided_at": [round(t, 3) for t in self.decided_at[query.id]]}


def _clip(
    model: VideoModel, path: Path, queries: list[Query], read, done: set[str], open_video
) -> Iterator[dict]:
    for query in queries:
        if query.id in done:
            continue
        started = time.perf_counter()
        try:
            video = open_video(path, query.window)
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


def _feed(
    model: VideoModel, video: VideoFrames, start: int, stop: int, cost: Step, whole=False, after=None
) -> None:
    """Add frames ``start`` to ``stop`` of ``video`` to ``model``, ``DECODE_BATCH`` at a time (all at once
    where the model takes a whole clip), the next batch decoding in a thread while the model encodes
    this one; ``cost`` gets the decoding time the model waited for. With ``after``, frames are added one
    at a time and ``after(n)`` is called once the first ``n`` are in (the proactive loop)."""
    batch = max(stop - start, 1) if whole else DECODE_BATCH
    spans = [(first, min(first + batch, stop)) for first in range(start, stop, batch)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stc-decode") as pool:
        pending = pool.submit(video.pixels, *spans[0]) if spans else None
        for i, (first, last) in enumerate(spans):
            with timed(cost, "decode", _HOST):
                pixels = pending.result()
            if i + 1 < len(spans):
                pending = pool.submit(video.pixels, *spans[i + 1])
            if after is None:
                _add(cost, model.add_frames(pixels, video.times[first:last]))
                continue
            for n in range(first + 1, last + 1):
                _add(cost, model.add_frames(pixels[n - 1 - first : n - first], video.times[n - 1 : n]))
                after(n)


def _answered(model: VideoModel, query: Query, read, cost: Step, times: tuple[float, ...]) -> dict:
    try:
        answer: Answer = model.answer(query)
    except Exception as error:  # recorded, as above
        return _record(query, error=_failed("answering", error), cost=cost, times=times)
    _add(cost, answer)
    return _answer_record(query, answer, read, cost, times)


def _answer_record(query: Query, answer: Answer, read, cost: Step, times: tuple[float, ...]) -> dict:
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
    previous = run_folder.read_json(output / "run.json")
    header = json.loads(json.dumps(header))  # as run.json holds it: tuples become lists
    shard.samples(output).parent.mkdir(exist_ok=True)
    shard.marker(output).unlink(missing_ok=True)
    if previous and not overwrite:
        old = {key: _backfill(previous.get(key), header[key]) for key in header}
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
            if path.name.startswith(".lock"):  # held by the ranks of this launch
                continue
            if shard.world == 1 or int(re.search(r"rank(\d+)", path.name)[1]) >= shard.world:
                path.unlink()
        _write_json(output / "run.json", {**header, "started": run_folder.now()})
    return False


def _backfill(old, new):
    """``old`` with each setting it lacks (a run.json from before the setting existed) taken as ``new``'s
    where that is the setting's default (an ``EvalConfig`` field of that name), as the older run had it."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return old
    defaults = {field.name: field.default for field in dataclasses.fields(EvalConfig)}
    filled = {key: _backfill(value, new.get(key)) for key, value in old.items()}
    for key, value in new.items():
        if key not in old and key in defaults and value == defaults[key]:
            filled[key] = value
    return filled


def _differences(old, new, prefix: str = ""):
    """``(dotted key, old value, new value)`` for each leaf where two nested dicts differ."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        yield prefix, old, new
        return
    for key in dict.fromkeys([*old, *new]):
        if old.get(key) != new.get(key):
            yield from _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)


def _write_json(path: Path, data: dict) -> None:
    distributed.write_atomic(path, json.dumps(data, indent=1) + "\n")  # other ranks may be reading it
