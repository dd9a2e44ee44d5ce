"""VidCom² (EMNLP 2025): the training-free token pruner STC-Pruner grew from, as a baseline.

Reproduces the choices of the released ``vidcom2_compression`` ([VC2] github xuyang-liu16/VidCom2 at
944a17d, ``token_compressor/vidcom2/vidcom2.py:15-78``), post-projector and pre-LLM:

1. Score in the half of the channels with the lowest (population) variance over all the clip's tokens,
   each token L2-normalised in that subspace.
2. A token's score is its multi-bandwidth Gaussian similarity to the *video* centre (the mean of all the
   clip's tokens) plus that to its frame's centre; the least similar tokens are kept, in raster order.
3. Frames less like the video keep more: with ``s_t`` the negated mean video score of frame ``t`` and
   ``p = softmax((s - max s) / 0.01)``, frame ``t`` keeps ``round(base_scale * (1 + p_t - mean p) * P)``
   tokens (round half to even, at most P, at least 1).

Its video centre needs the whole clip, so in a streaming run it sees one encode chunk at a time and its
"video" is that chunk. STC-Pruner is this with the video centre replaced by the stream's memory and a
fixed budget per frame (``pruner.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stc_cli.compress.pruner import BANDWIDTHS, gaussian_similarity

TEMPERATURE = 0.01  # of the softmax that shares the budget among frames ([VC2] vidcom2.py compute_scales)


class VidCom2:
    """Per-frame token selection with a video and a frame anchor and frame-adaptive budgets.

    Example:
        >>> idx = VidCom2(base_scale=0.25).select(features)  # [F, P, D] -> F int64 tensors, ascending
    """

    def __init__(self, base_scale: float = 0.25, *, channel_ratio: float = 0.5, bandwidths=BANDWIDTHS):
        if not 0.0 < base_scale <= 1.0:
            raise ValueError(f"base_scale must be in (0, 1], got {base_scale}")
        if not 0.0 < channel_ratio <= 1.0:
            raise ValueError(f"channel_ratio must be in (0, 1], got {channel_ratio}")
        self.base_scale, self.channel_ratio, self.bandwidths = base_scale, channel_ratio, tuple(bandwidths)

    def select(self, features: torch.Tensor) -> list[torch.Tensor]:
        """The kept token indices of each frame of ``features [F, P, D]``: F int64 tensors, ascending,
        of the frame's own budget."""
        if features.dim() != 3 or 0 in features.shape or not features.is_floating_point():
            raise ValueError(
                f"features must be a non-empty float tensor [frames, tokens, channels], got "
                f"{features.dtype} of shape {tuple(features.shape)}"
            )
        frames, tokens, channels = features.shape
        flat = features.float().reshape(frames * tokens, channels)
        n_channels = max(int(channels * self.channel_ratio), 1)
        scoring = flat.var(dim=0, unbiased=False).topk(n_channels, largest=False).indices
        unit = F.normalize(flat[:, scoring].view(frames, tokens, n_channels), dim=-1)
        video_score = gaussian_similarity(unit, unit.mean(dim=(0, 1), keepdim=True), self.bandwidths)
        frame_score = gaussian_similarity(unit, unit.mean(dim=1, keepdim=True), self.bandwidths)
        budgets = self.budgets(-video_score.mean(dim=1), tokens)
        score = video_score + frame_score
        return [score[f].topk(k, largest=False).indices.sort().values for f, k in enumerate(budgets)]

    def reset(self) -> None:
        """Nothing to forget: its centre is the chunk's own."""

    def budgets(self, distinctness: torch.Tensor, tokens: int) -> list[int]:
        """Tokens kept per frame: ``base_scale`` on average, more for frames less like the video."""
        share = F.softmax((distinctness - distinctness.max()) / TEMPERATURE, dim=0)
        scale = (self.base_scale * (1 + share - share.mean())).clamp(max=1.0)
        return (scale * tokens).round().long().clamp(min=1).tolist()  # torch rounds half to even
