"""Splitting a run over the processes ``torchrun --nproc-per-node N`` starts, one per GPU.

Each process (rank) answers its share of the videos into its own ``shards/samples.rank{r}.jsonl``; when
it is done it writes ``shards/rank{r}.done``; rank 0 waits for every rank's marker, then merges the shards
into ``samples.jsonl`` in the order a one-process run writes it.

The ranks meet through files only, not ``torch.distributed``: torchrun's environment (RANK, WORLD_SIZE)
is all they need, so there is no NCCL or gloo set-up, the same code runs on CPUs, and a rank that stops
writing ends in an error naming it rather than a hang. A done marker holds a key made of the launch id
(torchrun's run id and restart count), the settings and the rank's query ids, so a marker left by an
earlier launch does not pass for this one. Processes started by hand with RANK and WORLD_SIZE have no
launch id: there only a marker of a finished shard with the same settings and queries passes. While a
rank works it touches ``shards/rank{r}.alive`` every minute, so that rank 0 keeps waiting for a rank that
spends an hour on one long video, and gives up on one that died.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
STALL_S = 1800.0  # rank 0 gives up after this long without a sign of life from a pending rank
HEARTBEAT_S = 60.0  # how often a working rank says it is alive


@dataclass(frozen=True)
class Shard:
    """This process's place in the launch. ``launch`` is shared by the processes of one launch only;
    ``local_rank`` picks this process's GPU on its machine."""

    rank: int = 0
    world: int = 1
    launch: str = ""
    local_rank: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} is outside a world of {self.world} processes")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Shard:
        """The shard torchrun's variables describe; one whole run (0 of 1) where they are not set."""
        world = _int_var(env, "WORLD_SIZE", "1")
        if world > 1 and "RANK" not in env:
            raise ValueError(f"WORLD_SIZE is {world} but RANK is not set: launch with torchrun")
        run_id = env.get("TORCHELASTIC_RUN_ID", "none")
        launch = "" if run_id == "none" else f"{run_id}.{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        rank = _int_var(env, "RANK", "0")
        return cls(rank, world, launch, _int_var(env, "LOCAL_RANK", str(rank)))

    def take(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: item i goes to rank i % world. Round robin over the videos in
        first-appearance order is deterministic and even in count; a video's cost (length, queries)
        is unknown before it is decoded, so weighing them would only guess."""
        return list(items[self.rank :: self.world])

    def samples(self, output: Path) -> Path:
        """Where this rank writes its records."""
        if self.world == 1:
            return output / "samples.jsonl"
        return output / "shards" / f"samples.rank{self.rank}.jsonl"

    def marker(self, output: Path) -> Path:
        return output / "shards" / f"rank{self.rank}.done"

    def alive(self, output: Path) -> Path:
        return output / "shards" / f"rank{self.rank}.alive"


@contextmanager
def heartbeat(shard: Shard, output: Path, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Touch ``shard.alive(output)`` every ``every_s`` seconds while the block runs (from a thread, so
    that a long model call does not silence it)."""
    path, stop = shard.alive(output), threading.Event()
    path.parent.mkdir(parents=True, exist_ok=True)

    def beat() -> None:
        while True:
            path.write_text(f"{time.time()}\n", encoding="utf-8")
            if stop.wait(every_s):
                return

    thread = threading.Thread(target=beat, name=f"stc-heartbeat-rank{shard.rank}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        path.unlink(missing_ok=True)  # the done marker (or its absence) speaks from here on


def done_key(*parts: object) -> str:
    """A digest of what a finished shard stands for (launch, settings, query ids)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def mark_done(shard: Shard, output: Path, key: str, counts: dict[str, int]) -> None:
    """Tell rank 0 this shard is complete; ``counts`` go into rank 0's summary."""
    write_atomic(shard.marker(output), json.dumps({"key": key, **counts}) + "\n")


def wait_for_ranks(
    output: Path, keys: Sequence[str], *, stall_s: float = STALL_S, poll_s: float = 0.5
) -> list[dict]:
    """Wait until rank r's marker holds ``keys[r]`` for every rank; return the markers.

    The wait lasts as long as the pending ranks show signs of life (records, markers, heartbeats): it
    raises TimeoutError naming them once none of those files has changed for ``stall_s`` seconds.
    """
    world = len(keys)
    shards = [Shard(rank, world) for rank in range(world)]
    seen, since = None, time.monotonic()
    while True:
        markers = [_read_marker(shard.marker(output)) for shard in shards]
        pending = [r for r in range(world) if markers[r].get("key") != keys[r]]
        if not pending:
            return markers
        state = [
            _stamp(shards[r].samples(output))
            + _stamp(shards[r].marker(output))
            + _stamp(shards[r].alive(output))
            for r in pending
        ]
        if state != seen:
            seen, since = state, time.monotonic()
        elif time.monotonic() - since > stall_s:
            names = ", ".join(map(str, pending))
            raise TimeoutError(
                f"rank {names} of {world} did not finish: no record and no heartbeat in {output / 'shards'} "
                f"for {stall_s:.0f} s. Run the same command again to resume; finished records are kept"
            )
        time.sleep(poll_s)


def merge(parts: Sequence[Path], target: Path, videos: Sequence[str]) -> None:
    """Write the records of ``parts`` to ``target`` (atomically) in one-process order: by the video's
    place in ``videos`` (videos not in it last), then as its part lists them. Lines are copied as they are."""
    place = {video: i for i, video in enumerate(videos)}
    lines = [line for part in parts if part.is_file() for line in part.read_text("utf-8").splitlines()]
    lines.sort(key=lambda line: place.get(json.loads(line)["video"], len(place)))  # stable: keeps order
    write_atomic(target, "".join(line + "\n" for line in lines))


def _int_var(env: Mapping[str, str], name: str, default: str) -> int:
    value = env.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _read_marker(path: Path) -> dict:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


def write_atomic(path: Path, text: str) -> None:
    """Readers in other processes see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
