"""`stc check`: is a benchmark's data directory complete? Metadata, per-task counts, videos."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stc_cli import benchmarks
from stc_cli.datasets.datadir import benchmark_data_dir


@dataclass
class CheckReport:
    bench: str
    folder: str
    n_queries: int
    tasks: dict[str, int]
    n_videos: int = 0
    missing_videos: list[str] = field(default_factory=list)
    unreadable_videos: list[str] = field(default_factory=list)
    videos_checked: bool = True
    video_seconds: dict[str, float] = field(default_factory=dict)  # see schedule_seconds
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing_videos and not self.unreadable_videos

    def summary(self) -> str:
        """One line: what is missing and where, or that the data is complete."""
        if self.complete:
            videos = f", {self.n_videos} videos" if self.videos_checked else " (videos not checked)"
            return f"{self.bench}: complete: {self.n_queries} queries{videos} in {self.folder}"
        parts = []
        if self.missing_videos:
            first = self.missing_videos[0]
            parts.append(f"{len(self.missing_videos)} of {self.n_videos} videos missing (first: {first})")
        if self.unreadable_videos:
            parts.append(
                f"{len(self.unreadable_videos)} cannot be opened (first: {self.unreadable_videos[0]})"
            )
        where = f"under {self.folder}; `stc download {self.bench}` fetches them"
        return f"{self.bench}: {'; '.join(parts)} {where}"

    def to_json(self) -> dict:
        return {**asdict(self), "complete": self.complete}


def check(
    bench: str,
    data_dir: Path,
    metadata_only: bool = False,
    progress: Callable[[int, int], None] = lambda _done, _total: None,
) -> CheckReport:
    """Load ``bench``'s metadata from ``data_dir`` and, unless ``metadata_only``, find its videos and
    open each one. A query needs its ``video``; OVO-Bench queries are also served by their pre-cut
    ``extra["clip"]``. Raises ``MetadataError`` when the metadata cannot be read."""
    module = benchmarks.get(bench)
    data_dir, note = benchmark_data_dir(module, data_dir)  # as `stc eval` reads it
    notes = [note] if note else []
    folder = data_dir / module.FOLDER
    queries = module.load_queries(data_dir)
    tasks = Counter(q.task for q in queries)
    report = CheckReport(
        bench=bench,
        folder=str(folder),
        n_queries=len(queries),
        tasks={task: tasks[task] for task in module.TASKS if task in tasks},
        videos_checked=not metadata_only,
        video_seconds=schedule_seconds(queries),
        notes=notes,
    )
    if metadata_only:
        return report
    # The file each query would read: its video, else (OVO-Bench) its pre-cut clip.
    chosen: dict[str, str | None] = {}
    for q in queries:
        candidates = [q.video, *([q.extra["clip"]] if "clip" in q.extra else [])]
        chosen[q.id] = next((c for c in candidates if (folder / c).is_file()), None)
    report.n_videos = len({q.video for q in queries})
    report.missing_videos = sorted({q.video for q in queries if chosen[q.id] is None})
    files = sorted({c for c in chosen.values() if c is not None})
    for done, file in enumerate(files, start=1):
        if not _opens(folder / file):
            report.unreadable_videos.append(file)
        progress(done, len(files))
    return report


def schedule_seconds(queries) -> dict[str, float]:
    """Video-seconds each schedule encodes for these queries, from the metadata alone: ``stream`` reads
    each video once up to its last query, ``clip`` each query's window afresh. Queries that run to the
    end of their video (an unknown length until decoded) are left out and counted in ``open_ended``."""
    finite = [q for q in queries if q.window[1] != float("inf")]
    last: dict[str, float] = {}
    for q in finite:
        last[q.video] = max(last.get(q.video, 0.0), q.window[1])
    return {
        "stream": sum(last.values()),
        "clip": sum(q.window[1] - q.window[0] for q in finite),
        "open_ended": len(queries) - len(finite),
    }


def _opens(path: Path) -> bool:
    """Whether the video opens and its first frame decodes."""
    from stc_cli.video import Sampling, VideoError, read_frames

    try:
        # no frame kept; the first is decoded for its size
        read_frames(path, Sampling(1.0), window=(0.0, 0.0))
        return True
    except VideoError:
        return False
