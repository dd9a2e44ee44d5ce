"""STC-Pruner: keep, per frame, the visual tokens most novel against the frame and the stream.

Runs after the projector and pooling and before the LLM prefill (``docs/stc-algorithm.md`` section 2).
Scores live in a subspace of low-variance channels; the kept tokens carry all their channels, in
their original (raster) order.
"""

from __future__ import annotations

import functools
from collections import deque

import torch
import torch.nn.functional as F

BANDWIDTHS = (1 / 8, 1 / 4, 1 / 2, 1.0, 2.0)


def gaussian_similarity(points: torch.Tensor, anchor: torch.Tensor, bandwidths=BANDWIDTHS) -> torch.Tensor:
    """``sum_a exp(-||points - anchor||^2 / (2a))`` over the last dim: ``[..., D] x [..., D] -> [...]``.

    The bandwidths share one division and one ``exp`` (on a GPU a step of small kernels waits for
    launches: 10 instead of 23 here), and their terms are summed in order, as one ``exp`` each would be:
    bit for bit the same on a CPU, and on CUDA for bandwidths whose ``2a`` is a power of two, the default
    (CUDA divides by a Python number as a product with its reciprocal)."""
    sq_dist = (points - anchor).pow(2).sum(dim=-1, keepdim=True)
    twice = _twice(tuple(bandwidths), sq_dist.dtype, sq_dist.device)
    terms = torch.exp(-sq_dist / twice)  # [..., bandwidths]
    total = terms[..., 0]
    for i in range(1, terms.shape[-1]):
        total = total + terms[..., i]
    return total


@functools.lru_cache(maxsize=16)
def _twice(bandwidths: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``2a`` per bandwidth, made on the device once, and filled there: a copy from the host waits for the
    device."""
    with torch.inference_mode(False):  # a normal tensor, usable in and outside inference mode
        return torch.stack([torch.full((), 2 * a, dtype=dtype, device=device) for a in bandwidths])


class STCPruner:
    """Per-frame token pruning with a spatial (frame mean) and a temporal (stream memory) anchor.

    Args:
        tokens_per_frame: k, the tokens kept per frame.
        channel_ratio: share of channels (the lowest-variance ones) used for scoring.
        bandwidths: the alphas of the multi-bandwidth Gaussian similarity.
        memory_window: keep only the last W chunk means in the temporal anchor (bounded state).
            None keeps every chunk since ``reset()``, as the released code does within a video.

    Example:
        >>> pruner = STCPruner(tokens_per_frame=60)
        >>> kept, idx = pruner.compress(features)   # [F, 196, D] -> [F, 60, D], [F, 60]
        >>> pruner.reset()                           # before the next video
    """

    def __init__(
        self,
        tokens_per_frame: int = 60,
        *,
        channel_ratio: float = 0.5,
        bandwidths: tuple[float, ...] = BANDWIDTHS,
        memory_window: int | None = None,
    ) -> None:
        if (
            isinstance(tokens_per_frame, bool)
            or not isinstance(tokens_per_frame, int)
            or tokens_per_frame < 1
        ):
            raise ValueError(f"tokens_per_frame must be an integer >= 1, got {tokens_per_frame!r}")
        if not 0.0 < channel_ratio <= 1.0:
            raise ValueError(f"channel_ratio must be in (0, 1], got {channel_ratio}")
        if not bandwidths or any(a <= 0 for a in bandwidths):
            raise ValueError(f"bandwidths must be positive numbers, got {bandwidths!r}")
        if memory_window is not None and (not isinstance(memory_window, int) or memory_window < 1):
            raise ValueError(f"memory_window must be None or an integer >= 1, got {memory_window!r}")
        self.tokens_per_frame = tokens_per_frame
        self.channel_ratio = channel_ratio
        self.bandwidths = tuple(bandwidths)
        self.memory_window = memory_window
        self.history: deque[torch.Tensor] = deque(maxlen=memory_window)
        """Mean of each chunk in its own scoring channels, ``[D']`` float32, oldest first."""

    def reset(self) -> None:
        """Start a new video or stream: forget the temporal memory."""
        self.history.clear()

    def state_nbytes(self) -> int:
        """Bytes held in the temporal memory."""
        return sum(t.nbytes for t in self.history)

    def compress(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prune one chunk.

        Args:
            features: ``[F, P, D]`` visual tokens of the chunk's F frames, P per frame.

        Returns:
            ``kept [F, k, D]`` (same dtype and device) and ``idx [F, k]`` int64, ascending per frame,
            with ``kept[f] == features[f, idx[f]]``.
        """
        if features.dim() != 3 or 0 in features.shape or not features.is_floating_point():
            raise ValueError(
                f"features must be a non-empty float tensor [frames, tokens, channels], got "
                f"{features.dtype} of shape {tuple(features.shape)}"
            )
        frames, tokens, channels = features.shape
        k = self.tokens_per_frame
        if k > tokens:
            raise ValueError(f"tokens_per_frame={k} is more than the {tokens} tokens per frame of the input")

        x = features.float()  # scores in float32 whatever the model dtype (a no-op for float32)
        n_channels = max(int(channels * self.channel_ratio), 1)
        variance = x.reshape(frames * tokens, channels).var(dim=0, unbiased=False)
        scoring_channels = variance.topk(n_channels, largest=False).indices  # ascending variance
        z = x[..., scoring_channels]  # [F, P, D']

        chunk_mean = z.mean(dim=(0, 1))
        last = self.history[-1] if self.history else chunk_mean
        if (last.shape, last.device) != (chunk_mean.shape, chunk_mean.device):
            raise ValueError(
                f"features changed from {last.shape[0]} scoring channels on {last.device} to {n_channels} "
                f"on {chunk_mean.device} within one stream; call reset() between videos"
            )
        # The memory averages chunk means taken in each chunk's own channel subset and order: the
        # released code does so, and the defaults keep its token choices.
        self.history.append(chunk_mean)
        if k == tokens:
            idx = torch.arange(tokens, device=features.device).repeat(frames, 1)
            return features, idx

        memory = torch.stack(tuple(self.history)).mean(dim=0)
        unit = F.normalize(z, dim=-1)
        frame_anchor = unit.mean(dim=1, keepdim=True)  # mean of unit vectors, not re-normalised
        memory_anchor = F.normalize(memory, dim=-1)
        score = gaussian_similarity(unit, memory_anchor, self.bandwidths) + gaussian_similarity(
            unit, frame_anchor, self.bandwidths
        )
        idx = score.topk(k, dim=1, largest=False).indices.sort(dim=1).values  # most novel, raster order
        kept = features.gather(1, idx.unsqueeze(-1).expand(-1, -1, channels))
        return kept, idx
