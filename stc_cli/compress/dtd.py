"""TimeChat-Online's Differential Token Drop (DTD), feature mode: drop the visual tokens that barely
changed since the previous frame.

Upstream (yaolinli/TimeChat-Online 25a1578, ``demo/qwen2_5_vl/modeling_qwen2_5_vl.py:1253-1476``,
``token_drop``, ``method="feature"``): frame by frame (a temporal patch for Qwen2-VL), the cosine between
each token and the token at the same position of the previous frame, computed in the features' dtype;
the previous frame is always the *whole* one, not what was kept of it. Absolute mode drops every token
whose cosine exceeds the threshold (0.5, README ``:83-85``); relative mode drops the most similar
``int(P * threshold)`` tokens. The first frame of a stream is kept whole. Kept tokens keep their order
(and, where the model has them, their positions).

Here relative mode is given as the tokens to *keep* per frame (``keep``), so that a run at STC's budget
keeps exactly ``--tokens-per-frame`` of every frame after the first, free of the float rounding of
``int(P * ratio)``. Like STC-Cacher, DTD reads temporal redundancy against an earlier frame; it drops the
tokens instead of reusing their computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class DifferentialTokenDrop:
    """Stateful across calls: the previous frame is carried from one chunk to the next until ``reset``.

    Args:
        threshold: absolute mode: drop the tokens whose cosine to the previous frame is above it.
        keep: relative mode instead: keep the ``keep`` least similar tokens of every frame but the first.

    Example:
        >>> dtd = DifferentialTokenDrop(threshold=0.5)
        >>> idx = dtd.select(features)  # [F, P, D] -> list of F int64 tensors, ascending
        >>> dtd.reset()  # before the next video
    """

    def __init__(self, threshold: float | None = 0.5, *, keep: int | None = None) -> None:
        if (threshold is None) == (keep is None):
            raise ValueError("DifferentialTokenDrop takes either threshold (absolute) or keep (relative)")
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            raise ValueError(f"the DTD threshold is a cosine in [-1, 1], got {threshold}")
        if keep is not None and keep < 1:
            raise ValueError(f"the DTD budget must keep at least 1 token per frame, got {keep}")
        self.threshold, self.keep = threshold, keep
        self.previous: torch.Tensor | None = None  # [P, D], the last frame seen, whole

    def reset(self) -> None:
        """Start a new video or stream: its next frame is kept whole."""
        self.previous = None

    def select(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Indices of the tokens kept in each frame of ``features [F, P, D]``, ascending."""
        if self.previous is not None and self.previous.shape != features.shape[1:]:
            raise ValueError(
                f"DTD compares positions: frames of {tuple(features.shape[1:])} tokens follow frames of "
                f"{tuple(self.previous.shape)}; reset() between videos"
            )
        if self.keep is not None and self.keep > features.shape[1]:
            raise ValueError(f"the DTD budget keeps {self.keep} tokens, but a frame has {features.shape[1]}")
        chosen = []
        for frame in features:
            if self.previous is None:
                chosen.append(torch.arange(frame.shape[0], device=frame.device))
            else:
                chosen.append(self._kept(F.cosine_similarity(self.previous, frame, dim=-1)))
            self.previous = frame
        return chosen

    def _kept(self, similarity: torch.Tensor) -> torch.Tensor:
        if self.keep is None:
            return (similarity <= self.threshold).nonzero()[:, 0]
        return similarity.topk(self.keep, largest=False).indices.sort().values
