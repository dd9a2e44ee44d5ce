"""Wall time of streamed work, chunk by chunk, the compared settings interleaved; peak memory; the
environment a report was made in."""

from __future__ import annotations

import contextlib
import copy
import resource
import statistics
import time
from collections.abc import Callable

import torch

from stc_cli.accel import OpCensus
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
    """Wall time of streamed work, synchronising the device around each chunk, and CUDA peaks.

    With ``count_ops``, each step's warm-up chunks of its first repeat also run under ``OpCensus``
    (untimed): ``launches`` holds each step's operators that launch device work, per chunk, and
    ``host_syncs`` how many made the host wait, in all; on CUDA ``device_ops`` what the profiler saw the
    device run, per chunk."""

    def __init__(
        self, device: torch.device, *, warmup: int, chunks: int, repeats: int, count_ops: bool = False
    ) -> None:
        self.device, self.warmup, self.chunks, self.repeats = device, warmup, chunks, repeats
        self.count_ops = count_ops and warmup > 0
        self.peaks: dict[str, float] = {}
        self.launches: dict[str, float] = {}
        self.host_syncs: dict[str, int] = {}
        self.device_ops: dict[str, float] = {}  # CUDA: kernels, copies and fills per chunk (profiler)

    def compare(
        self,
        make_steps: Callable[[], dict[str, Callable[[int], object]]],
        chunks: int | None = None,
        *,
        stage: str = "",
    ) -> dict[str, float]:
        """Median over repeats of each step's mean ms per chunk. ``make_steps()`` starts a repeat
        (fresh streams) and returns the steps to compare, each called with the chunk index, ``chunks``
        times (default: the timer's), the first ``warmup`` untimed. ``stage`` prefixes the steps' names
        in the peaks and operator counts, where stages share step names."""
        runs = [self._interleaved(make_steps, chunks or self.chunks, stage) for _ in range(self.repeats)]
        return {label: statistics.median(run[label] for run in runs) for label in runs[0]}

    def _interleaved(self, make_steps: Callable[[], dict], chunks: int, stage: str) -> dict[str, float]:
        # Every step on chunk 0, then every step on chunk 1, ...: the settings compared share the
        # machine's state (clocks, caches, neighbours) as closely as a single process allows.
        with torch.inference_mode():  # the untimed set-up too (prefills in make_steps)
            steps = make_steps()
            totals = dict.fromkeys(steps, 0.0)
            counted = [label for label in steps if self.count_ops and stage + label not in self.launches]
            device_ops = self.device.type == "cuda"  # and the kernels the profiler sees, to compare
            censuses = {label: OpCensus(device_ops=device_ops) for label in counted}
            for i in range(chunks):
                for label, step in steps.items():
                    census = censuses.get(label) if i < self.warmup else None
                    if self.device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(self.device)
                        torch.cuda.synchronize(self.device)
                    start = time.perf_counter()
                    with census or contextlib.nullcontext():
                        step(i)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                        peak = torch.cuda.max_memory_allocated(self.device) / 2**20
                        self.peaks[stage + label] = max(self.peaks.get(stage + label, 0.0), peak)
                    if i >= self.warmup:
                        totals[label] += (time.perf_counter() - start) * 1000
        for label, census in censuses.items():
            self.launches[stage + label] = census.total_launches / self.warmup
            self.host_syncs[stage + label] = sum(census.host_syncs.values())
            if census.device_ops is not None:
                self.device_ops[stage + label] = census.device_ops / self.warmup
        return {label: total / (chunks - self.warmup) for label, total in totals.items()}

    def with_chunks(self, chunks: int) -> Timer:
        """This timer over another number of chunks per pass; the peaks and counts are shared."""
        other = copy.copy(self)  # shallow: the same dicts
        other.chunks = chunks
        return other

    def op_counts(self) -> dict | None:
        """The steps' operator counts (``count_ops``), or None where they were not counted."""
        if not self.launches:
            return None
        counts = {"counted_chunks": self.warmup, "per_chunk": self.launches, "host_syncs": self.host_syncs}
        return counts | ({"device_ops_per_chunk": self.device_ops} if self.device_ops else {})

    def peak_mb(self) -> dict:
        """Per-stage CUDA peaks; on CPU only the whole process's peak RSS can be read."""
        return dict(self.peaks) if self.peaks else {"process_rss": peak_rss_mb()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
