"""Progress of long work: a rich bar on a terminal, plain lines in logs (SLURM, nohup, CI) where a bar
would print nothing until the end.

``LogLines`` prints ``done/total``, rate, errors and ETA each time another 10 % is done and, from a
thread, at least every 30 s; ``EvalProgress`` is ``stc eval``'s, with samples per minute and accuracy.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from stc_cli.benchmarks.base import judge_choice

LOG_STEP = 0.10  # a line each time another tenth of the work is done
LOG_EVERY_S = 30.0  # and at least this often


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class LogLines:
    """Plain progress lines. Call ``start(total)``, then ``update(done, errors)`` as work completes, or
    give ``poll`` (work done so far, read every second: for work that reports nothing, like a transfer);
    use inside ``with`` so that the heartbeat thread stops. ``unit`` names what is counted."""

    def __init__(
        self,
        label: str,
        unit: str = "items",
        *,
        write: Callable[[str], None] = _stderr,
        every_s: float = LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        format_count: Callable[[float], str] = lambda n: f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}",
        poll: Callable[[], float] | None = None,
    ):
        self.label, self.unit, self.write, self.every_s, self.clock = label, unit, write, every_s, clock
        self.format_count, self.poll = format_count, poll
        self.total: float | None = None
        self.done = self.errors = 0
        self.detail = ""
        self.started = self.last_line = clock()
        self._next_mark = LOG_STEP
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"{label}-progress", daemon=True)

    def __enter__(self) -> LogLines:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def start(self, total: float) -> None:
        with self._lock:
            self.total, self.started = total, self.clock()
            self.write(f"{self.label}: {self.format_count(total)} {self.unit} to do")

    def update(self, done: float, errors: int = 0, *, total: float | None = None, detail: str = "") -> None:
        """``done`` so far; ``total`` where ``start`` was not called; ``detail`` names what runs now."""
        if total is not None and self.total is None:
            self.start(total)
        with self._lock:
            self.done, self.errors, self.detail = done, errors, detail
            if self.total and done >= self._next_mark * self.total:
                while self._next_mark * self.total <= done:  # one line even when a step crosses two marks
                    self._next_mark += LOG_STEP
                self._line()

    def line(self) -> str:
        elapsed = self.clock() - self.started
        total = f"/{self.format_count(self.total)}" if self.total else ""
        parts = [f"{self.label}: {self.format_count(self.done)}{total} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        if elapsed > 0 and self.done:
            parts.append(f"{self.format_count(self.done / elapsed * 60)} {self.unit}/min")
        if self.errors:
            parts.append(f"{self.errors} errors")
        if self.total and self.done and self.done < self.total and elapsed > 0:
            parts.append(f"ETA {_duration(elapsed * (self.total - self.done) / self.done)}")
        return ", ".join(parts) + (f" ({self.detail})" if self.detail else "")

    def _line(self) -> None:
        self.last_line = self.clock()
        self.write(self.line())

    def _beat(self) -> None:
        while not self._stop.wait(min(self.every_s, 1.0)):
            if self.poll is not None and self.total:
                self.update(self.poll(), self.errors, detail=self.detail)
            with self._lock:
                if self.clock() - self.last_line >= self.every_s:
                    self._line()


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class EvalProgress:
    """Use as the runner's ``progress`` callback inside ``with``; ``start`` (the runner's ``on_start``)
    sets the number of samples this process will write. A bar on a terminal, ``LogLines`` otherwise."""

    def __init__(self, console: Console | None = None, log: LogLines | None = None):
        self.written = self.errors = self.judged = self.right = 0
        self.started = time.perf_counter()
        console = console or Console(stderr=True)
        self._log = log or (None if console.is_terminal else LogLines("stc eval", "samples"))
        self._bar = Progress(
            TextColumn("[bold]stc eval"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[accuracy]}"),
            TimeRemainingColumn(),
            console=console,
            disable=self._log is not None,
        )
        self._task = self._bar.add_task("eval", total=None, rate="", accuracy="")

    def __enter__(self) -> EvalProgress:
        if self._log:
            self._log.__enter__()
        self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.stop()
        if self._log:
            self._log.__exit__(*exc)

    def start(self, total: int) -> None:
        self.started = time.perf_counter()  # samples per minute count from here, not from model loading
        self._bar.update(self._task, total=total)
        if self._log:
            self._log.start(total)

    def __call__(self, record: dict) -> None:
        self.written += 1
        self.errors += record.get("error") is not None
        if record.get("options") and record.get("target"):  # multiple choice with a known answer
            right, _status = judge_choice(record)
            self.judged += 1
            self.right += right
        self._bar.update(self._task, advance=1, rate=self.rate(), accuracy=self.accuracy())
        if self._log:
            self._log.update(self.written, self.errors)

    def rate(self) -> str:
        minutes = (time.perf_counter() - self.started) / 60
        return f"{self.written / minutes:.1f} samples/min" if minutes > 0 else ""

    def accuracy(self) -> str:
        parts = [f"accuracy {100 * self.right / self.judged:.1f}%"] if self.judged else []
        parts += [f"{self.errors} errors"] if self.errors else []
        return ", ".join(parts)
