"""Replay a vision tower's per-chunk forward from CUDA graphs (``graphs.py``).

At one frame per call a 26-layer SigLIP launches about 420 kernels (stock) or 960 (a selective chunk of
STC-Cacher); on an H200 the stock tower took 9.5 ms eagerly and 3.5 ms replayed from a CUDA graph.
Every chunk of one input shape does the same work on the same addresses, given the same cacher state: a
reference chunk always; a selective chunk when the references it reads live in the same storage (the
cacher's ``replay_key``). The cacher's Python-side state (its chunk counter, the references and indices
kept), which a replay does not touch, is put back as the recorded chunk left it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from stc_cli.accel.graphs import GraphReplay
from stc_cli.compress import STCCacher

Forward = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


class TowerGraphs:
    """``forward(pixels)``, one chunk of a vision tower (with ``cacher`` attached to it, if given),
    replayed from CUDA graphs on a CUDA device and called as it is elsewhere. The tuple returned holds
    until the next call.

    Example:
        >>> tower = TowerGraphs(lambda px: siglip(px, output_hidden_states=True).hidden_states, cacher)
        >>> states = tower(pixels)  # [F, 3, S, S] on CUDA: eager at first, then replayed
    """

    def __init__(self, forward: Forward, cacher: STCCacher | None = None, *, record_after: int = 1) -> None:
        self.forward, self.cacher = forward, cacher
        self.replay = GraphReplay(record_after)

    @property
    def graphs(self) -> int:
        return self.replay.graphs

    @property
    def replays(self) -> int:
        return self.replay.replays

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if pixels.device.type != "cuda":
            return tuple(self.forward(pixels))
        if self.cacher is None:
            return self.replay((pixels.shape, pixels.dtype, pixels.device), self._forward, pixels)
        key = (pixels.shape, pixels.dtype, pixels.device, self.cacher.replay_key())
        cacher = self.cacher
        return self.replay(key, self._forward, pixels, state=cacher.chunk_state, restore=cacher.replayed)

    def _forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.forward(pixels))
