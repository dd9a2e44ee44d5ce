"""A deterministic stand-in model, synthetic videos and queries for it, a script that runs them, and
helpers to launch torchrun and compare run folders.

``python -m torch.distributed.run --standalone --nproc-per-node N -m tests.toy_model VIDEO_ROOT OUTPUT``
(``torchrun(N, "-m", "tests.toy_model", ...)`` here) runs the toy queries through ``runner.run`` on the
shard torchrun's variables name and prints each rank's summary as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from stc_cli.benchmarks.base import Query
from stc_cli.evaluation.distributed import Shard
from stc_cli.evaluation.runner import run
from stc_cli.models.base import Answer, Step
from stc_cli.video import Sampling
from tests.videos import write_video

REPO = Path(__file__).resolve().parents[1]

FRAMES = {"v0.mp4": 8, "v1.mp4": 4, "v2.mp4": 12, "v3.mp4": 6, "v4.mp4": 8}  # at 4 fps; gone.mp4 is missing
# (video, window end): videos first appear in the order v2, v0, gone, v1, v3, v4.
ASKED = [
    ("v2.mp4", 1.0),
    ("v0.mp4", 2.0),
    ("v2.mp4", 3.0),
    ("gone.mp4", 1.0),
    ("v1.mp4", math.inf),
    ("v0.mp4", 0.5),
    ("v3.mp4", 1.5),
    ("v4.mp4", 2.0),
    ("v1.mp4", 0.75),
    ("v2.mp4", 2.0),
]


class ToyModel:
    """Answers from its memory alone: how many frames it holds, their mean pixel and the last time.
    Its own timings are fixed; only the runner's ``decode`` time varies from run to run."""

    def __init__(self) -> None:
        self.memory: list[tuple[float, float]] = []

    def reset(self) -> None:
        self.memory = []

    def add_frames(self, frames, times) -> Step:
        self.memory += [(t, float(frame.float().mean())) for frame, t in zip(frames, times, strict=True)]
        return Step({"vit": 1.0}, {"visual_tokens_in": len(times)})

    def answer(self, query: Query) -> Answer:
        mean = sum(m for _, m in self.memory) / max(1, len(self.memory))
        last = self.memory[-1][0] if self.memory else None
        return Answer(
            {"answer": 2.0},
            {"new_tokens": 1},
            text=f"{len(self.memory)} frames, mean {mean:.0f}, last {last}",
        )


def make_videos(root: Path) -> Path:
    for name, frames in FRAMES.items():
        write_video(root / name, frames=frames, fps=4)
    return root


def toy_queries() -> list[Query]:
    return [
        Query(f"toy/{i}", "toy", "count", "all", video, (0.0, end), "How bright?", ("A", "B"), "A")
        for i, (video, end) in enumerate(ASKED)
    ]


def torchrun(world: int, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node world *argv`` from the repository root, on CPUs."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*command, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def untimed(output: Path, name: str = "samples.jsonl") -> list[str]:
    """The lines of a samples file with the timings (which vary run to run) nulled."""
    text = (output / name).read_text()
    return [re.sub(r'"timings_ms": \{[^}]*\}', '"timings_ms": null', line) for line in text.splitlines()]


def answers(output: Path) -> list[tuple]:
    """What a resumed run must agree on. Its costs differ: the first record it writes for a video carries
    the frames added for the queries it skipped before it."""
    records = [json.loads(line) for line in (output / "samples.jsonl").read_text().splitlines()]
    return [(r["id"], r["response"], r["error"], r["frames"]) for r in records]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("video_root", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    shard = Shard.from_env()
    summary = run(
        ToyModel(),
        toy_queries(),
        args.video_root,
        args.output,
        sampling=Sampling(args.fps),
        overwrite=args.overwrite,
        shard=shard,
    )
    print(json.dumps({"rank": shard.rank, **asdict(summary), "output": str(summary.output)}), flush=True)


if __name__ == "__main__":
    main()
