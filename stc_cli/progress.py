"""The progress bar of ``stc eval``: samples done, samples per minute, errors and the running accuracy."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from stc_cli.benchmarks.base import judge_choice


class EvalProgress:
    """Use as the runner's ``progress`` callback inside ``with``; ``start`` (the runner's ``on_start``)
    sets the number of samples this process will write."""

    def __init__(self, console: Console | None = None):
        self.written = self.errors = self.judged = self.right = 0
        self.started = time.perf_counter()
        self._bar = Progress(
            TextColumn("[bold]stc eval"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[accuracy]}"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
        )
        self._task = self._bar.add_task("eval", total=None, rate="", accuracy="")

    def __enter__(self) -> EvalProgress:
        self._bar.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._bar.stop()

    def start(self, total: int) -> None:
        self.started = time.perf_counter()  # samples per minute count from here, not from model loading
        self._bar.update(self._task, total=total)

    def __call__(self, record: dict) -> None:
        self.written += 1
        self.errors += record.get("error") is not None
        if record.get("options") and record.get("target"):  # multiple choice with a known answer
            right, _status = judge_choice(record)
            self.judged += 1
            self.right += right
        self._bar.update(self._task, advance=1, rate=self.rate(), accuracy=self.accuracy())

    def rate(self) -> str:
        minutes = (time.perf_counter() - self.started) / 60
        return f"{self.written / minutes:.1f} samples/min" if minutes > 0 else ""

    def accuracy(self) -> str:
        parts = [f"accuracy {100 * self.right / self.judged:.1f}%"] if self.judged else []
        parts += [f"{self.errors} errors"] if self.errors else []
        return ", ".join(parts)
