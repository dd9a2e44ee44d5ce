"""The run folder's rules: what ``stc eval`` may write into, who may write, and which records count.

A run folder holds ``run.json`` (the settings its records were made with), ``samples.jsonl`` (one record
per query, appended as they come), ``shards/`` (under torchrun) and ``.lock``. The rules keep results
from being lost or doubled:
- records whose settings cannot be read (no readable ``run.json``) are never deleted without
  ``--overwrite``, and a folder that holds anything else is never written into;
- one process per folder (per rank under torchrun), held by an OS lock that dies with its process, so a
  killed run leaves no stale lock;
- a query counts as done when its latest record has no ``error``: failed ones are answered again, and the
  new record replaces the old one in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from stc_cli.evaluation.distributed import Shard, write_atomic

OURS = frozenset({"run.json", "samples.jsonl", "shards", ".lock"})


class FolderError(ValueError):
    """The run folder cannot be used as asked; the message says what is there and what to do."""


def check(output: Path, overwrite: bool, shard: Shard) -> None:
    """Refuse a path that is a file, a folder of other files, or records without readable settings."""
    if output.exists() and not output.is_dir():
        raise FolderError(f"--output {output} is a file: give a folder (new, or an earlier run's)")
    if not output.is_dir() or read_json(output / "run.json"):
        return
    entries = sorted(path.name for path in output.iterdir())
    others = [name for name in entries if name not in OURS]
    if others and shard.rank == 0:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise FolderError(
            f"--output {output} is not a run folder: it holds {len(others)} other entries ({shown}) and no "
            "run.json. Give a new or empty folder with --output"
        )
    count = _count_lines(shard.samples(output))
    if count and not overwrite:
        state = "missing" if not (output / "run.json").exists() else "unreadable"
        raise FolderError(
            f"{shard.samples(output)} holds {count} records but {output / 'run.json'} is {state}, so they "
            "cannot be matched to this run's settings: move them elsewhere, or pass --overwrite to delete "
            "them and start afresh"
        )


@contextlib.contextmanager
def locked(output: Path, shard: Shard) -> Iterator[None]:
    """Hold the folder (this rank's part of it under torchrun) for the block; FolderError if another
    process holds it. ``flock`` is released by the OS however the holder ends, ``kill -9`` included."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; runs there are not guarded against each other
        yield
        return
    name = (
        ".lock" if shard.rank == 0 else f"shards/.lock.rank{shard.rank}"
    )  # rank 0 shares a one-process run's
    path = output / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FolderError(
                f"{output} is in use by another stc eval ({holder}): wait for it to finish, or give another "
                "--output"
            ) from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {now()}\n")
        handle.flush()
        yield  # closing the file releases the lock


def answered_ids(samples: Path) -> set[str]:
    """The ids whose latest record in ``samples`` has no error (the others are to be answered again).
    A last line cut short by a crash is dropped from the file."""
    latest = {record["id"]: record.get("error") is None for record in read_records(samples)}
    return {id_ for id_, answered in latest.items() if answered}


def read_records(samples: Path) -> list[dict]:
    """The records of ``samples`` in file order; a cut last line is dropped from the file, any other
    unreadable line raises ValueError naming it."""
    if not samples.is_file():
        return []
    lines = samples.read_text(encoding="utf-8").splitlines(keepends=True)
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            record["id"]  # noqa: B018 (a record without an id is not one)
        except (json.JSONDecodeError, KeyError, TypeError):
            if number != len(lines):
                raise ValueError(f"{samples}, line {number}: not a record; fix or remove the line") from None
            samples.write_text("".join(lines[:-1]), encoding="utf-8")  # an interrupted write
            break
        records.append(record)
    return records


def compact(samples: Path) -> int:
    """Keep one record per id, the latest, in the place of the first; return how many were dropped."""
    lines = samples.read_text(encoding="utf-8").splitlines() if samples.is_file() else []
    latest = {json.loads(line)["id"]: line for line in lines}
    if len(latest) == len(lines):
        return 0
    kept = dict.fromkeys(json.loads(line)["id"] for line in lines)  # first places, in order
    write_atomic(samples, "".join(latest[i] + "\n" for i in kept))
    return len(lines) - len(latest)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return 0
