"""The eval loop: queries -> a model -> one record per query in ``samples.jsonl``, flushed as it goes.

Protocols:
- ``stream``: each video is decoded once and its queries answered in time order on a growing memory;
  each record carries the cost of the frames added since the previous query of its video.
- ``clip``: a fresh memory per query, holding only its window.
A model that answers from its memory alone gives both the same answers.

The run folder holds ``samples.jsonl`` (the resume state: a rerun skips the ids already written) and
``run.json`` (the settings; a rerun with other settings is refused unless ``overwrite``). A query whose
video is missing or broken, or whose model call fails, is written with its ``error``; the run goes on.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from stc_cli.benchmarks.base import Query
from stc_cli.models.base import Answer, Step, VideoModel
from stc_cli.video import VideoError, read_frames

PROTOCOLS = ("stream", "clip")


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
    protocol: str = "stream",
    fps: float = 0.5,
    settings: dict | None = None,
    overwrite: bool = False,
    progress: Callable[[dict], None] = lambda _record: None,
) -> RunSummary:
    """Answer every query not yet in ``output/samples.jsonl``; videos are read under ``video_root``.

    Raises ValueError for an unknown protocol, a stream run over windows that do not start at 0, or an
    output folder written with other settings.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if protocol == "stream" and any(q.window[0] > 0 for q in queries):
        raise ValueError("the stream protocol needs windows that start at 0: use --protocol clip")
    output.mkdir(parents=True, exist_ok=True)
    header = {"settings": settings or {}, "protocol": protocol, "fps": fps}
    _claim(output, header, overwrite)
    done = finished_ids(output / "samples.jsonl")
    by_video: dict[str, list[Query]] = {}
    for query in queries:
        by_video.setdefault(query.video, []).append(query)
    answer_all = _stream if protocol == "stream" else _clip
    written = errors = 0
    with open(output / "samples.jsonl", "a", encoding="utf-8") as sink:
        for video, group in by_video.items():
            if all(q.id in done for q in group):
                continue
            for record in answer_all(model, video_root / video, group, fps, done):
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                written += 1
                errors += record["error"] is not None
                progress(record)
    _write_json(output / "run.json", {**_read_json(output / "run.json"), "finished": _now()})
    skipped = sum(q.id in done for q in queries)
    return RunSummary(output, len(queries), skipped, written, errors)


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
    model: VideoModel, path: Path, queries: list[Query], fps: float, done: set[str]
) -> Iterator[dict]:
    queries = sorted(queries, key=lambda q: q.window[1])
    started = time.perf_counter()
    try:
        frames = read_frames(path, fps, (0.0, max(q.window[1] for q in queries)))
    except VideoError as error:
        yield from (_record(q, error=str(error)) for q in queries if q.id not in done)
        return
    cost = Step({"decode": (time.perf_counter() - started) * 1000})
    model.reset()
    added, broken = 0, None
    for query in queries:
        visible = bisect.bisect_left(frames.times, query.window[1])
        if visible > added and broken is None:
            try:
                _add(cost, model.add_frames(frames.pixels[added:visible], frames.times[added:visible]))
            except (
                Exception
            ) as error:  # any failed model call (CUDA OOM included) is recorded; the run goes on
                broken = f"adding frames failed: {type(error).__name__}: {error}"
        added = max(added, visible)
        if query.id in done:
            continue
        if broken:
            yield _record(query, error=broken)
        else:
            yield _answered(model, query, cost, added)
        cost = Step()


def _clip(model: VideoModel, path: Path, queries: list[Query], fps: float, done: set[str]) -> Iterator[dict]:
    for query in queries:
        if query.id in done:
            continue
        started = time.perf_counter()
        try:
            frames = read_frames(path, fps, query.window)
        except VideoError as error:
            yield _record(query, error=str(error))
            continue
        cost = Step({"decode": (time.perf_counter() - started) * 1000})
        model.reset()
        try:
            if len(frames.times):
                _add(cost, model.add_frames(frames.pixels, frames.times))
        except Exception as error:  # recorded, as above
            yield _record(query, error=f"adding frames failed: {type(error).__name__}: {error}")
            continue
        yield _answered(model, query, cost, len(frames.times))


def _answered(model: VideoModel, query: Query, cost: Step, frames: int) -> dict:
    try:
        answer: Answer = model.answer(query)
    except Exception as error:  # recorded, as above
        return _record(
            query, error=f"answering failed: {type(error).__name__}: {error}", cost=cost, frames=frames
        )
    _add(cost, answer)
    return _record(query, response=answer.text, cost=cost, frames=frames)


def _record(query: Query, response=None, error=None, cost: Step | None = None, frames: int = 0) -> dict:
    cost = cost or Step()
    return {
        **query.to_record(),
        "response": response,
        "error": error,
        "frames": frames,
        "timings_ms": cost.timings_ms,
        "counts": cost.counts,
    }


def _add(total: Step, step: Step) -> None:
    for key, value in step.timings_ms.items():
        total.timings_ms[key] = total.timings_ms.get(key, 0.0) + value
    for key, value in step.counts.items():
        total.counts[key] = total.counts.get(key, 0) + value


def _claim(output: Path, header: dict, overwrite: bool) -> None:
    """Write run.json, or check that a rerun in the same folder uses the same settings."""
    previous = _read_json(output / "run.json")
    if previous and not overwrite:
        old = {key: previous.get(key) for key in header}
        if old != header:
            raise ValueError(
                f"{output} holds a run with other settings ({old} vs {header}): "
                "pass --overwrite to start it afresh, or choose another --output"
            )
        return
    (output / "samples.jsonl").unlink(missing_ok=True)
    _write_json(output / "run.json", {**header, "started": _now()})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
