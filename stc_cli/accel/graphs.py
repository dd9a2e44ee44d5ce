"""Record a step's kernels in a CUDA graph once per key, and replay them from then on.

A step of fixed input shapes that runs no host-dependent control flow launches the same kernels on the
same addresses every time: a CUDA graph records them once and replays them with one launch, which on a
GPU like the H200 is what a step of hundreds of small kernels waits for (``docs/benchmarks.md``). The
caller names what a step's work depends on in its key; a key is recorded after ``record_after`` eager
calls (a warm-up that makes the libraries' handles and workspaces outside a capture).

What the step does in Python (counters, references kept) happens while it is recorded, never at a
replay: ``state()`` takes what the recorded call left, and ``restore(state)`` puts it back after each
replay. The tuple returned is the graph's own output storage, rewritten by the next replay of any
graph of the same ``GraphReplay`` (they share one memory pool).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch


@dataclass
class _Recorded:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]  # the static inputs the graph reads
    outputs: tuple  # what the recorded call returned: the static outputs it writes
    state: object  # what the recorded call left in Python


class GraphReplay:
    """Steps recorded per key and replayed (see the module docstring).

    Example:
        >>> replay = GraphReplay()
        >>> out = replay(("frame", x.shape), step, x, restore=lambda state: ...)  # eager, then replayed
    """

    def __init__(self, record_after: int = 1) -> None:
        if record_after < 1:
            raise ValueError(f"record_after must be >= 1 (an eager warm-up first), got {record_after}")
        self.record_after = record_after
        self._recorded: dict[Hashable, _Recorded] = {}
        self._eager_calls: Counter[Hashable] = Counter()
        self._pool = None  # one pool: a graph may read what another left in it (STC's references)
        self.replays = 0  # calls replayed (the recording call included)

    @property
    def graphs(self) -> int:
        """How many graphs are recorded."""
        return len(self._recorded)

    def clear(self) -> None:
        """Drop every graph (their buffers moved, say)."""
        self._recorded.clear()
        self._eager_calls.clear()

    def __call__(
        self,
        key: Hashable,
        step: Callable[..., tuple],
        *inputs: torch.Tensor,
        state: Callable[[], object] = lambda: None,
        restore: Callable[[object], None] = lambda _state: None,
    ) -> tuple:
        """``step(*inputs)``: eager off CUDA and for a key's first calls, then recorded and replayed."""
        if inputs[0].device.type != "cuda":
            return step(*inputs)
        recorded = self._recorded.get(key)
        if recorded is None:
            if self._eager_calls[key] < self.record_after:
                self._eager_calls[key] += 1
                return step(*inputs)
            del self._eager_calls[key]
            recorded = self._recorded[key] = self._record(step, inputs, state)  # Python ran while recording
        else:
            restore(recorded.state)
        for static, given in zip(recorded.inputs, inputs, strict=True):
            static.copy_(given)
        recorded.graph.replay()
        self.replays += 1
        return recorded.outputs

    def _record(self, step: Callable[..., tuple], inputs: tuple, state: Callable[[], object]) -> _Recorded:
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        static = tuple(t.clone() for t in inputs)
        graph = torch.cuda.CUDAGraph()
        # torch.cuda.graph synchronises the device first, records on its own side stream, and replays on
        # the current stream. thread_local: the runner's prefetch thread may touch CUDA meanwhile.
        try:
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                outputs = step(*static)
        except RuntimeError as error:
            raise RuntimeError(
                f"recording a step in a CUDA graph failed ({error}); run with --no-cuda-graphs"
            ) from error
        return _Recorded(graph, static, outputs, state())
