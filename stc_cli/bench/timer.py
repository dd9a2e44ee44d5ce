"""Wall time of streamed work, chunk by chunk, the compared settings interleaved; peak memory; the
environment a report was made in."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable

import torch

from stc_cli.devices import cpu_name


def environment(device: torch.device) -> dict:
    import transformers

    from stc_cli import __version__

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "device": f"{device.type}: {name}",
        "threads": torch.get_num_threads(),
        "stc": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


class Timer:
    """Wall time of streamed work, synchronising the device around each chunk, and CUDA peaks."""

    def __init__(self, device: torch.device, *, warmup: int, chunks: int, repeats: int) -> None:
        self.device, self.warmup, self.chunks, self.repeats = device, warmup, chunks, repeats
        self.peaks: dict[str, float] = {}

    def compare(
        self, make_steps: Callable[[], dict[str, Callable[[int], object]]], chunks: int | None = None
    ) -> dict[str, float]:
        """Median over repeats of each step's mean ms per chunk. ``make_steps()`` starts a repeat
        (fresh streams) and returns the steps to compare, each called with the chunk index, ``chunks``
        times (default: the timer's), the first ``warmup`` untimed."""
        runs = [self._interleaved(make_steps, chunks or self.chunks) for _ in range(self.repeats)]
        return {label: statistics.median(run[label] for run in runs) for label in runs[0]}

    def _interleaved(self, make_steps: Callable[[], dict], chunks: int) -> dict[str, float]:
        # Every step on chunk 0, then every step on chunk 1, ...: the settings compared share the
        # machine's state (clocks, caches, neighbours) as closely as a single process allows.
        with torch.inference_mode():  # the untimed set-up too (prefills in make_steps)
            steps = make_steps()
            totals = dict.fromkeys(steps, 0.0)
            for i in range(chunks):
                for label, step in steps.items():
                    if self.device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(self.device)
                        torch.cuda.synchronize(self.device)
                    start = time.perf_counter()
                    step(i)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                        peak = torch.cuda.max_memory_allocated(self.device) / 2**20
                        self.peaks[label] = max(self.peaks.get(label, 0.0), peak)
                    if i >= self.warmup:
                        totals[label] += (time.perf_counter() - start) * 1000
        return {label: total / (chunks - self.warmup) for label, total in totals.items()}

    def peak_mb(self) -> dict:
        """Per-stage CUDA peaks; on CPU only the whole process's peak RSS can be read."""
        return dict(self.peaks) if self.peaks else {"process_rss": peak_rss_mb()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
